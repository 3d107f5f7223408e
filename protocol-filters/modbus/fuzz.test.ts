/**
 * Property run over 1,000,000 random and mutated frames: the parsers, the stream decoder and the decision never
 * throw, every result keeps its invariants, and the heap does not grow. Frames are made by mutating valid
 * ones with a seeded PRNG in a plain loop (cheap and reproducible: a failure prints its seed and iteration).
 */
import { describe, it, expect } from 'vitest';
import { getGc, heapReport, mutateInto, prng, type MutatorOptions } from '../core/fuzz.ts';
import { decideRequest } from './decide.ts';
import { describeRequest } from './describe.ts';
import { encodeAdu, u16 } from './frames.ts';
import { MAX_ADU_LENGTH, ModbusStreamDecoder } from './mbap.ts';
import { parseRequest, parseRequestAdu } from './pdu.ts';
import { parseResponse } from './response.ts';
import type { ModbusRequest, ParseResult } from './types.ts';
import type { ModbusSpec } from '../../policies/types.ts';

const ITERATIONS = 1_000_000;
const SEED = Number(process.env.MODBUS_FUZZ_SEED ?? 0x5eed1234) >>> 0;

const regs = (n: number, v = 1): number[] => Array.from({ length: n }, () => u16(v)).flat();

/** One valid request per function shape, boundaries included. */
const REQUESTS: number[][] = [
  [1, ...u16(0), ...u16(2000)],
  [2, ...u16(65535), ...u16(1)],
  [3, ...u16(100), ...u16(125)],
  [4, ...u16(0), ...u16(1)],
  [5, ...u16(7), 0xff, 0],
  [6, ...u16(1), ...u16(0x1234)],
  [7],
  [8, ...u16(0), 1, 2, 3, 4],
  [8, ...u16(1), 0xff, 0],
  [11],
  [12],
  [15, ...u16(19), ...u16(10), 2, 0xcd, 0x01],
  [15, ...u16(0), ...u16(1968), 246, ...Array<number>(246).fill(0x5a)],
  [16, ...u16(1), ...u16(2), 4, 0, 10, 1, 2],
  [16, ...u16(0), ...u16(123), 246, ...regs(123, 7)],
  [17],
  [20, 14, 6, ...u16(4), ...u16(1), ...u16(2), 6, ...u16(3), ...u16(9), ...u16(2)],
  [21, 13, 6, ...u16(4), ...u16(7), ...u16(3), ...regs(3, 0x06af)],
  [22, ...u16(4), ...u16(0xf2), ...u16(0x25)],
  [23, ...u16(3), ...u16(6), ...u16(14), ...u16(3), 6, ...regs(3, 0xff)],
  [24, ...u16(0x04de)],
  [43, 14, 1, 0],
  [43, 13, 1, 2, 3],
  [65, 1, 2, 3],
];

/** [request, response] pairs for the response parser. */
const PAIRS: [number[], number[]][] = [
  [
    [3, ...u16(100), ...u16(2)],
    [3, 4, 0, 1, 0, 2],
  ],
  [
    [1, ...u16(0), ...u16(10)],
    [1, 2, 0xff, 3],
  ],
  [
    [6, ...u16(1), ...u16(3)],
    [6, ...u16(1), ...u16(3)],
  ],
  [
    [15, ...u16(19), ...u16(10), 2, 0xcd, 0x01],
    [15, ...u16(19), ...u16(10)],
  ],
  [
    [8, ...u16(0), 1, 2],
    [8, ...u16(0), 1, 2],
  ],
  [[12], [12, 8, 0, 0, 1, 8, 1, 0x21, 0x20, 0]],
  [[17], [17, 3, 0x42, 0xff, 1]],
  [
    [20, 14, 6, ...u16(4), ...u16(1), ...u16(2), 6, ...u16(3), ...u16(9), ...u16(2)],
    [20, 12, 5, 6, 0x0d, 0xfe, 0, 0x20, 5, 6, 0x33, 0xcd, 0, 0x40],
  ],
  [
    [23, ...u16(3), ...u16(2), ...u16(14), ...u16(1), 2, 0, 1],
    [23, 4, 0, 0xfe, 0x0a, 0xcd],
  ],
  [
    [24, ...u16(1)],
    [24, ...u16(6), ...u16(2), 1, 2, 3, 4],
  ],
  [
    [43, 14, 1, 0],
    [43, 14, 1, 1, 0, 0, 2, 0, 3, 0x41, 0x42, 0x43, 1, 1, 0x58],
  ],
  [
    [3, ...u16(0), ...u16(1)],
    [0x83, 2],
  ],
];

const SPEC: ModbusSpec = {
  unitIds: [0, 1, 2, 17, 255],
  rules: [
    { functions: [1, 2, 3, 4, 24], addresses: [{ start: 0, end: 999 }] },
    {
      functions: [5, 6, 15, 16, 22, 23],
      addresses: [{ start: 0, end: 199 }],
      values: { start: 0, end: 1000 },
    },
    { functions: [7, 8, 11, 12, 17, 20, 21, 43, 65], addresses: null },
  ],
};

const BOUNDARY_BYTES = [0, 1, 6, 0x7f, 0x80, 0xff];
const BOUNDARY_WORDS = [
  0, 1, 2, 121, 122, 123, 124, 125, 126, 1968, 1969, 2000, 2001, 0x270f, 0xff00, 0xfffe, 0xffff,
];
const MUTATOR: MutatorOptions = {
  boundaryBytes: BOUNDARY_BYTES,
  boundaryWords: BOUNDARY_WORDS,
  word: 'u16be',
  wordStart: (len, x) => 7 + ((x >>> 12) % Math.max(len - 8, 1)),
  maxAppend: 16,
};

function checkRequest(r: ParseResult<ModbusRequest>, inputLength: number): void {
  if (r.kind === 'need-more') return;
  if (r.kind === 'invalid') {
    if (r.code.length === 0 || r.reason.length === 0) throw new Error('invalid without code or reason');
    return;
  }
  const f = r.frame;
  if (r.consumed > inputLength || r.consumed > MAX_ADU_LENGTH || r.consumed !== f.adu.length) {
    throw new Error(`consumed ${r.consumed} of ${inputLength}`);
  }
  if (f.function < 1 || f.function > 127) throw new Error(`function ${f.function}`);
  for (const range of [f.read, f.write]) {
    if (range !== null && !(range.start >= 0 && range.start <= range.end && range.end <= 0xffff)) {
      throw new Error(`range ${JSON.stringify(range)}`);
    }
  }
  const v = f.values;
  if (v !== null) {
    const top = v.encoding === 'bit' ? 1 : 0xffff;
    if (!(v.min >= 0 && v.min <= v.max && v.max <= top && v.count >= 1))
      throw new Error(`values ${v.min}..${v.max}`);
  }
}

describe('fuzz: 1,000,000 random and mutated frames', () => {
  it('never throws, keeps every invariant, and keeps memory flat', () => {
    const rnd = prng(SEED);
    const requests = REQUESTS.map((pdu, i) => encodeAdu(i, 1, pdu));
    const pairs = PAIRS.map(([q, a], i) => {
      const r = parseRequest(encodeAdu(i, 1, q));
      if (r.kind !== 'frame') throw new Error(`seed pair ${i} does not parse`);
      return { request: r.frame, response: encodeAdu(i, 1, a) };
    });
    const scratch = Buffer.alloc(600);
    const gc = getGc();
    const counts = { frame: 0, invalid: 0, 'need-more': 0, response: 0, streamFrames: 0, refused: 0 };
    let decoder = new ModbusStreamDecoder();
    let baseline = 0;
    let iteration = 0;

    /** Copies `seed` into scratch, mutates it, returns the length to use. */
    const mutate = (seed: Buffer): number => {
      const len = mutateInto(scratch, seed, rnd, MUTATOR);
      // Half the time keep the MBAP length consistent, so the PDU parser (not only framing) is exercised.
      if (rnd() & 1 && len >= 6) scratch.writeUInt16BE(Math.min(len - 6, 0xffff), 4);
      return len;
    };

    const random = (): number => {
      const len = rnd() % 300;
      for (let k = 0; k < len; k++) scratch[k] = rnd() & 0xff;
      if (len >= 6 && rnd() & 1) {
        scratch.writeUInt16BE(0, 2);
        scratch.writeUInt16BE(len - 6, 4);
      }
      return len;
    };

    try {
      for (iteration = 0; iteration < ITERATIONS; iteration++) {
        if (iteration === 50_000) {
          gc?.();
          baseline = process.memoryUsage().heapUsed;
        }
        const choice = rnd() & 15;
        if (choice < 2) {
          // Responses: mutate a consistent answer and check it against its request.
          const pair = pairs[rnd() % pairs.length];
          if (pair === undefined) continue;
          const len = mutate(pair.response);
          const r = parseResponse(scratch.subarray(0, len), pair.request);
          if (r.kind === 'frame') {
            counts.response++;
            if (r.consumed > len || r.frame.function !== pair.request.function)
              throw new Error('bad response');
          }
          continue;
        }
        const len = choice < 4 ? random() : mutate(requests[rnd() % requests.length] ?? Buffer.alloc(0));
        const view = scratch.subarray(0, len);
        const r = parseRequest(view);
        counts[r.kind]++;
        checkRequest(r, len);
        if (r.kind === 'frame') {
          const d = decideRequest(r.frame, SPEC, choice & 1 ? 'enforce' : 'monitor');
          if (d.verdict !== 'allow') counts.refused++;
          if ((iteration & 63) === 0) describeRequest(r.frame);
        }
        // The same bytes through the stream decoder, split at a random point. The decoder copies what it
        // keeps, so reusing `scratch` next iteration cannot corrupt it; the frames it returns view `scratch`
        // and are checked before it is overwritten.
        if ((iteration & 3) === 0) {
          const cut = rnd() % (len + 1);
          for (const part of [view.subarray(0, cut), view.subarray(cut)]) {
            for (const item of decoder.push(part)) {
              if (item.kind === 'frame') {
                counts.streamFrames++;
                checkRequest(parseRequestAdu(item.frame), MAX_ADU_LENGTH);
              }
            }
            if (decoder.buffered >= MAX_ADU_LENGTH)
              throw new Error(`decoder holds ${decoder.buffered} bytes`);
          }
          if (decoder.failed !== null) decoder = new ModbusStreamDecoder();
        }
      }
    } catch (err) {
      throw new Error(`seed ${SEED} iteration ${iteration}: ${String(err)}`, { cause: err });
    }

    const { growth, bound } = heapReport('modbus', SEED, ITERATIONS, counts, gc, baseline);
    // Every outcome must actually occur, or the generator is not exercising the parser.
    expect(counts.frame).toBeGreaterThan(10_000);
    expect(counts.invalid).toBeGreaterThan(10_000);
    expect(counts['need-more']).toBeGreaterThan(1_000);
    expect(counts.response).toBeGreaterThan(1_000);
    expect(counts.streamFrames).toBeGreaterThan(1_000);
    expect(counts.refused).toBeGreaterThan(1_000);
    // Flat memory: after a forced GC, nothing the run made is retained (loose bound without a GC hook).
    expect(growth).toBeLessThan(bound);
  });
});
