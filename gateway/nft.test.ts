// Unit tests of the nft runner against a fake `nft` (a shell script): argument arrays, stdin, error mapping.
// The real binary is exercised by test/compile-nft.test.ts (root, network namespaces).
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NftError } from '../policies/errors.ts';
import { Nft, parseCounters } from './nft.ts';

let dir: string;
let fake: string;

// Records its arguments and stdin, then behaves by the script text / arguments it was given.
const FAKE = `#!/bin/sh
dir="$(dirname "$0")"
printf '%s\\n' "$@" > "$dir/args"
cat > "$dir/stdin"
case "$*" in
  *"-j list counters"*)
    if [ -e "$dir/no-table" ]; then echo "Error: No such file or directory" >&2; exit 1; fi
    echo '{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"counter": {"family": "inet", "name": "f_a_b", "table": "sluice", "handle": 3, "packets": 7, "bytes": 420}}]}'
    exit 0;;
  "list table inet sluice")
    if [ -e "$dir/no-table" ]; then echo "Error: No such file or directory; did you mean table 'sluice' in family ip?" >&2; exit 1; fi
    echo "table inet sluice {"; echo "}"; exit 0;;
  "list table"*) echo "Error: Operation not permitted" >&2; exit 1;;
  "list ruleset") echo "table inet sluice {"; echo "}"; exit 0;;
esac
if grep -q BROKEN "$dir/stdin"; then
  echo "/dev/stdin:3:1-6: Error: syntax error, unexpected junk" >&2
  exit 1
fi
exit 0
`;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-nft-'));
  fake = join(dir, 'nft');
  writeFileSync(fake, FAKE);
  chmodSync(fake, 0o755);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const args = (): string[] => readFileSync(join(dir, 'args'), 'utf8').trimEnd().split('\n');
const stdin = (): string => readFileSync(join(dir, 'stdin'), 'utf8');

describe('Nft', () => {
  it('loads a script through stdin as one nft -f - call', async () => {
    const nft = new Nft({ binary: fake });
    await nft.load('table inet sluice {}\n');
    expect(args()).toEqual(['-f', '-']);
    expect(stdin()).toBe('table inet sluice {}\n');
  });

  it('checks with -c and reports nft stderr with line numbers', async () => {
    const nft = new Nft({ binary: fake });
    await nft.check('ok\n');
    expect(args()).toEqual(['-c', '-f', '-']);
    const err = await nft.check('x\ny\nBROKEN\n').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NftError);
    expect((err as NftError).code).toBe('nft.check-failed');
    expect((err as NftError).message).toContain('/dev/stdin:3:1-6');
  });

  it('maps a failed load to nft.load-failed', async () => {
    const err = await new Nft({ binary: fake }).load('BROKEN').catch((e: unknown) => e);
    expect((err as NftError).code).toBe('nft.load-failed');
  });

  it('lists the table, or undefined when it is absent; other errors throw', async () => {
    const nft = new Nft({ binary: fake });
    expect(await nft.listTable()).toBe('table inet sluice {\n}\n');
    expect(args()).toEqual(['list', 'table', 'inet', 'sluice']);
    writeFileSync(join(dir, 'no-table'), '');
    try {
      expect(await nft.listTable()).toBeUndefined();
      expect(await nft.counters()).toEqual({});
    } finally {
      rmSync(join(dir, 'no-table'));
    }
    expect(await nft.listRuleset()).toContain('table inet sluice');
    expect(args()).toEqual(['list', 'ruleset']);
    await nft.listRuleset({ stateless: true });
    expect(args()).toEqual(['-s', 'list', 'ruleset']);
  });

  it('reads named counters from nft -j', async () => {
    const nft = new Nft({ binary: fake });
    expect(await nft.counters()).toEqual({ f_a_b: { packets: 7, bytes: 420 } });
    expect(args()).toEqual(['-j', 'list', 'counters', 'table', 'inet', 'sluice']);
  });

  it('deletes the table with the add-then-delete idiom in one transaction', async () => {
    await new Nft({ binary: fake }).deleteTable();
    expect(stdin()).toBe('table inet sluice {}\ndelete table inet sluice\n');
  });

  it('reports a missing binary as nft.exec-failed', async () => {
    const err = await new Nft({ binary: join(dir, 'missing') }).listRuleset().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NftError);
    expect((err as NftError).code).toBe('nft.exec-failed');
  });

  it('refuses a namespace name that could be read as an option', () => {
    expect(() => new Nft({ netns: '-all' })).toThrow(NftError);
    expect(() => new Nft({ netns: 'a b' })).toThrow(NftError);
    expect(() => new Nft({ netns: 'slcC-ok' })).not.toThrow();
  });
});

describe('parseCounters', () => {
  it('keeps only counters of table inet sluice', () => {
    const json = JSON.stringify({
      nftables: [
        { metainfo: {} },
        { counter: { family: 'inet', table: 'sluice', name: 'x_a', packets: 1, bytes: 2 } },
        { counter: { family: 'ip', table: 'sluice', name: 'other', packets: 5, bytes: 6 } },
        { counter: { family: 'inet', table: 'filter', name: 'other2', packets: 5, bytes: 6 } },
      ],
    });
    expect(parseCounters(json)).toEqual({ x_a: { packets: 1, bytes: 2 } });
  });
  it('throws on output that is not JSON', () => {
    expect(() => parseCounters('Error')).toThrow(NftError);
  });
});
