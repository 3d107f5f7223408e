import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { proposeAllowRule } from './propose.ts';
import { validatePolicyText } from '../policies/validate.ts';
import { lineDiff } from './diff.ts';
import { csvField } from './csv.ts';

const MINIMAL = readFileSync(join(import.meta.dirname, '../examples/minimal.yaml'), 'utf8');

describe('proposeAllowRule', () => {
  it('adds a flow to the existing conduit for a no-flow drop, keeping comments, and the result validates', () => {
    const p = proposeAllowRule(MINIMAL, {
      conduit: 'hmi-to-plc',
      fromZone: 'operations',
      toZone: 'cell',
      src: '10.1.0.10',
      dst: '10.2.0.20',
      dstPort: 22,
      protocol: 'tcp',
      source: 'nflog',
      reason: 'no-flow',
    });
    expect(p.conduit).toBe('hmi-to-plc');
    expect(p.flow).toBe('allow-tcp-22');
    expect(p.text).toContain('# The smallest useful Sluice policy');
    const r = validatePolicyText(p.text, 'p');
    expect(r.errors).toEqual([]);
    const flow = r.policy?.conduits.get('hmi-to-plc')?.flows.find((f) => f.name === 'allow-tcp-22');
    expect(flow?.from.refs).toEqual(['hmi']);
    expect(flow?.to.refs).toEqual(['plc']);
    expect(flow?.ports).toEqual([{ start: 22, end: 22 }]);
    // Only additions against the original.
    expect(lineDiff(MINIMAL, p.text).filter((l) => l.op === '-')).toEqual([]);
  });

  it('creates a conduit for a no-conduit drop, zones found from the addresses; unknown hosts stay addresses', () => {
    const p = proposeAllowRule(MINIMAL, {
      src: '10.2.0.99',
      dst: '10.1.0.10',
      dstPort: 123,
      protocol: 'udp',
      source: 'nflog',
      reason: 'no-conduit',
    });
    expect(p.conduit).toBe('cell-to-operations');
    const r = validatePolicyText(p.text, 'p');
    expect(r.errors.filter((e) => e.severity === 'error' && !e.code.startsWith('lint'))).toEqual([]);
    expect(p.text).toMatch(/from: \[10\.2\.0\.99\]/);
    expect(r.policy?.conduits.get('cell-to-operations')).toMatchObject({ from: 'cell', to: 'operations' });
  });

  it('adds the refused Modbus function and addresses as a rule of the flow', () => {
    const p = proposeAllowRule(MINIMAL, {
      conduit: 'hmi-to-plc',
      flow: 'poll',
      src: '10.1.0.10',
      dst: '10.2.0.20',
      dstPort: 502,
      protocol: 'tcp',
      source: 'modbus',
      reason: 'modbus.illegal-data-address',
      detail: { function: 4, addresses: '1500-1509' },
    });
    const r = validatePolicyText(p.text, 'p');
    const rules = r.policy?.conduits.get('hmi-to-plc')?.flows[0]?.modbus?.rules ?? [];
    expect(rules.at(-1)).toMatchObject({ functions: [4], addresses: [{ start: 1500, end: 1509 }] });
    expect(lineDiff(MINIMAL, p.text).filter((l) => l.op === '-')).toEqual([]);
  });

  it('refuses what it cannot express', () => {
    expect(() =>
      proposeAllowRule(MINIMAL, {
        src: '10.1.0.10',
        dst: '10.2.0.20',
        protocol: '132',
        source: 'nflog',
        reason: 'no-flow',
      }),
    ).toThrow(/protocol/);
    expect(() =>
      proposeAllowRule(MINIMAL, {
        src: '192.0.2.1',
        dst: '10.2.0.20',
        protocol: 'tcp',
        source: 'nflog',
        reason: 'no-conduit',
      }),
    ).toThrow(/not between two zones/);
  });
});

describe('csvField and lineDiff', () => {
  it('guards formulas and quotes separators', () => {
    expect(csvField('=1+1')).toBe(`"'=1+1"`);
    expect(csvField('@SUM(A1)')).toBe(`"'@SUM(A1)"`);
    expect(csvField('-2')).toBe(`"'-2"`);
    expect(csvField('a,"b"\nc')).toBe('"a,""b""\nc"');
    expect(csvField('10.0.0.1')).toBe('10.0.0.1');
    expect(csvField(undefined)).toBe('');
  });

  it('diffs lines', () => {
    expect(lineDiff('a\nb\nc', 'a\nx\nc')).toEqual([
      { op: ' ', text: 'a' },
      { op: '-', text: 'b' },
      { op: '+', text: 'x' },
      { op: ' ', text: 'c' },
    ]);
  });
});
