import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadPolicyFile, parsePolicyText } from './load.ts';
import type { LoadResult, PolicyDocument } from './load.ts';
import { posOf } from './test-helpers.ts';

function ok(r: LoadResult): PolicyDocument {
  if (!r.ok) throw new Error(`expected to load: ${JSON.stringify(r.problems)}`);
  return r.doc;
}

const YAML_TEXT = `version: 1
zones:
  control:
    securityLevel: 3
    interfaces: [eth2, eth3]
    description:
  other: &z { securityLevel: 2 }
  copy: *z
`;

describe('parsePolicyText', () => {
  it('parses YAML 1.2 core: dates and ranges stay strings', () => {
    const doc = ok(parsePolicyText('expires: 2027-06-30\naddresses: 0-999\nflag: no\nport: 502\n', 'a.yaml'));
    expect(doc.data).toEqual({ expires: '2027-06-30', addresses: '0-999', flag: 'no', port: 502 });
  });

  it('locates values and keys (1-based line and column), through aliases', () => {
    const doc = ok(parsePolicyText(YAML_TEXT, 'a.yaml'));
    expect(doc.locate(['zones', 'control', 'securityLevel'])).toEqual({ line: 4, column: 20 });
    expect(doc.locateKey?.(['zones', 'control', 'securityLevel'])).toEqual({ line: 4, column: 5 });
    expect(doc.locate(['zones', 'control', 'interfaces', 1])).toEqual(posOf(YAML_TEXT, 'eth3'));
    // An empty value points at its key.
    expect(doc.locate(['zones', 'control', 'description'])).toEqual(posOf(YAML_TEXT, 'description'));
    // Through an alias: the anchored node's own position.
    expect(doc.locate(['zones', 'copy', 'securityLevel'])).toEqual(posOf(YAML_TEXT, '2 }'));
    expect(doc.locate(['zones', 'missing'])).toBeUndefined();
    expect(doc.locate(['zones', 'control', 'interfaces', 5])).toBeUndefined();
    expect(doc.locate([])).toEqual({ line: 1, column: 1 });
  });

  it('locates values in JSON input', () => {
    const json =
      '{\n  "version": 1,\n  "zones": {\n    "control": { "securityLevel": 3, "interfaces": ["eth2"] }\n  }\n}\n';
    const doc = ok(parsePolicyText(json, 'a.json'));
    expect(doc.data).toEqual({ version: 1, zones: { control: { securityLevel: 3, interfaces: ['eth2'] } } });
    expect(doc.locate(['zones', 'control', 'securityLevel'])).toEqual({ line: 4, column: 35 });
    expect(doc.locateKey?.(['zones', 'control', 'interfaces'])).toEqual(posOf(json, '"interfaces"'));
    expect(doc.locate(['zones', 'control', 'interfaces', 0])).toEqual(posOf(json, '"eth2"'));
  });

  it('reads tab-indented JSON and a byte-order mark', () => {
    const doc = ok(parsePolicyText('\uFEFF{\n\t"version": 1,\n\t"zones": {}\n}\n', 'a.json'));
    expect(doc.data).toEqual({ version: 1, zones: {} });
  });

  it('reports syntax errors with positions, all of them', () => {
    const r = parsePolicyText('a: [1, 2\nb: {x: 1\n', 'bad.yaml');
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.problems.length).toBeGreaterThan(0);
    for (const p of r.problems) {
      expect(p.code).toBe('load.syntax');
      expect(p.file).toBe('bad.yaml');
      expect(p.position?.line).toBeGreaterThanOrEqual(1);
    }
    const json = parsePolicyText('{\n  "a": 1,\n  "b": [1, 2\n}\n', 'bad.json');
    expect(json.ok).toBe(false);
  });

  it('refuses duplicate keys in YAML and JSON, pointing at the repeated key', () => {
    const r = parsePolicyText('zones:\n  a: 1\n  b: 2\n  a: 3\n', 'dup.yaml');
    expect(r).toEqual({
      ok: false,
      problems: [
        {
          severity: 'error',
          code: 'load.duplicate-key',
          path: [],
          message: 'duplicate key (each key may appear once)',
          file: 'dup.yaml',
          position: { line: 4, column: 3 },
        },
      ],
    });
    const j = parsePolicyText('{"a": 1,\n "b": {"c": 1, "c": 2}}', 'dup.json');
    expect(j.ok).toBe(false);
    const dupJson = '{"a": 1,\n "b": {"c": 1, "c": 2}}';
    if (!j.ok)
      expect(j.problems.map((p) => [p.code, p.position])).toEqual([
        ['load.duplicate-key', posOf(dupJson, '"c"', 2)],
      ]);
  });

  it('refuses keys that are not plain text', () => {
    const r = parsePolicyText('zones:\n  ? [a]\n  : 1\n', 'k.yaml');
    expect(r.ok).toBe(false);
    if (!r.ok)
      expect(r.problems.map((p) => [p.code, p.message, p.position])).toEqual([
        ['load.syntax', 'keys must be plain text', { line: 2, column: 5 }],
      ]);
  });

  it('refuses several documents, unknown tags and alias bombs', () => {
    expect(parsePolicyText('a: 1\n---\nb: 2\n', 'm.yaml').ok).toBe(false);
    const tag = parsePolicyText('a: !shell rm\n', 't.yaml');
    expect(tag.ok).toBe(false);
    const bomb = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i < 9; i++)
      bomb.push(
        `${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10)
          .fill(`*${String.fromCharCode(96 + i)}`)
          .join(', ')}]`,
      );
    const r = parsePolicyText(`${bomb.join('\n')}\n`, 'bomb.yaml');
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.problems[0]?.code).toBe('load.aliases');
  });

  it('gives null data for an empty document', () => {
    expect(ok(parsePolicyText('', 'e.yaml')).data).toBeNull();
    expect(ok(parsePolicyText('# only a comment\n', 'e.yaml')).data).toBeNull();
  });
});

describe('loadPolicyFile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-load-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('loads a file', async () => {
    const f = join(dir, 'p.yaml');
    writeFileSync(f, 'version: 1\n');
    const doc = ok(await loadPolicyFile(f));
    expect(doc.file).toBe(f);
    expect(doc.data).toEqual({ version: 1 });
  });

  it('reports an unreadable file as load.read', async () => {
    for (const path of [join(dir, 'missing.yaml'), dir]) {
      const r = await loadPolicyFile(path);
      expect(r.ok).toBe(false);
      if (!r.ok) {
        expect(r.problems).toHaveLength(1);
        expect(r.problems[0]).toMatchObject({ code: 'load.read', file: path, severity: 'error' });
        expect(r.problems[0]?.message).toMatch(/^cannot read policy file: (no such file|is a directory)$/);
      }
    }
  });
});
