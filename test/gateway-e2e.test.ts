/**
 * The gateway as an operator runs it: `sluice run` inside the gateway namespace of a lab, driven only through
 * the CLI (`apply`, `confirm`, `status`, `logs`). Real nft, real ulogd2, real kernel forwarding; no mocks.
 * Issue 3 "Proof": allowed flows pass, forbidden ones are dropped and reach `sluice logs` with their conduit
 * within 2 s, an unconfirmed apply rolls back by T + 2 s, a long-lived flow survives an apply, the
 * anti-lockout survives every apply, and a corrupt state dir boots fail-closed with management reachable.
 */
import { it, expect, beforeAll, afterAll } from 'vitest';
import { gate, needsRoot } from './lab/gate.ts';
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { labDown, type Lab } from './lab/topology.ts';
import { nsSpawn, startTcpEcho, tcpProbe, waitForTcpListen, type NsServer } from './lab/netns.ts';
import { gatewayLab, pollLogs, sluice as sluiceIn, startGateway, type Gateway } from './lab/gateway.ts';

const PREFIX = 'slcG';
const lab_ = gate('test/gateway-e2e.test.ts', [needsRoot('network namespaces')]);

const policy = (extra = '') => `version: 1
gateway:
  name: e2e-gw
  management: { interface: mgmt0, allowFrom: [10.81.99.0/24] }
defaults: { logRate: 100/second }
zones:
  hmi:    { securityLevel: 2, interfaces: [eth1], networks: [10.81.1.0/24] }
  plant:  { securityLevel: 2, interfaces: [eth2], networks: [10.81.2.0/24] }
  office: { securityLevel: 1, interfaces: [eth3], networks: [10.81.3.0/24] }
assets:
  hmi: { zone: hmi, addresses: [10.81.1.10] }
  plc: { zone: plant, addresses: [10.81.2.20] }
conduits:
  hmi-to-plant:
    from: hmi
    to: plant
    flows:
      - { name: app, protocol: tcp, from: [hmi], to: [plc], port: 8080 }
${extra}`;

let lab: Lab;
let stateDir: string;
let daemon: Gateway | undefined;
const servers: NsServer[] = [];

const sluice = (...args: string[]) => sluiceIn(stateDir, ...args);

async function startDaemon(): Promise<void> {
  daemon = await startGateway(lab, stateDir, { ulogd: true, management: true, output: 'pipe' });
}

async function stopDaemon(): Promise<void> {
  await daemon?.stop();
  daemon = undefined;
}

async function status(): Promise<{ mode: string; version: { id: number } | null; pending: unknown }> {
  const r = await sluice('status', '--json');
  expect(r.exitCode, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { mode: string; version: { id: number } | null; pending: unknown };
}

async function nftTable(): Promise<string> {
  const r = await execa('ip', ['netns', 'exec', lab.gw, 'nft', '-s', 'list', 'table', 'inet', 'sluice'], {
    reject: false,
  });
  return r.stdout;
}

/** Management stays reachable: a TCP service on the gateway's 8443 answers from the management side. */
async function managementReachable(): Promise<boolean> {
  return (await tcpProbe(lab.mgmtNs as string, lab.gwMgmtAddress as string, 8443, 1500)).ok;
}

async function waitForLog(filter: string[], match: (e: Record<string, unknown>) => boolean, ms: number) {
  return (await pollLogs(stateDir, ['--since', '5m', ...filter], match, { timeoutMs: ms }))[0];
}

lab_.describe('gateway daemon in the lab', () => {
  beforeAll(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'sluice-e2e-'));
    lab = await gatewayLab(PREFIX, [
      { zone: 'hmi', host: 'hmi', address: '10.81.1.10' },
      { zone: 'plant', host: 'plc', address: '10.81.2.20' },
      { zone: 'office', host: 'pc', address: '10.81.3.10' },
    ]);
    const plc = lab.hostNs('plant', 'plc');
    servers.push(
      await startTcpEcho(plc, 8080),
      await startTcpEcho(plc, 9090),
      await startTcpEcho(lab.gw, 8443),
    );
  });

  afterAll(async () => {
    await stopDaemon();
    for (const s of servers) await s.stop();
    await labDown(PREFIX);
    await rm(stateDir, { recursive: true, force: true });
  });

  it('boots fail-closed with no policy: nothing forwards, management stays reachable', async () => {
    await startDaemon();
    const s = await status();
    expect(s.mode).toBe('fail-closed');
    expect((await tcpProbe(lab.hostNs('hmi', 'hmi'), '10.81.2.20', 8080, 1500)).outcome).toBe('timeout');
    expect(await managementReachable()).toBe(true);
  });

  it('applies a policy: allowed flows pass, forbidden ones are dropped and logged with their conduit within 2 s', async () => {
    const file = join(stateDir, 'p1.yaml');
    await writeFile(file, policy());
    const r = await sluice('apply', file, '--comment', 'first');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/applied version 1/);
    expect((await status()).mode).toBe('policy');
    const hmi = lab.hostNs('hmi', 'hmi');
    expect(await tcpProbe(hmi, '10.81.2.20', 8080)).toMatchObject({ ok: true });
    // A port no flow allows: dropped at the end of the conduit chain.
    const sent = Date.now();
    expect((await tcpProbe(hmi, '10.81.2.20', 9090, 1000)).outcome).toBe('timeout');
    const ev = await waitForLog(
      ['--conduit', 'hmi-to-plant'],
      (e) => e['dstPort'] === 9090 && e['verdict'] === 'drop',
      2000 + 1000,
    );
    expect(ev, 'drop of :9090 in sluice logs').toBeDefined();
    expect(ev).toMatchObject({
      conduit: 'hmi-to-plant',
      fromZone: 'hmi',
      toZone: 'plant',
      reason: 'no-flow',
    });
    expect((ev as { time: number }).time - sent).toBeLessThan(2000);
    // No conduit from office at all: dropped in forward, logged without conduit, placed by interfaces.
    expect((await tcpProbe(lab.hostNs('office', 'pc'), '10.81.2.20', 8080, 1000)).outcome).toBe('timeout');
    const nc = await waitForLog(['--src', '10.81.3.10'], (e) => e['reason'] === 'no-conduit', 3000);
    expect(nc).toMatchObject({ fromZone: 'office', toZone: 'plant', verdict: 'drop' });
    expect(nc?.['conduit']).toBeUndefined();
    // Replies of allowed connections pass, but the plant cannot open connections back.
    expect((await tcpProbe(lab.hostNs('plant', 'plc'), '10.81.1.10', 8080, 1000)).ok).toBe(false);
    expect(await managementReachable()).toBe(true);
  });

  it('keeps a long-lived connection across an apply that still allows it', async () => {
    const hmi = lab.hostNs('hmi', 'hmi');
    // A client in the hmi namespace writes a line every 100 ms to the echo server and counts the echoes.
    const client = nsSpawn(hmi, process.execPath, [
      '-e',
      `const s=require('node:net').connect(8080,'10.81.2.20');let n=0,got=0,last=Date.now(),gap=0;
       s.on('data',d=>{got+=d.length;const t=Date.now();gap=Math.max(gap,t-last);last=t;});
       s.on('error',e=>{console.log(JSON.stringify({error:e.code}));process.exit(1)});
       const i=setInterval(()=>{s.write('x');if(++n===60){clearInterval(i);setTimeout(()=>{console.log(JSON.stringify({n,got,gap}));process.exit(0)},300)}},100);`,
    ]);
    await new Promise((res) => setTimeout(res, 1500));
    const file = join(stateDir, 'p2.yaml');
    await writeFile(
      file,
      policy(`      - { name: other, protocol: tcp, from: [hmi], to: [plc], port: 9090 }\n`),
    );
    const r = await sluice('apply', file, '--comment', 'add 9090');
    expect(r.exitCode, r.stderr).toBe(0);
    const out = await client;
    const result = JSON.parse(String(out.stdout)) as { n: number; got: number; gap: number; error?: string };
    expect(result.error).toBeUndefined();
    expect(result.got).toBe(60);
    expect(result.gap).toBeLessThan(1000);
    expect(await tcpProbe(hmi, '10.81.2.20', 9090)).toMatchObject({ ok: true });
    expect(await managementReachable()).toBe(true);
  });

  it('ends the open connections of a flow that an apply removes', async () => {
    const hmi = lab.hostNs('hmi', 'hmi');
    // The running policy (p2) allows 9090; a connection to it streams a byte every 100 ms and counts echoes.
    const client = nsSpawn(hmi, process.execPath, [
      '-e',
      `const s=require('node:net').connect(9090,'10.81.2.20');let n=0,got=0;
       s.on('data',d=>{got+=d.length});
       s.on('error',()=>{});
       const i=setInterval(()=>{s.write('x');if(++n===50){clearInterval(i);setTimeout(()=>{console.log(JSON.stringify({n,got}));process.exit(0)},300)}},100);`,
    ]);
    await new Promise((res) => setTimeout(res, 1500));
    const file = join(stateDir, 'p1-again.yaml');
    await writeFile(file, policy());
    const applied = Date.now();
    const r = await sluice('apply', file, '--comment', 'remove 9090');
    expect(r.exitCode, r.stderr).toBe(0);
    const out = await client;
    const result = JSON.parse(String(out.stdout)) as { n: number; got: number };
    // Echoed before the apply (about 15), nothing after: the removed flow's mark is no longer live, so its
    // established packets meet the conduit chain, which has no flow for them.
    expect(result.got).toBeGreaterThan(5);
    expect(result.got).toBeLessThan(result.n - 10);
    const ev = await waitForLog(
      ['--conduit', 'hmi-to-plant'],
      (e) => e['dstPort'] === 9090 && e['reason'] === 'no-flow' && (e['time'] as number) >= applied,
      3000,
    );
    expect(ev, 'the cut connection is logged').toBeDefined();
  });

  it('keeps a long-lived Modbus session through its proxy across an apply that adds other DPI flows', async () => {
    const hmi = lab.hostNs('hmi', 'hmi');
    const plcNs = lab.hostNs('plant', 'plc');
    const plc = nsSpawn(plcNs, process.execPath, [
      join(import.meta.dirname, 'lab/plc-sim.ts'),
      '--port',
      '502',
      '--quiet',
    ]);
    try {
      await waitForTcpListen(plcNs, 502, 10_000);
      const poll = `      - { name: poll, protocol: modbus, from: [hmi], to: [plc], modbus: { rules: [{ functions: [read-holding-registers] }] } }\n`;
      const file = join(stateDir, 'p-mb1.yaml');
      await writeFile(file, policy(poll));
      expect((await sluice('apply', file, '--comment', 'modbus poll')).exitCode).toBe(0);
      // One TCP connection, a read-holding-registers request every 100 ms; every 11-byte answer is counted.
      const client = nsSpawn(hmi, process.execPath, [
        '-e',
        `const s=require('node:net').connect(502,'10.81.2.20');let n=0,got=0;
         s.on('data',d=>{got+=d.length});
         s.on('error',e=>{console.log(JSON.stringify({error:e.code}));process.exit(1)});
         s.on('close',()=>{console.log(JSON.stringify({closed:true,n,got}));process.exit(1)});
         const i=setInterval(()=>{const b=Buffer.from([0,n&255,0,0,0,6,1,3,0,0,0,1]);s.write(b);if(++n===40){clearInterval(i);setTimeout(()=>{console.log(JSON.stringify({n,got}));process.exit(0)},400)}},100);`,
      ]);
      await new Promise((res) => setTimeout(res, 1500));
      // Flows that sort before and after 'poll': with consecutive numbering they moved poll's listen port,
      // which restarted its proxy and cut the session.
      const file2 = join(stateDir, 'p-mb2.yaml');
      await writeFile(
        file2,
        policy(
          `      - { name: aa, protocol: modbus, from: [hmi], to: [plc], port: 1502, modbus: { rules: [{ functions: [3] }] } }\n` +
            poll +
            `      - { name: zz, protocol: opcua, from: [hmi], to: [plc], port: 4840 }\n`,
        ),
      );
      const r = await sluice('apply', file2, '--comment', 'more DPI flows');
      expect(r.exitCode, r.stderr).toBe(0);
      const out = await client;
      const result = JSON.parse(String(out.stdout)) as {
        n: number;
        got: number;
        error?: string;
        closed?: boolean;
      };
      expect(result).toEqual({ n: 40, got: 40 * 11 });
    } finally {
      plc.kill('SIGTERM');
      await plc.catch(() => undefined);
    }
  });

  it('rolls an unconfirmed apply back by T + 2 s, and keeps a confirmed one', async () => {
    const before = await nftTable();
    const running = (await status()).version?.id;
    const file = join(stateDir, 'p3.yaml');
    await writeFile(
      file,
      policy(`      - { name: web, protocol: tcp, from: [hmi], to: [plc], port: 8443 }\n`),
    );
    const t0 = Date.now();
    const r = await sluice('apply', file, '--confirm-within', '3');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/confirm before/);
    expect(await nftTable()).not.toBe(before);
    expect((await status()).pending).not.toBeNull();
    expect(await managementReachable()).toBe(true);
    // Poll until the ruleset is back; it must be within T + 2 s.
    while ((await nftTable()) !== before && Date.now() - t0 < 8000)
      await new Promise((res) => setTimeout(res, 100));
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(await nftTable()).toBe(before);
    const s = await status();
    expect(s.version?.id).toBe(running);
    expect(s.pending).toBeNull();
    // Confirmed in time: it stays.
    const r2 = await sluice('apply', file, '--confirm-within', '3');
    expect(r2.exitCode, r2.stderr).toBe(0);
    expect((await sluice('confirm')).exitCode).toBe(0);
    await new Promise((res) => setTimeout(res, 4000));
    expect(await nftTable()).not.toBe(before);
    expect((await status()).pending).toBeNull();
  });

  it('refuses an invalid policy with file:line:column and changes nothing', async () => {
    const before = await execa('ip', ['netns', 'exec', lab.gw, 'nft', '-s', 'list', 'ruleset']);
    const file = join(stateDir, 'bad.yaml');
    await writeFile(file, policy().replace('port: 8080', 'port: 80800'));
    const r = await sluice('apply', file);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/bad\.yaml:\d+:\d+ conduits\.hmi-to-plant\.flows\[0\]\.port/);
    const after = await execa('ip', ['netns', 'exec', lab.gw, 'nft', '-s', 'list', 'ruleset']);
    expect(after.stdout).toBe(before.stdout);
  });

  it('boots fail-closed from a corrupt state dir, with management reachable', async () => {
    await stopDaemon();
    // The kernel keeps the last ruleset while the daemon is down (no unfiltered window).
    expect((await tcpProbe(lab.hostNs('office', 'pc'), '10.81.2.20', 8080, 1000)).ok).toBe(false);
    await writeFile(join(stateDir, 'versions.json'), '{"versions": [ {"id": 1, "text": "trunc');
    await writeFile(join(stateDir, 'runtime.json'), 'garbage');
    await startDaemon();
    expect((await status()).mode).toBe('fail-closed');
    expect((await tcpProbe(lab.hostNs('hmi', 'hmi'), '10.81.2.20', 8080, 1500)).outcome).toBe('timeout');
    expect(await managementReachable()).toBe(true);
    const audit = await readFile(join(stateDir, 'audit.json'), 'utf8');
    expect(audit).toMatch(/fail-closed/);
  });
});
