/**
 * Apply benchmark: `node bench/apply.ts [CONDUITS] [ASSETS]` (default 1,000 conduits, 5,000 assets).
 *
 * In one lab (network namespaces, real nft), measures the apply time (validate → compile → nft -c → load →
 * record) of a generated large policy against a small policy in the same run, and whether a long-lived TCP
 * stream through the gateway survives the large apply (no reset, no gap over 1 s). Prints a summary block.
 *
 * Also exports the stream probe used by test/apply.test.ts: a node client in one zone host that sends a
 * byte every 100 ms to an echo server in another zone and reports the longest gap between echoes.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pino from 'pino';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApplyEngine, type ApplyTimings } from '../gateway/apply.ts';
import { Nft } from '../gateway/nft.ts';
import { StateStore } from '../gateway/state.ts';
import { waitForTcpListen, type Spawned } from '../test/lab/netns.ts';
import { labUp, type Lab } from '../test/lab/topology.ts';
import { generatePolicyModel, type GenZone } from './gen-policy.ts';

// ---------------------------------------------------------------------------------------------------------
// Stream probe

// Sends one byte every 100 ms and times the echoes. Stops after DURATION ms, or on SIGTERM (then
// reports), whichever comes first: a caller that does not know how long an apply takes uses SIGTERM.
const STREAM_CLIENT_JS = `
const net = require('node:net');
const [host, port, durationMs] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port) });
s.setNoDelay(true);
let sent = 0, received = 0, last = 0, maxGap = 0, error = null, closed = false, iv, stopping = false;
const report = (extra) => { console.log(JSON.stringify({ sent, received, maxGapMs: maxGap, error, closed, ...extra })); };
const giveUp = setTimeout(() => { report({ error: error ?? 'connect-timeout' }); process.exit(1); }, Number(durationMs) + 5000);
const stop = () => {
  if (stopping) return;
  stopping = true;
  clearInterval(iv);
  if (last > 0) maxGap = Math.max(maxGap, Date.now() - last);
  // Let the last echoes arrive, then report.
  setTimeout(() => { clearTimeout(giveUp); report({}); process.exit(0); }, 500);
};
process.on('SIGTERM', stop);
s.on('connect', () => {
  last = Date.now();
  console.log('connected');
  iv = setInterval(() => { s.write('x'); sent++; }, 100);
  setTimeout(stop, Number(durationMs));
});
s.on('data', (d) => { const now = Date.now(); maxGap = Math.max(maxGap, now - last); last = now; received += d.length; });
s.on('error', (e) => { error = e.code || e.message; });
s.on('close', () => { closed = true; });
`;

const ECHO_SERVER_JS = `
const net = require('node:net');
const [host, port] = process.argv.slice(1);
net.createServer((s) => { s.setNoDelay(true); s.on('error', () => {}); s.pipe(s); }).listen(Number(port), host);
`;

/**
 * Starts a TCP echo server in `ns` and waits until it listens; `lab.down()` stops it. (Not netns.ts's
 * startTcpEcho: an async function returning execa's child — a thenable — waits for the child to exit.)
 */
export async function startEcho(lab: Lab, ns: string, port: number): Promise<void> {
  const child = lab.spawn(ns, process.execPath, ['-e', ECHO_SERVER_JS, '0.0.0.0', String(port)]);
  try {
    await waitForTcpListen(ns, port);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
}

export interface StreamReport {
  sent: number;
  received: number;
  /** Longest time between two echoes (or from the last echo to the end of sending), ms. */
  maxGapMs: number;
  error: string | null;
  closed: boolean;
}

export interface Stream {
  /** Resolves with the report once the stream has run for its duration or was stopped. */
  done: Promise<StreamReport>;
  /** Ends the stream now (SIGTERM) and resolves with its report. */
  stop: () => Promise<StreamReport>;
  child: Spawned;
}

/**
 * Starts a stream client in `ns` towards `host:port` (an echo server must listen there) for `durationMs`,
 * and resolves once it is connected.
 */
export async function startStream(
  lab: Lab,
  ns: string,
  host: string,
  port: number,
  durationMs: number,
): Promise<Stream> {
  const child = lab.spawn(ns, process.execPath, [
    '-e',
    STREAM_CLIENT_JS,
    host,
    String(port),
    String(durationMs),
  ]);
  let out = '';
  const connected = new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('connected\n')) resolve();
    });
    void child.then(() => reject(new Error(`stream client ended before connecting: ${out.trim()}`)));
  });
  const done = child.then((r) => {
    const line = String(r.stdout).trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(line) as StreamReport;
    } catch {
      throw new Error(
        `stream client printed no report (exit ${r.exitCode}): ${String(r.stdout)} ${String(r.stderr)}`,
      );
    }
  });
  await connected;
  const stop = (): Promise<StreamReport> => {
    child.kill('SIGTERM');
    return done;
  };
  return { done, stop, child };
}

/** True when the stream lived through everything: no error, no close, every byte echoed, no gap over 1 s. */
export function streamSurvived(r: StreamReport): boolean {
  return r.error === null && !r.closed && r.received === r.sent && r.sent > 0 && r.maxGapMs < 1000;
}

// ---------------------------------------------------------------------------------------------------------
// Benchmark

const PREFIX = 'slcAb';
const STREAM_PORT = 9000;

/** The small policy of the comparison: the same two zones and the stream's flow, nothing else. */
function smallPolicy(from: GenZone, to: GenZone, src: string, dst: string): string {
  return `version: 1
gateway:
  name: bench-gw
  management:
    interface: mgmt0
    allowFrom: [192.168.100.0/24]
zones:
  ${from.name}: { securityLevel: ${from.securityLevel}, interfaces: [${from.iface}], networks: [${from.network}] }
  ${to.name}: { securityLevel: ${to.securityLevel}, interfaces: [${to.iface}], networks: [${to.network}] }
conduits:
  stream:
    from: ${from.name}
    to: ${to.name}
    flows:
      - name: stream
        protocol: tcp
        from: [${src}/32]
        to: [${dst}/32]
        port: ${STREAM_PORT}
`;
}

const median = (xs: number[]): number =>
  [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? Number.NaN;

async function main(): Promise<void> {
  const conduits = Number(process.argv[2] ?? 1000);
  const assets = Number(process.argv[3] ?? 5000);
  const model = generatePolicyModel({ conduits, assets, streamPort: STREAM_PORT });
  const stream = model.stream;
  const src = stream?.from.assets[0]?.address;
  const dst = stream?.to.assets[0]?.address;
  if (stream === undefined || src === undefined || dst === undefined) {
    throw new Error('the generated policy has no stream flow between two assets (need assets ≥ zones)');
  }
  const bigText = model.text;
  const small = smallPolicy(stream.from, stream.to, src, dst);

  // The lab's two zones are the generated policy's zones 1 and 2: same interfaces, networks and hosts,
  // so the stream crosses a conduit that the large policy really allows.
  const lab = await labUp({
    prefix: PREFIX,
    zones: [
      {
        name: 'za',
        iface: stream.from.iface,
        subnet: stream.from.network,
        hosts: [{ name: 'h1', address: src }],
      },
      {
        name: 'zb',
        iface: stream.to.iface,
        subnet: stream.to.network,
        hosts: [{ name: 'h2', address: dst }],
      },
    ],
  });
  const dir = await mkdtemp(path.join(tmpdir(), 'slcA-bench-'));
  let engine: ApplyEngine | undefined;
  try {
    await startEcho(lab, lab.hostNs('zb', 'h2'), STREAM_PORT);
    const state = await StateStore.open(dir);
    engine = new ApplyEngine({ state, nft: new Nft({ netns: lab.gw }), logger: pino({ level: 'silent' }) });

    const rounds = 3;
    const smallTimes: ApplyTimings[] = [];
    const bigTimes: ApplyTimings[] = [];
    const reports: StreamReport[] = [];
    let rulesetBytes = 0;
    for (let i = 0; i < rounds; i++) {
      smallTimes.push((await engine.apply(small, { who: 'bench' })).timings);
      // The stream is established under the small policy; the large one replaces it mid-stream.
      const s = await startStream(lab, lab.hostNs('za', 'h1'), dst, STREAM_PORT, 60_000);
      await sleep(700);
      const r = await engine.apply(bigText, { who: 'bench' });
      bigTimes.push(r.timings);
      await sleep(1000); // the stream keeps running under the new ruleset
      reports.push(await s.stop());
      if (i === 0) rulesetBytes = Buffer.byteLength((await new Nft({ netns: lab.gw }).listTable()) ?? '');
    }
    const smallMs = median(smallTimes.map((t) => t.totalMs));
    const bigMs = median(bigTimes.map((t) => t.totalMs));
    const stage = (k: keyof ApplyTimings): string => median(bigTimes.map((t) => t[k])).toFixed(0);
    const survived = reports.every(streamSurvived);
    const worstGap = Math.max(...reports.map((r) => r.maxGapMs));
    console.log(`
== bench/apply ===================================================================
policy                 ${conduits} conduits, ${assets} assets, ${model.zones.length} zones (${(Buffer.byteLength(bigText) / 1024).toFixed(0)} KiB YAML; ${(rulesetBytes / 1024).toFixed(0)} KiB as listed by nft)
apply, large (median)  ${bigMs.toFixed(0)} ms  [validate ${stage('validateMs')} | compile ${stage('compileMs')} | nft -c ${stage('checkMs')} | load ${stage('loadMs')} | record ${stage('recordMs')}]
apply, small (median)  ${smallMs.toFixed(0)} ms
ratio large/small      ${(bigMs / smallMs).toFixed(1)}x
stream across apply    ${survived ? 'survived' : 'BROKEN'} (${rounds} applies; byte every 100 ms; worst gap ${worstGap} ms; ${reports.map((r) => `${r.received}/${r.sent}`).join(', ')} echoed)
==================================================================================`);
    if (!survived) process.exitCode = 1;
  } finally {
    engine?.close();
    await lab.down();
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
