/**
 * Line diff for the policy editor and the audit page: Myers' O((N+M)·D) algorithm, where D is the number of
 * changed lines. The common prefix and suffix are trimmed first. Memory grows with D² only (one frontier per
 * edit step), and D is capped at MAX_EDITS: beyond that the middle is shown as a plain replace. The cap keeps
 * one request at a few MB at most whatever the input (the old quadratic table reached 36 MB), so parallel
 * requests cannot push the UI process to its memory limit.
 */
export interface DiffLine {
  op: ' ' | '+' | '-';
  text: string;
}

/** Edit steps explored at most: Σ(2d+1)·4 bytes ≈ 4 MB of frontiers at the cap. */
export const MAX_EDITS = 1000;

export function lineDiff(oldText: string, newText: string): DiffLine[] {
  const a = oldText.split('\n');
  const b = newText.split('\n');
  let pre = 0;
  while (pre < a.length && pre < b.length && a[pre] === b[pre]) pre++;
  let suf = 0;
  while (suf < a.length - pre && suf < b.length - pre && a[a.length - 1 - suf] === b[b.length - 1 - suf])
    suf++;
  const out: DiffLine[] = a.slice(0, pre).map((text) => ({ op: ' ', text }));
  const am = a.slice(pre, a.length - suf);
  const bm = b.slice(pre, b.length - suf);
  const mid = myers(am, bm, MAX_EDITS);
  if (mid === undefined) {
    for (const text of am) out.push({ op: '-', text });
    for (const text of bm) out.push({ op: '+', text });
  } else {
    out.push(...mid);
  }
  for (const text of a.slice(a.length - suf)) out.push({ op: ' ', text });
  return out;
}

/** The shortest edit script from a to b, or undefined when it needs more than maxD edits. */
function myers(a: string[], b: string[], maxD: number): DiffLine[] | undefined {
  const n = a.length;
  const m = b.length;
  if (n === 0 && m === 0) return [];
  // trace[d][k + d] = furthest x on diagonal k after d edits.
  const trace: Int32Array[] = [];
  let prev = new Int32Array(1);
  let found = -1;
  for (let d = 0; d <= Math.min(maxD, n + m); d++) {
    const v = new Int32Array(2 * d + 1);
    for (let k = -d; k <= d; k += 2) {
      let x: number;
      // prev is indexed k + (d - 1).
      if (d === 0) x = 0;
      else if (k === -d || (k !== d && (prev[k - 1 + d - 1] ?? 0) < (prev[k + 1 + d - 1] ?? 0)))
        x = prev[k + 1 + d - 1] ?? 0; // down: an insertion
      else x = (prev[k - 1 + d - 1] ?? 0) + 1; // right: a deletion
      let y = x - k;
      while (x < n && y < m && a[x] === b[y]) {
        x++;
        y++;
      }
      v[k + d] = x;
      if (x >= n && y >= m) {
        found = d;
        break;
      }
    }
    trace.push(v);
    prev = v;
    if (found >= 0) break;
  }
  if (found < 0) return undefined;
  // Walk back from (n, m) through the frontiers.
  const rev: DiffLine[] = [];
  let x = n;
  let y = m;
  for (let d = found; d > 0; d--) {
    const p = trace[d - 1] as Int32Array;
    const k = x - y;
    const down = k === -d || (k !== d && (p[k - 1 + d - 1] ?? 0) < (p[k + 1 + d - 1] ?? 0));
    const pk = down ? k + 1 : k - 1;
    const px = p[pk + d - 1] ?? 0;
    const py = px - pk;
    // The edit lands at (sx, sy); the rest up to (x, y) is a run of equal lines.
    const sx = down ? px : px + 1;
    const sy = down ? py + 1 : py;
    while (x > sx && y > sy) {
      rev.push({ op: ' ', text: a[--x] as string });
      y--;
    }
    if (down) rev.push({ op: '+', text: b[--y] as string });
    else rev.push({ op: '-', text: a[--x] as string });
  }
  while (x > 0 && y > 0) {
    rev.push({ op: ' ', text: a[--x] as string });
    y--;
  }
  return rev.reverse();
}
