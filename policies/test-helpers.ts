/** Helpers shared by the policies unit tests (not used by the product). */

/** 1-based line/column of the n-th occurrence (from 1) of `needle` in `text`. */
export function posOf(text: string, needle: string, n = 1): { line: number; column: number } {
  let i = -1;
  for (let k = 0; k < n; k++) i = text.indexOf(needle, i + 1);
  if (i < 0) throw new Error(`test setup: ${needle} not in text`);
  const before = text.slice(0, i);
  return { line: before.split('\n').length, column: i - before.lastIndexOf('\n') };
}
