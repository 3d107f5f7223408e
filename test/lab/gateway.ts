/**
 * The daemon-in-a-lab scaffolding the end-to-end tests share: a lab laid out the way their policies expect,
 * `sluice run` started in the lab's gateway namespace exactly as an operator starts it, the CLI called with
 * the test's `--state-dir`, and `sluice logs --json` polled for the events a case waits on. Kept in one place
 * so that a change to how the daemon is started or read back is made once, not in every suite.
 */
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { controlCall } from '../../gateway/control.ts';
import { socketPath } from '../../gateway/paths.ts';
import type { Line } from './follow.ts';
import type { Spawned } from './netns.ts';
import { labUp, type Lab } from './topology.ts';

export const ROOT = path.resolve(import.meta.dirname, '../..');
export const CLI = path.join(ROOT, 'gateway/cli.ts');

export interface LabHost {
  zone: string;
  host: string;
  /** The host's IPv4 address; its zone's subnet is the /24 around it. */
  address: string;
}

/**
 * A lab with one zone per entry, in order: zone n (from 1) on the gateway's `eth<n>` with the /24 around its
 * host's address, and a management side on `mgmt0` in `<first two octets>.99.0/24` (workstation at `.10`).
 * That is the layout every e2e policy is written against.
 */
export async function gatewayLab(prefix: string, hosts: LabHost[]): Promise<Lab> {
  const net = (hosts[0]?.address ?? '').split('.').slice(0, 2).join('.');
  return await labUp({
    prefix,
    zones: hosts.map((h, i) => ({
      name: h.zone,
      iface: `eth${i + 1}`,
      subnet: h.address.replace(/\.\d+$/, '.0/24'),
      hosts: [{ name: h.host, address: h.address }],
    })),
    management: { iface: 'mgmt0', subnet: `${net}.99.0/24`, hostAddress: `${net}.99.10` },
  });
}

/** `sluice ARGS --state-dir STATE_DIR`; never throws on a non-zero exit (the tests assert on it). */
export async function sluice(stateDir: string, ...args: string[]) {
  return await execa(process.execPath, [CLI, ...args, '--state-dir', stateDir], { reject: false });
}

export interface GatewayOptions {
  /** `--ulogd`: kernel drops reach `sluice logs` through ulogd2. */
  ulogd?: boolean;
  /** `--mgmt-interface`/`--mgmt-allow` from the lab's management side. */
  management?: boolean;
  /** 'pipe' keeps the daemon's output on the subprocess result (default 'ignore'). */
  output?: 'pipe' | 'ignore';
  /** How long the control socket may take to answer (default 20 s). */
  timeoutMs?: number;
}

export interface Gateway {
  child: Spawned;
  /** SIGTERM, then waits for the daemon to exit. */
  stop(): Promise<void>;
}

/** Starts `sluice run` in the lab's gateway namespace and returns once its control socket answers. */
export async function startGateway(lab: Lab, stateDir: string, opts: GatewayOptions = {}): Promise<Gateway> {
  const args = [CLI, 'run', '--state-dir', stateDir];
  if (opts.ulogd === true) args.push('--ulogd');
  if (opts.management === true) {
    const m = lab.spec.management;
    if (m === undefined) throw new Error('startGateway: the lab has no management side');
    args.push('--mgmt-interface', m.iface, '--mgmt-allow', m.subnet);
  }
  const output = opts.output ?? 'ignore';
  const child = lab.spawn(lab.gw, process.execPath, args, { cwd: ROOT, stdout: output, stderr: output });
  const gateway: Gateway = {
    child,
    stop: async () => {
      child.kill('SIGTERM');
      await child;
    },
  };
  const until = Date.now() + (opts.timeoutMs ?? 20_000);
  for (;;) {
    try {
      await controlCall(socketPath(stateDir), 'status', {}, { timeoutMs: 10_000 });
      return gateway;
    } catch (err) {
      if (Date.now() > until) {
        // Not left running behind a failed beforeAll: the next start would find its socket taken.
        await gateway.stop();
        throw new Error(`daemon did not come up: ${err instanceof Error ? err.message : String(err)}`, {
          cause: err,
        });
      }
      await sleep(200);
    }
  }
}

export interface LogPoll {
  /** Return as soon as this many events match (default 1; 0 reads once). */
  atLeast?: number;
  timeoutMs: number;
}

/**
 * Events of `sluice logs --json ARGS` that match `pred`, in the CLI's order, polled every 100 ms until at
 * least `atLeast` match or `timeoutMs` passed (then whatever matched, possibly nothing).
 */
export async function pollLogs(
  stateDir: string,
  args: string[],
  pred: (e: Line) => boolean,
  { atLeast = 1, timeoutMs }: LogPoll,
): Promise<Line[]> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const r = await sluice(stateDir, 'logs', '--json', ...args);
    const hits = r.stdout
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Line)
      .filter(pred);
    if (hits.length >= atLeast || Date.now() > until) return hits;
    await sleep(100);
  }
}
