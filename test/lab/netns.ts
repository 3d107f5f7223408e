/**
 * A small typed wrapper around `ip` and commands run inside network namespaces, for the lab, the
 * integration tests, the demo and the benchmarks.
 *
 * Every command goes through execa with an argument array: no shell ever parses a name, so a namespace or
 * interface name can never turn into a second command. Namespaces and veths outlive the processes that
 * made them, so callers name theirs with their own prefix and call `removeStale(prefix)` before creating.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa, type ResultPromise } from 'execa';

/** Linux interface names: at most 15 bytes (IFNAMSIZ - 1), safe characters only. */
export const IFNAME_MAX = 15;
const IFNAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;
/**
 * Namespace names become file names under /run/netns and show up in `ip netns list`; keep them short and
 * free of anything a shell or a path could misread.
 */
export const NETNS_NAME_MAX = 48;
const NETNS_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$/;

export interface RunOptions {
  /** Text written to the command's stdin. */
  input?: string;
  /** Milliseconds before the command is killed (default: none). */
  timeout?: number;
  /** Throw on a non-zero exit (default true). */
  reject?: boolean;
  /** Extra environment variables. */
  env?: Record<string, string>;
  cwd?: string;
}

export interface RunResult {
  command: string;
  stdout: string;
  stderr: string;
  exitCode: number;
  timedOut: boolean;
}

/** Runs a command (no shell). Throws an Error naming the command and its stderr unless `reject: false`. */
export async function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await execa(cmd, args, {
    reject: false,
    stdin: opts.input === undefined ? 'ignore' : 'pipe',
    ...(opts.input === undefined ? {} : { input: opts.input }),
    ...(opts.timeout === undefined ? {} : { timeout: opts.timeout }),
    ...(opts.env === undefined ? {} : { env: opts.env }),
    ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
    stripFinalNewline: true,
  });
  const result: RunResult = {
    command: [cmd, ...args].join(' '),
    stdout: r.stdout,
    stderr: r.stderr,
    // A command that could not start or was killed has no exit code; treat it as a failure.
    exitCode: r.exitCode ?? -1,
    timedOut: r.timedOut,
  };
  if ((opts.reject ?? true) && (result.exitCode !== 0 || r.failed)) {
    const why = r.timedOut ? 'timed out' : `exit ${result.exitCode}`;
    const detail = (result.stderr || r.message || '').trim();
    throw new Error(`${result.command}: ${why}${detail ? `: ${detail}` : ''}`);
  }
  return result;
}

/** `ip ARGS…` */
export function ip(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return run('ip', args, opts);
}

/** Runs `cmd args…` inside namespace `ns` (through `ip netns exec`, which execs the command itself). */
export function nsExec(ns: string, cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  assertNetnsName(ns);
  return run('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

export interface SpawnOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Default 'pipe' (output is buffered on the subprocess result); use 'ignore' for chatty servers. */
  stdout?: 'pipe' | 'ignore' | 'inherit';
  stderr?: 'pipe' | 'ignore' | 'inherit';
}

interface SpawnExecaOptions {
  reject: false;
  stdin: 'ignore';
  stdout: 'pipe' | 'ignore' | 'inherit';
  stderr: 'pipe' | 'ignore' | 'inherit';
  env?: Record<string, string>;
  cwd?: string;
}

/** A long-running child started by `nsSpawn`; awaiting it never throws (`reject: false`). */
export type Spawned = ResultPromise<SpawnExecaOptions>;

/**
 * Starts a long-running command (a server, a traffic generator) inside `ns`. `ip netns exec` execs the
 * command, so the subprocess's pid is the server's own and killing it stops the server. execa kills it
 * when this process exits, and `removeStale` kills whatever is still left inside the namespace.
 */
export function nsSpawn(ns: string, cmd: string, args: string[], opts: SpawnOptions = {}): Spawned {
  assertNetnsName(ns);
  const options: SpawnExecaOptions = {
    reject: false,
    stdin: 'ignore',
    stdout: opts.stdout ?? 'pipe',
    stderr: opts.stderr ?? 'pipe',
    ...(opts.env === undefined ? {} : { env: opts.env }),
    ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
  };
  return execa('ip', ['netns', 'exec', ns, cmd, ...args], options);
}

export function isValidIfName(name: string): boolean {
  return IFNAME_RE.test(name) && Buffer.byteLength(name) <= IFNAME_MAX;
}

export function assertIfName(name: string): void {
  if (!isValidIfName(name)) {
    throw new Error(`invalid interface name ${JSON.stringify(name)} (1-${IFNAME_MAX} of [A-Za-z0-9_.-])`);
  }
}

export function assertNetnsName(name: string): void {
  if (!NETNS_NAME_RE.test(name)) {
    throw new Error(`invalid namespace name ${JSON.stringify(name)} (1-${NETNS_NAME_MAX} of [A-Za-z0-9_.-])`);
  }
}

/**
 * Returns `name` unchanged when it fits in `max` characters, else a deterministic shortening: a prefix of
 * it plus 8 hex digits of its SHA-1, so two long names that share a beginning still come out distinct.
 */
export function shortenName(name: string, max: number): string {
  if (name.length <= max) return name;
  if (max < 10) throw new Error(`cannot shorten ${JSON.stringify(name)} to ${max} characters`);
  const hash = createHash('sha1').update(name).digest('hex').slice(0, 8);
  return `${name.slice(0, max - 9).replace(/[-_.]+$/, '')}-${hash}`;
}

/** Names of all network namespaces known to `ip netns` (those under /run/netns). */
export async function listNetns(): Promise<string[]> {
  const r = await ip(['-j', 'netns', 'list']);
  // With no namespaces at all, iproute2 prints nothing rather than `[]`.
  if (r.stdout.trim() === '') return [];
  const parsed: unknown = JSON.parse(r.stdout);
  if (!Array.isArray(parsed)) throw new Error(`unexpected 'ip -j netns list' output: ${r.stdout}`);
  const names: string[] = [];
  for (const entry of parsed) {
    if (typeof entry === 'object' && entry !== null && 'name' in entry && typeof entry.name === 'string') {
      names.push(entry.name);
    }
  }
  return names.sort();
}

export interface AddNetnsOptions {
  /** Bring `lo` up (default true): servers bound to 127.0.0.1 and nft's redirect need it. */
  loopback?: boolean;
}

/** Creates namespace `name` (fails if it exists) and brings its loopback up. */
export async function addNetns(name: string, opts: AddNetnsOptions = {}): Promise<void> {
  assertNetnsName(name);
  await ip(['netns', 'add', name]);
  if (opts.loopback ?? true) await ip(['-n', name, 'link', 'set', 'lo', 'up']);
}

/** Pids of the processes whose network namespace is `ns`. */
export async function netnsPids(ns: string): Promise<number[]> {
  assertNetnsName(ns);
  const r = await ip(['netns', 'pids', ns], { reject: false });
  if (r.exitCode !== 0) return [];
  return r.stdout
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Kills every process inside `ns` (SIGKILL: these are lab servers, nothing to flush) and waits briefly for
 * them to go, so the namespace and its interfaces are really freed when `ip netns del` drops the name.
 */
export async function killNetnsPids(ns: string): Promise<number> {
  const pids = (await netnsPids(ns)).filter((pid) => pid !== process.pid);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  for (let i = 0; i < 40 && pids.some(alive); i++) await sleep(25);
  return pids.length;
}

/** Kills the processes inside `name` and deletes it. Returns false when it did not exist. */
export async function delNetns(name: string): Promise<boolean> {
  assertNetnsName(name);
  if (!(await listNetns()).includes(name)) return false;
  await killNetnsPids(name);
  const r = await ip(['netns', 'del', name], { reject: false });
  // Another cleaner may have won the race; only a namespace that is still there is a failure.
  if (r.exitCode !== 0 && (await listNetns()).includes(name)) {
    throw new Error(`ip netns del ${name}: ${r.stderr}`);
  }
  return r.exitCode === 0;
}

/**
 * Deletes every namespace whose name starts with `prefix` (and kills the processes inside them first).
 * Returns the names removed. An empty prefix is refused: it would take every namespace on the machine.
 */
export async function removeStale(prefix: string): Promise<string[]> {
  if (prefix.length < 2)
    throw new Error(`refusing to remove namespaces by the prefix ${JSON.stringify(prefix)}`);
  const stale = (await listNetns()).filter((n) => n.startsWith(prefix));
  await Promise.all(stale.map((n) => delNetns(n)));
  return stale;
}

/** Sets sysctls inside `ns` (e.g. `{ 'net.ipv4.ip_forward': 1 }`) in one `sysctl` run. */
export async function nsSysctl(ns: string, values: Record<string, string | number>): Promise<void> {
  const args = Object.entries(values).map(([k, v]) => {
    if (!/^[a-z0-9_.]+$/.test(k)) throw new Error(`invalid sysctl key ${JSON.stringify(k)}`);
    return `${k}=${v}`;
  });
  await nsExec(ns, 'sysctl', ['-q', '-w', ...args]);
}

/** Names of the links in `ns` (or in the host's namespace when `ns` is undefined). */
export async function listLinks(ns?: string): Promise<string[]> {
  const r = await ip([...(ns === undefined ? [] : ['-n', ns]), '-j', 'link', 'show']);
  const parsed: unknown = JSON.parse(r.stdout || '[]');
  if (!Array.isArray(parsed)) throw new Error(`unexpected 'ip -j link' output`);
  const names: string[] = [];
  for (const l of parsed) {
    if (typeof l === 'object' && l !== null && 'ifname' in l && typeof l.ifname === 'string')
      names.push(l.ifname);
  }
  return names.sort();
}

/**
 * Waits until something inside `ns` listens on TCP `port` (checked with `ss`, so no packet is sent that a
 * firewall test might count). Throws after `timeoutMs`.
 */
export async function waitForTcpListen(ns: string, port: number, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await nsExec(ns, 'ss', ['-H', '-l', '-t', '-n', `sport = :${port}`], { reject: false });
    if (r.exitCode === 0 && r.stdout.trim() !== '') return;
    if (Date.now() > deadline)
      throw new Error(`nothing listens on tcp port ${port} in ${ns} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

// Small TCP peers run with this very Node binary, so probes need no tool beyond what the project pins.
const ECHO_SERVER_JS = `
const net = require('node:net');
const [host, port] = process.argv.slice(1);
const srv = net.createServer((s) => { s.on('error', () => {}); s.pipe(s); });
srv.listen(Number(port), host, () => console.log('listening'));
`;
const CONNECT_JS = `
const net = require('node:net');
const [host, port, ms] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port) });
const t = setTimeout(() => { console.log('timeout'); process.exit(2); }, Number(ms));
s.on('connect', () => s.end('sluice-probe'));
let got = '';
s.on('data', (d) => { got += d; });
s.on('end', () => { clearTimeout(t); console.log(got === 'sluice-probe' ? 'ok' : 'bad-reply'); process.exit(got === 'sluice-probe' ? 0 : 3); });
s.on('error', (e) => { clearTimeout(t); console.log(e.code || 'error'); process.exit(1); });
`;

/** A server started in a namespace. (Not the subprocess itself: an execa subprocess is a thenable, and an
 * async function returning one would wait for the server to exit.) */
export interface NsServer {
  child: Spawned;
  /** Kills the server and waits for it to exit. */
  stop(): Promise<void>;
}

/** Starts a TCP echo server in `ns` on `address:port` (default all addresses) and waits until it listens. */
export async function startTcpEcho(ns: string, port: number, address = '0.0.0.0'): Promise<NsServer> {
  const child = nsSpawn(ns, process.execPath, ['-e', ECHO_SERVER_JS, address, String(port)]);
  const stop = async (): Promise<void> => {
    child.kill('SIGKILL');
    await child;
  };
  try {
    await waitForTcpListen(ns, port);
  } catch (e) {
    await stop();
    throw e;
  }
  return { child, stop };
}

export interface ProbeResult {
  ok: boolean;
  /** `ok`, `timeout` (silently dropped), `ECONNREFUSED` (rejected or nothing listening), … */
  outcome: string;
}

/**
 * Opens a TCP connection from `ns` to an echo server at `address:port` and checks the echoed bytes.
 * A firewall drop shows up as `timeout`, a reject or a closed port as `ECONNREFUSED`.
 */
export async function tcpProbe(
  ns: string,
  address: string,
  port: number,
  timeoutMs = 2000,
): Promise<ProbeResult> {
  const r = await nsExec(ns, process.execPath, ['-e', CONNECT_JS, address, String(port), String(timeoutMs)], {
    reject: false,
    timeout: timeoutMs + 5000,
  });
  const outcome = r.stdout.trim().split('\n').pop() ?? '';
  return { ok: r.exitCode === 0 && outcome === 'ok', outcome: outcome || `exit ${r.exitCode}` };
}

/** True when the `ping` binary (iputils-ping) is installed; the lab itself never needs it. */
export async function havePing(): Promise<boolean> {
  const r = await run('ping', ['-V'], { reject: false });
  return r.exitCode === 0;
}

/** One ICMP echo from `ns` to `address`; true when answered within `timeoutS` seconds. */
export async function ping(ns: string, address: string, timeoutS = 2): Promise<boolean> {
  const r = await nsExec(ns, 'ping', ['-n', '-c', '1', '-W', String(timeoutS), address], { reject: false });
  return r.exitCode === 0;
}
