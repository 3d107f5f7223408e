/**
 * Modbus TCP deep inspection end to end, with real nft, network namespaces and two independent Modbus
 * clients (modbus-serial and libmodbus's `mbpoll`), no mocks (prefix `slcM`):
 *
 *   slcM-hmi-hmi (10.232.1.10) ── slcM-gw (eth1 | eth2) ── slcM-control-plc (10.232.2.20, plc-sim on 502)
 *
 * The gateway runs as an operator runs it: `sluice run` inside the gateway namespace (with ulogd), policies
 * applied with `sluice apply`, blocked-traffic events read back with `sluice logs --json`. The compiled nat
 * chain redirects 10.232.2.20:502 to the flow's listen port, where the daemon's proxy runs the Modbus
 * filter. The PLC prints one JSON line per request it handles: that count is the proof of what reached the
 * device and, above all, what did not.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { gate, needsRoot } from './lab/gate.ts';
import { follow, type Follower, type Line } from './lab/follow.ts';
import { gatewayLab, pollLogs, ROOT, sluice as sluiceIn, startGateway } from './lab/gateway.ts';
import { waitForTcpListen } from './lab/netns.ts';
import type { Lab } from './lab/topology.ts';

const { describe: suite } = gate('test/modbus-e2e.test.ts', [needsRoot()]);

const PREFIX = 'slcM';
const HMI = '10.232.1.10';
const PLC = '10.232.2.20';
const CONDUIT = 'hmi-to-control';

function policy(mode: 'enforce' | 'monitor'): string {
  return `version: 1
gateway:
  name: modbus-lab
  management:
    interface: mgmt0
    allowFrom: [10.232.99.0/24]
zones:
  hmi: { securityLevel: 2, interfaces: [eth1], networks: [10.232.1.0/24] }
  control: { securityLevel: 2, interfaces: [eth2], networks: [10.232.2.0/24] }
assets:
  hmi: { zone: hmi, addresses: [${HMI}] }
  plc: { zone: control, addresses: [${PLC}] }
conduits:
  hmi-to-control:
    from: hmi
    to: control
    mode: ${mode}
    flows:
      - name: poll
        protocol: modbus
        from: [hmi]
        to: [plc]
        modbus:
          unitIds: [1]
          rules:
            - functions: [read-holding-registers, read-input-registers]
              addresses: 0-999
            - functions: [write-single-register, write-multiple-registers]
              addresses: 100-109
              values: 0-100
`;
}

// modbus-serial client run inside the HMI namespace: performs `ops` on one connection, prints the results.
const MB_CLIENT_JS = `
const ModbusRTU = require('modbus-serial');
const [host, opsJson] = process.argv.slice(1);
(async () => {
  const c = new ModbusRTU();
  await c.connectTCP(host, { port: 502 });
  c.setTimeout(3000);
  const out = [];
  for (const op of JSON.parse(opsJson)) {
    c.setID(op.unit ?? 1);
    try {
      let r;
      if (op.op === 'read') r = await c.readHoldingRegisters(op.addr, op.len);
      else if (op.op === 'read-input') r = await c.readInputRegisters(op.addr, op.len);
      else if (op.op === 'write') r = await c.writeRegister(op.addr, op.value);
      else if (op.op === 'write-multi') r = await c.writeRegisters(op.addr, op.values);
      else if (op.op === 'write-coil') r = await c.writeCoil(op.addr, op.value);
      out.push({ ok: true, data: r && Array.isArray(r.data) ? r.data : null });
    } catch (e) {
      out.push({ ok: false, modbusCode: e.modbusCode ?? null, message: e.message });
    }
  }
  console.log(JSON.stringify(out));
  process.exit(0);
})().catch((e) => { console.log(JSON.stringify({ fatal: e.message })); process.exit(1); });
`;

// A master polling holding registers 0-1 every 40 ms on one persistent connection, one JSON line per poll.
const POLLER_JS = `
const ModbusRTU = require('modbus-serial');
const [host, count] = process.argv.slice(1);
(async () => {
  const c = new ModbusRTU();
  await c.connectTCP(host, { port: 502 });
  c.setID(1);
  c.setTimeout(2000);
  console.log(JSON.stringify({ connected: true }));
  for (let i = 0; i < Number(count); i++) {
    try {
      const r = await c.readHoldingRegisters(0, 2);
      console.log(JSON.stringify({ poll: i, ok: true, data: r.data, time: Date.now() }));
    } catch (e) {
      console.log(JSON.stringify({ poll: i, ok: false, message: e.message, time: Date.now() }));
    }
    await new Promise((r) => setTimeout(r, 40));
  }
  process.exit(0);
})().catch((e) => { console.log(JSON.stringify({ fatal: e.message })); process.exit(1); });
`;

// A raw socket: sends hex bytes, reports whether the peer closed and what came back.
const RAW_JS = `
const net = require('node:net');
const [host, hex] = process.argv.slice(1);
const s = net.connect({ host, port: 502 });
let got = Buffer.alloc(0);
const t = setTimeout(() => { console.log(JSON.stringify({ closed: false, got: got.toString('hex') })); process.exit(0); }, 3000);
s.on('connect', () => s.write(Buffer.from(hex, 'hex')));
s.on('data', (d) => { got = Buffer.concat([got, d]); });
s.on('error', () => {});
s.on('close', () => { clearTimeout(t); console.log(JSON.stringify({ closed: true, got: got.toString('hex') })); process.exit(0); });
`;

interface OpResult {
  ok: boolean;
  data?: number[] | null;
  modbusCode?: number | null;
  message?: string;
}

suite('Modbus filter end to end in a lab', () => {
  let lab: Lab;
  let dir: string;
  let stateDir: string;
  let plc: Follower;
  let applied = 0;
  /** Events before this time (ms) belong to earlier tests. */
  let since = 0;
  const hmiNs = (): string => lab.hostNs('hmi', 'hmi');

  const sluice = (...args: string[]) => sluiceIn(stateDir, ...args);

  /** `sluice apply` of the policy in `mode`; returns once the flow's proxy listens. */
  async function applyPolicy(mode: 'enforce' | 'monitor'): Promise<void> {
    const file = path.join(dir, `policy-${++applied}.yaml`);
    await writeFile(file, policy(mode));
    const r = await sluice('apply', file, '--comment', `modbus-e2e ${mode}`);
    expect(r.exitCode, r.stderr + r.stdout).toBe(0);
    const s = await sluice('status', '--json');
    const proxies = (JSON.parse(s.stdout) as { proxies?: { listenPort: number }[] }).proxies ?? [];
    expect(proxies).toHaveLength(1);
    await waitForTcpListen(lab.gw, proxies[0]?.listenPort ?? 0);
  }

  /**
   * The conduit's filter events since `since`, oldest first, as `sluice logs --json` prints them; waits until
   * at least `atLeast` are there (or 3 s passed).
   */
  async function proxyEvents(atLeast = 0): Promise<Line[]> {
    const hits = await pollLogs(
      stateDir,
      ['--since', '10m', '--conduit', CONDUIT, '--limit', '1000'],
      (e) => e.source === 'modbus' && Number(e.time) >= since,
      { atLeast, timeoutMs: 3000 },
    );
    return hits.sort((x, y) => Number(x.time) - Number(y.time) || Number(x.id) - Number(y.id));
  }

  async function mbClient(ops: object[]): Promise<OpResult[]> {
    const r = await lab.exec(hmiNs(), process.execPath, ['-e', MB_CLIENT_JS, PLC, JSON.stringify(ops)], {
      cwd: ROOT,
      timeout: 30_000,
    });
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? 'null') as OpResult[];
  }

  async function mbpoll(args: string[], values: string[] = []): Promise<{ exitCode: number; out: string }> {
    const r = await lab.exec(
      hmiNs(),
      'mbpoll',
      ['-m', 'tcp', '-a', '1', '-t', '4', '-0', '-1', '-o', '2', ...args, PLC, ...values],
      { reject: false, timeout: 20_000 },
    );
    return { exitCode: r.exitCode, out: `${r.stdout}\n${r.stderr}` };
  }

  /** The PLC's request lines (everything but its own start-up line). */
  const plcOps = (): Line[] => plc.lines.filter((l) => l.op !== 'listening');
  const writesAt = (addr: number): Line[] =>
    plcOps().filter((l) => l.op === 'write-register' && l.addr === addr);

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'sluice-modbus-e2e-'));
    stateDir = path.join(dir, 'state');
    lab = await gatewayLab(PREFIX, [
      { zone: 'hmi', host: 'hmi', address: HMI },
      { zone: 'control', host: 'plc', address: PLC },
    ]);
    // The PLC boots while the daemon does. The daemon boots fail-closed; it runs the proxies of whatever
    // policy `sluice apply` hands it.
    const plcNs = lab.hostNs('control', 'plc');
    const plcChild = lab.spawn(
      plcNs,
      process.execPath,
      [path.join(ROOT, 'test/lab/plc-sim.ts'), '--port', '502'],
      {
        cwd: ROOT,
      },
    );
    plc = follow(plcChild);
    await startGateway(lab, stateDir, { ulogd: true, management: true });
    await plc.waitFor((l) => l.op === 'listening');
    await applyPolicy('enforce');
  }, 60_000);

  afterAll(async () => {
    // lab.down() kills every child it spawned (PLC, daemon) and removes the namespaces.
    await lab?.down();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('modbus-serial: allowed writes and reads reach the PLC and return its data', async () => {
    const before = plcOps().length;
    const r = await mbClient([
      { op: 'write', addr: 105, value: 42 },
      { op: 'write-multi', addr: 100, values: [1, 2, 3] },
      { op: 'read', addr: 100, len: 6 },
      { op: 'read-input', addr: 0, len: 2 },
    ]);
    expect(r.map((x) => x.ok)).toEqual([true, true, true, true]);
    expect(r[2]?.data).toEqual([1, 2, 3, 0, 0, 42]);
    // Input registers follow the simulated process (1000 ± 500): real device data, not a gateway answer.
    for (const v of r[3]?.data ?? []) expect(v).toBeGreaterThanOrEqual(500);
    await plc.waitFor((l) => l.op === 'read-input-registers');
    expect(plcOps().length - before).toBe(1 + 3 + 1 + 1); // FC16 of 3 registers → 3 setRegister calls
  });

  it('mbpoll (libmodbus): allowed read returns the PLC data', async () => {
    const r = await mbpoll(['-r', '100', '-c', '6']);
    expect(r.exitCode).toBe(0);
    expect(r.out).toMatch(/\[105\]:\s+42/);
  });

  it('forbidden writes get exceptions 01/02/03 at both clients and never reach the PLC', async () => {
    since = Date.now();
    const before = plcOps().length;
    const r = await mbClient([
      { op: 'write', addr: 500, value: 7 }, // outside 100-109 → 02
      { op: 'write', addr: 101, value: 101 }, // above 100 → 03
      { op: 'write-coil', addr: 1, value: true }, // function 5 not allowed → 01
      { op: 'read', addr: 105, len: 1 }, // the connection is still usable
    ]);
    expect(r.map((x) => [x.ok, x.modbusCode ?? null])).toEqual([
      [false, 2],
      [false, 3],
      [false, 1],
      [true, null],
    ]);
    expect(r[3]?.data).toEqual([42]);

    const addr = await mbpoll(['-r', '500'], ['7']);
    expect(addr.exitCode).toBe(1);
    expect(addr.out).toMatch(/Illegal data address/i);
    const value = await mbpoll(['-r', '101'], ['101']);
    expect(value.exitCode).toBe(1);
    expect(value.out).toMatch(/Illegal data value/i);
    const fn = await mbpoll(['-t', '0', '-r', '1'], ['1']);
    expect(fn.exitCode).toBe(1);
    expect(fn.out).toMatch(/Illegal function/i);

    // Give any (wrongly) forwarded request time to show up at the PLC, then count.
    await sleep(300);
    const seen = plcOps().slice(before);
    expect(seen).toEqual([expect.objectContaining({ op: 'read-holding-registers', addr: 105, length: 1 })]);
    expect(writesAt(500)).toEqual([]);
    expect(plcOps().filter((l) => l.op === 'write-coil')).toEqual([]);
    expect(plcOps().filter((l) => l.op === 'write-register' && l.value === 101)).toEqual([]);

    const refusals = (await proxyEvents(6)).filter((e) => e.verdict === 'refuse');
    expect(refusals.map((e) => e.reason)).toEqual([
      'modbus.illegal-data-address',
      'modbus.illegal-data-value',
      'modbus.illegal-function',
      'modbus.illegal-data-address',
      'modbus.illegal-data-value',
      'modbus.illegal-function',
    ]);
    expect(refusals[0]).toMatchObject({
      conduit: 'hmi-to-control',
      flow: 'poll',
      src: HMI,
      dst: PLC,
      dstPort: 502,
      detail: { unit: 1, function: 6, addresses: '500', values: '7', exception: 2 },
    });
  });

  it('a malformed frame closes only its own connection while another master keeps polling', async () => {
    since = Date.now();
    const poller = lab.spawn(hmiNs(), process.execPath, ['-e', POLLER_JS, PLC, '40'], { cwd: ROOT });
    const polls = follow(poller);
    await polls.waitFor((l) => l.poll === 5);
    const before = plcOps().length;
    const outOfRangeRun = lab.exec(
      hmiNs(),
      process.execPath,
      ['-e', RAW_JS, PLC, '000300000006010300000000'],
      {
        timeout: 10_000,
      },
    );
    // Protocol id 1 (must be 0), then a Write Multiple Registers whose byte count disagrees with its quantity.
    const badProto = await lab.exec(
      hmiNs(),
      process.execPath,
      ['-e', RAW_JS, PLC, '000100010006010300000001'],
      {
        timeout: 10_000,
      },
    );
    const badCount = await lab.exec(
      hmiNs(),
      process.execPath,
      ['-e', RAW_JS, PLC, '00020000000a01100064000203000100'],
      { timeout: 10_000 },
    );
    // Quantity 0 is well framed but out of range (MB §6.3): answered with exception 03 like a device would,
    // and the connection stays open (the raw client gives up after 3 s, still connected).
    const outOfRange = await outOfRangeRun;
    expect(JSON.parse(outOfRange.stdout)).toEqual({ closed: false, got: '000300000003018303' });
    expect(JSON.parse(badProto.stdout)).toEqual({ closed: true, got: '' });
    expect(JSON.parse(badCount.stdout)).toEqual({ closed: true, got: '' });
    const result = await poller;
    expect(result.exitCode).toBe(0);
    const pollLines = polls.lines.filter((l) => 'poll' in l);
    expect(pollLines).toHaveLength(40);
    expect(pollLines.filter((l) => l.ok !== true)).toEqual([]);
    const malformed = (await proxyEvents(2)).filter((e) => e.reason === 'modbus.malformed');
    expect(malformed.map((e) => (e.detail as { code: string }).code)).toEqual([
      'mbap.protocol-id',
      'pdu.byte-count',
    ]);
    // Polls kept succeeding after both malformed connections were cut.
    const lastCut = Math.max(...malformed.map((e) => Number(e.time)));
    expect(pollLines.filter((l) => Number(l.time) > lastCut).length).toBeGreaterThan(0);
    // Neither malformed frame reached the PLC: everything it saw since is the poller's reads.
    expect(
      plcOps()
        .slice(before)
        .every((l) => l.op === 'read-holding-registers'),
    ).toBe(true);
  });

  it('monitor mode forwards a forbidden write and logs would-refuse', async () => {
    since = Date.now();
    await applyPolicy('monitor');
    const r = await mbClient([{ op: 'write', addr: 500, value: 9 }]);
    expect(r).toEqual([{ ok: true, data: null }]);
    await plc.waitFor((l) => l.op === 'write-register' && l.addr === 500);
    expect(writesAt(500)).toEqual([expect.objectContaining({ value: 9 })]);
    const mp = await mbpoll(['-r', '501'], ['8']);
    expect(mp.exitCode).toBe(0);
    await plc.waitFor((l) => l.op === 'write-register' && l.addr === 501);
    const events = await proxyEvents(2);
    expect(events.map((e) => [e.reason, e.verdict])).toEqual([
      ['modbus.illegal-data-address', 'would-refuse'],
      ['modbus.illegal-data-address', 'would-refuse'],
    ]);
    expect(events[0]).toMatchObject({ detail: { addresses: '500', values: '9', exception: 2 } });
  });
});
