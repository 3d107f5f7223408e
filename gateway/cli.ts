/**
 * The `sluice` command line. Each subcommand is a thin shell over the stage modules:
 * load → verify (policies/validate.ts) → generate (policies/compile.ts) → apply (gateway/…).
 * User errors print one clear line on stderr (no stack trace) and exit 1 (invalid input) or 2 (usage).
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { readFile, writeFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import { SluiceError, UsageError } from '../policies/errors.ts';
import { validatePolicyFile } from '../policies/validate.ts';
import { formatProblem, formatReport, reportJson } from '../policies/format.ts';
import { compilePolicy } from '../policies/compile.ts';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { resolveStateDir, osUser } from './state.ts';
import { controlCall, ControlError } from './control.ts';
import { LOG_DB_NAME, socketPath } from './paths.ts';
import { DEFAULT_QUERY_LIMIT, LogStore, MAX_QUERY_LIMIT, type LogQuery } from './logstore.ts';
import { BLOCKED_VERDICTS, type BlockedVerdict, type StoredEvent } from './events.ts';
import { IFNAME_RE, type Management, type Problem } from '../policies/types.ts';
import { parseCidr } from '../policies/cidr.ts';
import { planPlacement, runInBackground } from './sched.ts';

export const EXIT_OK = 0;
export const EXIT_INVALID = 1;
export const EXIT_USAGE = 2;

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: NodeJS.ProcessEnv;
  now: () => Date;
}

const USAGE = `Usage: sluice <command> [options]

Policy:
  validate FILE [--json]                 check a policy: all errors with file:line:column, then the IEC 62443 lint report
  compile FILE [--out F] [--plan F]      print the nftables ruleset (or write it to F) and write the proxy plan

Gateway (talks to the daemon over its unix socket in the state dir):
  run [--ulogd] [--mgmt-interface IF --mgmt-allow CIDR,...] [--ui-listen ADDR:PORT]
                                         run the daemon in the foreground (systemd: Type=notify); --ulogd starts
                                         ulogd2 too; --mgmt-* keep management reachable when no policy is recorded
       [--log-max-bytes 512M] [--log-max-age 30d]
                                         blocked-traffic log retention (or SLUICE_LOG_MAX_BYTES, SLUICE_LOG_MAX_AGE)
       [--cpus auto|all|LIST]            CPUs for the daemon and its filters (SLUICE_DAEMON_CPUS); auto: all
                                         but the last when there are 2 or more, which the UI takes
  apply FILE [--confirm-within S] [--comment T]
                                         validate, compile, check and load atomically; without confirm in S seconds it rolls back
  confirm                                keep the applied version
  rollback [VERSION]                     restore a recorded version (default: the previous confirmed one)
  status [--json]                        running version, pending confirmation, flow counters, blocked counts, proxies
  versions [--json]                      recorded policy versions
  logs [--since 10m] [--until T] [--conduit X] [--zone Z] [--src IP] [--dst IP] [--port N] [--protocol P]
       [--verdict V] [--reason R] [--limit N] [--json] [--follow]
                                         query the blocked-traffic log

Install (docs/install.md):
  backup FILE [--include-logs] [--key-file F]
                                         state (versions, audit log, users, certificates) → one archive signed
                                         with the gateway's backup key (/etc/sluice/backup.key)
  restore FILE [--key-file F] [--other-gateway] [--sha256 HEX] [--force]
                                         verify the archive's key, checksums and version, then restore it
                                         (stop the daemon first)
  boot-ruleset                           load the last confirmed ruleset or the fail-closed one, then exit
                                         (sluice-boot.service, before any interface comes up)

Web UI:
  ui [--listen 127.0.0.1:8443] [--tls-cert F --tls-key F] [--public-origin URL ...] [--cpus auto|all|LIST]
                                         run the web UI and JSON API as its own process (HTTPS with a generated
                                         self-signed certificate unless given; plain HTTP only on loopback);
                                         idle CPU class, on the last CPU by default (SLUICE_UI_CPUS)
  user add NAME --role admin|integrator|operator|auditor [--password-stdin]
  user remove NAME | user list           UI accounts (the password is prompted for, or read from stdin)

Lab (network namespaces on this machine; never touches the host's interfaces):
  lab up | down | status                 the demo lab: zones, gateway, simulated PLC, OPC UA server, HMI traffic, UI

Options:
  --state-dir DIR                        state directory (default /var/lib/sluice, or $SLUICE_STATE_DIR); for the
                                         gateway, install and web UI commands (validate, compile and lab have none)
  -h, --help                             this text
`;

type Handler = (args: string[], io: CliIo) => Promise<number>;

function parse<T extends NonNullable<ParseArgsConfig['options']>>(
  command: string,
  args: string[],
  options: T,
  positionals: { min: number; max: number; names: string },
) {
  let parsed;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    // parseArgs' messages name the offending option; prefix the command so the user knows where.
    throw new UsageError('cli.usage', `sluice ${command}: ${(err as Error).message}`);
  }
  const n = parsed.positionals.length;
  if (n < positionals.min || n > positionals.max) {
    throw new UsageError(
      'cli.usage',
      `sluice ${command}: expected ${positionals.names}, got ${n === 0 ? 'nothing' : parsed.positionals.join(' ')}`,
    );
  }
  return parsed;
}

const validate: Handler = async (args, io) => {
  const { values, positionals } = parse(
    'validate',
    args,
    { json: { type: 'boolean', default: false } },
    { min: 1, max: 1, names: 'one policy FILE' },
  );
  const file = positionals[0] as string;
  const result = await validatePolicyFile(file, { now: io.now() });
  if (values.json) {
    io.stdout(JSON.stringify(reportJson(result), null, 2) + '\n');
  } else {
    const report = formatReport(result);
    if (result.ok) io.stdout(report);
    else io.stderr(report);
  }
  return result.ok ? EXIT_OK : EXIT_INVALID;
};

const compile: Handler = async (args, io) => {
  const { values, positionals } = parse(
    'compile',
    args,
    { out: { type: 'string' }, plan: { type: 'string' } },
    { min: 1, max: 1, names: 'one policy FILE' },
  );
  const file = positionals[0] as string;
  const result = await validatePolicyFile(file, { now: io.now() });
  if (!result.ok || result.policy === undefined) {
    for (const p of result.errors) io.stderr(formatProblem(p) + '\n');
    io.stderr(`sluice compile: ${file} is not valid; nothing compiled\n`);
    return EXIT_INVALID;
  }
  const { ruleset, plan } = compilePolicy(result.policy);
  // Files first: a bad --plan path must fail before the ruleset went to stdout, so nothing half-done is used.
  if (values.plan !== undefined) await writeOutput(values.plan, JSON.stringify(plan, null, 2) + '\n');
  if (values.out !== undefined) await writeOutput(values.out, ruleset);
  else io.stdout(ruleset);
  return EXIT_OK;
};

/** writeFile with the reason in words (missing directory, permission) as a user error, not a stack trace. */
async function writeOutput(path: string, text: string): Promise<void> {
  try {
    await writeFile(path, text);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why =
      e.code === 'ENOENT'
        ? 'its directory does not exist'
        : e.code === 'EACCES' || e.code === 'EPERM'
          ? 'permission denied'
          : e.code === 'EISDIR'
            ? 'it is a directory'
            : (e.message ?? String(err));
    throw new SluiceError('cli.write', `cannot write ${path}: ${why}`, { cause: err });
  }
}

const STATE_DIR_OPTION = { 'state-dir': { type: 'string' } } as const;

function stateDirOf(values: { 'state-dir'?: string | undefined }, io: CliIo): string {
  return resolveStateDir(values['state-dir'], io.env);
}

function who(io: CliIo): string {
  // Under sudo, the person is the invoking user, not root (CR 2.12 non-repudiation).
  const sudo = io.env['SUDO_USER'];
  return sudo !== undefined && sudo !== '' ? sudo : osUser();
}

function printProblems(err: ControlError, io: CliIo): void {
  if (Array.isArray(err.data)) for (const p of err.data as Problem[]) io.stderr(formatProblem(p) + '\n');
}

async function call(
  stateDir: string,
  method: string,
  params: Record<string, unknown>,
  io: CliIo,
): Promise<unknown> {
  try {
    return await controlCall(socketPath(stateDir), method, params);
  } catch (err) {
    if (err instanceof ControlError) printProblems(err, io);
    throw err;
  }
}

const run: Handler = async (args, io) => {
  const { values } = parse(
    'run',
    args,
    {
      ...STATE_DIR_OPTION,
      ulogd: { type: 'boolean', default: false },
      'ulogd-json': { type: 'string' },
      'mgmt-interface': { type: 'string' },
      'mgmt-allow': { type: 'string' },
      'ui-listen': { type: 'string' },
      'log-max-bytes': { type: 'string' },
      'log-max-age': { type: 'string' },
      cpus: { type: 'string' },
    },
    { min: 0, max: 0, names: 'no arguments' },
  );
  // Loaded on demand, like the other heavy handlers: the daemon pulls in the apply engine, pino and the
  // protocol filters, which the short-lived commands (validate, status, logs, …) never need.
  const { parseLogMaxAgeMs, parseLogMaxBytes, runDaemon } = await import('./daemon.ts');
  const opts: Parameters<typeof runDaemon>[0] = { stateDir: stateDirOf(values, io), ulogd: values.ulogd };
  // Blocked-traffic log retention; flags win over the environment (sluice.env), defaults 512M and 30d.
  const logMaxBytes = values['log-max-bytes'] ?? io.env['SLUICE_LOG_MAX_BYTES'];
  const logMaxAge = values['log-max-age'] ?? io.env['SLUICE_LOG_MAX_AGE'];
  if (logMaxBytes !== undefined) opts.logMaxBytes = parseLogMaxBytes(logMaxBytes);
  if (logMaxAge !== undefined) opts.logMaxAgeMs = parseLogMaxAgeMs(logMaxAge);
  if (values['ui-listen'] !== undefined) opts.uiListen = values['ui-listen'];
  if (values['ulogd-json'] !== undefined) opts.ulogdJsonFile = values['ulogd-json'];
  const mgmtIf = values['mgmt-interface'] ?? io.env['SLUICE_MGMT_INTERFACE'];
  const mgmtAllow = values['mgmt-allow'] ?? io.env['SLUICE_MGMT_ALLOW'];
  if ((mgmtIf === undefined) !== (mgmtAllow === undefined))
    throw new UsageError('cli.usage', 'sluice run: --mgmt-interface and --mgmt-allow go together');
  if (mgmtIf !== undefined && mgmtAllow !== undefined)
    // The UI port stays reachable in fail-closed mode too, wherever the UI listens.
    opts.fallbackManagement = parseManagement(
      mgmtIf,
      mgmtAllow,
      values['ui-listen'] ?? io.env['SLUICE_UI_LISTEN'],
    );
  // The filters keep CPUs of their own, away from the UI's (gateway/sched.ts says why).
  const place = await planPlacement('daemon', values.cpus ?? io.env['SLUICE_DAEMON_CPUS']);
  await runDaemon(opts);
  const placed = await place();
  if (placed !== undefined) io.stderr(`sluice run: ${placed}\n`);
  // The daemon keeps the event loop alive until a signal stops it; exit code is set there.
  return await new Promise<number>(() => undefined);
};

/**
 * `--mgmt-interface mgmt0 --mgmt-allow 10.99.0.0/24,fd00::/64` → the fail-closed ruleset's management access:
 * SSH and the UI's port, taken from its listen address (SLUICE_UI_LISTEN, e.g. `192.168.100.1:9443` or
 * `[fd00::1]:9443`; 8443 when unset) so a UI moved to another port is not locked out. The default reads the
 * process environment because the systemd units pass SLUICE_UI_LISTEN there (sluice.env) for every command.
 */
export function parseManagement(
  iface: string,
  allow: string,
  uiListen: string | undefined = process.env['SLUICE_UI_LISTEN'],
): Management {
  if (!IFNAME_RE.test(iface))
    throw new UsageError('cli.usage', `sluice run: '${iface}' is not an interface name`);
  const allowFrom = allow.split(',').map((t) => {
    const parsed = parseCidr(t.trim());
    if (parsed === undefined)
      throw new UsageError('cli.usage', `sluice run: --mgmt-allow: '${t}' is not a CIDR`);
    return parsed.cidr;
  });
  let uiPort = 8443;
  if (uiListen !== undefined && uiListen !== '') {
    const m = /:(\d{1,5})$/.exec(uiListen);
    const port = m === null ? NaN : Number(m[1]);
    if (!(port >= 1 && port <= 65535))
      throw new UsageError('cli.usage', `SLUICE_UI_LISTEN: '${uiListen}' is not ADDR:PORT`);
    uiPort = port;
  }
  return { interface: iface, allowFrom, ports: uiPort === 22 ? [22] : [22, uiPort] };
}

const apply: Handler = async (args, io) => {
  const { values, positionals } = parse(
    'apply',
    args,
    { ...STATE_DIR_OPTION, 'confirm-within': { type: 'string' }, comment: { type: 'string' } },
    { min: 1, max: 1, names: 'one policy FILE' },
  );
  const file = positionals[0] as string;
  let confirmWithinSec: number | undefined;
  if (values['confirm-within'] !== undefined) {
    const raw = values['confirm-within'];
    confirmWithinSec = Number(raw);
    if (!/^[0-9]+$/.test(raw) || confirmWithinSec < 1)
      throw new UsageError(
        'cli.usage',
        `sluice apply: --confirm-within takes whole seconds ≥ 1, not '${raw}'`,
      );
  }
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new SluiceError(
      'load.read',
      `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    );
  }
  const params: Record<string, unknown> = { text, file, who: who(io) };
  if (values.comment !== undefined) params['comment'] = values.comment;
  if (confirmWithinSec !== undefined) params['confirmWithinSec'] = confirmWithinSec;
  const r = (await call(stateDirOf(values, io), 'apply', params, io)) as {
    versionId: number;
    hash: string;
    pending: { deadline: string } | null;
    warnings: Problem[];
    timings: { totalMs: number };
    proxyError?: string;
  };
  for (const w of r.warnings) io.stderr(formatProblem(w) + '\n');
  io.stdout(
    `applied version ${r.versionId} (${r.hash.slice(0, 12)}) in ${Math.round(r.timings.totalMs)} ms\n`,
  );
  if (r.pending !== null)
    io.stdout(`confirm before ${r.pending.deadline} with 'sluice confirm', or it rolls back by itself\n`);
  if (r.proxyError !== undefined) io.stderr(`warning: protocol filters did not all start: ${r.proxyError}\n`);
  return EXIT_OK;
};

const confirm: Handler = async (args, io) => {
  const { values } = parse('confirm', args, STATE_DIR_OPTION, { min: 0, max: 0, names: 'no arguments' });
  const r = (await call(stateDirOf(values, io), 'confirm', { who: who(io) }, io)) as { versionId: number };
  io.stdout(`version ${r.versionId} confirmed\n`);
  return EXIT_OK;
};

const rollback: Handler = async (args, io) => {
  const { values, positionals } = parse('rollback', args, STATE_DIR_OPTION, {
    min: 0,
    max: 1,
    names: 'at most one VERSION',
  });
  const params: Record<string, unknown> = { who: who(io) };
  if (positionals[0] !== undefined) {
    if (!/^[0-9]+$/.test(positionals[0]))
      throw new UsageError('cli.usage', `sluice rollback: VERSION is a number, not '${positionals[0]}'`);
    params['versionId'] = Number(positionals[0]);
  }
  const r = (await call(stateDirOf(values, io), 'rollback', params, io)) as {
    mode: string;
    toVersionId?: number;
  };
  io.stdout(
    r.mode === 'fail-closed'
      ? 'rolled back to the fail-closed ruleset\n'
      : `rolled back to version ${r.toVersionId}\n`,
  );
  return EXIT_OK;
};

interface StatusView {
  mode: string;
  version: { id: number; hash: string; when: string; who: string } | null;
  pending: { versionId: number; deadline: string } | null;
  flows: { conduit: string; flow: string; packets: number; bytes: number }[];
  conduitDrops: Record<string, number>;
  blocked: { conduit: string | null; events: number }[];
  log: { stored: number; droppedByRetention: number; bytes: number };
  proxies: {
    conduit: string;
    flow: string;
    listenPort: number;
    upstream: { address: string; port: number };
    state: string;
    restarts: number;
  }[];
  ulogd: { managed: boolean; running?: boolean };
}

const status: Handler = async (args, io) => {
  const { values } = parse(
    'status',
    args,
    { ...STATE_DIR_OPTION, json: { type: 'boolean', default: false } },
    { min: 0, max: 0, names: 'no arguments' },
  );
  const s = (await call(stateDirOf(values, io), 'status', {}, io)) as StatusView;
  if (values.json) {
    io.stdout(JSON.stringify(s, null, 2) + '\n');
    return EXIT_OK;
  }
  const lines: string[] = [];
  lines.push(
    `mode:      ${s.mode === 'fail-closed' ? 'FAIL-CLOSED (no forwarding; management reachable)' : s.mode}`,
    `version:   ${s.version === null ? '-' : `${s.version.id} ${s.version.hash.slice(0, 12)} by ${s.version.who} at ${s.version.when}`}`,
    `pending:   ${s.pending === null ? '-' : `version ${s.pending.versionId} rolls back at ${s.pending.deadline} unless confirmed`}`,
    'flows (packets / bytes accepted):',
  );
  for (const f of s.flows) lines.push(`  ${f.conduit}/${f.flow}: ${f.packets} / ${f.bytes}`);
  lines.push('blocked events per conduit:');
  for (const b of s.blocked) lines.push(`  ${b.conduit ?? '(no conduit)'}: ${b.events}`);
  lines.push(
    `log store: ${s.log.stored} events, ${s.log.droppedByRetention} dropped by retention, ${s.log.bytes} bytes`,
  );
  lines.push('protocol filters:');
  for (const p of s.proxies)
    lines.push(
      `  ${p.conduit}/${p.flow} :${p.listenPort} → ${p.upstream.address}:${p.upstream.port} ${p.state}${p.restarts > 0 ? ` (${p.restarts} restarts)` : ''}`,
    );
  if (s.ulogd.managed) lines.push(`ulogd2: ${s.ulogd.running === true ? 'running' : 'NOT RUNNING'}`);
  io.stdout(lines.join('\n') + '\n');
  return EXIT_OK;
};

const versions: Handler = async (args, io) => {
  const { values } = parse(
    'versions',
    args,
    { ...STATE_DIR_OPTION, json: { type: 'boolean', default: false } },
    { min: 0, max: 0, names: 'no arguments' },
  );
  const vs = (await call(stateDirOf(values, io), 'versions', {}, io)) as {
    id: number;
    hash: string;
    when: string;
    who: string;
    status: string;
    comment: string | null;
  }[];
  if (values.json) io.stdout(JSON.stringify(vs, null, 2) + '\n');
  else
    for (const v of vs)
      io.stdout(`${v.id}\t${v.status}\t${v.when}\t${v.who}\t${v.hash.slice(0, 12)}\t${v.comment ?? ''}\n`);
  return EXIT_OK;
};

/** `10m`, `2h`, `30s`, `1d`, or an ISO time → epoch ms. */
export function parseTime(text: string, now: Date, option: string): number {
  const m = /^([0-9]+)(s|m|h|d)$/.exec(text);
  if (m !== null) {
    const unit = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[m[2] as 's' | 'm' | 'h' | 'd'];
    return now.getTime() - Number(m[1]) * unit;
  }
  const t = Date.parse(text);
  if (Number.isNaN(t))
    throw new UsageError(
      'cli.usage',
      `sluice logs: ${option} takes 10m, 2h, 1d or an ISO time, not '${text}'`,
    );
  return t;
}

function formatEvent(e: StoredEvent): string {
  const at = new Date(e.time).toISOString();
  const where = `${e.fromZone ?? '?'}→${e.toZone ?? '?'}`;
  const sp = e.srcPort === undefined ? '' : `:${e.srcPort}`;
  const dp = e.dstPort === undefined ? '' : `:${e.dstPort}`;
  const n = e.count > 1 ? ` ×${e.count}` : '';
  const detail = e.detail === undefined ? '' : ' ' + JSON.stringify(e.detail);
  return `${at} ${e.verdict} ${e.conduit ?? '(no conduit)'} ${where} ${e.protocol} ${e.src}${sp} → ${e.dst}${dp} ${e.reason}${n}${detail}`;
}

const logs: Handler = async (args, io) => {
  const { values } = parse(
    'logs',
    args,
    {
      ...STATE_DIR_OPTION,
      since: { type: 'string' },
      until: { type: 'string' },
      conduit: { type: 'string' },
      zone: { type: 'string' },
      src: { type: 'string' },
      dst: { type: 'string' },
      port: { type: 'string' },
      protocol: { type: 'string' },
      verdict: { type: 'string' },
      reason: { type: 'string' },
      limit: { type: 'string' },
      json: { type: 'boolean', default: false },
      follow: { type: 'boolean', default: false },
    },
    { min: 0, max: 0, names: 'no arguments (filters are options)' },
  );
  const now = io.now();
  const q: LogQuery = {};
  if (values.since !== undefined) q.since = parseTime(values.since, now, '--since');
  if (values.until !== undefined) q.until = parseTime(values.until, now, '--until');
  if (values.conduit !== undefined) q.conduit = values.conduit;
  if (values.zone !== undefined) q.zone = values.zone;
  if (values.src !== undefined) q.src = values.src;
  if (values.dst !== undefined) q.dst = values.dst;
  if (values.protocol !== undefined) q.protocol = values.protocol;
  if (values.reason !== undefined) q.reason = values.reason;
  if (values.port !== undefined) {
    const port = Number(values.port);
    if (!/^[0-9]+$/.test(values.port) || port > 65535)
      throw new UsageError('cli.usage', `sluice logs: --port takes 0..65535, not '${values.port}'`);
    q.port = port;
  }
  if (values.verdict !== undefined) {
    if (!(BLOCKED_VERDICTS as readonly string[]).includes(values.verdict))
      throw new UsageError(
        'cli.usage',
        `sluice logs: --verdict is one of ${BLOCKED_VERDICTS.join(', ')}, not '${values.verdict}'`,
      );
    q.verdict = values.verdict as BlockedVerdict;
  }
  q.limit = DEFAULT_QUERY_LIMIT;
  if (values.limit !== undefined) {
    const limit = Number(values.limit);
    if (!/^[0-9]+$/.test(values.limit) || limit < 1 || limit > MAX_QUERY_LIMIT)
      throw new UsageError(
        'cli.usage',
        `sluice logs: --limit takes 1..${MAX_QUERY_LIMIT}, not '${values.limit}'`,
      );
    q.limit = limit;
  }
  const dbPath = join(stateDirOf(values, io), LOG_DB_NAME);
  if (!existsSync(dbPath))
    throw new SluiceError(
      'logs.no-store',
      `no blocked-traffic log at ${dbPath} (has the daemon run with this --state-dir?)`,
    );
  // Read the store directly (SQLite WAL allows readers beside the daemon): logs stay readable when the daemon is down.
  const store = LogStore.openReader(dbPath);
  const print = (events: StoredEvent[]) => {
    for (const e of events) io.stdout((values.json ? JSON.stringify(e) : formatEvent(e)) + '\n');
  };
  try {
    const first = store.query(q);
    // Oldest first on screen, like a log file; the store pages newest first.
    print([...first.events].reverse());
    if (!values.follow) return EXIT_OK;
    let lastId = first.events.reduce((m, e) => Math.max(m, e.id), 0);
    let lastTime = first.events.reduce((m, e) => Math.max(m, e.time), q.since ?? now.getTime() - 1000);
    for (;;) {
      await new Promise((r) => setTimeout(r, 500));
      const page = store.query({ ...q, since: lastTime, limit: MAX_QUERY_LIMIT });
      const fresh = page.events.filter((e) => e.id > lastId).reverse();
      print(fresh);
      for (const e of fresh) {
        lastId = Math.max(lastId, e.id);
        lastTime = Math.max(lastTime, e.time);
      }
    }
  } finally {
    store.close();
  }
};

const lab: Handler = async (args, io) => {
  const { positionals } = parse('lab', args, {}, { min: 1, max: 1, names: 'up, down or status' });
  const action = positionals[0];
  // The lab is test tooling: load it only when asked, so the gateway itself never depends on it.
  const demo = await import('../test/lab/demo.ts');
  if (action === 'up') {
    const info = await demo.demoUp((line) => io.stdout(`• ${line}\n`));
    const sd = info.paths.stateDir;
    io.stdout(
      [
        '',
        'The Sluice demo lab is up: the water plant of examples/water-plant.yaml, enforced in namespace ' +
          info.gwNs +
          '.',
        '',
        `  web UI:                 ${info.uiUrl}`,
        `  log in:                 ${info.uiLogin}`,
        '',
        `  blocked traffic, live:  npx sluice logs --state-dir ${sd} --follow`,
        `  gateway status:         npx sluice status --state-dir ${sd}`,
        `  policy versions:        npx sluice versions --state-dir ${sd}`,
        `  what the HMI sees:      tail -f ${info.paths.dir}/hmi-1.log`,
        `  what the PLC receives:  tail -f ${info.paths.dir}/plc-intake.log`,
        `  try an apply:           npx sluice apply ${info.paths.policy} --confirm-within 30 --state-dir ${sd}`,
        '  tear it all down:       make demo-down   (or: npx sluice lab down)',
        '',
      ].join('\n'),
    );
    return EXIT_OK;
  }
  if (action === 'down') {
    const had = await demo.demoDown();
    io.stdout(had ? 'demo lab removed\n' : 'no demo lab was running\n');
    return EXIT_OK;
  }
  if (action === 'status') {
    const st = await demo.demoStatus();
    io.stdout(
      st.up ? `demo lab up: ${st.namespaces.join(' ')}\nstate dir: ${st.stateDir}\n` : 'demo lab is down\n',
    );
    return EXIT_OK;
  }
  throw new UsageError('cli.usage', `sluice lab: expected up, down or status, not '${action ?? ''}'`);
};

// --- install: backup, restore, early-boot ruleset (gateway/backup.ts, systemd/sluice-boot.service) ---

const backup: Handler = async (args, io) => {
  const { values, positionals } = parse(
    'backup',
    args,
    {
      ...STATE_DIR_OPTION,
      'include-logs': { type: 'boolean', default: false },
      'key-file': { type: 'string' },
    },
    { min: 1, max: 1, names: 'one archive FILE' },
  );
  const { createBackup, DEFAULT_BACKUP_KEY_FILE } = await import('./backup.ts');
  const r = await createBackup({
    stateDir: stateDirOf(values, io),
    file: positionals[0] as string,
    includeLogs: values['include-logs'],
    now: io.now,
    // The installed wrapper sets SLUICE_BACKUP_KEY_FILE to CONFDIR/backup.key (systemd/install.sh).
    keyFile: values['key-file'] ?? (io.env['SLUICE_BACKUP_KEY_FILE'] || DEFAULT_BACKUP_KEY_FILE),
  });
  io.stdout(
    `backup of ${r.manifest.gateway} (sluice ${r.manifest.sluiceVersion}): ${r.manifest.files.length} files, ${r.bytes} bytes\n` +
      `signed with backup key ${r.manifest.keyId} (HMAC); sha256 ${r.archiveSha256}  (optional: 'sluice restore --sha256' checks it)\n`,
  );
  return EXIT_OK;
};

const restore: Handler = async (args, io) => {
  const { values, positionals } = parse(
    'restore',
    args,
    {
      ...STATE_DIR_OPTION,
      force: { type: 'boolean', default: false },
      sha256: { type: 'string' },
      'key-file': { type: 'string' },
      'other-gateway': { type: 'boolean', default: false },
    },
    { min: 1, max: 1, names: 'one archive FILE' },
  );
  const { restoreBackup, DEFAULT_BACKUP_KEY_FILE } = await import('./backup.ts');
  const r = await restoreBackup({
    stateDir: stateDirOf(values, io),
    file: positionals[0] as string,
    // --force is only about the running daemon; another gateway's archive needs its own flag, so one
    // override never silently bypasses two checks.
    force: values.force,
    allowOtherGateway: values['other-gateway'],
    // A replacement box passes the old box's key (kept offline since install) with --key-file.
    keyFile: values['key-file'] ?? (io.env['SLUICE_BACKUP_KEY_FILE'] || DEFAULT_BACKUP_KEY_FILE),
    who: who(io),
    now: io.now,
    ...(values.sha256 === undefined ? {} : { sha256: values.sha256 }),
  });
  if (r.warning !== undefined) io.stderr(`sluice restore: warning: ${r.warning}\n`);
  io.stdout(
    `restored ${r.restored.length} files from ${r.manifest.gateway} (sluice ${r.manifest.sluiceVersion}, ${r.manifest.created}); ` +
      'start the daemon to load the restored policy\n',
  );
  return EXIT_OK;
};

const bootRuleset: Handler = async (args, io) => {
  const { values } = parse('boot-ruleset', args, STATE_DIR_OPTION, { min: 0, max: 0, names: 'no arguments' });
  const [{ StateStore }, { ApplyEngine }, { Nft }] = await Promise.all([
    import('./state.ts'),
    import('./apply.ts'),
    import('./nft.ts'),
  ]);
  const mgmtIf = io.env['SLUICE_MGMT_INTERFACE'];
  const mgmtAllow = io.env['SLUICE_MGMT_ALLOW'];
  const state = await StateStore.open(stateDirOf(values, io));
  const engine = new ApplyEngine({
    state,
    nft: new Nft(),
    ...(mgmtIf && mgmtAllow
      ? { fallbackManagement: parseManagement(mgmtIf, mgmtAllow, io.env['SLUICE_UI_LISTEN']) }
      : {}),
  });
  // A failed load (even of the fail-closed ruleset) throws: the unit fails and forwarding stays off.
  const r = await engine.boot();
  engine.close();
  await state.flush();
  io.stdout(
    r.mode === 'fail-closed'
      ? `FAIL-CLOSED ruleset loaded (no forwarding): ${r.reason ?? ''}\n`
      : `loaded version ${r.versionId ?? '?'}\n`,
  );
  return EXIT_OK;
};

const ui: Handler = async (args, io) => {
  const { values } = parse(
    'ui',
    args,
    {
      ...STATE_DIR_OPTION,
      listen: { type: 'string', default: '127.0.0.1:8443' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'public-origin': { type: 'string', multiple: true },
      cpus: { type: 'string' },
    },
    { min: 0, max: 0, names: 'no arguments' },
  );
  // Loaded on demand: the UI's dependencies (Fastify) are not needed by the other commands.
  const { startUi } = await import('../web-ui/server.ts');
  const cert = values['tls-cert'];
  const key = values['tls-key'];
  if ((cert === undefined) !== (key === undefined))
    throw new UsageError('cli.usage', 'sluice ui: --tls-cert and --tls-key go together');
  const opts: Parameters<typeof startUi>[0] = { stateDir: stateDirOf(values, io), listen: values.listen };
  if (cert !== undefined && key !== undefined) {
    // A missing or unreadable file is the operator's mistake: say which, without a stack trace.
    const readPem = async (file: string, what: string): Promise<string> => {
      try {
        const text = await readFile(file, 'utf8');
        if (!text.includes('-----BEGIN ')) throw new Error('not a PEM file');
        return text;
      } catch (err) {
        const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        throw new SluiceError('ui.tls-file', `cannot read the TLS ${what} '${file}': ${why}`);
      }
    };
    opts.tls = { cert: await readPem(cert, 'certificate'), key: await readPem(key, 'key') };
  }
  if (values['public-origin'] !== undefined) opts.publicOrigins = values['public-origin'];
  // The filters come first on a gateway (availability): a flood of browsers may slow the UI but must not
  // delay a Modbus poll, so the UI runs in the idle scheduling class on a CPU of its own (gateway/sched.ts
  // says why). A bad --cpus fails here, before anything starts; the placement itself follows startup.
  const place = await planPlacement('ui', values.cpus ?? io.env['SLUICE_UI_CPUS']);
  let running: Awaited<ReturnType<typeof startUi>>;
  try {
    running = await startUi(opts);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EADDRNOTAVAIL' || code === 'EACCES')
      throw new SluiceError('ui.listen', `cannot listen on ${values.listen}: ${code}`);
    throw err;
  }
  // Only once the UI is up, so a command that fails early leaves its caller's scheduling alone.
  const bg = await runInBackground();
  if (!bg.ok) io.stderr(`sluice ui: running at nice 19 only (${bg.reason})\n`);
  const placed = await place();
  if (placed !== undefined) io.stderr(`sluice ui: ${placed}\n`);
  const stop = () => void running.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  return await new Promise<number>(() => undefined);
};

async function readPassword(fromStdin: boolean): Promise<string> {
  if (fromStdin || !process.stdin.isTTY) {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks)
      .toString('utf8')
      .replace(/\r?\n$/, '');
  }
  // On a TTY: read without echo, twice.
  const ask = (prompt: string) =>
    new Promise<string>((resolve) => {
      process.stderr.write(prompt);
      const stdin = process.stdin;
      stdin.setRawMode(true);
      stdin.resume();
      let buf = '';
      const onData = (d: Buffer) => {
        for (const ch of d.toString('utf8')) {
          if (ch === '\r' || ch === '\n') {
            stdin.setRawMode(false);
            stdin.pause();
            stdin.off('data', onData);
            process.stderr.write('\n');
            resolve(buf);
            return;
          }
          if (ch === '\u0003') process.exit(130);
          if (ch === '\u007f') buf = buf.slice(0, -1);
          else buf += ch;
        }
      };
      stdin.on('data', onData);
    });
  const a = await ask('Password (12+ characters): ');
  const b = await ask('Again: ');
  if (a !== b) throw new UsageError('cli.usage', 'sluice user add: the passwords differ');
  return a;
}

const user: Handler = async (args, io) => {
  const { values, positionals } = parse(
    'user',
    args,
    { ...STATE_DIR_OPTION, role: { type: 'string' }, 'password-stdin': { type: 'boolean', default: false } },
    { min: 1, max: 2, names: 'add NAME, remove NAME or list' },
  );
  const { UserStore, ROLES } = await import('../web-ui/users.ts');
  const stateDir = stateDirOf(values, io);
  const store = new UserStore(stateDir);
  const [action, name] = positionals;
  // Every account change must be in the daemon's audit log: if it cannot be recorded, nothing changes.
  const auditOrRefuse = async (action: string, detail: string) => {
    try {
      await controlCall(socketPath(stateDir), 'audit.add', { who: who(io), action, detail });
    } catch (err) {
      throw new SluiceError(
        'user.audit-unavailable',
        `the daemon is not reachable, so this change cannot be audited; nothing was changed ` +
          `(start it with 'systemctl start sluice' and retry): ${(err as Error).message}`,
      );
    }
  };
  const roleText = (r: string | null) => r ?? '(none)';
  if (action === 'list') {
    for (const u of await store.list()) io.stdout(`${u.name}\t${u.role}\t${u.created}\n`);
    return EXIT_OK;
  }
  if (name === undefined) throw new UsageError('cli.usage', `sluice user ${action ?? ''}: NAME is missing`);
  if (action === 'add') {
    const role = values.role;
    if (role === undefined || !(ROLES as readonly string[]).includes(role))
      throw new UsageError('cli.usage', `sluice user add: --role must be one of ${ROLES.join(', ')}`);
    const password = await readPassword(values['password-stdin']);
    await store.add(name, role as (typeof ROLES)[number], password, {
      beforeCommit: (c) =>
        auditOrRefuse(
          'ui.user-add',
          `added '${c.name}' as ${role} (command line); role ${roleText(c.before)} → ${roleText(c.after)}`,
        ),
    });
    io.stdout(`user '${name}' added as ${role}\n`);
    return EXIT_OK;
  }
  if (action === 'remove') {
    await store.remove(name, {
      beforeCommit: (c) =>
        auditOrRefuse(
          'ui.user-remove',
          `removed '${c.name}' (command line); role ${roleText(c.before)} → ${roleText(c.after)}`,
        ),
    });
    io.stdout(`user '${name}' removed (their sessions end when the UI next checks them)\n`);
    return EXIT_OK;
  }
  throw new UsageError('cli.usage', `sluice user: expected add, remove or list, not '${action ?? ''}'`);
};

const COMMANDS: Record<string, Handler> = {
  validate,
  compile,
  run,
  apply,
  confirm,
  rollback,
  status,
  versions,
  logs,
  lab,
  backup,
  restore,
  'boot-ruleset': bootRuleset,
  ui,
  user,
};

export async function main(argv: string[], io: CliIo): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    (command === undefined ? io.stderr : io.stdout)(USAGE);
    return command === undefined ? EXIT_USAGE : EXIT_OK;
  }
  const handler = COMMANDS[command];
  if (handler === undefined) {
    io.stderr(`sluice: unknown command '${command}'\n\n${USAGE}`);
    return EXIT_USAGE;
  }
  if (rest.includes('-h') || rest.includes('--help')) {
    io.stdout(USAGE);
    return EXIT_OK;
  }
  try {
    return await handler(rest, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr(`${err.message}\n\n${USAGE}`);
      return EXIT_USAGE;
    }
    if (err instanceof SluiceError && err.userError) {
      io.stderr(`sluice ${command}: ${err.message} [${err.code}]\n`);
      return EXIT_INVALID;
    }
    throw err;
  }
}

/** Runs the CLI on this process's argv and sets the exit code; used by bin/sluice.js. */
export function runCli(): void {
  const io: CliIo = {
    stdout: (t) => process.stdout.write(t),
    stderr: (t) => process.stderr.write(t),
    env: process.env,
    now: () => new Date(),
  };
  main(process.argv.slice(2), io).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      // A bug, not a user error: keep the stack so it can be reported.
      console.error(err);
      process.exitCode = 70;
    },
  );
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) runCli();
