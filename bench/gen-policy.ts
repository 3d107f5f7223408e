/**
 * Generates large, valid Sluice policies (format "Policy file v1", issue 2) for the benchmarks: N zones,
 * each with its own interface and /16 network under 10.0.0.0/8, assets spread round-robin over the zones,
 * and conduits between distinct ordered zone pairs. Deterministic: the same options give the same text.
 *
 * Every tcp/udp flow names its ports (no `any-port` lint error at any SL) and flows are plain tcp/udp/icmp
 * (no Modbus/OPC UA writes, so no `SL-write-from-lower`); `SL-skip` warnings are expected and harmless.
 */
import { stringify } from 'yaml';

export interface GenOptions {
  conduits: number;
  assets: number;
  /** Default: the fewest zones whose ordered pairs hold all conduits (at least 2). At most 250. */
  zones?: number;
  /**
   * Adds a tcp flow `stream` on this port to the first conduit (zone 1 → zone 2), from the first asset of
   * zone 1 to the first asset of zone 2: what the throughput benchmark's iperf3 stream uses.
   */
  streamPort?: number;
}

export interface GenZone {
  name: string;
  iface: string;
  /** The zone's network, e.g. `10.7.0.0/16`. */
  network: string;
  securityLevel: 1 | 2 | 3 | 4;
  assets: { name: string; address: string }[];
}

export interface GenConduit {
  name: string;
  from: string;
  to: string;
}

export interface GeneratedPolicy {
  /** The YAML text. */
  text: string;
  zones: GenZone[];
  conduits: GenConduit[];
  /** Where the `stream` flow sits, when `streamPort` was given. */
  stream?: { conduit: string; flow: string; from: GenZone; to: GenZone; port: number };
}

type FlowDoc = Record<string, unknown>;

const MAX_ZONES = 250;

/** The fewest zones n with n·(n−1) ordered pairs ≥ conduits. */
export function zonesFor(conduits: number): number {
  let n = 2;
  while (n * (n - 1) < conduits) n++;
  return n;
}

function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}

/** The generated policy with the facts the benchmarks need (zones, interfaces, assets, conduits). */
export function generatePolicyModel(opts: GenOptions): GeneratedPolicy {
  const { conduits, assets } = opts;
  if (!Number.isInteger(conduits) || conduits < 1) throw new Error('conduits: a positive integer');
  if (!Number.isInteger(assets) || assets < 0) throw new Error('assets: a non-negative integer');
  const nZones = opts.zones ?? zonesFor(conduits);
  if (!Number.isInteger(nZones) || nZones < 2 || nZones > MAX_ZONES)
    throw new Error(`zones: 2..${MAX_ZONES}`);
  if (nZones * (nZones - 1) < conduits) {
    throw new Error(
      `${nZones} zones have only ${nZones * (nZones - 1)} ordered pairs for ${conduits} conduits`,
    );
  }
  // Offsets 10.. inside each /16 leave .0.1 free for a lab gateway; 65,000 per zone is plenty.
  if (Math.ceil(assets / nZones) > 65_000) throw new Error('too many assets per zone');

  const zw = String(nZones).length;
  const zones: GenZone[] = [];
  for (let i = 0; i < nZones; i++) {
    zones.push({
      name: `z${pad(i + 1, zw)}`,
      iface: `eth${i + 1}`,
      network: `10.${i + 1}.0.0/16`,
      // Cycling 1..4 gives every kind of SL step between zones, as a real plant would.
      securityLevel: ((i % 4) + 1) as 1 | 2 | 3 | 4,
      assets: [],
    });
  }
  const aw = String(Math.max(assets, 1)).length;
  for (let k = 0; k < assets; k++) {
    const zi = k % nZones;
    const z = zones[zi];
    if (!z) throw new Error('unreachable');
    const offset = 10 + Math.floor(k / nZones);
    z.assets.push({ name: `a${pad(k + 1, aw)}`, address: `10.${zi + 1}.${offset >> 8}.${offset & 255}` });
  }

  // Ordered pairs by distance d = 1, 2, …: the first conduits already touch every zone, and the first
  // one is zone 1 → zone 2.
  const pairs: [number, number][] = [];
  for (let d = 1; d < nZones && pairs.length < conduits; d++) {
    for (let i = 0; i < nZones && pairs.length < conduits; i++) pairs.push([i, (i + d) % nZones]);
  }

  /** `count` asset names of zone `z` starting at a rotating position; undefined = the whole zone. */
  const pickAssets = (z: GenZone, seed: number, count: number): string[] | undefined => {
    if (z.assets.length === 0) return undefined;
    const out = new Set<string>();
    for (let j = 0; j < count; j++) {
      const a = z.assets[(seed + j * 7) % z.assets.length];
      if (a) out.add(a.name);
    }
    return [...out].sort();
  };
  const withEndpoints = (flow: FlowDoc, from: string[] | undefined, to: string[] | undefined): FlowDoc => ({
    ...flow,
    ...(from ? { from } : {}),
    ...(to ? { to } : {}),
  });

  const conduitDocs: Record<string, unknown> = {};
  const conduitList: GenConduit[] = [];
  let stream: GeneratedPolicy['stream'];
  pairs.forEach(([fi, ti], c) => {
    const from = zones[fi];
    const to = zones[ti];
    if (!from || !to) throw new Error('unreachable');
    const name = `c-${from.name}-${to.name}`;
    const flows: FlowDoc[] = [];
    if (c === 0 && opts.streamPort !== undefined) {
      const src = from.assets[0];
      const dst = to.assets[0];
      flows.push(
        withEndpoints(
          { name: 'stream', protocol: 'tcp', port: opts.streamPort },
          src ? [src.name] : undefined,
          dst ? [dst.name] : undefined,
        ),
      );
      stream = { conduit: name, flow: 'stream', from, to, port: opts.streamPort };
    }
    flows.push(
      withEndpoints(
        { name: 'app', protocol: 'tcp', port: 1024 + ((c * 37) % 40_000) },
        pickAssets(from, c, 3),
        pickAssets(to, c * 3, 2),
      ),
    );
    if (c % 3 === 1) {
      flows.push(
        withEndpoints(
          { name: 'web', protocol: 'tcp', port: [443, '8080-8090'] },
          pickAssets(from, c + 1, 2),
          pickAssets(to, c + 2, 4),
        ),
      );
    }
    if (c % 5 === 2) {
      flows.push(
        withEndpoints(
          { name: 'telemetry', protocol: 'udp', port: '5000-5010' },
          pickAssets(from, c + 5, 4),
          pickAssets(to, c, 1),
        ),
      );
    }
    if (c % 7 === 3) {
      flows.push(
        withEndpoints(
          { name: 'ping', protocol: 'icmp', icmpTypes: ['echo-request'] },
          undefined,
          pickAssets(to, c, 2),
        ),
      );
    }
    conduitDocs[name] = {
      from: from.name,
      to: to.name,
      // A few monitor-mode conduits, as during a plant's commissioning; never the stream's conduit (c = 0).
      mode: c % 10 === 9 ? 'monitor' : 'enforce',
      flows,
    };
    conduitList.push({ name, from: from.name, to: to.name });
  });

  const doc = {
    version: 1,
    gateway: { name: 'bench-gw', management: { interface: 'mgmt0', allowFrom: ['192.168.100.0/24'] } },
    defaults: { logRate: '10/second' },
    zones: Object.fromEntries(
      zones.map((z) => [
        z.name,
        { securityLevel: z.securityLevel, interfaces: [z.iface], networks: [z.network] },
      ]),
    ),
    assets: Object.fromEntries(
      zones.flatMap((z) => z.assets.map((a) => [a.name, { zone: z.name, addresses: [a.address] }])),
    ),
    conduits: conduitDocs,
  };
  const header = `# Generated by bench/gen-policy.ts: ${conduits} conduits, ${assets} assets, ${nZones} zones.\n`;
  const text = header + stringify(doc, { lineWidth: 0 });
  return { text, zones, conduits: conduitList, ...(stream ? { stream } : {}) };
}

/** YAML text of a valid generated policy. */
export function generatePolicy(opts: GenOptions): string {
  return generatePolicyModel(opts).text;
}
