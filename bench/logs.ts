/**
 * Blocked-traffic log store benchmark: `node bench/logs.ts [EVENTS]` (default 1,000,000).
 *
 * Measures, in one run: ingest rate of distinct events (the worst case: aggregation finds nothing to merge),
 * ingest rate of a flood of identical events (aggregation's case), database size, and query p50/p95 over a
 * mix of filters on the full store, with the same mix on an empty store as the baseline.
 * Targets from issue 3: ≥ 50,000 events/s ingest; query p95 < 100 ms over 1,000,000 events.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { BlockedEvent, BlockedVerdict } from '../gateway/events.ts';
import { LogStore, type LogQuery } from '../gateway/logstore.ts';

const TOTAL = Number(process.argv[2] ?? 1_000_000);
/** Events per transaction: what LogStore.enqueue() gathers in a flush under load (see its flushEvents). */
const BATCH = Number(process.env.BENCH_BATCH ?? 10_000);
const QUERY_ROUNDS = 15;

/** Deterministic PRNG (mulberry32) so runs are comparable. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const rnd = prng(62443);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
const zones = ['enterprise', 'dmz', 'scada', 'control', 'safety', 'field', 'vendor', 'historian'];
const conduits = Array.from({ length: 50 }, (_, i) => ({
  name: `conduit-${i}`,
  from: zones[i % zones.length] as string,
  to: zones[(i * 3 + 1) % zones.length] as string,
}));
const srcs = Array.from({ length: 2000 }, (_, i) => `10.${1 + (i >> 8)}.${i & 255}.${(i * 7) % 250}`);
const dsts = Array.from({ length: 200 }, (_, i) => `10.50.${i >> 4}.${i & 15}`);
const dstPorts = [502, 4840, 22, 80, 443, 102, 20000, 44818, 2222, 161, 53, 123, 1883, 8080, 3389];
const START = Date.now() - 24 * 3600_000;
const SPAN = 24 * 3600_000;

function makeEvent(i: number, total: number): BlockedEvent {
  const r = rnd();
  const protocol = r < 0.85 ? 'tcp' : r < 0.95 ? 'udp' : 'icmp';
  const v = rnd();
  const verdict: BlockedVerdict =
    v < 0.9 ? 'drop' : v < 0.98 ? 'would-drop' : v < 0.995 ? 'refuse' : 'would-refuse';
  const s = rnd();
  const reason =
    s < 0.7
      ? 'no-flow'
      : s < 0.9
        ? 'no-conduit'
        : s < 0.98
          ? 'modbus.illegal-function'
          : 'opcua.security-mode';
  const c = pick(conduits);
  const e: BlockedEvent = {
    time: START + Math.floor((i / total) * SPAN),
    fromZone: c.from,
    toZone: c.to,
    inIface: `eth${c.name.length % 3}`,
    outIface: 'eth3',
    src: pick(srcs),
    dst: pick(dsts),
    protocol,
    verdict,
    reason,
    source: reason.startsWith('modbus') ? 'modbus' : reason.startsWith('opcua') ? 'opcua' : 'nflog',
    count: 1,
  };
  if (reason !== 'no-conduit') e.conduit = c.name;
  if (protocol !== 'icmp') {
    e.srcPort = 32768 + Math.floor(rnd() * 28000);
    e.dstPort = pick(dstPorts);
  }
  if (reason === 'modbus.illegal-function') e.detail = { unit: 1, function: 8 };
  return e;
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
}

/** The query mix: each entry draws fresh values per round. */
const mix: { name: string; make: (store: LogStore) => LogQuery }[] = [
  { name: 'newest page', make: () => ({}) },
  { name: 'conduit', make: () => ({ conduit: pick(conduits).name }) },
  { name: 'no conduit', make: () => ({ conduit: null }) },
  { name: 'src', make: () => ({ src: pick(srcs) }) },
  { name: 'dst', make: () => ({ dst: pick(dsts) }) },
  { name: 'dstPort', make: () => ({ dstPort: pick(dstPorts) }) },
  { name: 'srcPort', make: () => ({ srcPort: 32768 + Math.floor(rnd() * 28000) }) },
  { name: 'port either side', make: () => ({ port: pick(dstPorts) }) },
  { name: 'zone either side', make: () => ({ zone: pick(zones) }) },
  { name: 'fromZone', make: () => ({ fromZone: pick(zones) }) },
  { name: 'protocol icmp', make: () => ({ protocol: 'icmp' }) },
  { name: 'verdict would-refuse', make: () => ({ verdict: 'would-refuse' }) },
  { name: 'reason opcua', make: () => ({ reason: 'opcua.security-mode' }) },
  {
    name: '1h window',
    make: () => {
      const since = START + Math.floor(rnd() * (SPAN - 3600_000));
      return { since, until: since + 3600_000 };
    },
  },
  { name: 'conduit+verdict', make: () => ({ conduit: pick(conduits).name, verdict: 'would-drop' }) },
  { name: 'src+dstPort', make: () => ({ src: pick(srcs), dstPort: pick(dstPorts) }) },
  {
    name: 'dst+protocol+1h',
    make: () => ({
      dst: pick(dsts),
      protocol: 'udp',
      since: START + SPAN / 2,
      until: START + SPAN / 2 + 3600_000,
    }),
  },
  { name: 'unknown src', make: () => ({ src: '10.99.99.99' }) },
  {
    name: 'page 2 of conduit',
    make: (store) => {
      const q = { conduit: pick(conduits).name };
      const first = store.query(q);
      return first.nextCursor === undefined ? q : { ...q, cursor: first.nextCursor };
    },
  },
  { name: 'conduit + total', make: () => ({ conduit: pick(conduits).name, total: true }) },
];

function runQueries(store: LogStore): { all: number[]; perKind: Map<string, number[]> } {
  const all: number[] = [];
  const perKind = new Map<string, number[]>();
  for (let round = 0; round < QUERY_ROUNDS; round++) {
    for (const m of mix) {
      const q = m.make(store);
      const t0 = performance.now();
      store.query(q);
      const dt = performance.now() - t0;
      all.push(dt);
      const k = perKind.get(m.name) ?? [];
      k.push(dt);
      perKind.set(m.name, k);
    }
  }
  return { all, perKind };
}

const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-logs-'));
try {
  const opts = { maxBytes: 4 * 1024 ** 3, maxAgeMs: 30 * 24 * 3600_000 };

  const empty = LogStore.open(join(dir, 'empty.db'), opts);
  const baseline = runQueries(empty);
  empty.close();

  const store = LogStore.open(join(dir, 'logs.db'), opts);
  let ingestMs = 0;
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < TOTAL; i += BATCH) {
    const batch: BlockedEvent[] = [];
    for (let j = i; j < Math.min(TOTAL, i + BATCH); j++) batch.push(makeEvent(j, TOTAL));
    const t0 = performance.now();
    store.ingest(batch);
    ingestMs += performance.now() - t0;
  }
  const cpu = process.cpuUsage(cpu0);
  const distinctRate = TOTAL / (ingestMs / 1000);
  // The machine is shared: CPU time shows what ingest costs when it gets a core to itself.
  const cpuRate = TOTAL / ((cpu.user + cpu.system) / 1e6);
  const afterIngest = store.stats();

  // Flood: 200,000 identical SYNs to one PLC, 20,000 per second, as a scan or a misconfigured HMI would send.
  const FLOOD = 200_000;
  const floodStart = START + SPAN + 1000;
  let floodMs = 0;
  for (let i = 0; i < FLOOD; i += BATCH) {
    const batch: BlockedEvent[] = [];
    for (let j = i; j < i + BATCH; j++) {
      batch.push({
        time: floodStart + Math.floor(j / 20),
        fromZone: 'enterprise',
        toZone: 'control',
        conduit: 'conduit-0',
        src: '10.1.0.66',
        dst: '10.50.0.1',
        srcPort: 40000,
        dstPort: 502,
        protocol: 'tcp',
        verdict: 'drop',
        reason: 'no-flow',
        source: 'nflog',
        count: 1,
      });
    }
    const t0 = performance.now();
    store.ingest(batch);
    floodMs += performance.now() - t0;
  }
  const floodRate = FLOOD / (floodMs / 1000);
  const afterFlood = store.stats();

  // Queries run against the distinct-event data plus the flood rows, i.e. ~1M rows.
  const loaded = runQueries(store);
  store.close();

  const fmt = (n: number): string => n.toFixed(2).padStart(8);
  console.log('');
  console.log(`== bench/logs: node:sqlite ${process.versions.sqlite}, node ${process.version} ==`);
  console.log(
    `ingest, distinct events : ${TOTAL.toLocaleString('en')} events in ${(ingestMs / 1000).toFixed(2)} s = ${Math.round(distinctRate).toLocaleString('en')} events/s wall (batches of ${BATCH}); CPU ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s incl. event generation = ${Math.round(cpuRate).toLocaleString('en')} events/s per core`,
  );
  console.log(
    `ingest, identical flood : ${FLOOD.toLocaleString('en')} events in ${(floodMs / 1000).toFixed(2)} s = ${Math.round(floodRate).toLocaleString('en')} events/s → ${afterFlood.rows - afterIngest.rows} rows`,
  );
  console.log(
    `database                : ${afterFlood.rows.toLocaleString('en')} rows, ${afterFlood.stored.toLocaleString('en')} events, ${(afterFlood.bytes / 1024 ** 2).toFixed(1)} MiB (${(afterFlood.bytes / afterFlood.rows).toFixed(0)} B/row incl. indexes)`,
  );
  console.log(`queries (${loaded.all.length} over the full store, ${mix.length} kinds × ${QUERY_ROUNDS}):`);
  console.log(
    `  full store : p50 ${fmt(percentile(loaded.all, 50))} ms   p95 ${fmt(percentile(loaded.all, 95))} ms   max ${fmt(Math.max(...loaded.all))} ms`,
  );
  console.log(
    `  empty store: p50 ${fmt(percentile(baseline.all, 50))} ms   p95 ${fmt(percentile(baseline.all, 95))} ms   max ${fmt(Math.max(...baseline.all))} ms`,
  );
  console.log('  per kind (full store)       p50 ms    p95 ms');
  for (const [name, xs] of loaded.perKind) {
    console.log(`    ${name.padEnd(24)}${fmt(percentile(xs, 50))}  ${fmt(percentile(xs, 95))}`);
  }
  const verdict = (ok: boolean): string => (ok ? 'met' : 'NOT met');
  console.log(
    `targets: ingest ≥ 50,000 events/s ${verdict(distinctRate >= 50_000)} (wall), ${verdict(cpuRate >= 50_000)} (per core); ` +
      `query p95 < 100 ms ${verdict(percentile(loaded.all, 95) < 100)}`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
