import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { gunzipSync, gzipSync } from 'node:zlib';
import { StateStore } from './state.ts';
import { USERS_FILE } from '../web-ui/users.ts';
import { TLS_CERT_FILE, TLS_KEY_FILE } from '../web-ui/tls.ts';
import {
  BackupError,
  createBackup,
  compareVersions,
  restoreBackup,
  sluiceVersion,
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
let keyFile: string;
const GW = 'gw-1';

async function seedState(dir: string): Promise<void> {
  const store = await StateStore.open(dir);
  const v = await store.addVersion({ text: 'zones: {}\n', who: 'alice', lint, status: 'confirmed' });
  await store.setRuntime({ runningVersionId: v.id, lastConfirmedVersionId: v.id, mode: 'policy' });
  await store.audit({ who: 'alice', action: 'apply', detail: 'first', versionId: v.id });
  await store.flush();
  // The UI's real file names (web-ui/users.ts USERS_FILE, web-ui/tls.ts TLS_KEY_FILE / TLS_CERT_FILE).
  await writeFile(path.join(dir, USERS_FILE), '{"format":1,"users":[]}\n', { mode: 0o600 });
  await writeFile(path.join(dir, TLS_KEY_FILE), '-----BEGIN PRIVATE KEY-----\nxyz\n', { mode: 0o600 });
  await writeFile(path.join(dir, TLS_CERT_FILE), '-----BEGIN CERTIFICATE-----\nabc\n', { mode: 0o644 });
  // Generated at run time, never state: the daemon's ulogd2 config and a writer's crashed temp file.
  await writeFile(path.join(dir, 'ulogd.conf'), '[global]\n', { mode: 0o600 });
  await writeFile(path.join(dir, '.versions.json.1.abc.tmp'), 'partial', { mode: 0o600 });
  const db = new DatabaseSync(path.join(dir, 'blocked.sqlite'));
  db.exec('PRAGMA journal_mode=WAL; CREATE TABLE e (x INTEGER); INSERT INTO e VALUES (1), (2), (3);');
  db.close();
}

beforeEach(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'sluice-backup-'));
  stateDir = path.join(work, 'state');
  keyFile = path.join(work, 'backup.key');
  await writeFile(keyFile, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
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

/** The manifest's content hash as backup.ts defines it (path, size, mode, sha256 per file, sorted). */
function contentHash(files: BackupManifest['files']): string {
  const h = createHash('sha256');
  for (const f of [...files].sort((a, b) => (a.path < b.path ? -1 : 1)))
    h.update(`${f.path}\0${f.size}\0${f.mode}\0${f.sha256}\n`);
  return h.digest('hex');
}

/** Unpacks an archive, lets `edit` change manifest and files, packs it again (no key: as a forger would). */
async function forge(
  file: string,
  out: string,
  edit: (m: BackupManifest, files: Map<string, Buffer>) => void,
): Promise<void> {
  const entries = tarUnpack(gunzipSync(await readFile(file)));
  const manifest = JSON.parse((entries[0]?.data ?? Buffer.alloc(0)).toString()) as BackupManifest;
  const files = new Map(entries.slice(1).map((e) => [e.name.slice('sluice-backup/state/'.length), e.data]));
  edit(manifest, files);
  await writeFile(
    out,
    gzipSync(
      tarPack([
        { name: 'sluice-backup/manifest.json', data: Buffer.from(JSON.stringify(manifest)), mode: 0o600 },
        ...[...files].map(([p, data]) => ({ name: `sluice-backup/state/${p}`, data, mode: 0o600 })),
      ]),
    ),
  );
}

const backup = (file: string, extra: Partial<Parameters<typeof createBackup>[0]> = {}) =>
  createBackup({ stateDir, file, keyFile, gateway: GW, ...extra });
const restore = (file: string, extra: Partial<Parameters<typeof restoreBackup>[0]> = {}) =>
  restoreBackup({ stateDir, file, keyFile, gateway: GW, who: 'tester', ...extra });

describe('backup and restore', () => {
  it('round-trips the state, logs included, and leaves generated files out', async () => {
    const file = path.join(work, 'b.tar.gz');
    const r = await backup(file, { includeLogs: true });
    expect(r.manifest.gateway).toBe(GW);
    expect(r.manifest.sluiceVersion).toBe(sluiceVersion());
    expect(r.manifest.sluiceVersion).toMatch(/^\d+\.\d+\.\d+/);
    expect(r.manifest.hmac).toMatch(/^[0-9a-f]{64}$/);
    expect(r.manifest.files.map((f) => f.path).sort()).toEqual([
      'audit.json',
      'blocked.sqlite',
      'runtime.json',
      TLS_CERT_FILE,
      TLS_KEY_FILE,
      USERS_FILE,
      'versions.json',
    ]);
    expect(r.archiveSha256).toMatch(/^[0-9a-f]{64}$/);

    const target = path.join(work, 'restored');
    const res = await restoreBackup({
      stateDir: target,
      file,
      keyFile,
      gateway: GW,
      sha256: r.archiveSha256,
      who: 'tester',
    });
    expect(res.restored).toHaveLength(7);
    expect(res.warning).toBeUndefined();
    for (const name of ['versions.json', 'runtime.json', USERS_FILE, TLS_KEY_FILE, TLS_CERT_FILE])
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
    const names = await readdir(target);
    expect(names).not.toContain('ulogd.conf');
    expect(names.filter((n) => n.startsWith('.'))).toEqual([]);
  });

  it('records the restore in the restored audit log', async () => {
    const file = path.join(work, 'b.tar.gz');
    await backup(file);
    await restore(file, { now: () => new Date('2030-01-02T03:04:05Z') });
    const store = await StateStore.open(stateDir);
    const entries = store.auditEntries();
    expect(entries.map((e) => e.action)).toEqual(['apply', 'restore']);
    expect(entries[1]).toMatchObject({ who: 'tester', time: '2030-01-02T03:04:05.000Z' });
    expect(entries[1]?.detail).toContain('b.tar.gz');
    expect(entries[1]?.detail).toContain(GW);
  });

  it('leaves the log store out unless asked', async () => {
    const file = path.join(work, 'b.tar.gz');
    const r = await backup(file);
    expect(r.manifest.files.map((f) => f.path)).not.toContain('blocked.sqlite');
    expect(r.manifest.includesLogs).toBe(false);
  });

  it('restores over an existing state dir, replacing what changed', async () => {
    const file = path.join(work, 'b.tar.gz');
    await backup(file);
    const before = await readFile(path.join(stateDir, 'versions.json'), 'utf8');
    await writeFile(path.join(stateDir, 'versions.json'), '{"format":1,"versions":[]}\n');
    await restore(file);
    expect(await readFile(path.join(stateDir, 'versions.json'), 'utf8')).toBe(before);
    expect((await readdir(stateDir)).filter((n) => n.startsWith('.'))).toEqual([]);
  });

  it('refuses to back up without a backup key', async () => {
    await expect(
      backup(path.join(work, 'b.tar.gz'), { keyFile: path.join(work, 'nokey') }),
    ).rejects.toMatchObject({ code: 'backup.no-key' });
    await writeFile(path.join(work, 'short.key'), 'abcd\n');
    await expect(
      backup(path.join(work, 'b.tar.gz'), { keyFile: path.join(work, 'short.key') }),
    ).rejects.toMatchObject({ code: 'backup.bad-key' });
  });

  it('refuses a tampered file and changes nothing', async () => {
    const file = path.join(work, 'b.tar.gz');
    await backup(file);
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
    await expect(restore(bad)).rejects.toMatchObject({ code: 'backup.tampered' });
    expect(await hashTree(stateDir)).toBe(before);
  });

  it('refuses an archive rewritten with recomputed checksums (keyed HMAC), changing nothing', async () => {
    const file = path.join(work, 'b.tar.gz');
    await backup(file);
    const bad = path.join(work, 'forged.tar.gz');
    // A forger without the key: new content, every checksum recomputed, the key id and HMAC kept.
    await forge(file, bad, (m, files) => {
      const data = Buffer.from('{"format":1,"users":[{"name":"mallory","role":"admin"}]}\n');
      files.set(USERS_FILE, data);
      const f = m.files.find((x) => x.path === USERS_FILE);
      if (f === undefined) throw new Error('no users file in the manifest');
      f.size = data.length;
      f.sha256 = createHash('sha256').update(data).digest('hex');
      m.contentSha256 = contentHash(m.files);
    });
    const before = await hashTree(stateDir);
    await expect(verifyBackup(bad, { keyFile })).rejects.toMatchObject({ code: 'backup.tampered' });
    await expect(restore(bad)).rejects.toMatchObject({ code: 'backup.tampered' });
    expect(await hashTree(stateDir)).toBe(before);
  });

  it('refuses a changed file mode: modes are inside the signed content hash', async () => {
    const file = path.join(work, 'b.tar.gz');
    await backup(file);
    const bad = path.join(work, 'mode.tar.gz');
    await forge(file, bad, (m) => {
      const f = m.files.find((x) => x.path === TLS_CERT_FILE);
      if (f === undefined) throw new Error('no cert in the manifest');
      expect(f.mode).toBe(0o644);
      f.mode = 0o755;
    });
    await expect(restore(bad)).rejects.toMatchObject({ code: 'backup.tampered' });
  });

  it("needs the source gateway's key: refuses another key, accepts --key-file with the right one", async () => {
    const file = path.join(work, 'b.tar.gz');
    await backup(file);
    const otherKey = path.join(work, 'other.key');
    await writeFile(otherKey, randomBytes(32).toString('hex'), { mode: 0o600 });
    const before = await hashTree(stateDir);
    await expect(restore(file, { keyFile: otherKey })).rejects.toMatchObject({ code: 'backup.wrong-key' });
    expect(await hashTree(stateDir)).toBe(before);
    // An archive re-signed with another key but claiming this key's id is still refused.
    const resigned = path.join(work, 'resigned.tar.gz');
    await createBackup({ stateDir, file: resigned, keyFile: otherKey, gateway: GW });
    const ours = await verifyBackup(file, { keyFile });
    await forge(resigned, path.join(work, 'claims.tar.gz'), (m) => {
      m.keyId = ours.manifest.keyId;
    });
    await expect(restore(path.join(work, 'claims.tar.gz'))).rejects.toMatchObject({
      code: 'backup.tampered',
    });
    await expect(restore(resigned, { keyFile: otherKey })).resolves.toBeDefined();
  });

  it('refuses a backup from a newer Sluice, accepts one from an older', async () => {
    const newer = path.join(work, 'newer.tar.gz');
    await backup(newer, { version: '99.0.0' });
    const before = await hashTree(stateDir);
    await expect(restore(newer)).rejects.toMatchObject({ code: 'backup.newer' });
    expect(await hashTree(stateDir)).toBe(before);
    const older = path.join(work, 'older.tar.gz');
    await backup(older, { version: '0.0.1' });
    await expect(restore(older)).resolves.toBeDefined();
    expect(compareVersions('0.10.0', '0.9.9')).toBe(1);
    expect(compareVersions('1.2.3-rc.1', '1.2.3')).toBe(0);
    expect(compareVersions('unknown', '1.0.0')).toBeUndefined();
  });

  it('refuses a backup of another gateway unless told, and then warns', async () => {
    const file = path.join(work, 'b.tar.gz');
    await backup(file, { gateway: 'old-box' });
    const before = await hashTree(stateDir);
    await expect(restore(file)).rejects.toMatchObject({ code: 'backup.other-gateway' });
    expect(await hashTree(stateDir)).toBe(before);
    const r = await restore(file, { allowOtherGateway: true });
    expect(r.warning).toContain('old-box');
  });

  it('refuses a damaged gzip stream and a wrong archive checksum, changing nothing', async () => {
    const file = path.join(work, 'b.tar.gz');
    await backup(file);
    const raw = await readFile(file);
    const mid = Math.floor(raw.length / 2);
    raw[mid] = (raw[mid] ?? 0) ^ 0xff;
    const bad = path.join(work, 'bad.tar.gz');
    await writeFile(bad, raw);
    const before = await hashTree(stateDir);
    await expect(restore(bad)).rejects.toBeInstanceOf(BackupError);
    await expect(restore(file, { sha256: '0'.repeat(64) })).rejects.toMatchObject({
      code: 'backup.tampered',
    });
    expect(await hashTree(stateDir)).toBe(before);
  });

  it('refuses a manifest rewritten without its checksum', async () => {
    const file = path.join(work, 'b.tar.gz');
    await backup(file);
    const bad = path.join(work, 'bad.tar.gz');
    await forge(file, bad, (m) => {
      const f0 = m.files[0];
      if (f0 === undefined) throw new Error('empty manifest');
      f0.sha256 = createHash('sha256').update('other').digest('hex');
    });
    await expect(verifyBackup(bad, { keyFile })).rejects.toMatchObject({ code: 'backup.tampered' });
  });

  it('refuses the old unkeyed format', async () => {
    const file = path.join(work, 'b.tar.gz');
    await backup(file);
    const old = path.join(work, 'v1.tar.gz');
    await forge(file, old, (m) => {
      m.formatVersion = 1;
    });
    await expect(verifyBackup(old, { keyFile })).rejects.toMatchObject({ code: 'backup.format' });
  });

  it('refuses foreign archives', async () => {
    const notGzip = path.join(work, 'a.txt');
    await writeFile(notGzip, 'hello\n');
    await expect(verifyBackup(notGzip, { keyFile })).rejects.toMatchObject({ code: 'backup.foreign' });

    const otherTar = path.join(work, 'other.tar.gz');
    await writeFile(
      otherTar,
      gzipSync(tarPack([{ name: 'etc/passwd', data: Buffer.from('root:x:0:0\n'), mode: 0o644 }])),
    );
    await expect(verifyBackup(otherTar, { keyFile })).rejects.toMatchObject({ code: 'backup.foreign' });

    const otherProduct = path.join(work, 'product.tar.gz');
    const m = { product: 'acme-fw', format: 'acme', formatVersion: 1, files: [], contentSha256: '' };
    await writeFile(
      otherProduct,
      gzipSync(
        tarPack([{ name: 'sluice-backup/manifest.json', data: Buffer.from(JSON.stringify(m)), mode: 0o600 }]),
      ),
    );
    const before = await hashTree(stateDir);
    await expect(restore(otherProduct)).rejects.toMatchObject({ code: 'backup.foreign' });
    expect(await hashTree(stateDir)).toBe(before);
  });

  it('refuses path traversal even when the checksums and the HMAC match', async () => {
    const file = path.join(work, 'b.tar.gz');
    await backup(file);
    // Keep the signed manifest but smuggle an extra entry: the names in the tar are checked on their own.
    const entries = tarUnpack(gunzipSync(await readFile(file)));
    const bad = path.join(work, 'trav.tar.gz');
    await writeFile(
      bad,
      gzipSync(
        tarPack([
          ...entries,
          { name: 'sluice-backup/state/../../escape', data: Buffer.from('pwned\n'), mode: 0o600 },
        ]),
      ),
    );
    await expect(restore(bad)).rejects.toMatchObject({ code: 'backup.path' });
    await expect(stat(path.join(work, 'escape'))).rejects.toThrow();
  });

  it('refuses while the daemon answers on its socket, unless forced', async () => {
    const file = path.join(work, 'b.tar.gz');
    await backup(file);
    const server = net.createServer((s) => s.end());
    await new Promise<void>((r) => server.listen(path.join(stateDir, 'sluice.sock'), r));
    try {
      await expect(restore(file)).rejects.toMatchObject({
        code: 'backup.daemon-running',
      });
      await expect(restore(file, { force: true })).resolves.toBeDefined();
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
