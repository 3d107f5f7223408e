/**
 * Line diff (longest common subsequence) for the policy editor: policies are a few hundred lines, so the
 * quadratic table is small; above LIMIT lines the common prefix/suffix are trimmed first and a plain
 * replace is shown for what remains, keeping the cost bounded.
 */
export interface DiffLine {
  op: ' ' | '+' | '-';
  text: string;
}

const LIMIT = 3000;

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
  if (am.length * bm.length > LIMIT * LIMIT) {
    for (const text of am) out.push({ op: '-', text });
    for (const text of bm) out.push({ op: '+', text });
  } else {
    const n = am.length;
    const m = bm.length;
    // lcs[i][j] = LCS length of am[i..] and bm[j..], in one flat array.
    const lcs = new Uint32Array((n + 1) * (m + 1));
    for (let i = n - 1; i >= 0; i--)
      for (let j = m - 1; j >= 0; j--)
        lcs[i * (m + 1) + j] =
          am[i] === bm[j]
            ? (lcs[(i + 1) * (m + 1) + j + 1] ?? 0) + 1
            : Math.max(lcs[(i + 1) * (m + 1) + j] ?? 0, lcs[i * (m + 1) + j + 1] ?? 0);
    let i = 0;
    let j = 0;
    while (i < n && j < m) {
      if (am[i] === bm[j]) {
        out.push({ op: ' ', text: am[i] as string });
        i++;
        j++;
      } else if ((lcs[(i + 1) * (m + 1) + j] ?? 0) >= (lcs[i * (m + 1) + j + 1] ?? 0)) {
        out.push({ op: '-', text: am[i++] as string });
      } else {
        out.push({ op: '+', text: bm[j++] as string });
      }
    }
    while (i < n) out.push({ op: '-', text: am[i++] as string });
    while (j < m) out.push({ op: '+', text: bm[j++] as string });
  }
  for (const text of a.slice(a.length - suf)) out.push({ op: ' ', text });
  return out;
}
