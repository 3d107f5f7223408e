import { describe, it, expect } from 'vitest';
import { covered, decideRequest, REASONS } from './decide.ts';
import { describeRequest } from './describe.ts';
import { buildException } from './exception.ts';
import { encodeAdu, u16 } from './frames.ts';
import { parseRequest } from './pdu.ts';
import type { ModbusRequest } from './types.ts';
import type { ModbusSpec } from '../../policies/types.ts';

function req(pdu: number[], unitId = 1, transactionId = 0x0102): ModbusRequest {
  const r = parseRequest(encodeAdu(transactionId, unitId, pdu));
  if (r.kind !== 'frame') throw new Error(`test frame does not parse: ${JSON.stringify(r)}`);
  return r.frame;
}

const readHolding = (start: number, qty: number): number[] => [3, ...u16(start), ...u16(qty)];
const writeRegister = (address: number, value: number): number[] => [6, ...u16(address), ...u16(value)];

const SPEC: ModbusSpec = {
  unitIds: [1, 2],
  rules: [
    // Two adjacent ranges in one rule: their union covers 50..149.
    {
      functions: [3, 4],
      addresses: [
        { start: 100, end: 199 },
        { start: 0, end: 99 },
      ],
    },
    { functions: [6, 16], addresses: [{ start: 100, end: 109 }], values: { start: 0, end: 1000 } },
    { functions: [5, 15], addresses: [{ start: 0, end: 15 }], values: { start: 0, end: 0 } },
    {
      functions: [23],
      addresses: [
        { start: 0, end: 9 },
        { start: 200, end: 209 },
      ],
    },
    { functions: [22], addresses: [{ start: 4, end: 4 }], values: { start: 0, end: 0xff } },
    { functions: [8, 43], addresses: [{ start: 0, end: 0 }] },
  ],
};

const cases: {
  name: string;
  pdu: number[];
  unit?: number;
  expect: 'allow' | 1 | 2 | 3 | 10;
  reason?: string;
}[] = [
  { name: 'read inside one range', pdu: readHolding(10, 5), expect: 'allow' },
  { name: 'read spanning two adjacent ranges of the same rule', pdu: readHolding(50, 100), expect: 'allow' },
  { name: 'read input registers, same rule', pdu: [4, ...u16(199), ...u16(1)], expect: 'allow' },
  {
    name: 'read running past the ranges → 02',
    pdu: readHolding(150, 51),
    expect: 2,
    reason: REASONS.address,
  },
  { name: 'read entirely outside → 02', pdu: readHolding(1000, 1), expect: 2 },
  {
    name: 'function 1 listed by no rule → 01',
    pdu: [1, ...u16(0), ...u16(1)],
    expect: 1,
    reason: REASONS.function,
  },
  { name: 'unknown function 65 → 01', pdu: [65, 0], expect: 1 },
  {
    name: 'file record read listed by no rule → 01',
    pdu: [20, 7, 6, ...u16(1), ...u16(0), ...u16(1)],
    expect: 1,
  },
  { name: 'write register in range and bounds', pdu: writeRegister(105, 1000), expect: 'allow' },
  { name: 'write register value 1001 → 03', pdu: writeRegister(105, 1001), expect: 3, reason: REASONS.value },
  {
    name: 'write register out of range (even with a bad value) → 02',
    pdu: writeRegister(110, 5000),
    expect: 2,
  },
  {
    name: 'write multiple registers, one value out of bounds → 03',
    pdu: [16, ...u16(100), ...u16(3), 6, ...u16(1), ...u16(2000), ...u16(3)],
    expect: 3,
  },
  {
    name: 'write multiple registers within bounds',
    pdu: [16, ...u16(100), ...u16(3), 6, ...u16(1), ...u16(999), ...u16(3)],
    expect: 'allow',
  },
  { name: 'coil OFF where only OFF is allowed', pdu: [5, ...u16(3), 0, 0], expect: 'allow' },
  { name: 'coil ON where only OFF is allowed → 03', pdu: [5, ...u16(3), 0xff, 0], expect: 3 },
  { name: 'coils all OFF', pdu: [15, ...u16(0), ...u16(10), 2, 0, 0xfc], expect: 'allow' },
  { name: 'coils with one ON → 03', pdu: [15, ...u16(0), ...u16(10), 2, 0, 0x02], expect: 3 },
  { name: 'coils past address 15 → 02', pdu: [15, ...u16(8), ...u16(9), 2, 0, 0], expect: 2 },
  {
    name: 'read/write: both ranges in the same rule',
    pdu: [23, ...u16(0), ...u16(10), ...u16(200), ...u16(1), 2, 0, 1],
    expect: 'allow',
  },
  {
    name: 'read/write: write range not covered → 02',
    pdu: [23, ...u16(0), ...u16(10), ...u16(100), ...u16(1), 2, 0, 1],
    expect: 2,
  },
  {
    name: 'mask write: every outcome ≤ 0xFF',
    pdu: [22, ...u16(4), ...u16(0x00f0), ...u16(0x000f)],
    expect: 'allow',
  },
  {
    name: 'mask write: keeping the high byte may leave a value > 0xFF → 03',
    pdu: [22, ...u16(4), ...u16(0xff00), ...u16(0x0012)],
    expect: 3,
  },
  {
    name: 'diagnostics (no address) allowed by a rule listing 8',
    pdu: [8, ...u16(0), 1, 2],
    expect: 'allow',
  },
  { name: 'read device identification (43/14)', pdu: [43, 14, 1, 0], expect: 'allow' },
  { name: 'CANopen (43/13) even though 43 is listed → 01', pdu: [43, 13, 1], expect: 1, reason: REASONS.mei },
  { name: 'reserved MEI type → 01', pdu: [43, 2], expect: 1, reason: REASONS.mei },
  { name: 'unit id 2 is allowed', pdu: readHolding(0, 1), unit: 2, expect: 'allow' },
  { name: 'unit id 3 is not → 0A', pdu: readHolding(0, 1), unit: 3, expect: 10, reason: REASONS.unit },
  { name: 'unit id checked before the function → 0A', pdu: [65], unit: 0, expect: 10 },
];

describe('decideRequest', () => {
  it.each(cases)('$name', ({ pdu, unit, expect: want, reason }) => {
    const d = decideRequest(req(pdu, unit ?? 1), SPEC, 'enforce');
    if (want === 'allow') {
      expect(d).toEqual({ verdict: 'allow' });
    } else {
      expect(d).toMatchObject({ verdict: 'refuse', exceptionCode: want });
      if (reason !== undefined) expect(d).toMatchObject({ reason });
    }
  });

  it('monitor mode reports the same refusals as would-refuse and allows the rest', () => {
    for (const c of cases) {
      const d = decideRequest(req(c.pdu, c.unit ?? 1), SPEC, 'monitor');
      if (c.expect === 'allow') expect(d.verdict).toBe('allow');
      else expect(d).toMatchObject({ verdict: 'would-refuse', exceptionCode: c.expect });
    }
  });

  it('one rule must cover every address: two rules each covering half do not', () => {
    const spec: ModbusSpec = {
      unitIds: null,
      rules: [
        { functions: [3], addresses: [{ start: 0, end: 9 }] },
        { functions: [3], addresses: [{ start: 10, end: 19 }] },
      ],
    };
    expect(decideRequest(req(readHolding(5, 10)), spec, 'enforce')).toMatchObject({ exceptionCode: 2 });
    expect(decideRequest(req(readHolding(10, 10)), spec, 'enforce')).toEqual({ verdict: 'allow' });
  });

  it('one rule must cover function and address: 23 is not allowed by a rule for 3 plus a rule for 16', () => {
    const spec: ModbusSpec = {
      unitIds: null,
      rules: [
        { functions: [3], addresses: null },
        { functions: [16], addresses: null },
      ],
    };
    expect(
      decideRequest(req([23, ...u16(0), ...u16(1), ...u16(0), ...u16(1), 2, 0, 0]), spec, 'enforce'),
    ).toMatchObject({ exceptionCode: 1 });
  });

  it('a value refusal (03) wins over an address refusal (02) from another rule', () => {
    const spec: ModbusSpec = {
      unitIds: null,
      rules: [
        { functions: [6], addresses: [{ start: 0, end: 9 }] },
        { functions: [6], addresses: [{ start: 100, end: 109 }], values: { start: 0, end: 10 } },
      ],
    };
    expect(decideRequest(req(writeRegister(100, 20)), spec, 'enforce')).toMatchObject({ exceptionCode: 3 });
    // …and a later rule without bounds still allows it.
    spec.rules.push({ functions: [6], addresses: [{ start: 100, end: 100 }] });
    expect(decideRequest(req(writeRegister(100, 20)), spec, 'enforce')).toEqual({ verdict: 'allow' });
  });

  it('opaque requests (unknown functions, file records) pass only a rule without address ranges', () => {
    const limited: ModbusSpec = {
      unitIds: null,
      rules: [{ functions: [20, 65], addresses: [{ start: 0, end: 65535 }] }],
    };
    const open: ModbusSpec = { unitIds: null, rules: [{ functions: [20, 65], addresses: null }] };
    const fileRead = req([20, 7, 6, ...u16(1), ...u16(0), ...u16(1)]);
    const userDefined = req([65, 1, 2]);
    for (const r of [fileRead, userDefined]) {
      expect(decideRequest(r, limited, 'enforce')).toMatchObject({
        exceptionCode: 2,
        reason: REASONS.opaque,
      });
      expect(decideRequest(r, open, 'enforce')).toEqual({ verdict: 'allow' });
    }
  });

  it('write file record values are bounded like registers', () => {
    const spec: ModbusSpec = {
      unitIds: null,
      rules: [{ functions: [21], addresses: null, values: { start: 0, end: 100 } }],
    };
    const ok = req([21, 11, 6, ...u16(4), ...u16(7), ...u16(2), ...u16(10), ...u16(100)]);
    const bad = req([21, 11, 6, ...u16(4), ...u16(7), ...u16(2), ...u16(10), ...u16(101)]);
    expect(decideRequest(ok, spec, 'enforce')).toEqual({ verdict: 'allow' });
    expect(decideRequest(bad, spec, 'enforce')).toMatchObject({ exceptionCode: 3 });
  });

  it('an empty rule list refuses everything with 01', () => {
    expect(decideRequest(req(readHolding(0, 1)), { unitIds: null, rules: [] }, 'enforce')).toMatchObject({
      verdict: 'refuse',
      exceptionCode: 1,
    });
  });

  it('the allow path returns one shared object (no allocation)', () => {
    const a = decideRequest(req(readHolding(0, 1)), SPEC, 'enforce');
    const b = decideRequest(req(readHolding(1, 1)), SPEC, 'enforce');
    expect(a).toBe(b);
  });
});

describe('covered', () => {
  it.each([
    [[{ start: 0, end: 9 }], { start: 0, end: 9 }, true],
    [[{ start: 0, end: 9 }], { start: 0, end: 10 }, false],
    [
      [
        { start: 10, end: 19 },
        { start: 0, end: 9 },
      ],
      { start: 5, end: 15 },
      true,
    ],
    [
      [
        { start: 0, end: 9 },
        { start: 11, end: 19 },
      ],
      { start: 5, end: 15 },
      false,
    ],
    [
      [
        { start: 0, end: 20 },
        { start: 5, end: 8 },
      ],
      { start: 6, end: 19 },
      true,
    ],
    [[], { start: 0, end: 0 }, false],
    [[{ start: 65535, end: 65535 }], { start: 65535, end: 65535 }, true],
  ])('%j covers %j: %s', (ranges, want, result) => {
    expect(covered(ranges, want)).toBe(result);
  });
});

describe('buildException (MB §7, TCP §3.1.3)', () => {
  it.each([
    [0x0102, 1, 3, 2, '010200000003018302'],
    [0xffff, 255, 16, 3, 'ffff00000003ff9003'],
    [0, 0, 127, 1, '00000000000300ff01'],
    [0x1234, 17, 6, 0x0a, '12340000000311860a'],
  ])('tx %i unit %i function %i code %i', (tx, unit, fn, code, hex) => {
    expect(buildException(tx, unit, fn, code).toString('hex')).toBe(hex);
  });

  it('answers a refused request with its own transaction id, unit id and function', () => {
    const r = req(writeRegister(105, 5000), 2, 0xbeef);
    const d = decideRequest(r, SPEC, 'enforce');
    if (d.verdict !== 'refuse') throw new Error('expected a refusal');
    const adu = buildException(r.transactionId, r.unitId, r.function, d.exceptionCode);
    expect([...adu]).toEqual([0xbe, 0xef, 0, 0, 0, 3, 2, 0x86, 3]);
  });

  it.each([
    ['function 0', [1, 1, 0, 1]],
    ['function 128', [1, 1, 128, 1]],
    ['exception code 0', [1, 1, 3, 0]],
    ['transaction id 65536', [65536, 1, 3, 1]],
    ['unit id 256', [1, 256, 3, 1]],
  ] as const)('rejects a programming error: %s', (_n, [tx, unit, fn, code]) => {
    expect(() => buildException(tx, unit, fn, code)).toThrow(RangeError);
  });
});

describe('describeRequest', () => {
  it.each([
    [
      readHolding(100, 11),
      { unit: 1, function: 3, functionName: 'Read Holding Registers', addresses: '100-110' },
    ],
    [writeRegister(7, 42), { function: 6, addresses: '7', values: '42' }],
    [[5, ...u16(3), 0xff, 0], { functionName: 'Write Single Coil', addresses: '3', values: '1' }],
    [[15, ...u16(19), ...u16(10), 2, 0xcd, 0x01], { addresses: '19-28', values: '1,0,1,1,0,0,1,1,1,0' }],
    [
      [16, ...u16(0), ...u16(20), 40, ...Array<number>(40).fill(1)],
      { addresses: '0-19', values: '257 (20 values)' },
    ],
    [
      [16, ...u16(0), ...u16(17), 34, ...Array.from({ length: 17 }, (_, i) => u16(i)).flat()],
      { values: '0-16 (17 values)' },
    ],
    [
      [22, ...u16(4), ...u16(0xf2), ...u16(0x25)],
      { addresses: '4', values: 'and=0x00f2 or=0x0025 → 0x0005-0x00f7' },
    ],
    [
      [23, ...u16(3), ...u16(6), ...u16(14), ...u16(2), 4, 0, 1, 0, 2],
      { addresses: 'read 3-8; write 14-15', values: '1,2' },
    ],
    [
      [20, 14, 6, ...u16(4), ...u16(1), ...u16(2), 6, ...u16(3), ...u16(9), ...u16(1)],
      { addresses: 'file 4 records 1-2; file 3 records 9' },
    ],
    [
      [21, 9, 6, ...u16(4), ...u16(7), ...u16(1), ...u16(9)],
      { addresses: 'file 4 records 7', values: '9 (1 values)' },
    ],
    [[8, ...u16(4), 0, 0], { addresses: 'none', detail: 'sub-function 4 (Force Listen Only Mode)' }],
    [[43, 14, 1, 0], { detail: 'MEI type 14 (Read Device Identification)' }],
    [[65, 1], { functionName: 'user-defined function 65', addresses: 'none' }],
    [[90], { functionName: 'unassigned function 90' }],
  ])('%j', (pdu, want) => {
    expect(describeRequest(req(pdu))).toMatchObject(want);
  });

  it('leaves values out for requests that write nothing', () => {
    expect(describeRequest(req(readHolding(0, 1)))).not.toHaveProperty('values');
  });
});
