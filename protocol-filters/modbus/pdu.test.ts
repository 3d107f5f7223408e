import { describe, it, expect } from 'vitest';
import { encodeAdu, u16 } from './frames.ts';
import { parseRequest } from './pdu.ts';
import type { ModbusRequest } from './types.ts';

interface ValidCase {
  name: string;
  pdu: number[];
  check: (r: ModbusRequest) => void;
}

const regs = (...vs: number[]): number[] => vs.flatMap(u16);

/** Valid requests: one per function shape and per boundary the spec sets (MB §6.x). */
const VALID: ValidCase[] = [
  {
    name: 'read coils, 2000 coils (MB §6.1 maximum)',
    pdu: [1, ...u16(0), ...u16(2000)],
    check: (r) => expect(r.read).toEqual({ start: 0, end: 1999 }),
  },
  {
    name: 'read discrete inputs, 1 input',
    pdu: [2, ...u16(10), ...u16(1)],
    check: (r) => expect(r.read).toEqual({ start: 10, end: 10 }),
  },
  {
    name: 'read holding registers, 125 registers ending at 65535',
    pdu: [3, ...u16(65411), ...u16(125)],
    check: (r) => expect(r.read).toEqual({ start: 65411, end: 65535 }),
  },
  {
    name: 'read input registers at the last address',
    pdu: [4, ...u16(65535), ...u16(1)],
    check: (r) => expect([r.read, r.write, r.values]).toEqual([{ start: 65535, end: 65535 }, null, null]),
  },
  {
    name: 'write single coil ON (0xFF00 → value 1)',
    pdu: [5, ...u16(7), 0xff, 0x00],
    check: (r) => {
      expect(r.write).toEqual({ start: 7, end: 7 });
      expect(r.values).toMatchObject({ encoding: 'bit', count: 1, min: 1, max: 1 });
    },
  },
  {
    name: 'write single coil OFF (0x0000 → value 0)',
    pdu: [5, ...u16(7), 0x00, 0x00],
    check: (r) => expect(r.values).toMatchObject({ min: 0, max: 0 }),
  },
  {
    name: 'write single register',
    pdu: [6, ...u16(1), ...u16(0x1234)],
    check: (r) => {
      expect(r.write).toEqual({ start: 1, end: 1 });
      expect(r.values).toMatchObject({ encoding: 'word', count: 1, min: 0x1234, max: 0x1234 });
    },
  },
  { name: 'read exception status', pdu: [7], check: (r) => expect(r.known).toBe(true) },
  { name: 'get comm event counter', pdu: [11], check: (r) => expect(r.function).toBe(11) },
  { name: 'get comm event log', pdu: [12], check: (r) => expect(r.function).toBe(12) },
  { name: 'report server id', pdu: [17], check: (r) => expect(r.opaque).toBe(false) },
  {
    name: 'diagnostics return query data (any N × 2 bytes)',
    pdu: [8, ...u16(0), 0x12, 0x34, 0x56, 0x78],
    check: (r) => expect([r.subFunction, r.read, r.write]).toEqual([0, null, null]),
  },
  {
    name: 'diagnostics restart communications with log clear (0xFF00)',
    pdu: [8, ...u16(1), 0xff, 0x00],
    check: (r) => expect(r.subFunction).toBe(1),
  },
  {
    name: 'diagnostics change ASCII delimiter (char, 0x00)',
    pdu: [8, ...u16(3), 0x0a, 0x00],
    check: (r) => expect(r.subFunction).toBe(3),
  },
  {
    name: 'diagnostics force listen only mode',
    pdu: [8, ...u16(4), 0, 0],
    check: (r) => expect(r.subFunction).toBe(4),
  },
  {
    name: 'diagnostics reserved sub-function keeps the 2-byte shape',
    pdu: [8, ...u16(0x30), 0xab, 0xcd],
    check: (r) => expect(r.subFunction).toBe(0x30),
  },
  {
    name: 'write multiple coils, 10 coils in 2 bytes (MB §6.11 example)',
    pdu: [15, ...u16(19), ...u16(10), 2, 0xcd, 0x01],
    check: (r) => {
      expect(r.write).toEqual({ start: 19, end: 28 });
      expect(r.values).toMatchObject({ encoding: 'bit', count: 10, min: 0, max: 1 });
    },
  },
  {
    name: 'write multiple coils, 1968 coils all ON (maximum)',
    pdu: [15, ...u16(0), ...u16(1968), 246, ...Array<number>(246).fill(0xff)],
    check: (r) => expect(r.values).toMatchObject({ count: 1968, min: 1, max: 1 }),
  },
  {
    name: 'write multiple coils ignores padding bits past the quantity',
    pdu: [15, ...u16(0), ...u16(3), 1, 0xf8],
    check: (r) => expect(r.values).toMatchObject({ count: 3, min: 0, max: 0 }),
  },
  {
    name: 'write multiple registers, 2 registers (MB §6.12 example)',
    pdu: [16, ...u16(1), ...u16(2), 4, ...regs(0x000a, 0x0102)],
    check: (r) => {
      expect(r.write).toEqual({ start: 1, end: 2 });
      expect(r.values).toMatchObject({ encoding: 'word', count: 2, min: 10, max: 258 });
    },
  },
  {
    name: 'write multiple registers, 123 registers (maximum)',
    pdu: [16, ...u16(100), ...u16(123), 246, ...regs(...Array.from({ length: 123 }, (_, i) => i * 3))],
    check: (r) => expect(r.values).toMatchObject({ count: 123, min: 0, max: 366 }),
  },
  {
    name: 'read file record, two sub-requests (MB §6.14 example)',
    pdu: [20, 14, 6, ...u16(4), ...u16(1), ...u16(2), 6, ...u16(3), ...u16(9), ...u16(2)],
    check: (r) => {
      expect(r.files).toEqual([
        { file: 4, record: 1, count: 2 },
        { file: 3, record: 9, count: 2 },
      ]);
      expect([r.opaque, r.read, r.values]).toEqual([true, null, null]);
    },
  },
  {
    name: 'write file record (MB §6.15 example)',
    pdu: [21, 13, 6, ...u16(4), ...u16(7), ...u16(3), ...regs(0x06af, 0x04be, 0x100d)],
    check: (r) => {
      expect(r.files).toEqual([{ file: 4, record: 7, count: 3 }]);
      expect(r.values).toMatchObject({ encoding: 'word', count: 3, min: 0x04be, max: 0x100d, data: null });
    },
  },
  {
    name: 'mask write register (MB §6.16 example): result bounded by or&~and .. (or&~and)|and',
    pdu: [22, ...u16(4), ...u16(0x00f2), ...u16(0x0025)],
    check: (r) => {
      expect(r.write).toEqual({ start: 4, end: 4 });
      expect(r.values).toMatchObject({ encoding: 'mask', min: 0x0005, max: 0x00f7 });
      // The spec's worked example (current 0x12 → 0x17) lies inside those bounds.
      const result = (0x12 & 0x00f2) | (0x0025 & ~0x00f2 & 0xffff);
      expect(result).toBe(0x17);
    },
  },
  {
    name: 'read/write multiple registers: both ranges (MB §6.17 example)',
    pdu: [23, ...u16(3), ...u16(6), ...u16(14), ...u16(3), 6, ...regs(0xff, 0xff, 0xff)],
    check: (r) => {
      expect(r.read).toEqual({ start: 3, end: 8 });
      expect(r.write).toEqual({ start: 14, end: 16 });
      expect(r.values).toMatchObject({ count: 3, min: 0xff, max: 0xff });
    },
  },
  {
    name: 'read/write multiple registers, 125 read and 121 written (maxima)',
    pdu: [23, ...u16(0), ...u16(125), ...u16(0), ...u16(121), 242, ...Array<number>(242).fill(0)],
    check: (r) => expect(r.write).toEqual({ start: 0, end: 120 }),
  },
  {
    name: 'read FIFO queue',
    pdu: [24, ...u16(0x04de)],
    check: (r) => expect(r.read).toEqual({ start: 0x04de, end: 0x04de }),
  },
  {
    name: 'read device identification (43/14)',
    pdu: [43, 14, 1, 0],
    check: (r) => expect([r.subFunction, r.opaque, r.known]).toEqual([14, false, true]),
  },
  {
    name: 'CANopen general reference (43/13) is known but opaque',
    pdu: [43, 13, 0, 1, 2, 3],
    check: (r) => expect([r.subFunction, r.opaque, r.known]).toEqual([13, true, true]),
  },
  {
    name: 'reserved MEI type is an unknown, opaque frame',
    pdu: [43, 5, 9],
    check: (r) => expect([r.subFunction, r.opaque, r.known]).toEqual([5, true, false]),
  },
  {
    name: 'user-defined function 65 is an unknown, opaque frame',
    pdu: [65, 1, 2, 3],
    check: (r) => expect([r.function, r.known, r.opaque, r.read]).toEqual([65, false, true, null]),
  },
  {
    name: 'unassigned function 127 is an unknown frame',
    pdu: [127],
    check: (r) => expect([r.function, r.known]).toEqual([127, false]),
  },
];

/** Invalid requests, named after the fault; `code` is the parser's stable code for it. */
const INVALID: { name: string; pdu: number[]; code: string }[] = [
  { name: 'function code 0', pdu: [0, 1, 2], code: 'pdu.function-zero' },
  {
    name: 'exception bit set in a request',
    pdu: [0x83, ...u16(0), ...u16(1)],
    code: 'pdu.function-exception-bit',
  },
  { name: 'function 255 in a request', pdu: [0xff], code: 'pdu.function-exception-bit' },
  { name: 'read coils quantity 0', pdu: [1, ...u16(0), ...u16(0)], code: 'pdu.quantity' },
  { name: 'read coils quantity 2001', pdu: [1, ...u16(0), ...u16(2001)], code: 'pdu.quantity' },
  { name: 'read discrete inputs quantity 2001', pdu: [2, ...u16(0), ...u16(2001)], code: 'pdu.quantity' },
  { name: 'read holding registers quantity 126', pdu: [3, ...u16(0), ...u16(126)], code: 'pdu.quantity' },
  { name: 'read input registers quantity 0', pdu: [4, ...u16(0), ...u16(0)], code: 'pdu.quantity' },
  {
    name: 'read holding registers past 65535',
    pdu: [3, ...u16(65535), ...u16(2)],
    code: 'pdu.address-overflow',
  },
  { name: 'read coils past 65535', pdu: [1, ...u16(64000), ...u16(2000)], code: 'pdu.address-overflow' },
  { name: 'read coils PDU too short', pdu: [1, 0, 0, 0], code: 'pdu.length' },
  { name: 'read coils trailing byte', pdu: [1, ...u16(0), ...u16(1), 0], code: 'pdu.length' },
  { name: 'write single coil value 0x0001', pdu: [5, ...u16(0), ...u16(1)], code: 'pdu.coil-value' },
  { name: 'write single coil value 0x00FF', pdu: [5, ...u16(0), 0x00, 0xff], code: 'pdu.coil-value' },
  { name: 'write single register too short', pdu: [6, ...u16(0), 1], code: 'pdu.length' },
  { name: 'read exception status with data', pdu: [7, 0], code: 'pdu.length' },
  { name: 'report server id with data', pdu: [17, 0, 0], code: 'pdu.length' },
  { name: 'diagnostics without sub-function', pdu: [8, 0], code: 'pdu.length' },
  { name: 'diagnostics return query data of odd length', pdu: [8, ...u16(0), 1], code: 'pdu.length' },
  {
    name: 'diagnostics restart with data 0x1234',
    pdu: [8, ...u16(1), 0x12, 0x34],
    code: 'pdu.diagnostic-data',
  },
  {
    name: 'diagnostics clear counters with data 1',
    pdu: [8, ...u16(0x0a), 0, 1],
    code: 'pdu.diagnostic-data',
  },
  {
    name: 'diagnostics delimiter with low byte set',
    pdu: [8, ...u16(3), 0x0a, 1],
    code: 'pdu.diagnostic-data',
  },
  { name: 'diagnostics listen-only with 4 data bytes', pdu: [8, ...u16(4), 0, 0, 0, 0], code: 'pdu.length' },
  { name: 'write multiple coils quantity 0', pdu: [15, ...u16(0), ...u16(0), 0], code: 'pdu.quantity' },
  {
    name: 'write multiple coils quantity 1969',
    pdu: [15, ...u16(0), ...u16(1969), 247, ...Array<number>(247).fill(0)],
    code: 'pdu.quantity',
  },
  {
    name: 'write multiple coils byte count smaller than quantity needs',
    pdu: [15, ...u16(0), ...u16(10), 1, 0xff],
    code: 'pdu.byte-count',
  },
  {
    name: 'write multiple coils byte count larger than quantity needs',
    pdu: [15, ...u16(0), ...u16(8), 2, 0xff, 0xff],
    code: 'pdu.byte-count',
  },
  {
    name: 'write multiple coils PDU longer than byte count',
    pdu: [15, ...u16(0), ...u16(8), 1, 0xff, 0x00],
    code: 'pdu.length',
  },
  {
    name: 'write multiple coils PDU shorter than byte count',
    pdu: [15, ...u16(0), ...u16(9), 2, 0xff],
    code: 'pdu.length',
  },
  { name: 'write multiple coils header truncated', pdu: [15, ...u16(0), ...u16(9)], code: 'pdu.length' },
  {
    name: 'write multiple coils past 65535',
    pdu: [15, ...u16(65530), ...u16(16), 2, 0, 0],
    code: 'pdu.address-overflow',
  },
  {
    name: 'write multiple registers quantity 124',
    pdu: [16, ...u16(0), ...u16(124), 248, ...Array<number>(100).fill(0)],
    code: 'pdu.quantity',
  },
  {
    name: 'write multiple registers odd byte count',
    pdu: [16, ...u16(0), ...u16(1), 3, 0, 0, 0],
    code: 'pdu.byte-count',
  },
  {
    name: 'write multiple registers PDU shorter than byte count',
    pdu: [16, ...u16(0), ...u16(2), 4, 0, 0, 0],
    code: 'pdu.length',
  },
  {
    name: 'write multiple registers past 65535',
    pdu: [16, ...u16(65535), ...u16(2), 4, 0, 0, 0, 0],
    code: 'pdu.address-overflow',
  },
  {
    name: 'read file record byte count not a multiple of 7',
    pdu: [20, 8, 6, 0, 1, 0, 0, 0, 1, 0],
    code: 'pdu.byte-count',
  },
  { name: 'read file record byte count 0', pdu: [20, 0], code: 'pdu.byte-count' },
  {
    name: 'read file record PDU longer than byte count',
    pdu: [20, 7, 6, ...u16(1), ...u16(0), ...u16(1), 0],
    code: 'pdu.length',
  },
  {
    name: 'read file record reference type 5',
    pdu: [20, 7, 5, ...u16(1), ...u16(0), ...u16(1)],
    code: 'pdu.file-reference-type',
  },
  {
    name: 'read file record file number 0',
    pdu: [20, 7, 6, ...u16(0), ...u16(0), ...u16(1)],
    code: 'pdu.file-number',
  },
  {
    name: 'read file record record number 10000',
    pdu: [20, 7, 6, ...u16(1), ...u16(10000), ...u16(1)],
    code: 'pdu.record-number',
  },
  {
    name: 'read file record record length 0',
    pdu: [20, 7, 6, ...u16(1), ...u16(0), ...u16(0)],
    code: 'pdu.quantity',
  },
  {
    name: 'read file record asking more than a 253-byte response',
    pdu: [20, 7, 6, ...u16(1), ...u16(0), ...u16(125)],
    code: 'pdu.response-too-long',
  },
  {
    name: 'write file record data length 8',
    pdu: [21, 8, 6, ...u16(1), ...u16(0), ...u16(0), 0],
    code: 'pdu.byte-count',
  },
  {
    name: 'write file record data runs past the data length',
    pdu: [21, 9, 6, ...u16(1), ...u16(0), ...u16(2), ...u16(7)],
    code: 'pdu.byte-count',
  },
  {
    name: 'write file record truncated second sub-request',
    pdu: [21, 12, 6, ...u16(1), ...u16(0), ...u16(1), ...u16(7), 6, 0, 1],
    code: 'pdu.byte-count',
  },
  {
    name: 'write file record record length 0',
    pdu: [21, 9, 6, ...u16(1), ...u16(0), ...u16(0), 0, 0],
    code: 'pdu.quantity',
  },
  { name: 'mask write register too short', pdu: [22, ...u16(4), ...u16(0xf2), 0], code: 'pdu.length' },
  {
    name: 'read/write multiple registers read quantity 126',
    pdu: [23, ...u16(0), ...u16(126), ...u16(0), ...u16(1), 2, 0, 0],
    code: 'pdu.quantity',
  },
  {
    name: 'read/write multiple registers write quantity 122',
    pdu: [23, ...u16(0), ...u16(1), ...u16(0), ...u16(122), 244, ...Array<number>(200).fill(0)],
    code: 'pdu.quantity',
  },
  {
    name: 'read/write multiple registers byte count mismatch',
    pdu: [23, ...u16(0), ...u16(1), ...u16(0), ...u16(2), 2, 0, 0],
    code: 'pdu.byte-count',
  },
  {
    name: 'read/write multiple registers write past 65535',
    pdu: [23, ...u16(0), ...u16(1), ...u16(65535), ...u16(2), 4, 0, 0, 0, 0],
    code: 'pdu.address-overflow',
  },
  {
    name: 'read/write multiple registers header truncated',
    pdu: [23, ...u16(0), ...u16(1), 0],
    code: 'pdu.length',
  },
  { name: 'read FIFO queue with an extra byte', pdu: [24, ...u16(1), 0], code: 'pdu.length' },
  { name: 'encapsulated interface without MEI type', pdu: [43], code: 'pdu.length' },
  { name: 'read device identification code 0', pdu: [43, 14, 0, 0], code: 'pdu.device-id-code' },
  { name: 'read device identification code 5', pdu: [43, 14, 5, 0], code: 'pdu.device-id-code' },
  { name: 'read device identification with an extra byte', pdu: [43, 14, 1, 0, 0], code: 'pdu.length' },
];

describe('request PDUs: valid frames', () => {
  it.each(VALID)('$name', ({ pdu, check }) => {
    const buf = encodeAdu(0x1234, 17, pdu);
    const r = parseRequest(buf);
    if (r.kind !== 'frame') throw new Error(`expected a frame, got ${JSON.stringify(r)}`);
    expect(r.consumed).toBe(buf.length);
    expect(r.frame.transactionId).toBe(0x1234);
    expect(r.frame.unitId).toBe(17);
    expect(r.frame.function).toBe(pdu[0]);
    expect(r.frame.adu).toEqual(buf);
    expect(r.frame.pdu).toEqual(Buffer.from(pdu));
    check(r.frame);
  });
});

describe('request PDUs: invalid frames, named after the fault', () => {
  it.each(INVALID)('$name → $code', ({ pdu, code }) => {
    const r = parseRequest(encodeAdu(1, 1, pdu));
    expect(r.kind).toBe('invalid');
    if (r.kind === 'invalid') {
      expect(r.code).toBe(code);
      expect(r.reason.length).toBeGreaterThan(0);
    }
  });

  it('every invalid case would be a valid MBAP frame, so the fault is in the PDU', () => {
    for (const { pdu } of INVALID) expect(pdu.length).toBeLessThanOrEqual(253);
  });
});

describe('parsing does not copy', () => {
  it('the request views the caller buffer', () => {
    const buf = encodeAdu(1, 1, [16, ...u16(1), ...u16(1), 2, 0, 5]);
    const r = parseRequest(buf);
    if (r.kind !== 'frame') throw new Error('expected a frame');
    expect(r.frame.adu.buffer).toBe(buf.buffer);
    expect(r.frame.values?.data?.buffer).toBe(buf.buffer);
  });
});
