/**
 * The lab: zone namespaces joined through one gateway namespace by veth pairs, the stand-in for a real
 * gateway box with one NIC per zone. Used by the integration tests, `make demo` and the benchmarks.
 *
 *   <prefix>-<zone>-<host> (eth0) ── p<i> ┐
 *   <prefix>-<zone>-<host> (eth0) ── p<j> ┤ br0 in <prefix>-<zone> ── up0 ═ <iface> in <prefix>-gw
 *   <prefix>-mgmt (eth0) ═══════════════════════════════════════════ <mgmt iface> in <prefix>-gw
 *
 * Each zone is a namespace holding a bridge (the zone's switch) so a zone can hold several hosts behind
 * one gateway interface, exactly as on a plant network. Every veth is created directly inside its two
 * namespaces (`ip -n A link add X type veth peer name Y netns B`), so no interface ever exists in the
 * host's namespace, not even for a moment: names only need to be unique inside one namespace, and any
 * number of labs (with different prefixes) can run side by side.
 */
import {
  addNetns,
  assertIfName,
  assertNetnsName,
  ip,
  nsExec,
  nsSpawn,
  nsSysctl,
  removeStale,
  shortenName,
  NETNS_NAME_MAX,
  type RunOptions,
  type RunResult,
  type SpawnOptions,
  type Spawned,
} from './netns.ts';

export interface LabHostSpec {
  name: string;
  /** IPv4 address inside the zone's subnet, without prefix length. */
  address: string;
}

export interface LabZoneSpec {
  name: string;
  /** The name of the veth end inside the gateway namespace, e.g. `eth1`: what a policy's zone lists. */
  iface: string;
  /** IPv4 subnet, e.g. `10.71.1.0/24`; the gateway takes its first usable address. */
  subnet: string;
  hosts: LabHostSpec[];
}

export interface LabManagementSpec {
  /** Gateway-side interface, e.g. `mgmt0`. */
  iface: string;
  subnet: string;
  /** Address of the management workstation (namespace `<prefix>-mgmt`). */
  hostAddress: string;
}

export interface LabSpec {
  /** Namespace name prefix: letters and digits only, so `<prefix>-` never matches another lab's names. */
  prefix: string;
  zones: LabZoneSpec[];
  management?: LabManagementSpec;
  /** Keep IPv6 enabled in the lab's namespaces (default off: see `labUp`). */
  ipv6?: boolean;
}

export interface Lab {
  prefix: string;
  spec: LabSpec;
  /** Gateway namespace name. */
  gw: string;
  /** The zone's switch namespace (holds the bridge). */
  zoneNs(zone: string): string;
  hostNs(zone: string, host: string): string;
  /** The gateway's address on the zone's subnet (every host's default route). */
  gwAddress(zone: string): string;
  hostAddress(zone: string, host: string): string;
  /** The gateway-side interface of a zone. */
  gwIface(zone: string): string;
  /** Management workstation namespace, when the spec has a management side. */
  mgmtNs?: string;
  mgmtAddress?: string;
  /** The gateway's address on the management subnet. */
  gwMgmtAddress?: string;
  /** Every namespace of the lab. */
  namespaces(): string[];
  exec(ns: string, cmd: string, args: string[], opts?: RunOptions): Promise<RunResult>;
  /** Starts a long-running child; `down()` kills it. */
  spawn(ns: string, cmd: string, args: string[], opts?: SpawnOptions): Spawned;
  down(): Promise<void>;
}

const PREFIX_RE = /^[A-Za-z][A-Za-z0-9]{0,11}$/;
const NAME_RE = /^[a-z][a-z0-9-]{0,30}$/;

// ---- IPv4 helpers -------------------------------------------------------------------------------------

function parseIpv4(text: string): number {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!m) throw new Error(`not an IPv4 address: ${JSON.stringify(text)}`);
  let n = 0;
  for (const part of m.slice(1)) {
    const b = Number(part);
    if (b > 255) throw new Error(`not an IPv4 address: ${JSON.stringify(text)}`);
    n = n * 256 + b;
  }
  return n;
}

function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export interface Ipv4Subnet {
  network: number;
  prefix: number;
  /** Number of addresses (2^(32-prefix)). */
  size: number;
}

export function parseSubnet(text: string): Ipv4Subnet {
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(text);
  if (!m?.[1] || m[2] === undefined) throw new Error(`not an IPv4 subnet: ${JSON.stringify(text)}`);
  const prefix = Number(m[2]);
  // /31 and /32 leave no room for a gateway and a host with ordinary broadcast semantics.
  if (prefix < 8 || prefix > 30) throw new Error(`lab subnet ${text}: prefix must be /8../30`);
  const size = 2 ** (32 - prefix);
  const addr = parseIpv4(m[1]);
  if (addr % size !== 0) throw new Error(`lab subnet ${text} has host bits set`);
  return { network: addr, prefix, size };
}

/** First usable address of an IPv4 subnet: the lab gives it to the gateway. */
export function firstUsable(subnet: string): string {
  return formatIpv4(parseSubnet(subnet).network + 1);
}

/** Checks `address` is a usable host address of `subnet` other than the gateway's. */
function checkHostAddress(address: string, subnet: string, what: string): void {
  const s = parseSubnet(subnet);
  const a = parseIpv4(address);
  if (a < s.network || a >= s.network + s.size) throw new Error(`${what}: ${address} is outside ${subnet}`);
  if (a === s.network || a === s.network + s.size - 1) {
    throw new Error(`${what}: ${address} is the network or broadcast address of ${subnet}`);
  }
  if (a === s.network + 1) throw new Error(`${what}: ${address} is the gateway's address in ${subnet}`);
}

function overlaps(a: Ipv4Subnet, b: Ipv4Subnet): boolean {
  return a.network < b.network + b.size && b.network < a.network + a.size;
}

// ---- names ----------------------------------------------------------------------------------------------

export function gwNsName(prefix: string): string {
  return `${prefix}-gw`;
}
export function zoneNsName(prefix: string, zone: string): string {
  return shortenName(`${prefix}-${zone}`, NETNS_NAME_MAX);
}
export function hostNsName(prefix: string, zone: string, host: string): string {
  return shortenName(`${prefix}-${zone}-${host}`, NETNS_NAME_MAX);
}
export function mgmtNsName(prefix: string): string {
  return `${prefix}-mgmt`;
}

/** The namespace prefix `labUp`/`labDown` clean: the dash keeps lab `ab` away from lab `abc`'s names. */
function nsPrefix(prefix: string): string {
  return `${prefix}-`;
}

interface Plan {
  gw: string;
  mgmt?: { ns: string; iface: string; gwAddress: string; hostAddress: string; prefixLen: number };
  zones: Map<
    string,
    {
      spec: LabZoneSpec;
      ns: string;
      gwAddress: string;
      prefixLen: number;
      hosts: Map<string, { ns: string; address: string; port: string }>;
    }
  >;
}

/** Checks the whole spec and derives every name and address before anything is created. */
function plan(spec: LabSpec): Plan {
  if (!PREFIX_RE.test(spec.prefix)) {
    throw new Error(`lab prefix ${JSON.stringify(spec.prefix)}: 1-12 letters/digits, starting with a letter`);
  }
  if (spec.zones.length === 0) throw new Error('a lab needs at least one zone');
  const gw = gwNsName(spec.prefix);
  const taken = new Map<string, string>([[gw, 'the gateway']]);
  const claim = (ns: string, what: string): string => {
    assertNetnsName(ns);
    const other = taken.get(ns);
    if (other !== undefined) throw new Error(`namespace ${ns} would serve both ${other} and ${what}`);
    taken.set(ns, what);
    return ns;
  };
  const gwIfaces = new Set<string>();
  const claimIface = (name: string, what: string): void => {
    assertIfName(name);
    if (gwIfaces.has(name)) throw new Error(`${what}: gateway interface ${name} is used twice`);
    gwIfaces.add(name);
  };
  const subnets: { text: string; s: Ipv4Subnet }[] = [];
  const claimSubnet = (text: string, what: string): Ipv4Subnet => {
    const s = parseSubnet(text);
    for (const o of subnets)
      if (overlaps(o.s, s)) throw new Error(`${what}: subnet ${text} overlaps ${o.text}`);
    subnets.push({ text, s });
    return s;
  };

  const result: Plan = { gw, zones: new Map() };
  if (spec.management) {
    const m = spec.management;
    claimIface(m.iface, 'management');
    const s = claimSubnet(m.subnet, 'management');
    checkHostAddress(m.hostAddress, m.subnet, 'management host');
    result.mgmt = {
      ns: claim(mgmtNsName(spec.prefix), 'the management side'),
      iface: m.iface,
      gwAddress: firstUsable(m.subnet),
      hostAddress: m.hostAddress,
      prefixLen: s.prefix,
    };
  }
  for (const z of spec.zones) {
    if (!NAME_RE.test(z.name)) throw new Error(`zone name ${JSON.stringify(z.name)}: [a-z][a-z0-9-]{0,30}`);
    if (result.zones.has(z.name)) throw new Error(`zone ${z.name} appears twice`);
    claimIface(z.iface, `zone ${z.name}`);
    const s = claimSubnet(z.subnet, `zone ${z.name}`);
    const hosts = new Map<string, { ns: string; address: string; port: string }>();
    const addresses = new Set<string>();
    z.hosts.forEach((h, i) => {
      if (!NAME_RE.test(h.name)) throw new Error(`host name ${JSON.stringify(h.name)}: [a-z][a-z0-9-]{0,30}`);
      if (hosts.has(h.name)) throw new Error(`zone ${z.name}: host ${h.name} appears twice`);
      checkHostAddress(h.address, z.subnet, `zone ${z.name} host ${h.name}`);
      if (addresses.has(h.address)) throw new Error(`zone ${z.name}: address ${h.address} is used twice`);
      addresses.add(h.address);
      hosts.set(h.name, {
        ns: claim(hostNsName(spec.prefix, z.name, h.name), `host ${z.name}/${h.name}`),
        address: h.address,
        // Bridge port names are local to the zone's namespace: an index keeps them short for any host name.
        port: `p${i}`,
      });
    });
    result.zones.set(z.name, {
      spec: z,
      ns: claim(zoneNsName(spec.prefix, z.name), `zone ${z.name}`),
      gwAddress: firstUsable(z.subnet),
      prefixLen: s.prefix,
      hosts,
    });
  }
  return result;
}

/**
 * Sysctls every lab namespace gets. IPv6 is off unless asked for: the lab's subnets are IPv4, and a
 * kernel left alone sends router solicitations, MLD reports and DAD probes that would reach the gateway's
 * filter and show up as blocked-traffic noise in tests that count log lines.
 */
function baseSysctls(spec: LabSpec): Record<string, number> {
  return spec.ipv6
    ? {}
    : {
        'net.ipv6.conf.all.disable_ipv6': 1,
        'net.ipv6.conf.default.disable_ipv6': 1,
        'net.ipv6.conf.lo.disable_ipv6': 1,
      };
}

async function newNs(name: string, spec: LabSpec): Promise<void> {
  await addNetns(name);
  const sysctls = baseSysctls(spec);
  if (Object.keys(sysctls).length > 0) await nsSysctl(name, sysctls);
}

async function buildGateway(p: Plan, spec: LabSpec): Promise<void> {
  await newNs(p.gw, spec);
  await nsSysctl(p.gw, {
    'net.ipv4.ip_forward': 1,
    // rp_filter off: anti-spoofing is the firewall's job (a zone's networks are tied to its interface in the
    // ruleset). With the kernel's reverse-path filter on, a spoofed packet in a test would vanish silently
    // before nftables sees it, so the drop would never reach the counters and the blocked-traffic log.
    // (The kernel takes the maximum of `all` and the interface's value, hence both.)
    'net.ipv4.conf.all.rp_filter': 0,
    'net.ipv4.conf.default.rp_filter': 0,
  });
}

async function buildZone(p: Plan, zone: string, spec: LabSpec): Promise<void> {
  const z = p.zones.get(zone);
  if (!z) throw new Error(`unknown zone ${zone}`);
  await newNs(z.ns, spec);
  await ip(['-n', z.ns, 'link', 'add', 'br0', 'type', 'bridge', 'stp_state', '0']);
  await ip(['-n', z.ns, 'link', 'set', 'br0', 'up']);
  await ip(['-n', p.gw, 'link', 'add', z.spec.iface, 'type', 'veth', 'peer', 'name', 'up0', 'netns', z.ns]);
  await ip(['-n', z.ns, 'link', 'set', 'up0', 'master', 'br0', 'up']);
  await ip(['-n', p.gw, 'addr', 'add', `${z.gwAddress}/${z.prefixLen}`, 'dev', z.spec.iface]);
  await ip(['-n', p.gw, 'link', 'set', z.spec.iface, 'up']);
  await Promise.all(
    [...z.hosts.values()].map(async (h) => {
      await newNs(h.ns, spec);
      await ip(['-n', z.ns, 'link', 'add', h.port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns]);
      await ip(['-n', z.ns, 'link', 'set', h.port, 'master', 'br0', 'up']);
      await ip(['-n', h.ns, 'addr', 'add', `${h.address}/${z.prefixLen}`, 'dev', 'eth0']);
      await ip(['-n', h.ns, 'link', 'set', 'eth0', 'up']);
      await ip(['-n', h.ns, 'route', 'add', 'default', 'via', z.gwAddress]);
    }),
  );
}

async function buildManagement(p: Plan, spec: LabSpec): Promise<void> {
  const m = p.mgmt;
  if (!m) return;
  await newNs(m.ns, spec);
  await ip(['-n', p.gw, 'link', 'add', m.iface, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', m.ns]);
  await ip(['-n', p.gw, 'addr', 'add', `${m.gwAddress}/${m.prefixLen}`, 'dev', m.iface]);
  await ip(['-n', p.gw, 'link', 'set', m.iface, 'up']);
  await ip(['-n', m.ns, 'addr', 'add', `${m.hostAddress}/${m.prefixLen}`, 'dev', 'eth0']);
  await ip(['-n', m.ns, 'link', 'set', 'eth0', 'up']);
  await ip(['-n', m.ns, 'route', 'add', 'default', 'via', m.gwAddress]);
}

/**
 * Builds the lab described by `spec`, after removing any namespace left over from an earlier lab with
 * the same prefix. The gateway namespace starts with an empty ruleset (it forwards everything): loading
 * a ruleset is the caller's business, through gateway/nft.ts. If building fails half-way, whatever was
 * built is removed before the error is rethrown.
 */
export async function labUp(spec: LabSpec): Promise<Lab> {
  const p = plan(spec);
  await removeStale(nsPrefix(spec.prefix));
  try {
    await buildGateway(p, spec);
    await buildManagement(p, spec);
    // Zones are independent of each other once the gateway exists; build them concurrently.
    await Promise.all(spec.zones.map((z) => buildZone(p, z.name, spec)));
  } catch (e) {
    await labDown(spec.prefix).catch(() => undefined);
    throw e;
  }
  return makeLab(spec, p);
}

/** Removes every namespace of the lab `prefix` (killing the processes inside); idempotent. */
export async function labDown(prefix: string): Promise<void> {
  if (!PREFIX_RE.test(prefix)) throw new Error(`lab prefix ${JSON.stringify(prefix)} is not valid`);
  await removeStale(nsPrefix(prefix));
}

function makeLab(spec: LabSpec, p: Plan): Lab {
  const children = new Set<Spawned>();
  const zoneOf = (zone: string) => {
    const z = p.zones.get(zone);
    if (!z) throw new Error(`lab ${spec.prefix} has no zone ${JSON.stringify(zone)}`);
    return z;
  };
  const hostOf = (zone: string, host: string) => {
    const h = zoneOf(zone).hosts.get(host);
    if (!h) throw new Error(`lab ${spec.prefix} zone ${zone} has no host ${JSON.stringify(host)}`);
    return h;
  };
  const lab: Lab = {
    prefix: spec.prefix,
    spec,
    gw: p.gw,
    zoneNs: (zone) => zoneOf(zone).ns,
    hostNs: (zone, host) => hostOf(zone, host).ns,
    gwAddress: (zone) => zoneOf(zone).gwAddress,
    hostAddress: (zone, host) => hostOf(zone, host).address,
    gwIface: (zone) => zoneOf(zone).spec.iface,
    namespaces: () => [
      p.gw,
      ...(p.mgmt ? [p.mgmt.ns] : []),
      ...[...p.zones.values()].flatMap((z) => [z.ns, ...[...z.hosts.values()].map((h) => h.ns)]),
    ],
    exec: (ns, cmd, args, opts) => nsExec(ns, cmd, args, opts),
    spawn: (ns, cmd, args, opts) => {
      const child = nsSpawn(ns, cmd, args, opts);
      children.add(child);
      void child.finally(() => children.delete(child));
      return child;
    },
    down: async () => {
      // Stop our own children first so their promises settle; labDown then kills anything else inside.
      for (const c of children) c.kill('SIGKILL');
      await Promise.all([...children]);
      await labDown(spec.prefix);
    },
  };
  if (p.mgmt) {
    lab.mgmtNs = p.mgmt.ns;
    lab.mgmtAddress = p.mgmt.hostAddress;
    lab.gwMgmtAddress = p.mgmt.gwAddress;
  }
  return lab;
}
