/**
 * OPC UA deep inspection end to end (issue 5 "Proof"), prefix `slcO`, no mocks:
 *
 *   slcO-hmi-hmi (10.236.1.10, node-opcua client) ── slcO-gw (sluice run) ── slcO-control-plc (10.236.2.20:4840)
 *
 * The daemon runs in the gateway namespace exactly as an operator starts it and is driven through the CLI;
 * the client dials the server's own address and nft's redirect hands the connection to the OPC UA filter
 * (transparent interception). The server (test/lab/opcua-server.ts) prints one JSON line per Write and Call
 * it executes: that is the proof of what reached the device and, above all, what did not. The server starts
 * once (node-opcua is slow to start); each case re-applies a policy through the daemon.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { gate, needsRoot } from './lab/gate.ts';
import type { OpcuaSessionResult, OpcuaSessionScript, OpcuaStep } from './lab/opcua-client.ts';
import { gatewayLab, pollLogs, ROOT, sluice as sluiceIn, startGateway } from './lab/gateway.ts';
import { waitForTcpListen } from './lab/netns.ts';
import type { Lab } from './lab/topology.ts';
import { follow, type Line } from './lab/follow.ts';

const { describe: suite } = gate('test/opcua-e2e.test.ts', [needsRoot()]);

const PREFIX = 'slcO';
const HMI = '10.236.1.10';
const PLC = '10.236.2.20';
const ENDPOINT = `opc.tcp://${PLC}:4840`;
const CONDUIT = 'hmi-to-control';

const SETPOINT = 'ns=2;s=Line1.Setpoint';
const SETPOINT2 = 'ns=2;s=Line1.Setpoint2';
const OTHER = 'ns=2;s=Line1.Other';
const COUNTER = 'ns=2;s=Line1.Counter';
const LINE1 = 'ns=2;s=Line1';
const RESET = 'ns=2;s=Line1.Reset';
const PURGE = 'ns=2;s=Line1.Purge';
const USER = { userName: 'operator', password: 'secret' };

interface OpcuaFlow {
  mode?: 'enforce' | 'monitor';
  securityModes: string[];
  securityPolicies: string[];
  services: string[];
  anonymous: boolean;
}

const OPEN: OpcuaFlow = {
  securityModes: ['None', 'SignAndEncrypt'],
  securityPolicies: ['None', 'Basic256Sha256'],
  services: ['discovery', 'session', 'read', 'browse', 'subscribe', 'write', 'call'],
  anonymous: true,
};

// Both zones SL 2: the lint forbids mode None into SL-T ≥ 3 and writes from a lower SL into SL-T ≥ 3.
function policy(f: OpcuaFlow): string {
  return `version: 1
gateway:
  name: opcua-lab
  management: { interface: mgmt0, allowFrom: [10.236.99.0/24] }
zones:
  hmi: { securityLevel: 2, interfaces: [eth1], networks: [10.236.1.0/24] }
  control: { securityLevel: 2, interfaces: [eth2], networks: [10.236.2.0/24] }
assets:
  hmi: { zone: hmi, addresses: [${HMI}] }
  plc: { zone: control, addresses: [${PLC}] }
conduits:
  ${CONDUIT}:
    from: hmi
    to: control
    mode: ${f.mode ?? 'enforce'}
    flows:
      - name: ua
        protocol: opcua
        from: [hmi]
        to: [plc]
        opcua:
          securityModes: [${f.securityModes.join(', ')}]
          securityPolicies: [${f.securityPolicies.join(', ')}]
          services: [${f.services.join(', ')}]
          write: ['${SETPOINT}']
          call: ['${RESET}']
          anonymous: ${String(f.anonymous)}
`;
}

const none = (steps: OpcuaStep[], extra: Partial<OpcuaSessionScript> = {}): OpcuaSessionScript => ({
  endpoint: ENDPOINT,
  securityMode: 'None',
  securityPolicy: 'None',
  steps,
  ...extra,
});
const encrypted = (
  securityPolicy: OpcuaSessionScript['securityPolicy'],
  steps: OpcuaStep[],
): OpcuaSessionScript => ({
  endpoint: ENDPOINT,
  securityMode: 'SignAndEncrypt',
  securityPolicy,
  steps,
  user: USER,
});

suite('OPC UA filter end to end through the gateway daemon', () => {
  let lab: Lab;
  let dir: string;
  let stateDir: string;
  let server: ReturnType<typeof follow>;
  let applied = 0;

  const sluice = (...args: string[]) => sluiceIn(stateDir, ...args);

  async function apply(f: OpcuaFlow): Promise<void> {
    const file = path.join(dir, `policy-${++applied}.yaml`);
    await writeFile(file, policy(f));
    const r = await sluice('apply', file, '--comment', `case ${applied}`);
    expect(r.exitCode, r.stderr + r.stdout).toBe(0);
    // The proxy for the new plan listens before apply returns; check rather than assume.
    const s = await sluice('status', '--json');
    const port = (JSON.parse(s.stdout) as { proxies?: { listenPort: number }[] }).proxies?.[0]?.listenPort;
    if (port !== undefined) await waitForTcpListen(lab.gw, port);
  }

  async function client(sessions: OpcuaSessionScript[]): Promise<OpcuaSessionResult[]> {
    const r = await lab.exec(
      lab.hostNs('hmi', 'hmi'),
      process.execPath,
      [
        path.join(ROOT, 'test/lab/opcua-client.ts'),
        JSON.stringify({ pki: path.join(dir, 'client-pki'), sessions }),
      ],
      { cwd: ROOT, timeout: 60_000, reject: false },
    );
    const out = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as OpcuaSessionResult);
    expect(out, r.stderr.slice(-2000)).toHaveLength(sessions.length);
    return out;
  }

  /** Blocked-traffic events of the conduit since `since` (ms), as `sluice logs --json` prints them. */
  async function logs(since: number, pred: (e: Line) => boolean, atLeast = 1): Promise<Line[]> {
    return await pollLogs(
      stateDir,
      ['--since', '10m', '--conduit', CONDUIT, '--limit', '1000'],
      (e) => Number(e.time) >= since && pred(e),
      { atLeast, timeoutMs: 3000 },
    );
  }

  const executed = (since: number): Line[] =>
    server.lines.filter((l) => (l.op === 'write' || l.op === 'call') && Number(l.time) >= since);

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'sluice-opcua-e2e-'));
    stateDir = path.join(dir, 'state');
    lab = await gatewayLab(PREFIX, [
      { zone: 'hmi', host: 'hmi', address: HMI },
      { zone: 'control', host: 'plc', address: PLC },
    ]);
    // Server and daemon start side by side: both are slow to boot.
    const srv = lab.spawn(
      lab.hostNs('control', 'plc'),
      process.execPath,
      [path.join(ROOT, 'test/lab/opcua-server.ts'), '--pki', path.join(dir, 'server-pki'), '--host', PLC],
      { cwd: ROOT },
    );
    server = follow(srv);
    await startGateway(lab, stateDir, { management: true });
    await server.waitFor((l) => l.op === 'listening', 30_000);
    await apply(OPEN);
  }, 60_000);

  afterAll(async () => {
    // lab.down() kills every child it spawned (server, daemon) and removes the namespaces.
    await lab?.down();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('None: read, browse, subscribe pass; a write outside `write` and a call of another method are refused with Bad_UserAccessDenied while the session goes on; SignAndEncrypt Basic256Sha256 passes', async () => {
    const t0 = Date.now();
    const [plain, secure] = await client([
      none([
        { op: 'read', nodeId: SETPOINT },
        { op: 'browse', nodeId: LINE1 },
        { op: 'subscribe', nodeId: COUNTER, changes: 2, timeoutMs: 5000 },
        { op: 'write', nodeId: SETPOINT2, value: 99 },
        { op: 'read', nodeId: SETPOINT2 },
        { op: 'write', nodeId: SETPOINT, value: 42 },
        { op: 'call', objectId: LINE1, methodId: RESET },
        { op: 'call', objectId: LINE1, methodId: PURGE },
        { op: 'read', nodeId: SETPOINT },
      ]),
      encrypted('Basic256Sha256', [
        { op: 'read', nodeId: SETPOINT },
        { op: 'write', nodeId: OTHER, value: 7 },
      ]),
    ]);
    expect(plain?.session, plain?.error).toBe(true);
    const r = plain?.results ?? [];
    expect(r.map((x) => [x.op, x.ok])).toEqual([
      ['read', true],
      ['browse', true],
      ['subscribe', true],
      ['write', false],
      ['read', true],
      ['write', true],
      ['call', true],
      ['call', false],
      ['read', true],
    ]);
    expect(r[1]?.value).toEqual(expect.arrayContaining(['2:Setpoint', '2:Reset']));
    expect(r[2]?.count).toBeGreaterThanOrEqual(2);
    expect(r[3]?.status).toBe('BadUserAccessDenied');
    expect(r[4]?.value).toBe(20); // never written
    expect(r[7]?.status).toBe('BadUserAccessDenied');
    expect(r[8]?.value).toBe(42);
    expect(plain?.connectionLost).toBe(false);
    // SignAndEncrypt is opaque to the filter: allowed by policy and mode, it passes whole (even a write).
    expect(secure?.session, secure?.error).toBe(true);
    expect(secure?.results.map((x) => x.ok)).toEqual([true, true]);

    await sleep(200);
    expect(executed(t0).map((l) => [l.op, l.nodeId ?? l.method])).toEqual([
      ['write', SETPOINT],
      ['call', RESET],
      ['write', OTHER],
    ]);
    const refused = await logs(t0, (e) => e.verdict === 'refuse', 2);
    expect(refused.map((e) => e.reason).sort()).toEqual(['opcua.call-method', 'opcua.write-node']);
    expect(refused.find((e) => e.reason === 'opcua.write-node')).toMatchObject({
      conduit: CONDUIT,
      flow: 'ua',
      src: HMI,
      dst: PLC,
      dstPort: 4840,
      source: 'opcua',
      detail: {
        service: 'Write',
        securityPolicy: 'None',
        securityMode: 'None',
        refusedNodeIds: [SETPOINT2],
        values: ['Double 99'],
        status: expect.stringMatching(/UserAccessDenied/) as unknown,
      },
    });
    expect(refused.find((e) => e.reason === 'opcua.call-method')).toMatchObject({
      detail: { service: 'Call', nodeIds: expect.arrayContaining([PURGE]) as unknown },
    });
  });

  it('None: the session survives refusals across secure-token renewals (sequence numbers rewritten)', async () => {
    const t0 = Date.now();
    const [s] = await client([
      none(
        [
          { op: 'write', nodeId: OTHER, value: 1 },
          { op: 'read-loop', nodeId: SETPOINT, ms: 3000, everyMs: 50 },
          { op: 'write', nodeId: OTHER, value: 2 },
          { op: 'read-loop', nodeId: SETPOINT, ms: 1500, everyMs: 50 },
          { op: 'write', nodeId: SETPOINT, value: 43 },
        ],
        { tokenLifetimeMs: 2500, tokenRenewalMs: 400 },
      ),
    ]);
    expect(s?.session, s?.error).toBe(true);
    expect(s?.results.map((x) => [x.op, x.ok, x.status ?? null])).toEqual([
      ['write', false, 'BadUserAccessDenied'],
      ['read-loop', true, null],
      ['write', false, 'BadUserAccessDenied'],
      ['read-loop', true, null],
      ['write', true, 'Good'],
    ]);
    expect(s?.tokenRenewals).toBeGreaterThanOrEqual(3);
    expect(s?.connectionLost).toBe(false);
    await sleep(200);
    expect(executed(t0).map((l) => [l.nodeId, l.value])).toEqual([[SETPOINT, 43]]);
  });

  it('a flow requiring Aes256_Sha256_RsaPss refuses Basic256Sha256 at OPN and None sessions, and passes its own policy', async () => {
    await apply({
      securityModes: ['SignAndEncrypt'],
      securityPolicies: ['Aes256_Sha256_RsaPss'],
      services: ['discovery', 'session', 'read', 'browse'],
      anonymous: false,
    });
    const t0 = Date.now();
    const [basic, plain, pss] = await client([
      encrypted('Basic256Sha256', [{ op: 'read', nodeId: SETPOINT }]),
      none([{ op: 'read', nodeId: SETPOINT }], { user: USER }),
      encrypted('Aes256_Sha256_RsaPss', [{ op: 'read', nodeId: SETPOINT }]),
    ]);
    expect(basic?.connected).toBe(false);
    expect(basic?.session).toBe(false);
    // None: GetEndpoints on a None channel is discovery and passes; the session itself is refused.
    expect(plain?.session).toBe(false);
    expect(plain?.results).toEqual([]);
    expect(pss?.session, pss?.error).toBe(true);
    expect(pss?.results.map((x) => x.ok)).toEqual([true]);

    const policyRefusal = await logs(t0, (e) => e.reason === 'opcua.security-policy');
    expect(policyRefusal[0]).toMatchObject({
      conduit: CONDUIT,
      verdict: 'refuse',
      detail: {
        securityPolicy: 'Basic256Sha256',
        certificateSubject: expect.stringMatching(/sluice-lab-client|CN=/) as unknown,
      },
    });
    const noneRefusal = await logs(
      t0,
      (e) => e.verdict === 'refuse' && (e.detail as Line | undefined)?.securityPolicy === 'None',
    );
    // The None channel itself is admitted for discovery only; its CreateSession is what gets refused.
    expect(noneRefusal[0]).toMatchObject({
      conduit: CONDUIT,
      reason: 'opcua.security-policy',
      detail: { securityMode: 'None', service: 'CreateSession', status: 'BadSecurityPolicyRejected' },
    });
  });

  it('anonymous: false refuses an anonymous session on a None channel and passes a username session', async () => {
    await apply({ ...OPEN, anonymous: false });
    const t0 = Date.now();
    const [anon, user] = await client([
      none([{ op: 'read', nodeId: SETPOINT }]),
      none([{ op: 'read', nodeId: SETPOINT }], { user: USER }),
    ]);
    expect(anon?.session).toBe(false);
    expect(anon?.error).toMatch(/UserAccessDenied|IdentityToken/);
    expect(user?.session, user?.error).toBe(true);
    expect(user?.results.map((x) => x.ok)).toEqual([true]);
    const refused = await logs(t0, (e) => e.reason === 'opcua.anonymous');
    expect(refused[0]).toMatchObject({
      conduit: CONDUIT,
      verdict: 'refuse',
      detail: {
        service: 'ActivateSession',
        securityPolicy: 'None',
        securityMode: 'None',
        identity: 'anonymous',
      },
    });
    expect(server.lines.filter((l) => l.op === 'session' && Number(l.time) >= t0)).toEqual([
      expect.objectContaining({ user: 'operator' }),
    ]);
  });

  it('monitor mode forwards what enforce refuses and logs would-refuse', async () => {
    await apply({ ...OPEN, mode: 'monitor' });
    const t0 = Date.now();
    const [s] = await client([
      none([
        { op: 'write', nodeId: SETPOINT2, value: 77 },
        { op: 'call', objectId: LINE1, methodId: PURGE },
        { op: 'read', nodeId: SETPOINT2 },
      ]),
    ]);
    expect(s?.results.map((x) => [x.ok, x.value ?? null])).toEqual([
      [true, null],
      [true, null],
      [true, 77],
    ]);
    await sleep(200);
    expect(executed(t0).map((l) => l.nodeId ?? l.method)).toEqual([SETPOINT2, PURGE]);
    const would = await logs(t0, (e) => e.verdict === 'would-refuse', 2);
    expect(would.map((e) => e.reason).sort()).toEqual(['opcua.call-method', 'opcua.write-node']);
    expect(await logs(t0, (e) => e.verdict === 'refuse', 0)).toEqual([]);
  });
});
