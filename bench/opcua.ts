/**
 * OPC UA filter benchmark: `node bench/opcua.ts [--seconds 3] [--rounds 2] [--sessions 10] [--hold 500]` (root).
 *
 * In one lab (network namespaces `slcOb-*`, real nft), node-opcua clients in the HMI zone run closed-loop
 * Read loops (one Read of one Double in flight per session) against node-opcua servers in the control zone
 * (test/lab/opcua-server.ts), over three paths of the same compiled policy, in the same run:
 * - plain: a `tcp` flow to port 4841, forwarded by nftables only (a second server process listens there);
 * - relay: an `opcua` flow to port 4842 through the same proxy with the plain relay (no inspection);
 * - filter: an `opcua` flow to port 4840, redirected to the OPC UA filter (ProxySupervisor with
 *   opcuaInspectorFactory, as the daemon runs it, in a process of its own so its RSS can be read).
 * Both in SecurityMode None (the filter decodes and decides every request) and SignAndEncrypt
 * Basic256Sha256 (the filter checks policy/mode and forwards opaque chunks). It reports reads/s and p50/p99
 * latency, the ratios against the goals (≥ 0.85× None, ≥ 0.95× SignAndEncrypt) and the filter's RSS with
 * `--hold` sessions open through it: raw HEL/OPN/CreateSession/ActivateSession frames
 * (protocol-filters/opcua/frames.ts), because 500 node-opcua clients would weigh gigabytes.
 * Paths alternate per round so drift on a shared machine hits both alike; every loop is bounded in time and
 * the lab is removed at the end, also on failure.
 *
 * The same file is the load generator (`--reads`, `--hold-sessions`, run in the client namespace) and the
 * filter host (`--filter-host PLAN.json`, run in the gateway namespace).
 */
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { BinaryStream } from 'node-opcua-binary-stream';
import {
  ActivateSessionRequest,
  ActivateSessionResponse,
  AnonymousIdentityToken,
  ApplicationDescription,
  CreateSessionRequest,
  CreateSessionResponse,
  OpenSecureChannelResponse,
} from 'node-opcua-types';
import type { ProxyPlan } from '../policies/types.ts';
import { ProxySupervisor } from '../protocol-filters/core/supervisor.ts';
import { relayInspectorFactory } from '../protocol-filters/core/relay.ts';
import { encodeBody, hello, msgChunk, openRequest } from '../protocol-filters/opcua/frames.ts';
import { opcuaInspectorFactory } from '../protocol-filters/opcua/inspector.ts';
import type { Lab } from '../test/lab/topology.ts';
import {
  aggregate,
  compileBenchPolicy,
  execJson,
  heldRss,
  hmiControlPolicy,
  hmiControlZones,
  isMain,
  met,
  percentile,
  PATH_ORDER,
  ROOT,
  roundLine,
  runRounds,
  rssAfterLine,
  tableRow,
  waitLine,
  withLab,
  type PathName,
  type RunSummary,
} from './common.ts';

const SELF = path.join(ROOT, 'bench/opcua.ts');
const NODE = 'ns=2;s=Line1.Setpoint';

type Security = 'None' | 'SignAndEncrypt';

export interface ReadResult extends RunSummary {
  sessions: number;
  security: Security;
  requests: number;
  seconds: number;
  connectFailures: number;
}

// ---------------------------------------------------------------------------------------------------------
// Load generator: node-opcua sessions reading in closed loops (runs inside the client namespace)

async function runReads(
  endpoint: string,
  security: Security,
  sessions: number,
  seconds: number,
  warmupMs: number,
  pki: string,
): Promise<ReadResult> {
  // Loaded here only: the orchestrator and the filter host must not pay for the full SDK.
  const ua = await import('node-opcua');
  const manager = new ua.OPCUACertificateManager({
    rootFolder: pki,
    automaticallyAcceptUnknownCertificate: true,
  });
  await manager.initialize();
  const maxSamples = 2_000_000;
  const samples = new Float64Array(maxSamples);
  let count = 0;
  let errors = 0;
  let connectFailures = 0;
  const clients = await Promise.all(
    Array.from({ length: sessions }, async () => {
      const client = ua.OPCUAClient.create({
        clientCertificateManager: manager,
        securityMode: ua.MessageSecurityMode[security],
        securityPolicy: security === 'None' ? ua.SecurityPolicy.None : ua.SecurityPolicy.Basic256Sha256,
        endpointMustExist: false,
        connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
      });
      try {
        await client.connect(endpoint);
        const session = await client.createSession();
        return { client, session };
      } catch {
        connectFailures++;
        await client.disconnect().catch(() => undefined);
        return undefined;
      }
    }),
  );
  const t0 = performance.now();
  const measureFrom = t0 + warmupMs;
  const end = measureFrom + seconds * 1000;
  await Promise.all(
    clients.map(async (c) => {
      if (c === undefined) return;
      while (performance.now() < end) {
        const sent = performance.now();
        try {
          const dv = await c.session.read({ nodeId: NODE, attributeId: ua.AttributeIds.Value });
          if (!dv.statusCode.isGood()) errors++;
        } catch {
          errors++;
          await sleep(10);
          continue;
        }
        const now = performance.now();
        if (sent >= measureFrom && now <= end && count < maxSamples) samples[count++] = now - sent;
      }
    }),
  );
  const measured = Math.min(seconds, (performance.now() - measureFrom) / 1000);
  await Promise.all(
    clients.map(async (c) => {
      if (c === undefined) return;
      await c.session.close().catch(() => undefined);
      await c.client.disconnect().catch(() => undefined);
    }),
  );
  const sorted = samples.subarray(0, count).sort();
  return {
    sessions,
    security,
    requests: count,
    seconds: measured,
    rps: count / measured,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    errors,
    connectFailures,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Raw sessions for the memory figure: HEL, OPN (None), CreateSession, ActivateSession (anonymous)

/** Splits a TCP stream into OPC UA messages by their header size. */
function framer(onMessage: (m: Buffer) => void): (d: Buffer) => void {
  let pending: Buffer = Buffer.alloc(0);
  return (d) => {
    pending = pending.length === 0 ? d : Buffer.concat([pending, d]);
    while (pending.length >= 8 && pending.length >= pending.readUInt32LE(4)) {
      const size = pending.readUInt32LE(4);
      if (size < 8) throw new Error('bad message size');
      onMessage(pending.subarray(0, size));
      pending = pending.subarray(size);
    }
  };
}

/** Body of a symmetric MSG (after the 24-byte header) past its four-byte type id. */
function msgBody(m: Buffer): BinaryStream {
  return new BinaryStream(m.subarray(28));
}

/** Offset of the sequence header in an OPN message: after the three length-prefixed asymmetric fields. */
function openBodyOffset(m: Buffer): number {
  let off = 12;
  for (let i = 0; i < 3; i++) {
    const len = m.readInt32LE(off);
    off += 4 + Math.max(0, len);
  }
  return off;
}

function rawSession(host: string, port: number, endpointUrl: string): Promise<net.Socket | undefined> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port, noDelay: true });
    let channelId = 0;
    let tokenId = 0;
    let step = 0;
    const fail = (): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(undefined);
    };
    const timer = setTimeout(fail, 15_000);
    const send = (body: Buffer, seq: number): void => {
      s.write(msgChunk(body, { channelId, tokenId, sequenceNumber: seq, requestId: seq }));
    };
    s.on('error', () => undefined);
    s.on('close', fail);
    s.on('connect', () => s.write(hello({ endpointUrl })));
    s.on(
      'data',
      framer((m) => {
        const type = m.toString('latin1', 0, 3);
        try {
          if (type === 'ACK' && step === 0) {
            step = 1;
            s.write(openRequest({ policy: 'None', securityMode: 1, sequenceNumber: 1, requestId: 1 }));
          } else if (type === 'OPN' && step === 1) {
            const res = new OpenSecureChannelResponse();
            res.decode(new BinaryStream(m.subarray(openBodyOffset(m) + 8 + 4)));
            channelId = res.securityToken.channelId;
            tokenId = res.securityToken.tokenId;
            step = 2;
            const req = new CreateSessionRequest({
              clientDescription: new ApplicationDescription({
                applicationUri: 'urn:sluice:bench:raw',
                applicationName: { text: 'sluice-bench-raw' },
                applicationType: 1,
              }),
              endpointUrl,
              sessionName: `raw-${Math.random().toString(36).slice(2, 8)}`,
              requestedSessionTimeout: 600_000,
              maxResponseMessageSize: 0,
            });
            send(encodeBody(req), 2);
          } else if (type === 'MSG' && step === 2) {
            const res = new CreateSessionResponse();
            res.decode(msgBody(m));
            if (!res.responseHeader.serviceResult.isGood()) throw new Error('CreateSession failed');
            step = 3;
            const req = new ActivateSessionRequest({
              requestHeader: { authenticationToken: res.authenticationToken, requestHandle: 3 },
              userIdentityToken: new AnonymousIdentityToken({ policyId: 'anonymous' }),
              localeIds: [],
            });
            send(encodeBody(req), 3);
          } else if (type === 'MSG' && step === 3) {
            const res = new ActivateSessionResponse();
            res.decode(msgBody(m));
            if (!res.responseHeader.serviceResult.isGood()) throw new Error('ActivateSession failed');
            step = 4;
            clearTimeout(timer);
            s.removeAllListeners('close');
            resolve(s);
          } else {
            throw new Error(`unexpected ${type} at step ${step}`);
          }
        } catch {
          fail();
        }
      }),
    );
  });
}

/** Opens `n` raw sessions (50 at a time), prints `{"held":k,"failed":n-k}` and keeps them until killed. */
async function holdSessions(host: string, port: number, n: number): Promise<void> {
  const endpointUrl = `opc.tcp://${host}:${port}`;
  const held: net.Socket[] = [];
  for (let i = 0; i < n; i += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, n - i) }, () => rawSession(host, port, endpointUrl)),
    );
    for (const s of batch) if (s !== undefined) held.push(s);
  }
  const alive = held.filter((s) => !s.destroyed).length;
  process.stdout.write(JSON.stringify({ held: alive, failed: n - alive }) + '\n');
  // Bounded: the orchestrator kills this process; if it does not, give up after a minute.
  setTimeout(() => process.exit(0), 60_000);
}

// ---------------------------------------------------------------------------------------------------------
// Filter host (runs inside the gateway namespace): the proxy plan with the OPC UA filter, as the daemon runs it

async function filterHost(planFile: string, maxConnections: number): Promise<void> {
  const plan = JSON.parse(await readFile(planFile, 'utf8')) as ProxyPlan;
  const options = {
    limits: { maxConnections, maxConnectionsPerSource: maxConnections },
    minBackoffMs: 100,
    maxBackoffMs: 1000,
  };
  // Factories are chosen per protocol, so the relayed flow gets a supervisor of its own.
  const filtered = new ProxySupervisor(options);
  const relayed = new ProxySupervisor(options);
  const rs = await Promise.all([
    filtered.applyPlan(
      { ...plan, entries: plan.entries.filter((e) => e.flow !== 'relay') },
      { opcua: opcuaInspectorFactory, modbus: relayInspectorFactory },
    ),
    relayed.applyPlan(
      { ...plan, entries: plan.entries.filter((e) => e.flow === 'relay') },
      { opcua: relayInspectorFactory, modbus: relayInspectorFactory },
    ),
  ]);
  const failed = rs.flatMap((r) => r.failed);
  process.stdout.write(JSON.stringify(failed.length > 0 ? { failed } : { ready: true }) + '\n');
  const stop = (): void => void Promise.all([filtered.stop(), relayed.stop()]).finally(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

// ---------------------------------------------------------------------------------------------------------
// Orchestrator

const PREFIX = 'slcOb';
const CLIENT = '10.237.1.10';
const SERVER = '10.237.2.20';
/** The filtered flow, a relayed flow (same proxy, no inspection) and a plain tcp flow, one server each. */
const PORTS = { filter: 4840, plain: 4841, relay: 4842 } as const satisfies Record<PathName, number>;

const HMI = { name: 'hmi', address: CLIENT };
const PLC = { name: 'plc', address: SERVER };

const POLICY = hmiControlPolicy(
  'opcua-bench',
  '10.237',
  HMI,
  PLC,
  `      - name: ua
        protocol: opcua
        from: [hmi]
        to: [plc]
        port: ${PORTS.filter}
        opcua:
          securityModes: [None, SignAndEncrypt]
          securityPolicies: [None, Basic256Sha256]
          services: [discovery, session, read, browse, subscribe]
          anonymous: true
      - name: relay
        protocol: opcua
        from: [hmi]
        to: [plc]
        port: ${PORTS.relay}
        opcua:
          securityModes: [None, SignAndEncrypt]
          securityPolicies: [None, Basic256Sha256]
          services: [discovery, session, read, browse, subscribe]
          anonymous: true
      - name: plain
        protocol: tcp
        from: [hmi]
        to: [plc]
        port: ${PORTS.plain}
`,
);

interface Options {
  seconds: number;
  rounds: number;
  sessions: number;
  hold: number;
}

function reads(lab: Lab, dir: string, p: PathName, security: Security, o: Options): Promise<ReadResult> {
  const args = [
    SELF,
    '--reads',
    '--host',
    SERVER,
    '--port',
    String(PORTS[p]),
    '--security',
    security,
    '--sessions',
    String(o.sessions),
    '--seconds',
    String(o.seconds),
    '--pki',
    path.join(dir, 'client-pki'),
  ];
  return execJson<ReadResult>(lab, lab.hostNs('hmi', 'hmi'), args, (o.seconds + 60) * 1000);
}

async function orchestrate(o: Options): Promise<number> {
  if (process.getuid?.() !== 0) {
    console.error('bench/opcua.ts needs root (network namespaces and nft)');
    return 1;
  }
  const { ruleset, plan } = await compileBenchPolicy(POLICY, 'bench-opcua.yaml');
  // Orchestrator-only modules are loaded on demand, so the filter host's RSS is the filter's, not the bench's.
  const { labUp } = await import('../test/lab/topology.ts');
  const { Nft } = await import('../gateway/nft.ts');
  const dir = await mkdtemp(path.join(tmpdir(), 'sluice-bench-opcua-'));
  const lab = await labUp({
    prefix: PREFIX,
    zones: hmiControlZones('10.237', HMI, PLC),
  });
  return withLab(lab, dir, async () => {
    await new Nft({ netns: lab.gw }).load(ruleset);
    const servers = Object.values(PORTS).map((port) =>
      lab.spawn(
        lab.hostNs('control', 'plc'),
        process.execPath,
        [
          path.join(ROOT, 'test/lab/opcua-server.ts'),
          '--quiet',
          '--port',
          String(port),
          '--host',
          SERVER,
          '--pki',
          path.join(dir, `server-pki-${port}`),
        ],
        { cwd: ROOT },
      ),
    );
    const planFile = path.join(dir, 'plan.json');
    await writeFile(planFile, JSON.stringify(plan));
    const proxy = lab.spawn(
      lab.gw,
      process.execPath,
      [SELF, '--filter-host', planFile, '--max-connections', String(o.hold + 100)],
      { cwd: ROOT },
    );
    await Promise.all([
      ...servers.map((s) => waitLine(s, (l) => l.op === 'listening', 60_000)),
      waitLine(proxy, (l) => 'ready' in l || 'failed' in l, 30_000).then((l) => {
        if (!('ready' in l)) throw new Error(`filter did not start: ${JSON.stringify(l)}`);
      }),
    ]);
    const pid = proxy.pid;
    if (pid === undefined) throw new Error('filter process has no pid');

    const { rssIdle, rssHeld, held } = await heldRss(
      lab,
      pid,
      lab.hostNs('hmi', 'hmi'),
      [
        SELF,
        '--hold-sessions',
        '--host',
        SERVER,
        '--port',
        String(PORTS.filter),
        '--sessions',
        String(o.hold),
      ],
      180_000,
      1000,
    );

    const securities: Security[] = ['None', 'SignAndEncrypt'];
    const results = await runRounds(
      o.rounds,
      securities,
      (sec) => sec,
      (sec, p) => reads(lab, dir, p, sec, o),
      (round, sec, p, r) =>
        console.error(
          `${roundLine(round, sec.padEnd(15), p, 'reads/s', r)}  connect failures ${r.connectFailures}`,
        ),
      PATH_ORDER,
    );
    const rssAfter = await rssAfterLine(pid);

    const get = (sec: Security, p: PathName): RunSummary =>
      aggregate(results(sec, p), (r) => r.errors + r.connectFailures);
    const lines = [
      '',
      `OPC UA filter benchmark: ${o.rounds} rounds × ${o.seconds} s per security mode and path; ${o.sessions} node-opcua sessions, closed-loop Read of one Double.`,
      `plain = nftables forward only (tcp flow); filter = redirect + OPC UA filter (opcua flow); relay = same proxy, no inspection.`,
      `The proxy splits the TCP connection and sets TCP_NODELAY on its sockets, which can make a proxied path faster than`,
      `plain forwarding of node-opcua's own sockets; filter/relay isolates the inspection cost. Filter host runs the .ts sources.`,
      '',
      'security         path       reads/s     p50 ms     p99 ms  errors',
    ];
    for (const sec of securities) {
      for (const p of PATH_ORDER) lines.push(tableRow(sec.padEnd(16), p, get(sec, p)));
    }
    lines.push('');
    const goals: Record<Security, number> = { None: 0.85, SignAndEncrypt: 0.95 };
    for (const sec of securities) {
      const pl = get(sec, 'plain');
      const fi = get(sec, 'filter');
      const re = get(sec, 'relay');
      const ratio = fi.rps / pl.rps;
      lines.push(
        `${sec.padEnd(15)} filter/plain throughput ${ratio.toFixed(2)}×  p50 ${(fi.p50Ms / pl.p50Ms).toFixed(2)}×  p99 ${(fi.p99Ms / pl.p99Ms).toFixed(2)}×   goal ≥ ${goals[sec].toFixed(2)}×: ${met(ratio >= goals[sec])}   (filter/relay throughput ${(fi.rps / re.rps).toFixed(2)}×  p99 ${(fi.p99Ms / re.p99Ms).toFixed(2)}×)`,
      );
    }
    lines.push(
      '',
      `filter RSS: ${rssIdle.toFixed(1)} MB idle, ${rssHeld.toFixed(1)} MB with ${String(held.held)} activated sessions open through it (${String(held.failed)} failed)`,
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
      reads: { type: 'boolean', default: false },
      'hold-sessions': { type: 'boolean', default: false },
      'filter-host': { type: 'string' },
      'max-connections': { type: 'string', default: '600' },
      host: { type: 'string', default: SERVER },
      port: { type: 'string', default: String(PORTS.filter) },
      security: { type: 'string', default: 'None' },
      sessions: { type: 'string', default: '10' },
      seconds: { type: 'string', default: '3' },
      rounds: { type: 'string', default: '2' },
      hold: { type: 'string', default: '500' },
      pki: { type: 'string', default: path.join(tmpdir(), 'sluice-bench-opcua-pki') },
    },
  });
  if (values.reads) {
    const security: Security = values.security === 'SignAndEncrypt' ? 'SignAndEncrypt' : 'None';
    const endpoint = `opc.tcp://${values.host}:${values.port}`;
    const r = await runReads(
      endpoint,
      security,
      Number(values.sessions),
      Number(values.seconds),
      500,
      values.pki,
    );
    process.stdout.write(JSON.stringify(r) + '\n');
    process.exit(0);
  } else if (values['hold-sessions']) {
    await holdSessions(values.host, Number(values.port), Number(values.sessions));
  } else if (values['filter-host'] !== undefined) {
    await filterHost(values['filter-host'], Number(values['max-connections']));
  } else {
    process.exitCode = await orchestrate({
      seconds: Number(values.seconds),
      rounds: Number(values.rounds),
      sessions: Number(values.sessions),
      hold: Number(values.hold),
    });
  }
}
