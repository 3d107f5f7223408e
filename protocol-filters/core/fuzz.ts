/**
 * Test support shared by the protocol filters' property runs (modbus/fuzz.test.ts, opcua/fuzz.test.ts):
 * a seeded PRNG and a frame mutator, so both filters are fuzzed the same way and a failure is reproducible
 * from its seed and iteration. Not used at run time.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** xorshift32: fast, seeded, good enough to pick mutations. */
export function prng(seed: number): () => number {
  let s = seed || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/** A callable gc() for heap measurements, or null when V8 refuses to expose it. */
export function getGc(): (() => void) | null {
  try {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('gc');
    return typeof gc === 'function' ? () => void gc() : null;
  } catch {
    return null;
  }
}

export interface MutatorOptions {
  /** Bytes worth planting: type letters, flag values, 0x7f/0x80 edges. */
  boundaryBytes: readonly number[];
  /** Values worth planting into the protocol's integer fields (quantities, sizes, counts). */
  boundaryWords: readonly number[];
  /** Width and byte order of those fields: Modbus is big-endian 16-bit, OPC UA little-endian 32-bit. */
  word: 'u16be' | 'u32le';
  /** Where planted words may start: Modbus skips its MBAP header, OPC UA anywhere. */
  wordStart: (len: number, x: number) => number;
  /** Most random bytes appended at once. */
  maxAppend: number;
}

/**
 * Copies a seed frame into `scratch` and applies 1–3 mutations (bit flip, boundary byte, boundary word,
 * truncation, appended garbage, random byte). Returns the length of the mutated frame in `scratch`.
 */
export function mutateInto(scratch: Buffer, seed: Buffer, rnd: () => number, o: MutatorOptions): number {
  let len = seed.copy(scratch, 0);
  const mutations = 1 + (rnd() % 3);
  for (let m = 0; m < mutations; m++) {
    const x = rnd();
    const at = (x >>> 8) % Math.max(len, 1);
    switch (x & 7) {
      case 0:
        scratch[at] = (scratch[at] ?? 0) ^ (1 << ((x >>> 4) & 7));
        break;
      case 1:
        scratch[at] = o.boundaryBytes[(x >>> 4) % o.boundaryBytes.length] ?? 0;
        break;
      case 2:
      case 3: {
        const word = o.boundaryWords[(x >>> 4) % o.boundaryWords.length] ?? 0;
        const pos = o.wordStart(len, x);
        if (o.word === 'u16be') {
          if (pos + 1 < len) scratch.writeUInt16BE(word & 0xffff, pos);
        } else if (pos + 4 <= len) scratch.writeUInt32LE(word >>> 0, pos);
        break;
      }
      case 4:
        len = (x >>> 8) % (len + 1);
        break;
      case 5: {
        const extra = 1 + ((x >>> 8) % o.maxAppend);
        for (let k = 0; k < extra && len < scratch.length; k++) scratch[len++] = rnd() & 0xff;
        break;
      }
      default:
        scratch[at] = rnd() & 0xff;
    }
  }
  return len;
}

/**
 * Heap growth since `baseline` after a forced GC, printed with the run's outcome counts, and the bound it must
 * stay under: 4 MB with a GC hook, a loose 64 MB without one (the heap then still holds garbage).
 */
export function heapReport(
  name: string,
  seed: number,
  iterations: number,
  counts: object,
  gc: (() => void) | null,
  baseline: number,
): { growth: number; bound: number } {
  gc?.();
  const growth = process.memoryUsage().heapUsed - baseline;
  console.log(
    `${name} fuzz: seed ${seed}, ${iterations} frames, ${JSON.stringify(counts)}, heap growth ${(growth / 1e6).toFixed(2)} MB` +
      (gc === null ? ' (no gc hook: loose bound)' : ''),
  );
  return { growth, bound: gc === null ? 64e6 : 4e6 };
}
