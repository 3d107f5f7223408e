import { describe, it, expect } from 'vitest';
import { lineDiff, MAX_EDITS, type DiffLine } from './diff.ts';

const sides = (d: DiffLine[]) => [
  d.filter((l) => l.op !== '+').map((l) => l.text),
  d.filter((l) => l.op !== '-').map((l) => l.text),
];

function lcsLength(a: string[], b: string[]): number {
  let prev = new Array<number>(b.length + 1).fill(0);
  for (let i = a.length - 1; i >= 0; i--) {
    const cur = new Array<number>(b.length + 1).fill(0);
    for (let j = b.length - 1; j >= 0; j--)
      cur[j] = a[i] === b[j] ? (prev[j + 1] ?? 0) + 1 : Math.max(prev[j] ?? 0, cur[j + 1] ?? 0);
    prev = cur;
  }
  return prev[0] ?? 0;
}

/** Sums the bytes of every typed array created while fn runs (the diff's working memory). */
function typedBytesDuring(fn: () => void): number {
  let bytes = 0;
  const saved = { Int32Array, Uint32Array };
  const counting = <T extends typeof Int32Array | typeof Uint32Array>(C: T) =>
    new Proxy(C, {
      construct(target, args: [number]) {
        bytes += (typeof args[0] === 'number' ? args[0] : 0) * target.BYTES_PER_ELEMENT;
        return new target(...args);
      },
    });
  globalThis.Int32Array = counting(saved.Int32Array);
  globalThis.Uint32Array = counting(saved.Uint32Array);
  try {
    fn();
  } finally {
    globalThis.Int32Array = saved.Int32Array;
    globalThis.Uint32Array = saved.Uint32Array;
  }
  return bytes;
}

describe('lineDiff', () => {
  it('is a minimal diff that reproduces both texts (random cases against an LCS)', () => {
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) as number;
    for (let n = 0; n < 500; n++) {
      const gen = () => Array.from({ length: Math.floor(rnd() * 14) }, () => 'abcd'[Math.floor(rnd() * 4)]);
      const a = gen().join('\n');
      const b = gen().join('\n');
      const d = lineDiff(a, b);
      const [x, y] = sides(d);
      expect(x?.join('\n')).toBe(a);
      expect(y?.join('\n')).toBe(b);
      expect(d.filter((l) => l.op === ' ').length).toBe(lcsLength(a.split('\n'), b.split('\n')));
    }
  });

  it('keeps its memory small for large, very different texts (no quadratic table)', () => {
    const a = Array.from({ length: 3000 }, (_, i) => `a${i}`).join('\n');
    const b = Array.from({ length: 3000 }, (_, i) => (i % 50 === 0 ? `a${i}` : `b${i}`)).join('\n');
    let d: DiffLine[] = [];
    const bytes = typedBytesDuring(() => (d = lineDiff(a, b)));
    // The old LCS table was 3001² × 4 bytes = 36 MB for this input.
    expect(bytes).toBeLessThan(6 * 1024 * 1024);
    const [x, y] = sides(d);
    expect(x?.join('\n')).toBe(a);
    expect(y?.join('\n')).toBe(b);
  });

  it('finds a small change in a large text exactly', () => {
    const lines = Array.from({ length: 5000 }, (_, i) => `line ${i}`);
    const changed = [...lines];
    changed.splice(2500, 1, 'changed');
    changed.splice(100, 0, 'inserted');
    const d = lineDiff(lines.join('\n'), changed.join('\n'));
    expect(d.filter((l) => l.op !== ' ')).toEqual([
      { op: '+', text: 'inserted' },
      { op: '-', text: 'line 2500' },
      { op: '+', text: 'changed' },
    ]);
    expect(MAX_EDITS).toBeGreaterThan(100);
  });
});
