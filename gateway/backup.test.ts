import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdtemp, mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { gunzipSync, gzipSync } from 'node:zlib';
import { StateStore } from './state.ts';
import {
  BackupError,
  createBackup,
  restoreBackup,
  tarPack,
  tarUnpack,
  verifyBackup,
  type BackupManifest,
} from './backup.ts';

const lint = { errors: 0, warnings: 0, acceptedRisks: 0, findings: [] };

/** sha256 over every file's relative path, mode and bytes: "nothing changed" means this is equal. */
async function hashTree(dir: string): Promise<string> {
  const h = createHash('sha256');
  const walk = async (rel: string): Promise<void> => {
    for (const e of (await readdir(path.join(dir, rel), { withFileTypes: true })).sort((a, b) =>
      a.name.localeCompare(b.name),
    )) {
      const r = path.join(rel, e.name);
      const st = await stat(path.join(dir, r));
      h.update(`${r}\0${st.mode}\0`);
      if (e.isDirectory()) await walk(r);
      else h.update(await readFile(path.join(dir, r)));
    }
  };
  await walk('');
  return h.digest('hex');
}

let work: string;
let stateDir: string;

async function seedState(dir: string): Promise<void> {
  const store = await StateStore.open(dir);
  const v = await store.addVersion({ text: 'zones: {}\n', who: 'alice', lint, status: 'confirmed' });
  await store.setRuntime({ runningVersionId: v.id, lastConfirmedVersionId: v.id, mode: 'policy' });
  await store.audit({ who: 'alice', action: 'apply', detail: 'first', versionId: v.id });
  await store.flush();
  await writeFile(path.join(dir, 'ui-users.json'), '{"format":1,"users":[]}\n', { mode: 0o600 });
  await writeFile(path.join(dir, 'ui-sessions.json'), '{"live":"token"}\n', { mode: 0o600 });
  await mkdir(path.join(dir, 'tls'), { mode: 0o700 });
  await writeFile(path.join(dir, 'tls', 'cert.pem'), '-----BEGIN CERTIFICATE-----\nabc\n', { mode: 0o600 });
  const db = new DatabaseSync(path.join(dir, 'blocked.sqlite'));
  db.exec('PRAGMA journal_mode=WAL; CREATE TABLE e (x INTEGER); INSERT INTO e VALUES (1), (2), (3);');
  db.close();
}

beforeEach(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'sluice-backup-'));
  stateDir = path.join(work, 'state');
  await seedState(stateDir);
});

afterEach(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Rewrites the archive's tar with `edit`, keeping it validly gzip'd (so only Sluice's own checks can catch it). */
async function rewrite(file: string, out: string, edit: (tar: Buffer) => Buffer): Promise<void> {
  const tar = gunzipSync(await readFile(file));
  await writeFile(out, gzipSync(edit(tar)));
}

describe('backup and restore', () => {
  it('round-trips the state, logs included, and leaves sessions out', async () => {
    const file = path.join(work, 'b.tar.gz');
    const r = await createBackup({ stateDir, file, includeLogs: true, gateway: 'gw-1' });
    expect(r.manifest.gateway).toBe('gw-1');
    expect(r.manifest.sluiceVersion).toMatch(/^\d+\.\d+\.\d+/);
    expect(r.manifest.files.map((f) => f.path).sort()).toEqual([
      'audit.json',
      'blocked.sqlite',
      'runtime.json',
      'tls/cert.pem',
      'ui-users.json',
      'versions.json',
    ]);
    expect(r.archiveSha256).toMatch(/^[0-9a-f]{64}$/);

    const target = path.join(work, 'restored');
    const res = await restoreBackup({ stateDir: target, file, sha256: r.archiveSha256 });
    expect(res.restored).toHaveLength(6);
    for (const name of ['versions.json', 'runtime.json', 'audit.json', 'ui-users.json', 'tls/cert.pem'])
      expect(await readFile(path.join(target, name), 'utf8')).toBe(
        await readFile(path.join(stateDir, name), 'utf8'),
      );
    expect((await stat(path.join(target, 'versions.json'))).mode & 0o777).toBe(0o600);
    const store = await StateStore.open(target);
    expect(store.problems).toEqual([]);
    expect(store.runtime().runningVersionId).toBe(1);
    expect(store.auditEntries()[0]?.detail).toBe('first');
    const db = new DatabaseSync(path.join(target, 'blocked.sqlite'), { readOnly: true });
    expect(db.prepare('SELECT count(*) AS n FROM e').get()).toEqual({ n: 3 });
    db.close();
    await expect(readdir(target)).resolves.not.toContain('ui-sessions.json');
  });

  it('leaves the log store out unless asked', async () => {
    const file = path.join(work, 'b.tar.gz');
    const r = await createBackup({ stateDir, file });
    expect(r.manifest.files.map((f) => f.path)).not.toContain('blocked.sqlite');
    expect(r.manifest.includesLogs).toBe(false);
  });

  it('restores over an existing state dir, replacing what changed', async () => {
    const file = path.join(work, 'b.tar.gz');
    await createBackup({ stateDir, file });
    const before = await readFile(path.join(stateDir, 'versions.json'), 'utf8');
    await writeFile(path.join(stateDir, 'versions.json'), '{"format":1,"versions":[]}\n');
    await restoreBackup({ stateDir, file });
    expect(await readFile(path.join(stateDir, 'versions.json'), 'utf8')).toBe(before);
    expect((await readdir(stateDir)).filter((n) => n.startsWith('.'))).toEqual([]);
  });

  it('refuses a tampered file and changes nothing', async () => {
    const file = path.join(work, 'b.tar.gz');
    await createBackup({ stateDir, file });
    const bad = path.join(work, 'bad.tar.gz');
    await rewrite(file, bad, (tar) => {
      // Flip one byte inside versions.json's content (keeping the tar headers valid).
      const i = tar.indexOf('zones: {}');
      expect(i).toBeGreaterThan(0);
      tar[i] = 'Z'.charCodeAt(0);
      return tar;
    });
    await writeFile(path.join(stateDir, 'versions.json'), '{"format":1,"versions":[]}\n');
    const before = await hashTree(stateDir);
    await expect(restoreBackup({ stateDir, file: bad })).rejects.toMatchObject({ code: 'backup.tampered' });
    expect(await hashTree(stateDir)).toBe(before);
  });

  it('refuses a damaged gzip stream and a wrong archive checksum, changing nothing', async () => {
    const file = path.join(work, 'b.tar.gz');
    await createBackup({ stateDir, file });
    const raw = await readFile(file);
    const mid = Math.floor(raw.length / 2);
    raw[mid] = (raw[mid] ?? 0) ^ 0xff;
    const bad = path.join(work, 'bad.tar.gz');
    await writeFile(bad, raw);
    const before = await hashTree(stateDir);
    await expect(restoreBackup({ stateDir, file: bad })).rejects.toBeInstanceOf(BackupError);
    await expect(restoreBackup({ stateDir, file, sha256: '0'.repeat(64) })).rejects.toMatchObject({
      code: 'backup.tampered',
    });
    expect(await hashTree(stateDir)).toBe(before);
  });

  it('refuses a manifest rewritten without its checksum', async () => {
    const file = path.join(work, 'b.tar.gz');
    await createBackup({ stateDir, file });
    const { files } = await verifyBackup(file);
    const manifest = JSON.parse(
      (tarUnpack(gunzipSync(await readFile(file)))[0]?.data ?? Buffer.alloc(0)).toString(),
    ) as BackupManifest;
    const f0 = manifest.files[0];
    if (f0 === undefined) throw new Error('empty manifest');
    f0.sha256 = createHash('sha256').update('other').digest('hex');
    const bad = path.join(work, 'bad.tar.gz');
    const entries = [
      { name: 'sluice-backup/manifest.json', data: Buffer.from(JSON.stringify(manifest)), mode: 0o600 },
      ...[...files].map(([p, data]) => ({ name: `sluice-backup/state/${p}`, data, mode: 0o600 })),
    ];
    await writeFile(bad, gzipSync(tarPack(entries)));
    await expect(verifyBackup(bad)).rejects.toMatchObject({ code: 'backup.tampered' });
  });

  it('refuses foreign archives', async () => {
    const notGzip = path.join(work, 'a.txt');
    await writeFile(notGzip, 'hello\n');
    await expect(verifyBackup(notGzip)).rejects.toMatchObject({ code: 'backup.foreign' });

    const otherTar = path.join(work, 'other.tar.gz');
    await writeFile(
      otherTar,
      gzipSync(tarPack([{ name: 'etc/passwd', data: Buffer.from('root:x:0:0\n'), mode: 0o644 }])),
    );
    await expect(verifyBackup(otherTar)).rejects.toMatchObject({ code: 'backup.foreign' });

    const otherProduct = path.join(work, 'product.tar.gz');
    const m = { product: 'acme-fw', format: 'acme', formatVersion: 1, files: [], contentSha256: '' };
    await writeFile(
      otherProduct,
      gzipSync(
        tarPack([{ name: 'sluice-backup/manifest.json', data: Buffer.from(JSON.stringify(m)), mode: 0o600 }]),
      ),
    );
    const before = await hashTree(stateDir);
    await expect(restoreBackup({ stateDir, file: otherProduct })).rejects.toMatchObject({
      code: 'backup.foreign',
    });
    expect(await hashTree(stateDir)).toBe(before);
  });

  it('refuses path traversal even when the checksums match', async () => {
    const data = Buffer.from('pwned\n');
    const files = [
      {
        path: '../../escape',
        size: data.length,
        mode: 0o600,
        sha256: createHash('sha256').update(data).digest('hex'),
      },
    ];
    const contentSha256 = createHash('sha256')
      .update(`${files[0]?.path}\0${data.length}\0${files[0]?.sha256}\n`)
      .digest('hex');
    const manifest = {
      product: 'sluice',
      format: 'sluice-backup',
      formatVersion: 1,
      sluiceVersion: '0.1.0',
      gateway: 'x',
      created: new Date().toISOString(),
      includesLogs: false,
      files,
      contentSha256,
    };
    const bad = path.join(work, 'trav.tar.gz');
    await writeFile(
      bad,
      gzipSync(
        tarPack([
          { name: 'sluice-backup/manifest.json', data: Buffer.from(JSON.stringify(manifest)), mode: 0o600 },
          { name: 'sluice-backup/state/../../escape', data, mode: 0o600 },
        ]),
      ),
    );
    await expect(restoreBackup({ stateDir, file: bad })).rejects.toMatchObject({ code: 'backup.path' });
    await expect(stat(path.join(work, 'escape'))).rejects.toThrow();
  });

  it('refuses while the daemon answers on its socket, unless forced', async () => {
    const file = path.join(work, 'b.tar.gz');
    await createBackup({ stateDir, file });
    const server = net.createServer((s) => s.end());
    await new Promise<void>((r) => server.listen(path.join(stateDir, 'sluice.sock'), r));
    try {
      await expect(restoreBackup({ stateDir, file })).rejects.toMatchObject({
        code: 'backup.daemon-running',
      });
      await expect(restoreBackup({ stateDir, file, force: true })).resolves.toBeDefined();
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
