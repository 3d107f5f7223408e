/**
 * Integer ranges (ports, Modbus addresses): shared by validation, which normalises what the policy wrote, and
 * the compiler, which re-merges defensively before rendering interval sets.
 */
import type { Range } from './types.ts';

/** Sorted, with overlapping and adjacent ranges merged (nft interval sets refuse overlaps). Never mutates `list`. */
export function mergeRanges(list: readonly Range[]): Range[] {
  const sorted = [...list].sort((a, b) => a.start - b.start || a.end - b.end);
  const out: Range[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && r.start <= last.end + 1) last.end = Math.max(last.end, r.end);
    else out.push({ ...r });
  }
  return out;
}
