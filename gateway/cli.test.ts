import { describe, it, expect, afterEach } from 'vitest';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EXIT_INVALID, EXIT_OK, main, type CliIo } from './cli.ts';

const EXAMPLE = join(import.meta.dirname, '../examples/minimal.yaml');

function io(): CliIo & { out: string; err: string } {
  const r = {
    out: '',
    err: '',
    stdout: (t: string) => {
      r.out += t;
    },
    stderr: (t: string) => {
      r.err += t;
    },
    env: {},
    now: () => new Date('2026-06-01T00:00:00Z'),
  };
  return r;
}

let dir: string | undefined;
afterEach(async () => {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('sluice compile', () => {
  it('writes the plan and the ruleset to files', async () => {
    dir = await mkdtemp(join(tmpdir(), 'sluice-cli-'));
    const t = io();
    const code = await main(
      ['compile', EXAMPLE, '--out', join(dir, 'r.nft'), '--plan', join(dir, 'p.json')],
      t,
    );
    expect(code, t.err).toBe(EXIT_OK);
    expect(t.out).toBe('');
    expect(await readFile(join(dir, 'r.nft'), 'utf8')).toMatch(/^#!\/usr\/sbin\/nft -f/);
    expect(JSON.parse(await readFile(join(dir, 'p.json'), 'utf8'))).toMatchObject({ version: 1 });
  });

  it('refuses an unwritable --plan in words, before printing the ruleset', async () => {
    const t = io();
    const code = await main(['compile', EXAMPLE, '--plan', '/nonexistent-dir/plan.json'], t);
    expect(code).toBe(EXIT_INVALID);
    expect(t.out).toBe('');
    expect(t.err).toBe(
      'sluice compile: cannot write /nonexistent-dir/plan.json: its directory does not exist [cli.write]\n',
    );
    const t2 = io();
    expect(await main(['compile', EXAMPLE, '--out', '/nonexistent-dir/r.nft'], t2)).toBe(EXIT_INVALID);
    expect(t2.err).toMatch(/cannot write \/nonexistent-dir\/r\.nft: its directory does not exist/);
  });
});

describe('sluice run', () => {
  it('refuses a bad log retention before starting anything', async () => {
    const t = io();
    const code = await main(['run', '--state-dir', '/nonexistent-state', '--log-max-bytes', '512'], t);
    expect(code).toBe(EXIT_INVALID);
    expect(t.err).toMatch(/log size '512' is not a size of at least 1M/);
    const t2 = io();
    t2.env = { SLUICE_LOG_MAX_AGE: '1w' };
    expect(await main(['run', '--state-dir', '/nonexistent-state'], t2)).toBe(EXIT_INVALID);
    expect(t2.err).toMatch(/log age '1w'/);
  });
});
