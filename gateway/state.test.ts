import { spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  AtomicJsonFile,
  DEFAULT_STATE_DIR,
  StateStore,
  resolveStateDir,
  sha256,
  type LintSummary,
} from './state.ts';

const LINT: LintSummary = { errors: 0, warnings: 1, acceptedRisks: 0, findings: [] };

let dir: string;
beforeEach(async () => {
  dir = path.join(await mkdtemp(path.join(tmpdir(), 'slcA-state-')), 'state');
});
afterEach(async () => {
  await rm(path.dirname(dir), { recursive: true, force: true });
});

const mode = async (p: string): Promise<number> => (await stat(p)).mode & 0o777;

describe('resolveStateDir', () => {
  it('prefers the flag, then SLUICE_STATE_DIR, then the default', () => {
    expect(resolveStateDir('rel/dir', { SLUICE_STATE_DIR: '/env' })).toBe(path.resolve('rel/dir'));
    expect(resolveStateDir(undefined, { SLUICE_STATE_DIR: '/env/dir' })).toBe('/env/dir');
    expect(resolveStateDir(undefined, {})).toBe(DEFAULT_STATE_DIR);
    expect(resolveStateDir('', { SLUICE_STATE_DIR: '' })).toBe('/var/lib/sluice');
  });
});

describe('StateStore', () => {
  it('creates the dir 0700 and writes its files 0600, tightening existing modes', async () => {
    await mkdir(dir, { mode: 0o755 });
    await writeFile(path.join(dir, 'audit.json'), JSON.stringify({ format: 1, dropped: 0, entries: [] }), {
      mode: 0o644,
    });
    await chmod(path.join(dir, 'audit.json'), 0o644);
    const store = await StateStore.open(dir);
    expect(await mode(dir)).toBe(0o700);
    expect(await mode(path.join(dir, 'audit.json'))).toBe(0o600);
    await store.addVersion({ text: 'a', who: 'alice', lint: LINT, status: 'confirmed' });
    await store.setRuntime({ runningVersionId: 1 });
    await store.audit({ who: 'alice', action: 'apply', detail: 'x' });
    for (const f of ['versions.json', 'runtime.json', 'audit.json'])
      expect(await mode(path.join(dir, f))).toBe(0o600);
  });

  it('records versions with incrementing ids, the text hash and who/when/comment, and persists them', async () => {
    const now = new Date('2026-03-01T10:00:00.000Z');
    const store = await StateStore.open(dir, { now: () => now });
    const v1 = await store.addVersion({
      text: 'one',
      who: 'alice',
      comment: 'first',
      lint: LINT,
      status: 'applied',
    });
    const v2 = await store.addVersion({
      text: 'two',
      who: 'bob',
      file: 'p.yaml',
      lint: LINT,
      status: 'confirmed',
    });
    expect([v1.id, v2.id]).toEqual([1, 2]);
    expect(v1).toMatchObject({
      hash: sha256('one'),
      who: 'alice',
      when: now.toISOString(),
      comment: 'first',
    });
    expect(v2).toMatchObject({ comment: '', file: 'p.yaml', status: 'confirmed' });
    await store.setVersionStatus(1, 'rolled-back');
    await expect(store.setVersionStatus(9, 'confirmed')).rejects.toThrow(/no version 9/);

    const again = await StateStore.open(dir);
    expect(again.problems).toEqual([]);
    expect(again.versions().map((v) => [v.id, v.status, v.text])).toEqual([
      [1, 'rolled-back', 'one'],
      [2, 'confirmed', 'two'],
    ]);
    expect(again.getVersion(2)?.lint).toEqual(LINT);
  });

  it('keeps runtime pointers and returns copies that callers cannot mutate', async () => {
    const store = await StateStore.open(dir);
    expect(store.runtime()).toEqual({
      runningVersionId: null,
      lastConfirmedVersionId: null,
      pending: null,
      mode: 'none',
    });
    const pending = { versionId: 2, previousVersionId: 1, deadline: '2026-03-01T10:00:03.000Z' };
    await store.setRuntime({ runningVersionId: 2, lastConfirmedVersionId: 1, pending, mode: 'policy' });
    const rt = store.runtime();
    if (rt.pending !== null) rt.pending.versionId = 99;
    expect(store.runtime().pending).toEqual(pending);
    expect((await StateStore.open(dir)).runtime()).toEqual({
      runningVersionId: 2,
      lastConfirmedVersionId: 1,
      pending,
      mode: 'policy',
    });
  });

  it('bounds the audit log, counts dropped entries and keeps sequence numbers (CR 2.9)', async () => {
    const store = await StateStore.open(dir, { auditLimit: 5 });
    for (let i = 1; i <= 12; i++) await store.audit({ who: 'u', action: 'apply', detail: `#${i}` });
    expect(store.auditDropped()).toBe(7);
    expect(store.auditEntries().map((e) => e.detail)).toEqual(['#8', '#9', '#10', '#11', '#12']);
    expect(store.auditEntries().map((e) => e.seq)).toEqual([8, 9, 10, 11, 12]);
    const again = await StateStore.open(dir, { auditLimit: 5 });
    expect(again.auditDropped()).toBe(7);
    const next = await again.audit({ who: 'u', action: 'confirm', detail: '#13' });
    expect(next.seq).toBe(13);
    expect(again.auditEntries()).toHaveLength(5);
  });

  it('serialises concurrent writers in one process: nothing lost, ids unique', async () => {
    const store = await StateStore.open(dir);
    await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        Promise.all([
          store.addVersion({ text: `t${i}`, who: 'u', lint: LINT, status: 'applied' }),
          store.audit({ who: 'u', action: 'apply', detail: `a${i}` }),
          store.setRuntime({ runningVersionId: i + 1 }),
        ]),
      ),
    );
    const again = await StateStore.open(dir);
    expect(again.versions().map((v) => v.id)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    expect(new Set(again.versions().map((v) => v.text)).size).toBe(40);
    expect(again.auditEntries()).toHaveLength(40);
    expect(again.runtime().runningVersionId).toBe(40);
  });

  it('moves a corrupt file aside, reports it, and never reuses a version id known elsewhere', async () => {
    const store = await StateStore.open(dir);
    await store.addVersion({ text: 'a', who: 'u', lint: LINT, status: 'confirmed' });
    await store.addVersion({ text: 'b', who: 'u', lint: LINT, status: 'confirmed' });
    await store.setRuntime({ runningVersionId: 2, lastConfirmedVersionId: 2, mode: 'policy' });
    await writeFile(path.join(dir, 'versions.json'), '{"format":1,"versions":[{"id":1,"te');

    const again = await StateStore.open(dir);
    expect(again.problems).toHaveLength(1);
    expect(again.problems[0]).toMatchObject({ file: 'versions.json' });
    expect(again.versions()).toEqual([]);
    const kept = (await readdir(dir)).filter((f) => f.startsWith('versions.json.corrupt-'));
    expect(kept).toHaveLength(1);
    expect(await readFile(path.join(dir, kept[0] ?? 'missing'), 'utf8')).toContain('"te');
    expect((await again.addVersion({ text: 'c', who: 'u', lint: LINT, status: 'applied' })).id).toBe(3);
  });

  it('treats a file of the wrong shape as corrupt', async () => {
    await mkdir(dir, { recursive: true });
    await writeFile(
      path.join(dir, 'runtime.json'),
      JSON.stringify({ runningVersionId: 'x', mode: 'policy' }),
    );
    const store = await StateStore.open(dir);
    expect(store.problems.map((p) => p.file)).toEqual(['runtime.json']);
    expect(store.runtime().mode).toBe('none');
  });

  it("removes a crashed writer's temp files at open", async () => {
    await mkdir(dir, { recursive: true });
    const stale = path.join(dir, '.versions.json.12345.abcdef012345.tmp');
    await writeFile(stale, '{"half');
    await writeFile(path.join(dir, 'unrelated.tmp'), 'keep');
    await StateStore.open(dir);
    expect((await readdir(dir)).sort()).toEqual(['unrelated.tmp']);
  });
});

describe('AtomicJsonFile', () => {
  it('round-trips and reads a missing file as null', async () => {
    await mkdir(dir, { recursive: true });
    const f = new AtomicJsonFile<{ a: number }>(path.join(dir, 'x.json'));
    expect(await f.read()).toBeNull();
    await f.write({ a: 1 });
    expect(await f.read()).toEqual({ a: 1 });
    expect(await mode(path.join(dir, 'x.json'))).toBe(0o600);
  });

  it('never leaves a partial file when the writer is killed mid-write (SIGKILL)', async () => {
    await mkdir(dir, { recursive: true });
    const target = path.join(dir, 'big.json');
    const stateUrl = pathToFileURL(path.resolve(import.meta.dirname, 'state.ts')).href;
    // The child rewrites a ~3 MB document as fast as it can; each one carries its number at both ends,
    // so a torn or mixed file shows up as a parse error or a mismatch.
    const child = `
      import { AtomicJsonFile } from ${JSON.stringify(stateUrl)};
      const f = new AtomicJsonFile(${JSON.stringify(target)});
      for (let n = 1; ; n++) {
        await f.write({ head: n, pad: String(n % 10).repeat(3_000_000), tail: n });
        process.stdout.write(n + '\\n');
      }`;
    const kills = 6;
    let lastSeen = 0;
    for (let i = 0; i < kills; i++) {
      const proc = spawn(process.execPath, ['--input-type=module', '-e', child], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let written = 0;
      let stderr = '';
      proc.stdout.on('data', (d: Buffer) => {
        written += d.toString().split('\n').filter(Boolean).length;
      });
      proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      // Wait for some complete writes, then kill at a varying point inside the next one.
      const t0 = Date.now();
      while (written < 2 && Date.now() - t0 < 20_000 && proc.exitCode === null) await sleep(10);
      expect(stderr).toBe('');
      expect(written).toBeGreaterThanOrEqual(2);
      await sleep(3 + i * 7);
      const exited = new Promise((resolve) => proc.once('exit', resolve));
      proc.kill('SIGKILL');
      await exited;
      const doc = JSON.parse(await readFile(target, 'utf8')) as { head: number; pad: string; tail: number };
      expect(doc.head).toBe(doc.tail);
      expect(doc.pad).toBe(String(doc.head % 10).repeat(3_000_000));
      lastSeen = doc.head;
    }
    expect(lastSeen).toBeGreaterThanOrEqual(2);
  });
});
