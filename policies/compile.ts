/**
 * Stage 3 "generate": a validated `Policy` → one nftables script (`table inet sluice`, replaced whole in one
 * transaction) plus the proxy plan for the DPI (modbus/opcua) flows. Pure: data in, text out; the same input
 * gives byte-identical output (every collection is sorted by name or address before it is rendered).
 *
 * Shape of the ruleset, and why:
 * - The per-packet cost must stay flat as conduits grow, so the forward chain dispatches on the zone pair with
 *   one verdict-map lookup (`iifname . oifname vmap @zone_pairs`) to one chain per conduit, and every flow
 *   matches addresses and ports through named interval sets (hash/rbtree lookups), never linear rule lists.
 * - The management anti-lockout rules are emitted first in input and output from `gateway.management`, which
 *   no conduit can touch; the fail-closed ruleset (compileFailClosed) keeps them too.
 * - Drops are logged through NFLOG (`log group`; kernel `log` is invisible from network namespaces) behind a
 *   `limit` so a flood cannot drown the log, while the drop itself is unconditional. The log prefix names
 *   verdict, conduit and reason so the daemon can trace a log line back to its conduit (parseLogPrefix).
 * - DPI flows are redirected in nat prerouting to a per-(flow, destination) local listen port through a map
 *   keyed by destination address and port; a DPI destination that was not redirected must never be forwarded
 *   around the proxy, so each conduit chain drops such packets *before* any flow can accept them.
 *
 * Injection safety: the compiler never sees free text (descriptions, rationales are not read here). Every
 * identifier, interface name, address and number that reaches the script is re-checked against a whitelist
 * and anything else throws `compile.unsafe-*`, so even a validator bug cannot smuggle nft syntax in.
 */
import { ICMP_TYPES_V4, ICMP_TYPES_V6 } from './icmp.ts';
import { normaliseCidrSet, parseCidr, parseIp } from './cidr.ts';
import { mergeRanges } from './ranges.ts';
import { SluiceError } from './errors.ts';
import { DEFAULT_COMPILE_OPTIONS, IFNAME_RE, NAME_RE } from './types.ts';
import type {
  Cidr,
  CompileOptions,
  CompileResult,
  Flow,
  IpFamily,
  LogRate,
  Management,
  Policy,
  ProxyPlan,
  ProxyPlanEntry,
  Range,
  Zone,
} from './types.ts';

export const TABLE_FAMILY = 'inet';
export const TABLE_NAME = 'sluice';

// ---------------------------------------------------------------------------------------------------------
// Log prefixes and counter names: the contract with the daemon, which reads them back.
// ---------------------------------------------------------------------------------------------------------

export type LogVerdict = 'drop' | 'would-drop';
export const LOG_REASONS = ['no-flow', 'no-conduit', 'input', 'output', 'dpi-direct', 'invalid'] as const;
export type LogReason = (typeof LOG_REASONS)[number];

export interface LogPrefixInfo {
  verdict: LogVerdict;
  /** Absent for drops that belong to no conduit (input, output, invalid, no-conduit). */
  conduit?: string;
  reason: LogReason;
}

const LOG_PREFIX_RE =
  /^sluice:(drop|would-drop):([a-z][a-z0-9-]{0,30})?:(no-flow|no-conduit|input|output|dpi-direct|invalid):$/;

/**
 * `sluice:<verdict>:<conduit>:<reason>:` — names are `[a-z0-9-]`, so `:` is a safe separator; the conduit
 * field is empty for drops outside any conduit. At most 62 bytes, well inside NFLOG's 127.
 */
export function formatLogPrefix(info: LogPrefixInfo): string {
  if (info.conduit !== undefined) assertName(info.conduit);
  const prefix = `sluice:${info.verdict}:${info.conduit ?? ''}:${info.reason}:`;
  if (!LOG_PREFIX_RE.test(prefix)) throw unsafe(`log prefix ${JSON.stringify(prefix)}`);
  return prefix;
}

/** The inverse of formatLogPrefix; undefined for prefixes Sluice did not write. Tolerates trailing blanks. */
export function parseLogPrefix(prefix: string): LogPrefixInfo | undefined {
  const m = LOG_PREFIX_RE.exec(prefix.trimEnd());
  if (m === null) return undefined;
  const info: LogPrefixInfo = { verdict: m[1] as LogVerdict, reason: m[3] as LogReason };
  if (m[2] !== undefined) info.conduit = m[2];
  return info;
}

/** Named counter of one flow. `_` never occurs in names, so the name splits back unambiguously. */
export function flowCounterName(conduit: string, flow: string): string {
  return ident('f', conduit, flow);
}

/** Named counter of the packets a conduit's default rule dropped (or, in monitor mode, would have dropped). */
export function conduitCounterName(conduit: string): string {
  return ident('x', conduit);
}

/** Named counter of drops outside any conduit, by reason (`r_input`, `r_no-conduit`, …). */
export function reasonCounterName(reason: Exclude<LogReason, 'no-flow' | 'dpi-direct'>): string {
  return `r_${reason}`;
}

export type CounterRef =
  | { kind: 'flow'; conduit: string; flow: string }
  | { kind: 'conduit'; conduit: string }
  | { kind: 'reason'; reason: LogReason };

/** Maps a counter name from `nft list counters` back to what it counts; undefined for foreign names. */
export function parseCounterName(name: string): CounterRef | undefined {
  const parts = name.split('_');
  if (
    parts[0] === 'f' &&
    parts.length === 3 &&
    NAME_RE.test(parts[1] ?? '') &&
    NAME_RE.test(parts[2] ?? '')
  ) {
    return { kind: 'flow', conduit: parts[1] as string, flow: parts[2] as string };
  }
  if (parts[0] === 'x' && parts.length === 2 && NAME_RE.test(parts[1] ?? '')) {
    return { kind: 'conduit', conduit: parts[1] as string };
  }
  if (parts[0] === 'r' && parts.length === 2 && (LOG_REASONS as readonly string[]).includes(parts[1] ?? '')) {
    return { kind: 'reason', reason: parts[1] as LogReason };
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------
// Whitelisting: everything interpolated into the script goes through one of these.
// ---------------------------------------------------------------------------------------------------------

function unsafe(what: string): SluiceError {
  // Not a user error: validation should have refused the input long before; reaching this is a bug.
  return new SluiceError('compile.unsafe-name', `refusing to put ${what} into an nftables script`, {
    userError: false,
  });
}

function assertName(name: string): string {
  if (typeof name !== 'string' || !NAME_RE.test(name)) throw unsafe(`name ${JSON.stringify(name)}`);
  return name;
}

/** An nft identifier `<kind>_<name>_<name>…`: names never contain `_`, so distinct inputs never collide. */
function ident(kind: string, ...names: string[]): string {
  for (const n of names) assertName(n);
  const id = [kind, ...names].join('_');
  // Starts with a letter and `_` right after the kind: never an nft keyword, and the scanner reads it whole.
  if (!/^[a-z]{1,4}_[a-z0-9_-]{1,200}$/.test(id)) throw unsafe(`identifier ${JSON.stringify(id)}`);
  return id;
}

function quoteIfname(name: string): string {
  if (typeof name !== 'string' || !IFNAME_RE.test(name)) throw unsafe(`interface ${JSON.stringify(name)}`);
  return `"${name}"`;
}

const COMMENT_RE = /^[a-z0-9_:/. -]{1,128}$/;
function comment(text: string): string {
  if (!COMMENT_RE.test(text)) throw unsafe(`comment ${JSON.stringify(text)}`);
  return `comment "${text}"`;
}

function assertPort(p: number): number {
  if (!Number.isInteger(p) || p < 0 || p > 65535) throw unsafe(`port ${String(p)}`);
  return p;
}

/** Canonical CIDRs already verified, by their four fields: a 1,000-conduit policy repeats the same few. */
const verifiedCidrs = new Map<string, Cidr>();

/** Re-parses a CIDR and insists it is canonical, so only digits, hex, `.`, `:` and `/` reach the script. */
function checkedCidr(c: Cidr): Cidr {
  const key = `${String(c?.family)}|${String(c?.text)}|${String(c?.address)}|${String(c?.prefix)}`;
  const hit = verifiedCidrs.get(key);
  if (hit !== undefined) return hit;
  const parsed = typeof c?.text === 'string' ? parseCidr(c.text) : undefined;
  if (
    parsed === undefined ||
    parsed.hostBitsSet ||
    parsed.cidr.text !== c.text ||
    parsed.cidr.family !== c.family ||
    parsed.cidr.prefix !== c.prefix ||
    parsed.cidr.address !== c.address
  ) {
    throw unsafe(`address ${JSON.stringify(c?.text)}`);
  }
  if (verifiedCidrs.size > 100_000) verifiedCidrs.clear();
  verifiedCidrs.set(key, parsed.cidr);
  return parsed.cidr;
}

function cidrElement(c: Cidr): string {
  const k = checkedCidr(c);
  return k.prefix === (k.family === 4 ? 32 : 128) ? k.address : k.text;
}

function logRateText(rate: LogRate): string {
  if (!Number.isInteger(rate.count) || rate.count < 1 || rate.count > 1_000_000) {
    throw unsafe(`log rate ${String(rate.count)}`);
  }
  if (rate.unit !== 'second' && rate.unit !== 'minute' && rate.unit !== 'hour') {
    throw unsafe(`log rate unit ${JSON.stringify(rate.unit)}`);
  }
  return `${rate.count}/${rate.unit}`;
}

// A flow's ICMP names are rendered per family (policies/icmp.ts lists nft's names).
const ICMP4_TYPES = new Set(ICMP_TYPES_V4);
const ICMP6_TYPES = new Set(ICMP_TYPES_V6);

// ---------------------------------------------------------------------------------------------------------
// Small pure helpers.
// ---------------------------------------------------------------------------------------------------------

const FAMILIES: readonly IpFamily[] = [4, 6];
const byName = <T extends { name: string }>(a: T, b: T): number =>
  a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
const ipKw = (f: IpFamily): string => (f === 4 ? 'ip' : 'ip6');
const addrType = (f: IpFamily): string => (f === 4 ? 'ipv4_addr' : 'ipv6_addr');

function ofFamily(list: readonly Cidr[], f: IpFamily): Cidr[] {
  return normaliseCidrSet(list.map(checkedCidr).filter((c) => c.family === f));
}

/** Whitelisted, sorted, merged (overlapping or adjacent joined) port ranges: interval sets refuse overlaps. */
function mergePortRanges(ranges: readonly Range[]): Range[] {
  for (const r of ranges) {
    if (assertPort(r.start) > assertPort(r.end)) throw unsafe(`port range ${r.start}-${r.end}`);
  }
  return mergeRanges(ranges);
}

function portElement(r: Range): string {
  return r.start === r.end ? String(r.start) : `${r.start}-${r.end}`;
}

/** A DPI destination is one device: the proxy needs one upstream per listener (validation insists on it too). */
function dpiHost(c: Cidr, flow: string): string {
  if (c.prefix !== (c.family === 4 ? 32 : 128)) {
    throw new SluiceError(
      'compile.dpi-destination-not-host',
      `flow ${flow}: ${c.text} is a network; a modbus/opcua destination must be a single address`,
      { userError: false },
    );
  }
  return c.address;
}

function compareAddressText(a: string, b: string): number {
  const va = parseIp(a)?.value ?? 0n;
  const vb = parseIp(b)?.value ?? 0n;
  return va < vb ? -1 : va > vb ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------------------
// Script builder.
// ---------------------------------------------------------------------------------------------------------

interface TableParts {
  counters: string[];
  sets: string[];
  chains: string[];
}

function setDecl(name: string, type: string, elements: readonly string[], interval: boolean): string {
  const lines = [`\tset ${name} {`, `\t\ttype ${type}`];
  if (interval) lines.push('\t\tflags interval');
  if (elements.length > 0) lines.push(`\t\telements = { ${elements.join(', ')} }`);
  lines.push('\t}');
  return lines.join('\n');
}

function mapDecl(name: string, type: string, elements: readonly string[]): string {
  const lines = [`\tmap ${name} {`, `\t\ttype ${type}`];
  if (elements.length > 0) lines.push(`\t\telements = { ${elements.join(', ')} }`);
  lines.push('\t}');
  return lines.join('\n');
}

function chainDecl(name: string, hook: string | undefined, rules: readonly string[]): string {
  const lines = [`\tchain ${name} {`];
  if (hook !== undefined) lines.push(`\t\t${hook}`);
  for (const r of rules) lines.push(`\t\t${r}`);
  lines.push('\t}');
  return lines.join('\n');
}

function renderTable(parts: TableParts, header: string): string {
  const body = [...parts.counters.map((c) => `\tcounter ${c} {\n\t}`), ...parts.sets, ...parts.chains];
  // `table … {}` then `delete table …` makes the delete valid whether or not the table existed; the whole
  // file is one nft transaction, so the old table stays in place if anything below fails.
  return [
    header,
    `table ${TABLE_FAMILY} ${TABLE_NAME} {}`,
    `delete table ${TABLE_FAMILY} ${TABLE_NAME}`,
    `table ${TABLE_FAMILY} ${TABLE_NAME} {`,
    body.join('\n\n'),
    '}',
    '',
  ].join('\n');
}

interface Common {
  group: number;
  rate: string;
}

function logDrop(c: Common, info: LogPrefixInfo, note: string): string {
  return `limit rate ${c.rate} log group ${c.group} prefix "${formatLogPrefix(info)}" ${comment(note)}`;
}

/** Anti-lockout and the gateway's own basics, shared by the policy and the fail-closed rulesets. */
function baseRules(mgmt: Management | undefined, parts: TableParts): { input: string[]; output: string[] } {
  const input: string[] = [];
  const output: string[] = [];
  if (mgmt !== undefined) {
    const ifname = quoteIfname(mgmt.interface);
    const ports = [...new Set(mgmt.ports.map(assertPort))].sort((a, b) => a - b);
    if (ports.length > 0) {
      parts.sets.push(setDecl('mgmt_ports', 'inet_service', ports.map(String), false));
      for (const f of FAMILIES) {
        const allow = ofFamily(mgmt.allowFrom, f);
        if (allow.length === 0) continue;
        const set = `mgmt_allow${f}`;
        parts.sets.push(setDecl(set, addrType(f), allow.map(cidrElement), true));
        input.push(
          `iifname ${ifname} meta l4proto tcp ${ipKw(f)} saddr @${set} tcp dport @mgmt_ports accept ${comment('sluice anti-lockout')}`,
        );
        output.push(
          `oifname ${ifname} meta l4proto tcp ${ipKw(f)} daddr @${set} tcp sport @mgmt_ports accept ${comment('sluice anti-lockout')}`,
        );
      }
    }
  }
  input.push(`iif "lo" accept ${comment('sluice loopback')}`);
  output.push(`oif "lo" accept ${comment('sluice loopback')}`);
  // IPv6 needs neighbour discovery on every link (the hop limit 255 proves the sender is on-link); IPv4's ARP
  // is not seen by an inet table at all.
  const nd =
    'meta l4proto ipv6-icmp icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255';
  input.push(`${nd} accept ${comment('sluice ipv6 neighbour discovery')}`);
  output.push(`${nd} accept ${comment('sluice ipv6 neighbour discovery')}`);
  return { input, output };
}

const ESTABLISHED = `ct state established,related accept ${comment('sluice established')}`;
const INVALID = `ct state invalid goto drop_invalid ${comment('sluice invalid')}`;
const FILTER_HOOK = (hook: string): string => `type filter hook ${hook} priority filter; policy drop;`;

function dropInvalidChain(c: Common, parts: TableParts): void {
  parts.counters.push(reasonCounterName('invalid'));
  parts.chains.push(
    chainDecl('drop_invalid', undefined, [
      logDrop(c, { verdict: 'drop', reason: 'invalid' }, 'sluice invalid'),
      `counter name "${reasonCounterName('invalid')}" drop ${comment('sluice invalid')}`,
    ]),
  );
}

function tail(c: Common, reason: 'input' | 'output' | 'no-conduit'): string[] {
  return [
    logDrop(c, { verdict: 'drop', reason }, `sluice ${reason}`),
    `counter name "${reasonCounterName(reason)}" drop ${comment(`sluice ${reason}`)}`,
  ];
}

function resolveOptions(options: Partial<CompileOptions> | undefined): CompileOptions {
  const o: CompileOptions = { ...DEFAULT_COMPILE_OPTIONS, ...options };
  if (!Number.isInteger(o.nflogGroup) || o.nflogGroup < 0 || o.nflogGroup > 65535) {
    throw new SluiceError('compile.bad-option', `nflogGroup ${String(o.nflogGroup)} is not 0..65535`);
  }
  if (!Number.isInteger(o.proxyPortBase) || o.proxyPortBase < 1 || o.proxyPortBase > 65535) {
    throw new SluiceError('compile.bad-option', `proxyPortBase ${String(o.proxyPortBase)} is not 1..65535`);
  }
  return o;
}

const HEADER_POLICY = (name: string): string =>
  `#!/usr/sbin/nft -f\n# Generated by Sluice for gateway ${assertName(name)}; do not edit: recompile the policy.`;

// ---------------------------------------------------------------------------------------------------------
// Fail-closed ruleset.
// ---------------------------------------------------------------------------------------------------------

/** Log rate of the fail-closed ruleset, which has no policy to take one from. */
const FAIL_CLOSED_LOG_RATE: LogRate = { count: 10, unit: 'second' };

/**
 * The ruleset for a gateway without a loadable policy (IEC 62443-4-2 NDR 5.2 RE3): nothing is forwarded; the
 * gateway accepts only loopback, its own established connections and the management anti-lockout.
 */
export function compileFailClosed(
  management: Management | undefined,
  options?: Partial<CompileOptions>,
): string {
  const o = resolveOptions(options);
  const c: Common = { group: o.nflogGroup, rate: logRateText(FAIL_CLOSED_LOG_RATE) };
  const parts: TableParts = { counters: [], sets: [], chains: [] };
  const base = baseRules(management, parts);
  parts.counters.push(
    reasonCounterName('input'),
    reasonCounterName('no-conduit'),
    reasonCounterName('output'),
  );
  parts.chains.push(
    chainDecl('input', FILTER_HOOK('input'), [...base.input, ESTABLISHED, INVALID, ...tail(c, 'input')]),
  );
  // No `established` rule here: connections forwarded under the previous ruleset are cut as well.
  parts.chains.push(chainDecl('forward', FILTER_HOOK('forward'), tail(c, 'no-conduit')));
  parts.chains.push(
    chainDecl('output', FILTER_HOOK('output'), [...base.output, ESTABLISHED, INVALID, ...tail(c, 'output')]),
  );
  dropInvalidChain(c, parts);
  parts.counters.sort();
  return renderTable(
    parts,
    '#!/usr/sbin/nft -f\n# Sluice fail-closed ruleset: no policy is loaded, nothing is forwarded.',
  );
}

// ---------------------------------------------------------------------------------------------------------
// Policy ruleset.
// ---------------------------------------------------------------------------------------------------------

const DPI_PROTOCOLS = new Set(['modbus', 'opcua']);

interface DpiTarget {
  family: IpFamily;
  address: string;
  port: number;
}

function dpiTargets(flow: Flow): DpiTarget[] {
  const ports = mergePortRanges(flow.ports);
  if (ports.length === 0) {
    throw new SluiceError('compile.dpi-no-port', `flow ${flow.name}: a ${flow.protocol} flow needs a port`, {
      userError: false,
    });
  }
  const out: DpiTarget[] = [];
  for (const f of FAMILIES) {
    // A destination family without sources of the same family can never be reached: no listener for it.
    if (ofFamily(flow.from.addresses, f).length === 0) continue;
    const hosts = ofFamily(flow.to.addresses, f).map((c) => dpiHost(c, flow.name));
    hosts.sort(compareAddressText);
    for (const address of hosts) {
      for (const r of ports) {
        for (let p = r.start; p <= r.end; p++) out.push({ family: f, address, port: p });
      }
    }
  }
  return out;
}

/** How many listen ports above `proxyPortBase` the DPI proxies may use (fewer when 65535 comes first). */
export const PROXY_PORT_RANGE = 8192;

/** FNV-1a, 32 bit: a fixed, dependency-free hash, so a key maps to the same port on every machine. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/**
 * Connection marks. A forwarded connection is marked by the flow that accepted it (or by its monitor-mode
 * conduit), and the forward chain lets established traffic through only while that mark is live. So an apply
 * that removes a flow also ends that flow's open connections (their next packet meets the conduit chain, finds
 * no flow, and is dropped and logged), while connections of flows that stay keep flowing: the mark depends on
 * the names only, not on the position in the policy. Never 0, the mark of connections nothing marked.
 */
export function flowMark(conduit: string, flow: string): string {
  return markText(fnv1a(`flow ${conduit}/${flow}`));
}

export function monitorMark(conduit: string): string {
  return markText(fnv1a(`monitor ${conduit}`));
}

function markText(h: number): string {
  return `0x${(h === 0 ? 1 : h).toString(16).padStart(8, '0')}`;
}

/**
 * Listen ports that do not move when other flows come and go. The supervisor restarts a proxy (closing its
 * connections) when its listen port changes, so numbering the DPI targets consecutively made adding one flow
 * cut the sessions of every later one. Instead each (conduit, flow, upstream address, upstream port) hashes
 * to a preferred port in [base, base + range); a taken port probes upwards (wrapping). Callers allocate in a
 * fixed (sorted) order, so the same policy still gives byte-identical output. A port only moves when a new
 * target collides with it *and* sorts before it, which with a few dozen targets in 8192 slots is rare.
 */
function listenPortAllocator(base: number, managementPorts: readonly number[]): (key: string) => number {
  const size = Math.min(PROXY_PORT_RANGE, 65536 - base);
  const last = base + size - 1;
  // Refused outright rather than skipped: skipping would make a management port change move proxies.
  const clash = managementPorts.find((p) => p >= base && p <= last);
  if (clash !== undefined) {
    throw new SluiceError(
      'compile.port-collision',
      `DPI listen ports ${base}-${last} include management port ${clash}; move proxyPortBase`,
    );
  }
  const used = new Set<number>();
  return (key) => {
    if (used.size >= size) {
      throw new SluiceError(
        'compile.too-many-listeners',
        `the DPI flows need more than the ${size} listen ports in ${base}-${last}; lower proxyPortBase`,
      );
    }
    let slot = fnv1a(key) % size;
    while (used.has(base + slot)) slot = (slot + 1) % size;
    used.add(base + slot);
    return base + slot;
  };
}

/**
 * Compiles a validated policy. Throws SluiceError for the few things validation does not rule out but nft
 * cannot express (two conduits for one zone pair, DPI destinations that are networks, too many listen ports) and
 * `compile.unsafe-name` for anything that failed the whitelist (a bug upstream).
 */
export function compilePolicy(policy: Policy, options?: Partial<CompileOptions>): CompileResult {
  const o = resolveOptions(options);
  const c: Common = { group: o.nflogGroup, rate: logRateText(policy.defaults.logRate) };
  const parts: TableParts = { counters: [], sets: [], chains: [] };
  const zones = new Map<string, Zone>([...policy.zones.values()].sort(byName).map((z) => [z.name, z]));
  const conduits = [...policy.conduits.values()].sort(byName);

  const zoneOf = (name: string, conduit: string): Zone => {
    const z = zones.get(name);
    if (z === undefined) {
      throw new SluiceError('compile.unknown-zone', `conduit ${conduit}: unknown zone ${name}`, {
        userError: false,
      });
    }
    return z;
  };

  // --- zone-pair dispatch ----------------------------------------------------------------------------
  const pairOwner = new Map<string, string>();
  const pairElements: string[] = [];
  for (const k of conduits) {
    assertName(k.name);
    const from = zoneOf(k.from, k.name);
    const to = zoneOf(k.to, k.name);
    const key = `${from.name} ${to.name}`;
    const owner = pairOwner.get(key);
    if (owner !== undefined) {
      // One verdict-map entry per interface pair: the second conduit could never be reached.
      throw new SluiceError(
        'compile.duplicate-zone-pair',
        `conduits ${owner} and ${k.name} both go from zone ${from.name} to zone ${to.name}; merge them into one conduit`,
      );
    }
    pairOwner.set(key, k.name);
    for (const i of [...from.interfaces].sort()) {
      for (const j of [...to.interfaces].sort()) {
        pairElements.push(`${quoteIfname(i)} . ${quoteIfname(j)} : goto ${ident('c', k.name)}`);
      }
    }
  }

  // --- DPI plan (stable port allocation: see listenPortAllocator) -------------------------------------------
  const entries: ProxyPlanEntry[] = [];
  const dpiByFlow = new Map<Flow, { targets: DpiTarget[]; ports: number[] }>();
  const allocate = listenPortAllocator(o.proxyPortBase, policy.gateway.management.ports);
  for (const k of conduits) {
    for (const flow of [...k.flows].sort(byName)) {
      if (!DPI_PROTOCOLS.has(flow.protocol)) continue;
      const targets = dpiTargets(flow);
      const ports: number[] = [];
      const sources = [...ofFamily(flow.from.addresses, 4), ...ofFamily(flow.from.addresses, 6)].map(
        (x) => x.text,
      );
      for (const t of targets) {
        const listenPort = allocate(`${k.name}\0${flow.name}\0${t.address}\0${t.port}`);
        ports.push(listenPort);
        const entry: ProxyPlanEntry = {
          conduit: k.name,
          flow: flow.name,
          protocol: flow.protocol as 'modbus' | 'opcua',
          mode: k.mode,
          listenPort,
          upstream: { address: t.address, port: t.port, family: t.family },
          sources,
        };
        if (flow.protocol === 'modbus' && flow.modbus !== undefined) entry.modbus = flow.modbus;
        if (flow.protocol === 'opcua' && flow.opcua !== undefined) entry.opcua = flow.opcua;
        if (flow.limits !== undefined) entry.limits = { ...flow.limits };
        entries.push(entry);
      }
      dpiByFlow.set(flow, { targets, ports });
    }
  }

  // --- base chains -------------------------------------------------------------------------------------
  const base = baseRules(policy.gateway.management, parts);
  parts.sets.push(mapDecl('zone_pairs', 'ifname . ifname : verdict', pairElements));

  const conduitChains: string[] = [];
  const liveMarks = new Set<string>();
  const prerouting = new Map<string, string[]>(); // from-zone → redirect rules
  const upstream: Record<IpFamily, string[]> = { 4: [], 6: [] };
  const listen: number[] = [];

  for (const k of conduits) {
    const mode = k.mode;
    if (mode !== 'enforce' && mode !== 'monitor') throw unsafe(`mode ${JSON.stringify(mode)}`);
    const verdict: LogVerdict = mode === 'enforce' ? 'drop' : 'would-drop';
    // Monitor mode forwards what enforce would drop, marked as the conduit's: switching it to enforce ends them.
    const final = mode === 'enforce' ? 'drop' : `ct mark set ${monitorMark(k.name)} accept`;
    if (mode === 'monitor') liveMarks.add(monitorMark(k.name));
    const xc = conduitCounterName(k.name);
    parts.counters.push(xc);
    const rules: string[] = [];
    const flowRules: string[] = [];
    const direct: Record<IpFamily, string[]> = { 4: [], 6: [] };

    for (const flow of [...k.flows].sort(byName)) {
      const fc = flowCounterName(k.name, flow.name);
      const note = `${k.name}/${flow.name}`;
      parts.counters.push(fc);
      const dpi = dpiByFlow.get(flow);
      if (dpi !== undefined) {
        for (const f of FAMILIES) {
          const elements: string[] = [];
          dpi.targets.forEach((t, i) => {
            if (t.family !== f) return;
            const key = `${t.address} . ${assertPort(t.port)}`;
            elements.push(`${key} : ${assertPort(dpi.ports[i] ?? -1)}`);
            direct[f].push(key);
            upstream[f].push(key);
            listen.push(dpi.ports[i] ?? -1);
          });
          if (elements.length === 0) continue;
          const src = ident('f', k.name, flow.name, `s${f}`);
          const map = ident('f', k.name, flow.name, `r${f}`);
          parts.sets.push(setDecl(src, addrType(f), ofFamily(flow.from.addresses, f).map(cidrElement), true));
          parts.sets.push(mapDecl(map, `${addrType(f)} . inet_service : inet_service`, elements));
          const zoneRules = prerouting.get(k.from) ?? [];
          zoneRules.push(
            // The map doubles as the match, so the counter only counts connections that are redirected.
            `meta l4proto tcp ${ipKw(f)} saddr @${src} ${ipKw(f)} daddr . tcp dport @${map} counter name "${fc}" ` +
              `redirect to ${ipKw(f)} daddr . tcp dport map @${map} ${comment(note)}`,
          );
          prerouting.set(k.from, zoneRules);
        }
        continue;
      }
      const proto = flow.protocol;
      if (proto !== 'tcp' && proto !== 'udp' && proto !== 'icmp')
        throw unsafe(`protocol ${JSON.stringify(proto)}`);
      const ports = proto === 'icmp' ? [] : mergePortRanges(flow.ports);
      let portSet: string | undefined;
      if (ports.length > 0) {
        portSet = ident('f', k.name, flow.name, 'p');
        parts.sets.push(setDecl(portSet, 'inet_service', ports.map(portElement), true));
      }
      for (const f of FAMILIES) {
        const src = ofFamily(flow.from.addresses, f);
        const dst = ofFamily(flow.to.addresses, f);
        if (src.length === 0 || dst.length === 0) continue;
        let l4: string;
        if (proto === 'icmp') {
          const known = f === 4 ? ICMP4_TYPES : ICMP6_TYPES;
          for (const t of flow.icmpTypes) {
            if (!ICMP4_TYPES.has(t) && !ICMP6_TYPES.has(t)) throw unsafe(`icmp type ${JSON.stringify(t)}`);
          }
          const types = [...new Set(flow.icmpTypes.filter((t) => known.has(t)))].sort();
          // Types named only for the other family (e.g. timestamp-request): no rule for this family.
          if (flow.icmpTypes.length > 0 && types.length === 0) continue;
          const kw = f === 4 ? 'icmp' : 'icmpv6';
          l4 = `meta l4proto ${f === 4 ? 'icmp' : 'ipv6-icmp'}`;
          if (types.length > 0) l4 += ` ${kw} type { ${types.join(', ')} }`;
        } else {
          l4 = `meta l4proto ${proto}` + (portSet !== undefined ? ` ${proto} dport @${portSet}` : '');
        }
        const s = ident('f', k.name, flow.name, `s${f}`);
        const d = ident('f', k.name, flow.name, `d${f}`);
        parts.sets.push(setDecl(s, addrType(f), src.map(cidrElement), true));
        parts.sets.push(setDecl(d, addrType(f), dst.map(cidrElement), true));
        flowRules.push(
          `${ipKw(f)} saddr @${s} ${ipKw(f)} daddr @${d} ${l4} counter name "${fc}" ` +
            `ct mark set ${flowMark(k.name, flow.name)} accept ${comment(note)}`,
        );
        liveMarks.add(flowMark(k.name, flow.name));
      }
    }

    // DPI destinations that reach forward were not redirected (wrong source, or the proxy path is bypassed):
    // they go to a drop chain *before* the flows, so no plain tcp flow can route around the proxy.
    let hasDirect = false;
    for (const f of FAMILIES) {
      const keys = [...new Set(direct[f])].sort();
      if (keys.length === 0) continue;
      hasDirect = true;
      const set = ident('c', k.name, `dpi${f}`);
      parts.sets.push(setDecl(set, `${addrType(f)} . inet_service`, keys, false));
      rules.push(
        `meta l4proto tcp ${ipKw(f)} daddr . tcp dport @${set} goto ${ident('d', k.name)} ${comment(`${k.name} dpi-direct`)}`,
      );
    }
    rules.push(...flowRules);
    rules.push(logDrop(c, { verdict, conduit: k.name, reason: 'no-flow' }, `${k.name} no-flow`));
    rules.push(`counter name "${xc}" ${final} ${comment(`${k.name} no-flow`)}`);
    conduitChains.push(chainDecl(ident('c', k.name), undefined, rules));
    if (hasDirect) {
      conduitChains.push(
        chainDecl(ident('d', k.name), undefined, [
          logDrop(c, { verdict, conduit: k.name, reason: 'dpi-direct' }, `${k.name} dpi-direct`),
          `counter name "${xc}" ${final} ${comment(`${k.name} dpi-direct`)}`,
        ]),
      );
    }
  }

  // --- DPI globals: listen ports, upstreams, ingress dispatch --------------------------------------------
  const listenSorted = [...new Set(listen)].sort((a, b) => a - b);
  if (listenSorted.length > 0)
    parts.sets.push(setDecl('dpi_listen', 'inet_service', listenSorted.map(String), false));
  for (const f of FAMILIES) {
    const keys = [...new Set(upstream[f])].sort();
    if (keys.length > 0) parts.sets.push(setDecl(`dpi_up${f}`, `${addrType(f)} . inet_service`, keys, false));
  }
  const ingress: string[] = [];
  const zoneChains: string[] = [];
  for (const [zoneName, zoneRules] of [...prerouting.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    const chain = ident('p', zoneName);
    for (const i of [...zoneOf(zoneName, zoneName).interfaces].sort())
      ingress.push(`${quoteIfname(i)} : goto ${chain}`);
    zoneChains.push(chainDecl(chain, undefined, zoneRules));
  }
  if (ingress.length > 0) parts.sets.push(mapDecl('dpi_ingress', 'ifname : verdict', ingress));

  // --- chains ------------------------------------------------------------------------------------------
  parts.counters.push(
    reasonCounterName('input'),
    reasonCounterName('no-conduit'),
    reasonCounterName('output'),
  );
  const input = [...base.input, ESTABLISHED, INVALID];
  if (listenSorted.length > 0) {
    // Only connections our own redirect rewrote reach a listener; a direct connect to the port is dropped.
    input.push(
      `meta l4proto tcp ct status dnat tcp dport @dpi_listen accept ${comment('sluice dpi-listen')}`,
    );
  }
  parts.chains.push(chainDecl('input', FILTER_HOOK('input'), [...input, ...tail(c, 'input')]));
  parts.sets.push(setDecl('live_marks', 'mark', [...liveMarks].sort(), false));
  parts.chains.push(
    chainDecl('forward', FILTER_HOOK('forward'), [
      `ct state established,related ct mark @live_marks accept ${comment('sluice established')}`,
      INVALID,
      `iifname . oifname vmap @zone_pairs ${comment('sluice zone-pair dispatch')}`,
      ...tail(c, 'no-conduit'),
    ]),
  );
  const output = [...base.output, ESTABLISHED, INVALID];
  for (const f of FAMILIES) {
    if (upstream[f].length > 0) {
      output.push(
        `meta l4proto tcp ${ipKw(f)} daddr . tcp dport @dpi_up${f} accept ${comment('sluice dpi-upstream')}`,
      );
    }
  }
  parts.chains.push(chainDecl('output', FILTER_HOOK('output'), [...output, ...tail(c, 'output')]));
  dropInvalidChain(c, parts);
  if (ingress.length > 0) {
    parts.chains.push(
      chainDecl('prerouting', 'type nat hook prerouting priority dstnat; policy accept;', [
        `iifname vmap @dpi_ingress ${comment('sluice dpi-redirect dispatch')}`,
      ]),
    );
  }
  parts.chains.push(...conduitChains, ...zoneChains);
  parts.counters.sort();

  const plan: ProxyPlan = { version: 1, entries };
  return { ruleset: renderTable(parts, HEADER_POLICY(policy.gateway.name)), plan };
}
