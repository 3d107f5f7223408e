/**
 * The demo lab behind `make demo` and `sluice lab up|down|status`: the water plant of
 * examples/water-plant.yaml rebuilt in network namespaces, with its gateway running the real daemon.
 *
 *   enterprise (eth1) office-pc ─┐
 *   dmz (eth2) historian ────────┤
 *   scada (eth3) scada-server, hmi-1 ──┤  slcD-gw: `sluice run` (nft table inet sluice, proxies, ulogd2)
 *   control (eth4) plc-intake (PLC sim :502), ua-filter (OPC UA server :4840) ─┤
 *   safety (eth5) sis-1 (PLC sim :502) ───────┘   mgmt0 ── slcD-mgmt (10.99.0.10)
 *
 * The HMI polls the PLC through the Modbus filter (allowed reads and setpoint writes, plus a forbidden write
 * every few cycles); the office PC tries to reach the PLC directly (no conduit: dropped and logged).
 * Everything lives in namespaces named `slcD-*` and in the state dir; the host's own interfaces and ruleset
 * are never touched.
 */
import { spawn } from 'node:child_process';
import { mkdir, readFile, writeFile, rm, open } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { labUp, labDown, type LabSpec } from './topology.ts';
import { listNetns, waitForTcpListen } from './netns.ts';
import { controlCall } from '../../gateway/control.ts';
import { SluiceError } from '../../policies/errors.ts';
import { socketPath } from '../../gateway/paths.ts';

export const DEMO_PREFIX = 'slcD';
const here = fileURLToPath(new URL('.', import.meta.url));
/** Source (.ts under Node's type stripping) or build output (.js): start siblings the same way. */
const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
const repoRoot = resolve(here, ext === '.ts' ? '../..' : '../../..');

export const DEMO_SPEC: LabSpec = {
  prefix: DEMO_PREFIX,
  zones: [
    {
      name: 'enterprise',
      iface: 'eth1',
      subnet: '10.10.0.0/24',
      hosts: [{ name: 'office-pc', address: '10.10.0.50' }],
    },
    {
      name: 'dmz',
      iface: 'eth2',
      subnet: '10.20.0.0/24',
      hosts: [{ name: 'historian', address: '10.20.0.10' }],
    },
    {
      name: 'scada',
      iface: 'eth3',
      subnet: '10.30.0.0/24',
      hosts: [
        { name: 'scada-server', address: '10.30.0.10' },
        { name: 'hmi-1', address: '10.30.0.11' },
      ],
    },
    {
      name: 'control',
      iface: 'eth4',
      subnet: '10.40.0.0/24',
      hosts: [
        { name: 'plc-intake', address: '10.40.0.21' },
        { name: 'ua-filter', address: '10.40.0.30' },
      ],
    },
    {
      name: 'safety',
      iface: 'eth5',
      subnet: '10.50.0.0/24',
      hosts: [{ name: 'sis-1', address: '10.50.0.10' }],
    },
  ],
  management: { iface: 'mgmt0', subnet: '10.99.0.0/24', hostAddress: '10.99.0.10' },
};

export interface DemoPaths {
  dir: string;
  stateDir: string;
  policy: string;
  pids: string;
}

export function demoPaths(dir = join(repoRoot, '.sluice-demo')): DemoPaths {
  return {
    dir,
    stateDir: join(dir, 'state'),
    policy: join(dir, 'water-plant-lab.yaml'),
    pids: join(dir, 'pids.json'),
  };
}

/** The lab's policy: the water plant example with the management side moved onto the lab's 10.99.0.0/24. */
export async function demoPolicyText(now: Date = new Date()): Promise<string> {
  const text = await readFile(join(repoRoot, 'examples/water-plant.yaml'), 'utf8');
  const replaced = text.replace(/allowFrom: \[192\.168\.100\.0\/24\]/, 'allowFrom: [10.99.0.0/24]');
  if (replaced === text)
    throw new Error('examples/water-plant.yaml no longer has the expected management block');
  // The example's waivers carry a fixed expiry date; the demo must keep working after it, so each one is
  // moved to a year from today (the example file itself keeps its date: a real waiver must be renewed).
  const inAYear = new Date(now.getTime() + 365 * 86_400_000).toISOString().slice(0, 10);
  const renewed = replaced.replace(/expires: [0-9]{4}-[0-9]{2}-[0-9]{2}/g, `expires: ${inAYear}`);
  if (renewed === replaced) throw new Error('examples/water-plant.yaml no longer has a waiver to renew');
  return renewed;
}

async function startDetached(paths: DemoPaths, name: string, ns: string, args: string[]): Promise<number> {
  const out = await open(join(paths.dir, `${name}.log`), 'a');
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, ...args], {
    detached: true,
    stdio: ['ignore', out.fd, out.fd],
    cwd: repoRoot,
  });
  child.unref();
  await out.close();
  if (child.pid === undefined) throw new Error(`could not start ${name}`);
  return child.pid;
}

const script = (rel: string) => join(here, rel + ext);
const cli = () => join(repoRoot, ext === '.ts' ? 'gateway/cli.ts' : 'dist/gateway/cli.js');

async function waitForSocket(path: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      await controlCall(path, 'status', {}, { timeoutMs: 2000 });
      return;
    } catch (err) {
      if (Date.now() > until) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

export interface DemoInfo {
  paths: DemoPaths;
  gwNs: string;
  mgmtNs: string;
  uiUrl: string;
  /** How to log in: the one-time setup link, or a hint when an admin exists already. */
  uiLogin: string;
}

export async function demoUp(log: (line: string) => void = () => undefined): Promise<DemoInfo> {
  const paths = demoPaths();
  await demoDown();
  await mkdir(paths.stateDir, { recursive: true, mode: 0o700 });
  log('building the lab: 5 zones, a management side and the gateway in network namespaces (slcD-*)');
  const lab = await labUp(DEMO_SPEC);
  await writeFile(paths.policy, await demoPolicyText());
  const pids: Record<string, number> = {};
  log('starting the gateway daemon (sluice run --ulogd) in ' + lab.gw);
  pids['daemon'] = await startDetached(paths, 'daemon', lab.gw, [
    cli(),
    'run',
    '--state-dir',
    paths.stateDir,
    '--ulogd',
  ]);
  await writeFile(paths.pids, JSON.stringify(pids));
  await waitForSocket(socketPath(paths.stateDir), 20_000);
  log('applying the water-plant policy (validate → compile → nft -c → one atomic load), then confirming');
  await controlCall(socketPath(paths.stateDir), 'apply', {
    text: await readFile(paths.policy, 'utf8'),
    file: paths.policy,
    who: 'demo',
    comment: 'make demo',
    confirmWithinSec: 60,
  });
  await controlCall(socketPath(paths.stateDir), 'confirm', { who: 'demo' });
  log('starting simulated PLCs (plc-intake, sis-1) and HMI traffic');
  const plcNs = lab.hostNs('control', 'plc-intake');
  pids['plc-intake'] = await startDetached(paths, 'plc-intake', plcNs, [script('plc-sim'), '--port', '502']);
  pids['sis-1'] = await startDetached(paths, 'sis-1', lab.hostNs('safety', 'sis-1'), [
    script('plc-sim'),
    '--port',
    '502',
  ]);
  await waitForTcpListen(plcNs, 502, 10_000);
  pids['hmi-1'] = await startDetached(paths, 'hmi-1', lab.hostNs('scada', 'hmi-1'), [
    script('hmi-traffic'),
    '--plc',
    '10.40.0.21',
    '--write-addr',
    '1000',
    '--forbidden-write-addr',
    '900',
    '--interval',
    '1000',
  ]);
  // The office PC has no conduit into control: each attempt is a no-conduit drop in the log.
  pids['office-pc'] = await startDetached(paths, 'office-pc', lab.hostNs('enterprise', 'office-pc'), [
    script('hmi-traffic'),
    '--plc',
    '10.40.0.21',
    '--interval',
    '5000',
  ]);
  // OPC UA: a node-opcua server on ua-filter, and the SCADA server's sessions through the OPC UA filter
  // (SignAndEncrypt passes; a SecurityMode None attempt is refused at OPN and logged).
  log("starting the OPC UA server (ua-filter) and the SCADA server's OPC UA sessions");
  const uaNs = lab.hostNs('control', 'ua-filter');
  pids['ua-filter'] = await startDetached(paths, 'ua-filter', uaNs, [
    script('opcua-server'),
    '--pki',
    join(paths.dir, 'pki-server'),
    '--port',
    '4840',
  ]);
  await waitForTcpListen(uaNs, 4840, 60_000);
  pids['scada-server'] = await startDetached(paths, 'scada-server', lab.hostNs('scada', 'scada-server'), [
    script('opcua-hmi'),
    '--server',
    '10.40.0.30',
    '--pki',
    join(paths.dir, 'pki-client'),
  ]);
  // The UI on the host's loopback reaches the daemon in the gateway namespace through its unix socket.
  log('starting the web UI on http://' + DEMO_UI_LISTEN);
  pids['ui'] = await startOnHost(paths, 'ui', [
    cli(),
    'ui',
    '--listen',
    DEMO_UI_LISTEN,
    '--state-dir',
    paths.stateDir,
  ]);
  await writeFile(paths.pids, JSON.stringify(pids));
  const uiLogin = await waitForUiLogin(join(paths.dir, 'ui.log'), 20_000);
  return { paths, gwNs: lab.gw, mgmtNs: lab.mgmtNs ?? '', uiUrl: `http://${DEMO_UI_LISTEN}/`, uiLogin };
}

export const DEMO_UI_LISTEN = '127.0.0.1:8443';

async function startOnHost(paths: DemoPaths, name: string, args: string[]): Promise<number> {
  const out = await open(join(paths.dir, `${name}.log`), 'w');
  const child = spawn(process.execPath, args, {
    detached: true,
    stdio: ['ignore', out.fd, out.fd],
    cwd: repoRoot,
  });
  child.unref();
  await out.close();
  if (child.pid === undefined) throw new Error(`could not start ${name}`);
  return child.pid;
}

/** The UI prints a one-time setup link when no admin exists yet; an existing state dir has accounts already. */
async function waitForUiLogin(logFile: string, timeoutMs: number): Promise<string> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const text = existsSync(logFile) ? await readFile(logFile, 'utf8') : '';
    const link = /(https?:\/\/\S+#setup=\S+)/.exec(text);
    if (link?.[1] !== undefined) return `first-run setup (one time, 1 hour): open ${link[1]}`;
    if (/web UI listening/.test(text)) {
      // Listening without a setup link: an admin exists from an earlier demo run.
      await new Promise((r) => setTimeout(r, 500));
      const again = await readFile(logFile, 'utf8');
      const l2 = /(https?:\/\/\S+#setup=\S+)/.exec(again);
      if (l2?.[1] !== undefined) return `first-run setup (one time, 1 hour): open ${l2[1]}`;
      return 'log in with the admin you created earlier (or: npx sluice user add NAME --role admin --state-dir …)';
    }
    if (Date.now() > until || /EADDRINUSE|Error/.test(text)) {
      const reason = /EADDRINUSE/.test(text) ? `${DEMO_UI_LISTEN} is already in use` : `see ${logFile}`;
      throw new SluiceError('lab.ui', `the web UI did not start: ${reason}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function demoDown(): Promise<boolean> {
  const paths = demoPaths();
  let had = false;
  if (existsSync(paths.pids)) {
    had = true;
    const pids = JSON.parse(await readFile(paths.pids, 'utf8')) as Record<string, number>;
    for (const pid of Object.values(pids)) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // already gone
      }
    }
    await rm(paths.pids, { force: true });
    await new Promise((r) => setTimeout(r, 500));
  }
  const before = (await listNetns()).filter((n) => n.startsWith(DEMO_PREFIX + '-'));
  if (before.length > 0) had = true;
  // labDown kills whatever still runs inside the namespaces, then deletes them.
  await labDown(DEMO_PREFIX);
  return had;
}

export async function demoStatus(): Promise<{ up: boolean; namespaces: string[]; stateDir: string }> {
  const namespaces = (await listNetns()).filter((n) => n.startsWith(DEMO_PREFIX + '-'));
  return { up: namespaces.length > 0, namespaces, stateDir: demoPaths().stateDir };
}
