/**
 * Modbus filter benchmark: `node bench/modbus.ts [--seconds 3] [--rounds 3] [--connections 1000]
 * [--layout both|shared|split] [--ref-spin-us 0]` (root).
 *
 * In one lab (network namespaces `slcMb-*`, real nft), a load generator in the HMI zone drives
 * Read Holding Registers (10 registers) in closed loops — each master one persistent connection with one
 * request in flight — against bench/modbus-echo-server.ts in the control zone, over two paths of the same
 * compiled policy, in the same run:
 * - plain: a `tcp` flow to port 5020, forwarded by nftables only;
 * - filter: a `modbus` flow to port 502, redirected to the Modbus filter (test/lab/proxy-host.ts running the
 *   proxy plan with modbusInspectorFactory, as the daemon does);
 * - relay: a `modbus` flow to port 503, the same proxy with no inspection (the proxy's own cost);
 * - ref: a `modbus` flow to port 504 whose redirect goes to bench/reference-relay.c instead, a minimal C epoll
 *   relay (one read and one write per chunk, nothing else): the floor of what any proxy that terminates TCP
 *   costs in this lab. Built with the system C compiler (`make bench` installs gcc); without one the path is
 *   left out and the reason printed.
 * With 1 and 50 concurrent masters it reports requests/s and p50/p99 latency, then the ratios against the
 * goals (≥ 0.90× throughput at 50 masters, p99 ≤ 1.3×). Finally it opens 1,000 connections through the
 * filter (each completes one request, then stays open) and reports the filter process's RSS (goal ≤ 96 MB).
 * Scenarios alternate plain/filter per round so drift on a shared machine hits both paths alike. Every scenario
 * runs in two CPU layouts: shared (nothing pinned: the proxy competes with the load generator and the PLC
 * stand-in for both cores, the worst case) and split (the filter on the CPUs the daemon takes on a gateway,
 * the stand-ins for the other machines on the rest).
 *
 * Every loop is bounded (time and request count); the lab is removed at the end, also on failure.
 * The same file is the load generator: `--master` and `--hold` modes run inside the client namespace.
 */
import { mkdtemp, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { Nft } from '../gateway/nft.ts';
import { allowedCpus, cpuPlan, formatCpuList, pinCpus } from '../gateway/sched.ts';
import type { Spawned } from '../test/lab/netns.ts';
import { labUp, type Lab } from '../test/lab/topology.ts';
import {
  aggregate,
  compileBenchPolicy,
  heldRss,
  hmiControlPolicy,
  hmiControlZones,
  isMain,
  met,
  percentile,
  PATH_ORDER,
  ROOT,
  roundLine,
  runMaster,
  runRounds,
  rssAfterLine,
  tableRow,
  waitLine,
  withLab,
  type MasterResult,
  type PathName,
  type RunSummary,
} from './common.ts';

export type { MasterResult } from './common.ts';

const SELF = path.join(ROOT, 'bench/modbus.ts');

// ---------------------------------------------------------------------------------------------------------
// Load generator (runs inside the client namespace)

/** Read Holding Registers, unit 1, address 0, quantity 10; the transaction id is patched per request. */
function readRequest(): Buffer {
  return Buffer.from([0, 0, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10]);
}

/**
 * `masters` persistent connections, each with one request in flight, for `warmupMs` (not measured) plus
 * `seconds`; at most `maxRequests` measured requests in all. With `intervalMs` 0 each master sends its next
 * request as soon as the answer is in (closed loop: measures capacity); otherwise once per interval. Answers are framed by the MBAP length and
 * must carry the request's transaction id and function 3, else they count as errors.
 */
export async function runMasters(
  host: string,
  port: number,
  masters: number,
  seconds: number,
  maxRequests: number,
  warmupMs: number,
  intervalMs = 0,
  keepSamples = false,
): Promise<MasterResult> {
  const samples = new Float64Array(maxRequests);
  let count = 0;
  let errors = 0;
  const t0 = performance.now();
  const measureFrom = t0 + warmupMs;
  const end = measureFrom + seconds * 1000;
  const one = (): Promise<void> =>
    new Promise<void>((resolve) => {
      const s = net.connect({ host, port, noDelay: true });
      const req = readRequest();
      let tx = 0;
      let sentAt = 0;
      let pending: Buffer = Buffer.alloc(0);
      let done = false;
      const finish = (): void => {
        if (done) return;
        done = true;
        s.destroy();
        resolve();
      };
      // A stuck connection must not hold the run: give up a little after the window closes.
      const guard = setTimeout(
        () => {
          errors++;
          finish();
        },
        end - performance.now() + 5000,
      );
      const send = (): void => {
        tx = (tx + 1) & 0xffff;
        req.writeUInt16BE(tx, 0);
        sentAt = performance.now();
        s.write(req);
      };
      s.on('connect', send);
      s.on('data', (d: Buffer) => {
        pending = pending.length === 0 ? d : Buffer.concat([pending, d]);
        while (pending.length >= 6 && pending.length >= 6 + pending.readUInt16BE(4)) {
          const total = 6 + pending.readUInt16BE(4);
          const ok = pending.readUInt16BE(0) === tx && pending[7] === 3;
          pending = pending.subarray(total);
          const now = performance.now();
          if (!ok) errors++;
          else if (sentAt >= measureFrom && now <= end && count < maxRequests)
            samples[count++] = now - sentAt;
          if (now >= end || count >= maxRequests) {
            clearTimeout(guard);
            finish();
            return;
          }
          // Paced: the next poll starts one interval after the previous one did (a PLC poll cycle).
          const wait = intervalMs > 0 ? sentAt + intervalMs - now : 0;
          if (wait > 0) setTimeout(send, wait);
          else send();
        }
      });
      s.on('error', () => {
        errors++;
        clearTimeout(guard);
        finish();
      });
      s.on('close', () => {
        clearTimeout(guard);
        finish();
      });
    });
  await Promise.all(Array.from({ length: masters }, one));
  const measured = Math.min(seconds, (performance.now() - measureFrom) / 1000);
  const sorted = samples.subarray(0, count).sort();
  return {
    masters,
    intervalMs,
    requests: count,
    seconds: measured,
    rps: count / measured,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    errors,
    ...(keepSamples ? { samples: Array.from(sorted, (x) => Math.round(x * 1000) / 1000) } : {}),
  };
}

/**
 * Opens `n` connections (at most 100 connecting at a time), completes one request on each so every
 * connection has a live inspector, prints `{"held":n,"failed":k}` and keeps them open until killed.
 */
async function holdConnections(host: string, port: number, n: number): Promise<void> {
  const sockets: net.Socket[] = [];
  let failed = 0;
  const open = (): Promise<void> =>
    new Promise<void>((resolve) => {
      const s = net.connect({ host, port, noDelay: true });
      const timer = setTimeout(() => {
        failed++;
        s.destroy();
        resolve();
      }, 10_000);
      s.on('error', () => {});
      s.once('connect', () => s.write(readRequest()));
      s.once('data', () => {
        clearTimeout(timer);
        sockets.push(s);
        resolve();
      });
      s.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  for (let i = 0; i < n; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, n - i) }, open));
  }
  const alive = sockets.filter((s) => !s.destroyed).length;
  process.stdout.write(JSON.stringify({ held: alive, failed }) + '\n');
  // Bounded: the orchestrator kills this process; if it does not, give up after a minute.
  setTimeout(() => process.exit(0), 60_000);
}

// ---------------------------------------------------------------------------------------------------------
// Orchestrator

const PREFIX = 'slcMb';
const CLIENT = '10.233.1.10';
const SERVER = '10.233.2.20';
/** The bench's paths: the three every filter bench has, and the reference relay (see the module comment). */
type ModbusPath = PathName | 'ref';
/** Plain tcp flow, filtered flow, relayed flow (same proxy, no inspection), reference relay's flow. */
const PORTS = { filter: 502, relay: 503, plain: 5020, ref: 504 } as const satisfies Record<
  ModbusPath,
  number
>;
/** The flow whose redirect the reference relay takes over. */
const REF_FLOW = 'reference';
/** Paced scenario: each master polls once per this interval (a fast PLC poll cycle). */
const PACED_INTERVAL_MS = 10;

const MASTER = { name: 'master', address: CLIENT };
const PLC = { name: 'plc', address: SERVER };

const POLICY = hmiControlPolicy(
  'modbus-bench',
  '10.233',
  MASTER,
  PLC,
  `      - name: poll
        protocol: modbus
        from: [master]
        to: [plc]
        port: ${PORTS.filter}
        modbus:
          unitIds: [1]
          rules:
            - functions: [read-holding-registers, read-input-registers]
              addresses: 0-999
      - name: relay
        protocol: modbus
        from: [master]
        to: [plc]
        port: ${PORTS.relay}
        modbus:
          rules:
            - functions: [read-holding-registers]
      - name: plain
        protocol: tcp
        from: [master]
        to: [plc]
        port: ${PORTS.plain}
      - name: ${REF_FLOW}
        protocol: modbus
        from: [master]
        to: [plc]
        port: ${PORTS.ref}
        modbus:
          rules:
            - functions: [read-holding-registers]
`,
);

async function mtime(file: string): Promise<number> {
  try {
    return (await stat(file)).mtimeMs;
  } catch {
    return -1;
  }
}

/**
 * The filter host as the daemon runs it: compiled JavaScript (bin/sluice.js runs dist/), because Node's
 * TypeScript type stripping keeps ~15-30 MB of its own in RSS. Uses dist/ when `make build` left it newer
 * than the sources that matter, else compiles the project into `dir` (tsc still emits when another module
 * has type errors; only the host file must come out).
 */
async function filterHost(dir: string): Promise<{ script: string; note: string }> {
  const dist = path.join(ROOT, 'dist/test/lab/proxy-host.js');
  const sources = [
    'test/lab/proxy-host.ts',
    'protocol-filters/core/proxy.ts',
    'protocol-filters/core/supervisor.ts',
    'protocol-filters/modbus/inspector.ts',
    'protocol-filters/modbus/mbap.ts',
    'protocol-filters/modbus/pdu.ts',
    'protocol-filters/modbus/decide.ts',
    'protocol-filters/modbus/response.ts',
  ];
  const built = await mtime(dist);
  const newest = Math.max(...(await Promise.all(sources.map((s) => mtime(path.join(ROOT, s))))));
  if (built >= newest) return { script: dist, note: 'dist/ (compiled JavaScript)' };
  const out = path.join(dir, 'dist');
  await execa('tsc', ['-p', path.join(ROOT, 'tsconfig.build.json'), '--outDir', out], {
    cwd: ROOT,
    reject: false,
    env: { PATH: `${path.join(ROOT, 'node_modules/.bin')}:${process.env.PATH ?? ''}` },
  });
  const script = path.join(out, 'test/lab/proxy-host.js');
  if ((await mtime(script)) < 0) throw new Error('could not compile test/lab/proxy-host.ts');
  return { script, note: 'compiled JavaScript (dist/ was stale: built into a temporary directory)' };
}

/**
 * Builds bench/reference-relay.c into `dir` with the system C compiler. Returns the binary, or why there is
 * none (the bench then runs without the ref path and says so).
 */
async function referenceRelay(dir: string): Promise<{ bin: string } | { skipped: string }> {
  const bin = path.join(dir, 'reference-relay');
  const r = await execa('cc', ['-O2', '-o', bin, path.join(ROOT, 'bench/reference-relay.c')], {
    reject: false,
  });
  if (r.failed) {
    const why = r.exitCode === undefined ? 'no C compiler (cc); `make bench` installs gcc' : r.stderr.trim();
    return { skipped: `reference relay left out: ${why}` };
  }
  return { bin };
}

interface Layout {
  name: 'shared' | 'split';
  note: string;
  /** CPUs of the filter process and of the master + PLC stand-ins; unset: all allowed. */
  gw?: readonly number[];
  peers?: readonly number[];
}

interface Options {
  layout: 'shared' | 'split' | 'both';
  /** The reference relay busy-polls this long after each event (0: it sleeps like any proxy). */
  refSpinUs: number;
  seconds: number;
  rounds: number;
  connections: number;
  maxRequests: number;
}

function master(lab: Lab, port: number, masters: number, o: Options, intervalMs = 0): Promise<MasterResult> {
  return runMaster(lab, lab.hostNs('hmi', 'master'), {
    host: SERVER,
    port,
    masters,
    seconds: o.seconds,
    maxRequests: o.maxRequests,
    intervalMs,
  });
}

interface Scenario {
  name: string;
  masters: number;
  intervalMs: number;
}

const CLOSED_50 = 'closed-loop, 50 masters';
const PACED_50 = `paced ${PACED_INTERVAL_MS} ms, 50 masters`;
const SCENARIOS: Scenario[] = [
  { name: 'closed-loop, 1 master', masters: 1, intervalMs: 0 },
  { name: CLOSED_50, masters: 50, intervalMs: 0 },
  { name: PACED_50, masters: 50, intervalMs: PACED_INTERVAL_MS },
];

async function orchestrate(o: Options): Promise<number> {
  if (process.getuid?.() !== 0) {
    console.error('bench/modbus.ts needs root (network namespaces and nft)');
    return 1;
  }
  const { ruleset, plan } = await compileBenchPolicy(POLICY, 'bench-modbus.yaml');
  const dir = await mkdtemp(path.join(tmpdir(), 'sluice-bench-modbus-'));
  const host = await filterHost(dir);
  const ref = await referenceRelay(dir);
  const paths: ModbusPath[] = 'bin' in ref ? [...PATH_ORDER, 'ref'] : [...PATH_ORDER];
  const lab = await labUp({
    prefix: PREFIX,
    zones: hmiControlZones('10.233', MASTER, PLC),
  });
  return withLab(lab, dir, async () => {
    await new Nft({ netns: lab.gw }).load(ruleset);
    const echo = lab.spawn(
      lab.hostNs('control', 'plc'),
      process.execPath,
      [
        path.join(ROOT, 'bench/modbus-echo-server.ts'),
        ...Object.values(PORTS).flatMap((p) => ['--port', String(p)]),
      ],
      { cwd: ROOT },
    );
    await waitLine(echo, (l) => 'listening' in l, 10_000);
    const planFile = path.join(dir, 'plan.json');
    await writeFile(planFile, JSON.stringify(plan));
    const limits = { maxConnections: o.connections + 100, maxConnectionsPerSource: o.connections + 100 };
    const proxy = lab.spawn(
      lab.gw,
      process.execPath,
      [
        host.script,
        planFile,
        '--quiet',
        '--relay-flow',
        'relay',
        '--omit-flow',
        REF_FLOW,
        '--limits',
        JSON.stringify(limits),
      ],
      { cwd: ROOT },
    );
    const ready = await waitLine(proxy, (l) => 'ready' in l || 'failed' in l, 15_000);
    if (!('ready' in ready)) throw new Error(`filter did not start: ${JSON.stringify(ready)}`);
    const pid = proxy.pid;
    if (pid === undefined) throw new Error('filter process has no pid');
    // The reference relay listens where the proxy of the reference flow would, so the same redirect feeds it.
    let refRelay: Spawned | undefined;
    if ('bin' in ref) {
      const entry = plan.entries.find((e) => e.flow === REF_FLOW);
      if (entry === undefined) throw new Error(`the bench plan has no ${REF_FLOW} entry`);
      const { address, port } = entry.upstream;
      const args = [String(entry.listenPort), address, String(port), String(o.refSpinUs)];
      refRelay = lab.spawn(lab.gw, ref.bin, args, {
        cwd: ROOT,
      });
      await waitLine(refRelay, (l) => 'ready' in l, 10_000);
    }
    const refPid = refRelay?.pid;

    const { rssIdle, rssHeld, held } = await heldRss(
      lab,
      pid,
      lab.hostNs('hmi', 'master'),
      [SELF, '--hold', '--host', SERVER, '--port', String(PORTS.filter), '--masters', String(o.connections)],
      120_000,
      500,
    );

    // Sanity: every path answers without errors.
    for (const port of paths.map((p) => PORTS[p])) {
      const s = await master(lab, port, 1, { ...o, seconds: 0.3 });
      if (s.requests === 0 || s.errors > 0)
        throw new Error(`sanity run on port ${port} failed: ${JSON.stringify(s)}`);
    }

    // Two CPU layouts, in the same run. shared: nothing pinned, the proxy, the load generator and the PLC
    // stand-in compete for every core (the worst case). split: the filter on the CPUs the daemon takes on a
    // gateway (gateway/sched.ts: all but the last), the master and the PLC stand-in on the rest, as if they
    // were the other machines they stand for. Plain forwarding happens in the senders' softirq context, so in
    // split it runs on the endpoints' CPU; the filter's extra hop crosses CPUs (expensive wake-ups in a VM).
    const allowed = (await allowedCpus()) ?? [];
    // The same split as the product's (gateway/sched.ts): the daemon's CPUs for the filter, the UI's for the rest.
    const gwCpus = cpuPlan('daemon', allowed);
    const peerCpus = cpuPlan('ui', allowed);
    const echoPid = echo.pid;
    if (echoPid === undefined) throw new Error('echo server has no pid');
    const candidates: Layout[] = [{ name: 'shared', note: `all on CPU ${formatCpuList(allowed)}` }];
    if (gwCpus !== undefined && peerCpus !== undefined)
      candidates.push({
        name: 'split',
        note: `filter on CPU ${formatCpuList(gwCpus)}, master and PLC on CPU ${formatCpuList(peerCpus)}`,
        gw: gwCpus,
        peers: peerCpus,
      });
    const layouts = candidates.filter((l) => o.layout === 'both' || o.layout === l.name);
    if (layouts.length === 0) throw new Error('--layout split needs two or more CPUs');
    const place = async (cpus: readonly number[], pids: number[]) => {
      for (const p of pids) {
        const r = await pinCpus(cpus, p);
        if (!r.ok) throw new Error(r.reason);
      }
    };
    const gwPids = refPid === undefined ? [pid] : [pid, refPid];
    const byLayout = new Map<string, (sc: Scenario, p: ModbusPath) => MasterResult[]>();
    for (const layout of layouts) {
      // The masters are started by this process, so they inherit its affinity.
      await place(layout.gw ?? allowed, gwPids);
      await place(layout.peers ?? allowed, [echoPid, process.pid]);
      byLayout.set(
        layout.name,
        await runRounds(
          o.rounds,
          SCENARIOS,
          (sc) => sc.name,
          (sc, p) => master(lab, PORTS[p], sc.masters, o, sc.intervalMs),
          (round, sc, p, r) =>
            console.error(roundLine(round, `${layout.name.padEnd(6)} ${sc.name.padEnd(24)}`, p, 'req/s', r)),
          paths,
        ),
      );
    }
    await place(allowed, [...gwPids, echoPid, process.pid]);
    const rssAfter = await rssAfterLine(pid);

    const lines = [
      '',
      `Modbus filter benchmark: ${o.rounds} rounds × ${o.seconds} s per scenario, path and layout; Read Holding Registers ×10.`,
      `plain = nftables forward only; filter = Modbus filter (redirect + proxy + inspection); relay = same proxy, no inspection;`,
      `ref = minimal C epoll relay on the same kind of redirect (bench/reference-relay.c): the floor of any TCP-terminating proxy here.`,
      ...(o.refSpinUs > 0
        ? [
            `ref busy-polls ${o.refSpinUs} µs after each event (--ref-spin-us): it never sleeps under load, which no gateway should do.`,
          ]
        : []),
      `Filter process: ${host.note}.`,
      ...('skipped' in ref ? [ref.skipped] : []),
    ];
    const goals: string[] = [];
    for (const layout of layouts) {
      const results = byLayout.get(layout.name);
      if (results === undefined) continue;
      const get = (sc: Scenario, p: ModbusPath): RunSummary => aggregate(results(sc, p));
      lines.push(
        '',
        `layout ${layout.name}: ${layout.note}`,
        'scenario                  path        req/s     p50 ms     p99 ms  errors',
      );
      for (const sc of SCENARIOS) {
        for (const p of paths) lines.push(tableRow(sc.name.padEnd(25), p, get(sc, p)));
      }
      lines.push('');
      const ratios: Record<string, { tput: number; p99: number }> = {};
      const floor: Record<string, { tput: number; p99: number }> = {};
      for (const sc of SCENARIOS) {
        const pl = get(sc, 'plain');
        const fi = get(sc, 'filter');
        const re = get(sc, 'relay');
        ratios[sc.name] = { tput: fi.rps / pl.rps, p99: fi.p99Ms / pl.p99Ms };
        lines.push(
          `ratios filter/plain, ${sc.name.padEnd(24)} throughput ${(fi.rps / pl.rps).toFixed(2)}×  p50 ${(fi.p50Ms / pl.p50Ms).toFixed(2)}×  p99 ${(fi.p99Ms / pl.p99Ms).toFixed(2)}×   (filter/relay throughput ${(fi.rps / re.rps).toFixed(2)}×)`,
        );
      }
      if (paths.includes('ref')) {
        for (const sc of SCENARIOS) {
          const pl = get(sc, 'plain');
          const rf = get(sc, 'ref');
          floor[sc.name] = { tput: rf.rps / pl.rps, p99: rf.p99Ms / pl.p99Ms };
          lines.push(
            `ratios ref/plain,    ${sc.name.padEnd(24)} throughput ${(rf.rps / pl.rps).toFixed(2)}×  p50 ${(rf.p50Ms / pl.p50Ms).toFixed(2)}×  p99 ${(rf.p99Ms / pl.p99Ms).toFixed(2)}×   (filter/ref throughput ${(get(sc, 'filter').rps / rf.rps).toFixed(2)}×)`,
          );
        }
      }
      const c50 = ratios[CLOSED_50];
      const p50 = ratios[PACED_50];
      goals.push(
        `${layout.name}: goal throughput ≥ 0.90× at 50 masters: closed loop ${met((c50?.tput ?? 0) >= 0.9)}, paced ${met((p50?.tput ?? 0) >= 0.9)}`,
        `${layout.name}: goal p99 ≤ 1.3× at 50 masters: closed loop ${met((c50?.p99 ?? Infinity) <= 1.3)}, paced ${met((p50?.p99 ?? Infinity) <= 1.3)}`,
      );
      const f50 = floor[CLOSED_50];
      const fp50 = floor[PACED_50];
      if (f50 !== undefined && fp50 !== undefined)
        goals.push(
          `${layout.name}: the same goals for the reference relay (no inspection, C): throughput closed loop ${met(f50.tput >= 0.9)} (${f50.tput.toFixed(2)}×), paced ${met(fp50.tput >= 0.9)}; p99 closed loop ${met(f50.p99 <= 1.3)} (${f50.p99.toFixed(2)}×), paced ${met(fp50.p99 <= 1.3)} (${fp50.p99.toFixed(2)}×)`,
        );
    }
    lines.push(
      '',
      ...goals,
      `filter RSS: ${rssIdle.toFixed(1)} MB idle, ${rssHeld.toFixed(1)} MB with ${String(held.held)} open connections (${String(held.failed)} failed); goal ≤ 96 MB: ${met(rssHeld <= 96 && held.held === o.connections)}`,
      rssAfter,
    );
    console.log(lines.join('\n'));
    return 0;
  });
}

// ---------------------------------------------------------------------------------------------------------

if (isMain(SELF)) {
  const { values } = parseArgs({
    options: {
      master: { type: 'boolean', default: false },
      hold: { type: 'boolean', default: false },
      host: { type: 'string', default: SERVER },
      port: { type: 'string', default: String(PORTS.filter) },
      masters: { type: 'string', default: '1' },
      seconds: { type: 'string', default: '3' },
      rounds: { type: 'string', default: '3' },
      connections: { type: 'string', default: '1000' },
      'max-requests': { type: 'string', default: '2000000' },
      'interval-ms': { type: 'string', default: '0' },
      layout: { type: 'string', default: 'both' },
      samples: { type: 'boolean', default: false },
      'ref-spin-us': { type: 'string', default: '0' },
    },
  });
  const seconds = Number(values.seconds);
  const maxRequests = Number(values['max-requests']);
  if (values.master) {
    const r = await runMasters(
      values.host,
      Number(values.port),
      Number(values.masters),
      seconds,
      maxRequests,
      300,
      Number(values['interval-ms']),
      values.samples,
    );
    process.stdout.write(JSON.stringify(r) + '\n');
    process.exit(0);
  } else if (values.hold) {
    await holdConnections(values.host, Number(values.port), Number(values.masters));
  } else {
    const layout = values.layout;
    if (layout !== 'shared' && layout !== 'split' && layout !== 'both') {
      console.error(`bench/modbus.ts: --layout takes shared, split or both, not '${layout}'`);
      process.exit(2);
    }
    const refSpinUs = Number(values['ref-spin-us']);
    if (!Number.isInteger(refSpinUs) || refSpinUs < 0 || refSpinUs > 1_000_000) {
      console.error(
        `bench/modbus.ts: --ref-spin-us takes 0..1000000 microseconds, not '${values['ref-spin-us']}'`,
      );
      process.exit(2);
    }
    process.exitCode = await orchestrate({
      layout,
      refSpinUs,
      seconds,
      rounds: Number(values.rounds),
      connections: Number(values.connections),
      maxRequests,
    });
  }
}
