/**
 * Harness pieces shared by the filter benchmarks (bench/modbus.ts, bench/opcua.ts, bench/ui.ts): latency
 * percentiles and their mean over rounds, the rotating plain/filter/relay rounds, JSON lines from lab
 * children, the filter process's RSS around a batch of held connections, and the lab's lifetime.
 *
 * Only Node built-ins and type imports at the top: bench/opcua.ts loads this module in its filter host, whose
 * RSS is the measurement, so everything heavier is imported on demand inside the function that needs it.
 */
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CompileResult } from '../policies/types.ts';
import type { Spawned } from '../test/lab/netns.ts';
import type { Lab, LabHostSpec, LabZoneSpec } from '../test/lab/topology.ts';

export const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');

// ---------------------------------------------------------------------------------------------------------
// Statistics

/** Nearest-rank percentile of ascending `sorted` (NaN when empty). */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? NaN;
}

/** One load-generator run as the orchestrators read it. */
export interface RunSummary {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

/** Mean over rounds (each round's percentiles are over its own samples); errors are summed. */
export function aggregate<R extends RunSummary>(
  rs: R[],
  errorsOf: (r: R) => number = (r) => r.errors,
): RunSummary {
  const mean = (f: (r: R) => number): number => rs.reduce((s, r) => s + f(r), 0) / rs.length;
  return {
    rps: mean((r) => r.rps),
    p50Ms: mean((r) => r.p50Ms),
    p99Ms: mean((r) => r.p99Ms),
    errors: rs.reduce((s, r) => s + errorsOf(r), 0),
  };
}

// ---------------------------------------------------------------------------------------------------------
// Rounds over the three paths of one compiled policy

/** plain = nftables forward only; filter = redirect + inspecting proxy; relay = same proxy, no inspection. */
export type PathName = 'plain' | 'filter' | 'relay';
export const PATH_ORDER: readonly PathName[] = ['plain', 'filter', 'relay'];

/**
 * `rounds` × every scenario × every path of `paths`, calling `run` once each and
 * `report` after it; returns the results of one scenario (by `key`) and path across the rounds.
 */
export async function runRounds<S, R, P extends string>(
  rounds: number,
  scenarios: readonly S[],
  key: (s: S) => string,
  run: (s: S, p: P) => Promise<R>,
  report: (round: number, s: S, p: P, r: R) => void,
  paths: readonly P[],
): Promise<(s: S, p: P) => R[]> {
  const results = new Map<string, R[]>();
  for (let round = 0; round < rounds; round++) {
    for (const sc of scenarios) {
      // Rotate which path goes first, so drift on a shared machine does not favour one path.
      const order = paths.map((_, i) => paths[(i + round) % paths.length] as P);
      for (const p of order) {
        const r = await run(sc, p);
        const k = `${key(sc)}|${p}`;
        results.set(k, [...(results.get(k) ?? []), r]);
        report(round, sc, p, r);
      }
    }
  }
  return (s, p) => results.get(`${key(s)}|${p}`) ?? [];
}

/** The progress line of one run (stderr), `label` already padded. */
export function roundLine(round: number, label: string, p: string, unit: string, r: RunSummary): string {
  return `round ${round + 1}  ${label} ${p.padEnd(6)} ${r.rps.toFixed(0).padStart(7)} ${unit}  p50 ${r.p50Ms.toFixed(3)} ms  p99 ${r.p99Ms.toFixed(3)} ms  errors ${r.errors}`;
}

/** A row of the result table, `label` already padded. */
export function tableRow(label: string, p: string, a: RunSummary): string {
  return `${label} ${p.padEnd(6)} ${a.rps.toFixed(0).padStart(10)} ${a.p50Ms.toFixed(3).padStart(10)} ${a.p99Ms.toFixed(3).padStart(10)} ${String(a.errors).padStart(7)}`;
}

export const met = (b: boolean): string => (b ? 'met' : 'NOT met');

// ---------------------------------------------------------------------------------------------------------
// Lab children

/**
 * A bench policy: zones hmi (`NET.1.0/24`) and control (`NET.2.0/24`) at SL 2 (the lint forbids OPC UA
 * mode None into SL-T ≥ 3), one asset in each, and one conduit hmi → control with `flows` (YAML list items
 * indented by six spaces).
 */
export function hmiControlPolicy(
  name: string,
  net: string,
  client: LabHostSpec,
  server: LabHostSpec,
  flows: string,
): string {
  return `version: 1
gateway:
  name: ${name}
  management: { interface: mgmt0, allowFrom: [${net}.99.0/24] }
zones:
  hmi: { securityLevel: 2, interfaces: [eth1], networks: [${net}.1.0/24] }
  control: { securityLevel: 2, interfaces: [eth2], networks: [${net}.2.0/24] }
assets:
  ${client.name}: { zone: hmi, addresses: [${client.address}] }
  ${server.name}: { zone: control, addresses: [${server.address}] }
conduits:
  hmi-to-control:
    from: hmi
    to: control
    flows:
${flows}`;
}

/** Runs as a script (not imported): `self` is the module's own path. */
export function isMain(self: string): boolean {
  return process.argv[1] !== undefined && path.resolve(process.argv[1]) === self;
}

/** Validates and compiles a bench policy; the compiler is loaded only here (see the module comment). */
export async function compileBenchPolicy(text: string, file: string): Promise<CompileResult> {
  const { validatePolicyText } = await import('../policies/validate.ts');
  const { compilePolicy } = await import('../policies/compile.ts');
  const v = validatePolicyText(text, file);
  if (!v.ok || v.policy === undefined) throw new Error(`bench policy invalid: ${JSON.stringify(v.errors)}`);
  return compilePolicy(v.policy);
}

export type Line = Record<string, unknown>;

/** Resolves with the first JSON stdout line of `child` that satisfies `pred`. */
export function waitLine(child: Spawned, pred: (l: Line) => boolean, ms: number): Promise<Line> {
  return new Promise((resolve, reject) => {
    let rest = '';
    const timer = setTimeout(() => reject(new Error(`no expected output within ${ms} ms`)), ms);
    const onData = (d: Buffer): void => {
      rest += d.toString();
      let nl: number;
      while ((nl = rest.indexOf('\n')) >= 0) {
        const text = rest.slice(0, nl);
        rest = rest.slice(nl + 1);
        let l: Line;
        try {
          l = JSON.parse(text) as Line;
        } catch {
          continue;
        }
        if (pred(l)) {
          clearTimeout(timer);
          child.stdout?.off('data', onData);
          resolve(l);
          return;
        }
      }
    };
    child.stdout?.on('data', onData);
  });
}

/** Runs `node ARGS` in namespace `ns` to the end and parses its last stdout line as JSON. */
export async function execJson<T>(lab: Lab, ns: string, args: string[], timeoutMs: number): Promise<T> {
  const r = await lab.exec(ns, process.execPath, args, { cwd: ROOT, timeout: timeoutMs });
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as T;
}

/** The Modbus load generator's answer (`bench/modbus.ts --master`). */
export interface MasterResult extends RunSummary {
  masters: number;
  intervalMs: number;
  requests: number;
  seconds: number;
  /** Every measured latency (ms, ascending), when asked for with `samples: true`, so runs can be pooled. */
  samples?: number[];
}

/** Runs the Modbus load generator (`bench/modbus.ts --master`) in namespace `ns`. */
export function runMaster(
  lab: Lab,
  ns: string,
  o: {
    host: string;
    port: number;
    masters: number;
    seconds: number;
    maxRequests: number;
    intervalMs: number;
    samples?: boolean;
  },
): Promise<MasterResult> {
  const args = [
    path.join(ROOT, 'bench/modbus.ts'),
    '--master',
    '--host',
    o.host,
    '--port',
    String(o.port),
    '--masters',
    String(o.masters),
    '--seconds',
    String(o.seconds),
    '--max-requests',
    String(o.maxRequests),
    '--interval-ms',
    String(o.intervalMs),
    ...(o.samples === true ? ['--samples'] : []),
  ];
  return execJson<MasterResult>(lab, ns, args, (o.seconds + 30) * 1000);
}

// ---------------------------------------------------------------------------------------------------------
// Filter process memory

export async function procStatusMb(pid: number, field: 'VmRSS' | 'VmHWM'): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
  if (m?.[1] === undefined) throw new Error(`no ${field} for pid ${pid}`);
  return Number(m[1]) / 1024;
}

export interface HeldRss {
  rssIdle: number;
  rssHeld: number;
  /** The holder's `{"held":n,"failed":k}` line. */
  held: Line;
}

/**
 * RSS of the fresh filter process `pid`, then with the connections a holder (`node ARGS` in `ns`, printing
 * `{"held":…}` once they are open) keeps open through it; the holder is killed and the filter given
 * `settleMs` before the throughput runs.
 */
export async function heldRss(
  lab: Lab,
  pid: number,
  ns: string,
  args: string[],
  waitMs: number,
  settleMs: number,
): Promise<HeldRss> {
  // Memory first, on the fresh process: what the connections cost, not what a throughput run left.
  const rssIdle = await procStatusMb(pid, 'VmRSS');
  const holder = lab.spawn(ns, process.execPath, args, { cwd: ROOT });
  const held = await waitLine(holder, (l) => 'held' in l, waitMs);
  await sleep(500);
  const rssHeld = await procStatusMb(pid, 'VmRSS');
  holder.kill('SIGKILL');
  await holder;
  await sleep(settleMs);
  return { rssIdle, rssHeld, held };
}

/** The closing line: the filter's RSS after the throughput runs and its peak. */
export async function rssAfterLine(pid: number): Promise<string> {
  const rssAfter = await procStatusMb(pid, 'VmRSS');
  const hwm = await procStatusMb(pid, 'VmHWM');
  return `filter RSS after the throughput runs: ${rssAfter.toFixed(1)} MB (peak ${hwm.toFixed(1)} MB)`;
}

// ---------------------------------------------------------------------------------------------------------
// Lab lifetime

/** Two zones, hmi (the client) and control (the server), as both filter benchmarks build them. */
export function hmiControlZones(net: string, client: LabHostSpec, server: LabHostSpec): LabZoneSpec[] {
  return [
    { name: 'hmi', iface: 'eth1', subnet: `${net}.1.0/24`, hosts: [client] },
    { name: 'control', iface: 'eth2', subnet: `${net}.2.0/24`, hosts: [server] },
  ];
}

/** Runs `body` with the lab up; removes the lab and `dir` afterwards, also on failure or Ctrl-C. */
export async function withLab<T>(lab: Lab, dir: string, body: () => Promise<T>): Promise<T> {
  const stop = (): void => {
    void lab.down().finally(() => process.exit(130));
  };
  process.once('SIGINT', stop);
  try {
    return await body();
  } finally {
    process.off('SIGINT', stop);
    await lab.down();
    await rm(dir, { recursive: true, force: true });
  }
}
