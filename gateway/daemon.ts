/**
 * `sluice run`: the gateway daemon. It owns everything that must outlive a CLI call or a browser tab:
 * the running ruleset and its confirm-or-rollback timer (gateway/apply.ts), the protocol-filter proxies
 * (protocol-filters/core/supervisor.ts), the blocked-traffic log (ulogd2 JSON → gateway/logstore.ts), and the
 * control socket the CLI and the UI talk to (gateway/control.ts).
 *
 * Availability first: at start it loads the last confirmed version, or the built-in fail-closed ruleset
 * (IEC 62443-4-2 NDR 5.2 RE3, CR 3.6). Stopping the daemon leaves the ruleset in the kernel: a gateway must
 * never forward unfiltered because its user-space part went away.
 */
import { LOG_DB_NAME, ULOGD_JSON_NAME, socketPath } from './paths.ts';
import { mkdir, chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import pino, { type Logger } from 'pino';
import { ApplyEngine } from './apply.ts';
import { StateStore, osUser } from './state.ts';
import { Nft, type CounterValue } from './nft.ts';
import { LogStore, type LogQuery } from './logstore.ts';
import type { BlockedEvent, BlockedVerdict, EventDetail, EventDetailValue } from './events.ts';
import { ControlServer, ControlError, assertNoDaemon } from './control.ts';
import { SluiceError } from '../policies/errors.ts';
import {
  ProxySupervisor,
  modbusInspectorFactory,
  loadOpcuaInspectorFactory,
  relayInspectorFactory,
  type InspectorFactories,
  type ProxyEvent,
} from '../protocol-filters/index.ts';
import { parseCounterName } from '../policies/compile.ts';
import { DEFAULT_COMPILE_OPTIONS, type Management, type ProxyPlan } from '../policies/types.ts';
import { validatePolicyText } from '../policies/validate.ts';
import { JsonLineFollower, parseUlogdLine, toBlockedEvent, ulogdConfig } from './ulogd.ts';
import { notifySystemd, watchdogIntervalMs } from './sd-notify.ts';

export interface DaemonOptions {
  stateDir: string;
  /** Start and supervise ulogd2 ourselves (the lab); on a gateway systemd runs it (sluice-ulogd.service). */
  ulogd: boolean;
  /** Where ulogd2 writes its JSON lines (followed by the daemon). */
  ulogdJsonFile?: string;
  logMaxBytes?: number;
  logMaxAgeMs?: number;
  logger?: Logger;
  /**
   * Management access for the fail-closed ruleset when no recorded policy says where management is
   * (first boot, lost state dir): without it the fail-closed gateway would lock its operator out.
   */
  fallbackManagement?: Management;
  /**
   * Also serve the web UI from this process (ADDR:PORT). The separate `sluice ui` process is preferred on a
   * gateway, so a flood on the UI cannot starve the filters; this is for small installs and labs.
   */
  uiListen?: string;
}

/** How stale the flow counters in `status` may be (they are read from nft). */
const COUNTER_TTL_MS = 2000;

/** One read of the nft counters; a failed read yields no counters and says why. */
interface CountersRead {
  counters: Record<string, CounterValue>;
  error?: string;
}

export const DEFAULT_LOG_MAX_BYTES = 512 * 1024 * 1024;
export const DEFAULT_LOG_MAX_AGE_MS = 30 * 24 * 3600 * 1000;

const SIZE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };
const AGE_UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * `--log-max-bytes` / SLUICE_LOG_MAX_BYTES: `536870912`, `512M`, `2G`, `64k` (binary units). At least 1 MiB,
 * so a typo such as `512` cannot make the store prune every event it writes.
 */
export function parseLogMaxBytes(text: string): number {
  const m = /^([1-9][0-9]{0,12})\s*([kmg]?)i?b?$/i.exec(text.trim());
  const bytes = m === null ? NaN : Number(m[1]) * (SIZE_UNITS[(m[2] ?? '').toLowerCase()] ?? NaN);
  if (!Number.isSafeInteger(bytes) || bytes < 1024 ** 2) {
    throw new SluiceError(
      'cli.usage',
      `log size '${text}' is not a size of at least 1M (a number of bytes, or with k, M or G)`,
    );
  }
  return bytes;
}

/** `--log-max-age` / SLUICE_LOG_MAX_AGE: `30d`, `12h`, `90m`, `3600s`; at least one minute. */
export function parseLogMaxAgeMs(text: string): number {
  const m = /^([1-9][0-9]{0,9})\s*([smhd])$/i.exec(text.trim());
  const ms = m === null ? NaN : Number(m[1]) * (AGE_UNITS[(m[2] ?? '').toLowerCase()] ?? NaN);
  if (!Number.isSafeInteger(ms) || ms < 60_000) {
    throw new SluiceError(
      'cli.usage',
      `log age '${text}' is not a duration of at least 1m (a number with s, m, h or d, e.g. 30d)`,
    );
  }
  return ms;
}

/** What the daemon knows of the running policy, to put zones on a log line that names only its conduit. */
interface ConduitIndex {
  zones: Map<string, { fromZone: string; toZone: string }>;
  /** Interface name → zone, for events that matched no conduit. */
  ifaceZone: Map<string, string>;
}

function proxyEventToBlocked(e: ProxyEvent, index: ConduitIndex): BlockedEvent {
  const zones = index.zones.get(e.conduit);
  const verdict: BlockedVerdict = e.verdict;
  const ev: BlockedEvent = {
    time: e.time,
    conduit: e.conduit,
    flow: e.flow,
    src: e.src,
    dst: e.dst,
    srcPort: e.srcPort,
    dstPort: e.dstPort,
    protocol: 'tcp',
    verdict,
    reason: e.reason,
    source: e.protocol,
    count: 1,
  };
  if (zones !== undefined) {
    ev.fromZone = zones.fromZone;
    ev.toZone = zones.toZone;
  }
  if (e.detail !== undefined) ev.detail = sanitizeDetail(e.detail);
  return ev;
}

/** Filter details are attacker-influenced (NodeIds, values): keep scalars and short lists, bounded. */
function sanitizeDetail(detail: Record<string, unknown>): EventDetail {
  const out: Record<string, EventDetailValue> = {};
  for (const [k, v] of Object.entries(detail).slice(0, 16)) {
    if (typeof v === 'string') out[k] = v.slice(0, 256);
    else if (typeof v === 'number' || typeof v === 'boolean' || v === null) out[k] = v;
    else if (Array.isArray(v))
      out[k] = v.slice(0, 16).map((x) => (typeof x === 'number' ? x : String(x).slice(0, 128)));
  }
  return out;
}

export class Daemon {
  readonly opts: DaemonOptions;
  readonly log: Logger;
  private state!: StateStore;
  private engine!: ApplyEngine;
  private logs!: LogStore;
  private supervisor!: ProxySupervisor;
  private control!: ControlServer;
  private follower: JsonLineFollower | undefined;
  private ulogd: ChildProcess | undefined;
  private ulogdRestarts = 0;
  private stopping = false;
  private watchdog: NodeJS.Timeout | undefined;
  private readonly nft = new Nft();
  private index: ConduitIndex = { zones: new Map(), ifaceZone: new Map() };
  private readonly factories: InspectorFactories = {
    // The same factory objects on every apply: the supervisor keeps unchanged proxies (and their
    // connections) running only when entry and factory are both unchanged.
    modbus: modbusInspectorFactory,
    // Replaced by the OPC UA filter before the first plan with an opcua entry is applied (see
    // plannedFactories); no entry ever runs with this placeholder.
    opcua: relayInspectorFactory,
  };
  private opcuaLoaded = false;
  private countersCache: { at: number; value: CountersRead } | undefined;
  private countersInFlight: Promise<CountersRead> | undefined;
  private startedAt = Date.now();

  constructor(opts: DaemonOptions) {
    this.opts = opts;
    this.log = opts.logger ?? pino({ name: 'sluice' });
  }

  async start(): Promise<void> {
    const { stateDir } = this.opts;
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
    await chmod(stateDir, 0o700);
    // Before anything touches the ruleset or the state: a second daemon on the same state dir would reload
    // the ruleset under the first one and then take its control socket. (Two started in the same instant
    // can both pass this; the later one then fails in ControlServer.start, which checks again.)
    await assertNoDaemon(socketPath(stateDir));
    this.state = await StateStore.open(stateDir);
    for (const p of this.state.problems)
      this.log.error({ file: p.file, problem: p.message }, 'state file unreadable; moved aside');
    this.logs = LogStore.open(join(stateDir, LOG_DB_NAME), {
      maxBytes: this.opts.logMaxBytes ?? DEFAULT_LOG_MAX_BYTES,
      maxAgeMs: this.opts.logMaxAgeMs ?? DEFAULT_LOG_MAX_AGE_MS,
      // CR 2.10: a failing audit/log store must not stop the essential function (forwarding/filtering).
      onError: (err) => this.log.error({ err }, 'blocked-traffic log write failed'),
    });
    this.supervisor = new ProxySupervisor({
      logger: this.log,
      onEvent: (e) => this.logs.enqueue([proxyEventToBlocked(e, this.index)]),
    });
    this.engine = new ApplyEngine({
      state: this.state,
      nft: this.nft,
      logger: this.log,
      ...(this.opts.fallbackManagement === undefined
        ? {}
        : { fallbackManagement: this.opts.fallbackManagement }),
      onPlanChange: async (plan) => {
        this.refreshIndex();
        const r = await this.supervisor.applyPlan(plan, await this.plannedFactories(plan));
        this.log.info({ proxies: r }, 'proxies follow the new plan');
      },
    });
    const boot = await this.engine.boot();
    if (boot.mode === 'fail-closed') {
      // Loud on purpose: the operator must notice that the gateway forwards nothing.
      this.log.fatal(
        { reason: boot.reason },
        'BOOTED FAIL-CLOSED: no confirmed policy could be loaded; forwarding is blocked, management stays reachable',
      );
    } else {
      this.log.info(
        { version: boot.versionId, pending: boot.pending ?? null },
        'running the last confirmed policy',
      );
    }
    this.refreshIndex();
    await this.startLogIngest();
    this.control = new ControlServer(socketPath(stateDir), this.handlers());
    await this.control.start();
    this.log.info({ socket: this.control.socketPath }, 'control socket ready');
    await notifySystemd('READY=1', `STATUS=${boot.mode === 'fail-closed' ? 'fail-closed' : 'enforcing'}`);
    const wd = watchdogIntervalMs(process.env);
    if (wd !== undefined) this.watchdog = setInterval(() => void notifySystemd('WATCHDOG=1'), wd);
  }

  /** The factories for a plan, loading the OPC UA filter the first time a plan has an opcua entry. */
  private async plannedFactories(plan: ProxyPlan): Promise<InspectorFactories> {
    if (!this.opcuaLoaded && plan.entries.some((e) => e.protocol === 'opcua')) {
      this.factories.opcua = await loadOpcuaInspectorFactory();
      this.opcuaLoaded = true;
    }
    return this.factories;
  }

  /** SIGHUP: re-sync the proxies to the running plan and restart ulogd2 if it died. The ruleset is untouched. */
  async reload(): Promise<void> {
    this.log.info('reload (SIGHUP)');
    this.refreshIndex();
    const plan = this.engine.currentPlan();
    if (plan !== undefined) await this.supervisor.applyPlan(plan, await this.plannedFactories(plan));
    if (this.opts.ulogd && (this.ulogd === undefined || this.ulogd.exitCode !== null))
      await this.spawnUlogd();
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    await notifySystemd('STOPPING=1');
    if (this.watchdog !== undefined) clearInterval(this.watchdog);
    await this.control?.stop();
    this.engine?.close();
    await this.supervisor?.stop();
    await this.follower?.stop();
    this.ulogd?.kill('SIGTERM');
    // close() commits what is still queued.
    this.logs?.close();
    await this.state?.flush();
    this.log.info('stopped; the loaded ruleset stays in force');
  }

  private refreshIndex(): void {
    const running = this.engine.status().runningVersionId;
    const version = running === null ? undefined : this.state.getVersion(running);
    const zones = new Map<string, { fromZone: string; toZone: string }>();
    const ifaceZone = new Map<string, string>();
    if (version !== undefined) {
      const r = validatePolicyText(version.text, version.file ?? 'running', {
        now: new Date(version.when),
      });
      if (r.policy !== undefined) {
        for (const c of r.policy.conduits.values()) zones.set(c.name, { fromZone: c.from, toZone: c.to });
        for (const z of r.policy.zones.values()) for (const i of z.interfaces) ifaceZone.set(i, z.name);
      }
    }
    this.index = { zones, ifaceZone };
  }

  /** Where ulogd2 writes and the follower reads. */
  private get ulogdJsonFile(): string {
    return this.opts.ulogdJsonFile ?? join(this.opts.stateDir, ULOGD_JSON_NAME);
  }

  private async startLogIngest(): Promise<void> {
    if (this.opts.ulogd) await this.spawnUlogd();
    const follower = new JsonLineFollower(this.ulogdJsonFile, { start: 'end' });
    follower.on('lines', (lines: string[]) => {
      const events: BlockedEvent[] = [];
      for (const line of lines) {
        const parsed = parseUlogdLine(line);
        if (!parsed.ok) continue;
        const ev = toBlockedEvent(parsed.raw, (conduit, raw) => {
          // A conduit names its zones; a drop outside any conduit is placed by its interfaces.
          if (conduit !== undefined) return this.index.zones.get(conduit);
          const zones: { fromZone?: string; toZone?: string } = {};
          const from = raw.inIface === undefined ? undefined : this.index.ifaceZone.get(raw.inIface);
          const to = raw.outIface === undefined ? undefined : this.index.ifaceZone.get(raw.outIface);
          if (from !== undefined) zones.fromZone = from;
          if (to !== undefined) zones.toZone = to;
          return zones;
        });
        if (ev !== null) events.push(ev);
      }
      if (events.length > 0) this.logs.enqueue(events);
    });
    follower.on('error', (err: Error) => this.log.warn({ err }, 'ulogd2 JSON follower error'));
    this.follower = follower;
    await this.follower.start();
  }

  private async spawnUlogd(): Promise<void> {
    const conf = join(this.opts.stateDir, 'ulogd.conf');
    const jsonFile = this.ulogdJsonFile;
    await writeFile(conf, ulogdConfig({ group: DEFAULT_COMPILE_OPTIONS.nflogGroup, jsonFile }), {
      mode: 0o600,
    });
    const child = spawn('ulogd', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.ulogd = child;
    child.stderr?.on('data', (d: Buffer) => this.log.warn({ ulogd: d.toString().trim() }, 'ulogd2'));
    child.on('error', (err) =>
      this.log.error({ err }, 'cannot start ulogd2 (is the ulogd2 package installed?)'),
    );
    child.on('exit', (code, signal) => {
      if (this.stopping) return;
      this.ulogdRestarts++;
      const delay = Math.min(30_000, 500 * 2 ** Math.min(this.ulogdRestarts, 6));
      this.log.error({ code, signal, retryInMs: delay }, 'ulogd2 exited; blocked-traffic logging paused');
      setTimeout(() => {
        if (!this.stopping) void this.spawnUlogd();
      }, delay).unref();
    });
  }

  /**
   * nft counters, at most one `nft` run every COUNTER_TTL_MS however often status is asked for: spawning
   * nft forks this process, and the same event loop moves the filters' bytes, so a busy dashboard must not
   * turn into a stream of forks.
   */
  private async readCounters(): Promise<CountersRead> {
    const now = Date.now();
    if (this.countersCache !== undefined && now - this.countersCache.at < COUNTER_TTL_MS)
      return this.countersCache.value;
    this.countersInFlight ??= this.nft
      .counters()
      .then(
        (counters) => ({ counters }),
        (err: unknown) => ({ counters: {}, error: err instanceof Error ? err.message : String(err) }),
      )
      .then((value) => {
        this.countersCache = { at: Date.now(), value };
        this.countersInFlight = undefined;
        return value;
      });
    return await this.countersInFlight;
  }

  private async status(): Promise<unknown> {
    const engine = this.engine.status();
    const version =
      engine.runningVersionId === null ? undefined : this.state.getVersion(engine.runningVersionId);
    const { counters, error: countersError } = await this.readCounters();
    const flows: { conduit: string; flow: string; packets: number; bytes: number }[] = [];
    const conduitDrops: Record<string, number> = {};
    const reasons: Record<string, number> = {};
    for (const [name, c] of Object.entries(counters)) {
      const ref = parseCounterName(name);
      if (ref === undefined) continue;
      if (ref.kind === 'flow') flows.push({ conduit: ref.conduit, flow: ref.flow, ...c });
      else if (ref.kind === 'conduit') conduitDrops[ref.conduit] = c.packets;
      else reasons[ref.reason] = c.packets;
    }
    flows.sort((a, b) => (a.conduit + '/' + a.flow).localeCompare(b.conduit + '/' + b.flow));
    return {
      gateway: {
        pid: process.pid,
        uptimeSec: Math.round((Date.now() - this.startedAt) / 1000),
        user: osUser(),
      },
      mode: engine.mode,
      version:
        version === undefined
          ? null
          : {
              id: version.id,
              hash: version.hash,
              when: version.when,
              who: version.who,
              comment: version.comment ?? null,
            },
      lastConfirmedVersionId: engine.lastConfirmedVersionId,
      pending: engine.pending,
      flows,
      conduitDrops,
      dropReasons: reasons,
      countersError: countersError ?? null,
      blocked: this.logs.counts(),
      log: this.logs.stats(),
      proxies: this.supervisor.health(),
      ulogd: this.opts.ulogd
        ? {
            managed: true,
            running: this.ulogd !== undefined && this.ulogd.exitCode === null,
            restarts: this.ulogdRestarts,
          }
        : { managed: false },
    };
  }

  private handlers(): ConstructorParameters<typeof ControlServer>[1] {
    const str = (p: Record<string, unknown>, k: string): string | undefined => {
      const v = p[k];
      if (v === undefined || v === null) return undefined;
      if (typeof v !== 'string') throw new ControlError('control.bad-param', `${k} must be a string`);
      return v;
    };
    const int = (p: Record<string, unknown>, k: string): number | undefined => {
      const v = p[k];
      if (v === undefined || v === null) return undefined;
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
        throw new ControlError('control.bad-param', `${k} must be a non-negative integer`);
      return v;
    };
    const who = (p: Record<string, unknown>) => str(p, 'who') ?? 'unknown';
    return {
      status: () => this.status(),
      apply: async (p) => {
        const text = str(p, 'text');
        if (text === undefined) throw new ControlError('control.bad-param', 'text (the policy) is required');
        const opts: Parameters<ApplyEngine['apply']>[1] = { who: who(p) };
        const file = str(p, 'file');
        const comment = str(p, 'comment');
        const confirmWithinSec = int(p, 'confirmWithinSec');
        if (file !== undefined) opts.file = file;
        if (comment !== undefined) opts.comment = comment;
        if (confirmWithinSec !== undefined) opts.confirmWithinSec = confirmWithinSec;
        return await this.engine.apply(text, opts);
      },
      confirm: (p) => this.engine.confirm(who(p)),
      rollback: (p) => this.engine.rollback(who(p), int(p, 'versionId')),
      versions: async () =>
        this.state.versions().map((v) => ({
          id: v.id,
          hash: v.hash,
          when: v.when,
          who: v.who,
          comment: v.comment ?? null,
          status: v.status,
          lint: v.lint,
        })),
      version: async (p) => {
        const id = int(p, 'id');
        const v = id === undefined ? undefined : this.state.getVersion(id);
        if (v === undefined) throw new ControlError('state.no-version', `no version ${String(id)}`);
        return v;
      },
      audit: async () => ({ entries: this.state.auditEntries(), dropped: this.state.auditDropped() }),
      // For changes made outside the apply engine (UI accounts, logins): one audit log for everything (CR 2.8).
      'audit.add': async (p) => {
        const action = str(p, 'action');
        const detail = str(p, 'detail') ?? '';
        if (action === undefined || !/^[a-z][a-z0-9.-]{0,40}$/.test(action))
          throw new ControlError('control.bad-param', 'action must match [a-z][a-z0-9.-]{0,40}');
        return await this.state.audit({ who: who(p), action, detail: detail.slice(0, 4096) });
      },
      'logs.query': async (p) => this.logs.query(p as LogQuery),
    };
  }
}

/** Runs the daemon in the foreground until SIGTERM/SIGINT. */
export async function runDaemon(opts: DaemonOptions): Promise<void> {
  const daemon = new Daemon(opts);
  const stop = (signal: string) => {
    daemon.log.info({ signal }, 'stopping');
    daemon.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        daemon.log.error({ err }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => {
    daemon.reload().catch((err: unknown) => daemon.log.error({ err }, 'reload failed'));
  });
  await daemon.start();
  if (opts.uiListen !== undefined) {
    const { startUi } = await import('../web-ui/server.ts');
    const ui = await startUi({ stateDir: opts.stateDir, listen: opts.uiListen, logger: daemon.log });
    process.on('SIGTERM', () => void ui.close());
  }
}
