/**
 * IPv4/IPv6 address and CIDR parsing, canonicalisation and containment — pure and strict.
 *
 * Strict because these strings end up in nft sets: only plain dotted quads (no leading zeros, which some
 * parsers read as octal), RFC 4291 IPv6 text (with an optional trailing dotted quad), no zone ids (`%eth0`),
 * and a decimal prefix length. Canonical output is what nft prints back: host bits zero, always a prefix,
 * IPv6 lower case with the longest zero run compressed (RFC 5952).
 */
import type { Cidr, IpFamily } from './types.ts';

export interface IpAddress {
  family: IpFamily;
  value: bigint;
}

const BITS: Record<IpFamily, number> = { 4: 32, 6: 128 };

function parseIpv4(text: string): bigint | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0n;
  for (const part of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    value = (value << 8n) | BigInt(n);
  }
  return value;
}

function parseIpv6(text: string): bigint | undefined {
  if (text.length > 45 || !/^[0-9A-Fa-f:.]+$/.test(text)) return undefined;
  let head = text;
  let tail4: bigint | undefined;
  // An embedded IPv4 address may only be the last 32 bits.
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.')) {
    tail4 = parseIpv4(text.slice(lastColon + 1));
    if (tail4 === undefined) return undefined;
    head = text.slice(0, lastColon + 1);
    // `::1.2.3.4` leaves `::`; `a:b:c:d:e:f:1.2.3.4` leaves `a:…:f:` — give the trailing colon a group.
    head = head.endsWith('::') ? head : head.slice(0, -1);
  }
  const groupsWanted = tail4 === undefined ? 8 : 6;
  const doubles = head.split('::').length - 1;
  if (doubles > 1) return undefined;
  const parseGroups = (s: string): number[] | undefined => {
    if (s === '') return [];
    const out: number[] = [];
    for (const g of s.split(':')) {
      if (!/^[0-9A-Fa-f]{1,4}$/.test(g)) return undefined;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  let groups: number[];
  if (doubles === 1) {
    const [l, r] = head.split('::') as [string, string];
    const left = parseGroups(l);
    const right = parseGroups(r);
    if (left === undefined || right === undefined) return undefined;
    const missing = groupsWanted - left.length - right.length;
    if (missing < 1) return undefined;
    groups = [...left, ...(new Array(missing).fill(0) as number[]), ...right];
  } else {
    const all = parseGroups(head);
    if (all === undefined || all.length !== groupsWanted) return undefined;
    groups = all;
  }
  let value = 0n;
  for (const g of groups) value = (value << 16n) | BigInt(g);
  if (tail4 !== undefined) value = (value << 32n) | tail4;
  return value;
}

/** Parses a bare address (no prefix). */
export function parseIp(text: string): IpAddress | undefined {
  if (typeof text !== 'string') return undefined;
  if (text.includes(':')) {
    const v = parseIpv6(text);
    return v === undefined ? undefined : { family: 6, value: v };
  }
  const v = parseIpv4(text);
  return v === undefined ? undefined : { family: 4, value: v };
}

export function formatIp(family: IpFamily, value: bigint): string {
  if (family === 4) {
    return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 255n)).join('.');
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: compress the longest run (≥ 2) of zero groups, the first one on a tie.
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestLen < 2) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

export interface ParsedCidr {
  cidr: Cidr;
  /** True when the text had bits set below the prefix (they were cleared). */
  hostBitsSet: boolean;
}

function mask(family: IpFamily, prefix: number): bigint {
  const bits = BigInt(BITS[family]);
  return ((1n << bits) - 1n) ^ ((1n << (bits - BigInt(prefix))) - 1n);
}

/** Parses `addr` or `addr/prefix`; a bare address becomes a host CIDR (/32 or /128). */
export function parseCidr(text: string): ParsedCidr | undefined {
  if (typeof text !== 'string' || text.length > 64) return undefined;
  const slash = text.indexOf('/');
  const addrText = slash < 0 ? text : text.slice(0, slash);
  const ip = parseIp(addrText);
  if (ip === undefined) return undefined;
  let prefix = BITS[ip.family];
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    prefix = Number(p);
    if (prefix > BITS[ip.family]) return undefined;
  }
  const network = ip.value & mask(ip.family, prefix);
  const address = formatIp(ip.family, network);
  return {
    cidr: { family: ip.family, text: `${address}/${prefix}`, address, prefix },
    hostBitsSet: network !== ip.value,
  };
}

/** Numeric network address of a canonical Cidr (as produced by parseCidr). */
export function cidrValue(c: Cidr): bigint {
  return parseIp(c.address)?.value ?? 0n;
}

/** True when `inner` lies entirely inside `outer`. */
export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  if (outer.family !== inner.family || outer.prefix > inner.prefix) return false;
  return (cidrValue(inner) & mask(inner.family, outer.prefix)) === cidrValue(outer);
}

/** True when the two CIDRs share at least one address. */
export function cidrOverlaps(a: Cidr, b: Cidr): boolean {
  return cidrContains(a, b) || cidrContains(b, a);
}

export function isHostCidr(c: Cidr): boolean {
  return c.prefix === BITS[c.family];
}

export function compareCidr(a: Cidr, b: Cidr): number {
  if (a.family !== b.family) return a.family - b.family;
  const va = cidrValue(a);
  const vb = cidrValue(b);
  if (va !== vb) return va < vb ? -1 : 1;
  return a.prefix - b.prefix;
}

/**
 * Sorted, de-duplicated set of CIDRs with every entry that another entry contains removed: the same
 * addresses, and a list nft interval sets accept (they refuse overlapping elements).
 */
export function normaliseCidrSet(list: readonly Cidr[]): Cidr[] {
  const sorted = [...list].sort((a, b) => a.family - b.family || a.prefix - b.prefix);
  const kept: Cidr[] = [];
  for (const c of sorted) {
    if (!kept.some((k) => cidrContains(k, c))) kept.push(c);
  }
  return kept.sort(compareCidr);
}

/** The first and last address of a CIDR as numbers. */
export function cidrInterval(c: Cidr): { start: bigint; end: bigint } {
  const start = cidrValue(c);
  return { start, end: start + (1n << BigInt(BITS[c.family] - c.prefix)) - 1n };
}

export interface CidrOverlap<T extends { cidr: Cidr; owner: string }> {
  /** The later (or narrower) entry, where the problem is reported. */
  inner: T;
  /** An entry of another owner that contains `inner`. */
  outer: T;
}

/**
 * Entries whose CIDR overlaps a CIDR of a different owner, in O(n log n): two CIDRs either nest or are
 * disjoint, so after sorting by start address (wider first) the entries containing the current one are
 * exactly the stack of those whose range has not ended yet.
 */
export function findCidrOverlaps<T extends { cidr: Cidr; owner: string }>(
  items: readonly T[],
): CidrOverlap<T>[] {
  const withRange = items.map((item, index) => ({ item, index, ...cidrInterval(item.cidr) }));
  withRange.sort(
    (a, b) =>
      a.item.cidr.family - b.item.cidr.family ||
      (a.start < b.start ? -1 : a.start > b.start ? 1 : 0) ||
      a.item.cidr.prefix - b.item.cidr.prefix ||
      a.index - b.index,
  );
  const out: CidrOverlap<T>[] = [];
  let stack: typeof withRange = [];
  let family = 0;
  for (const cur of withRange) {
    if (cur.item.cidr.family !== family) {
      stack = [];
      family = cur.item.cidr.family;
    }
    while (stack.length > 0 && (stack[stack.length - 1]?.end ?? -1n) < cur.start) stack.pop();
    const other = [...stack].reverse().find((s) => s.item.owner !== cur.item.owner);
    if (other !== undefined) out.push({ inner: cur.item, outer: other.item });
    stack.push(cur);
  }
  return out;
}
