/**
 * ProxySupervisor: runs one FlowProxy per proxy-plan entry inside the daemon (in the gateway namespace).
 *
 * - `applyPlan` diffs the new plan against what runs: removed entries stop, changed entries restart,
 *   unchanged ones (same listen port, upstream, sources, mode and spec, same inspector factory) keep running
 *   with their connections untouched — an apply that does not change a flow does not cut its sessions.
 * - A proxy that fails (cannot bind, or faults at run time) is restarted with exponential backoff, alone.
 *   While it is down nothing listens on its port, so the nft redirect meets a closed port and the flow is
 *   blocked: fail-closed, never routed around the filter.
 *
 * Entries are identified by conduit, flow and upstream (the plan has one entry per DPI flow and destination).
 */
import type { ProxyPlan, ProxyPlanEntry } from '../../policies/types.ts';
import type { InspectorFactory, ProxyEvent } from './inspector.ts';
import {
  FlowProxy,
  type FlowProxyOptions,
  type FlowProxyStats,
  type ProxyLimits,
  type ProxyLogger,
} from './proxy.ts';

export type InspectorFactories = Record<ProxyPlanEntry['protocol'], InspectorFactory>;

export interface SupervisorOptions {
  /** Listen address for every proxy; default per family (`0.0.0.0` / `::`). Tests use loopback. */
  host?: string;
  /** Defaults for every proxy; a plan entry's own `limits` override them field by field. */
  limits?: Partial<ProxyLimits>;
  onEvent?: (event: ProxyEvent) => void;
  logger?: ProxyLogger;
  /** First restart delay after a failure; doubles per consecutive failure up to `maxBackoffMs`. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** A proxy that ran this long before failing is considered healthy again: its backoff starts over. */
  stableMs?: number;
  /** Seam for tests: how a proxy is made. */
  createProxy?: (entry: ProxyPlanEntry, factory: InspectorFactory, options: FlowProxyOptions) => FlowProxy;
}

export type EntryState = 'starting' | 'up' | 'down' | 'stopped';

export interface EntryHealth {
  key: string;
  conduit: string;
  flow: string;
  protocol: ProxyPlanEntry['protocol'];
  mode: ProxyPlanEntry['mode'];
  listenPort: number;
  upstream: ProxyPlanEntry['upstream'];
  state: EntryState;
  /** Restarts after failures since the entry was (re)applied. */
  restarts: number;
  lastError?: string;
  /** Epoch ms of the next restart attempt while down. */
  nextRetry?: number;
  /** Counters of the current proxy instance (they restart from zero with it). */
  stats?: FlowProxyStats;
}

export interface ApplyResult {
  started: string[];
  restarted: string[];
  stopped: string[];
  unchanged: string[];
  /** Entries whose proxy could not start now; they are retried with backoff. */
  failed: string[];
}

export function entryKey(e: ProxyPlanEntry): string {
  return `${e.conduit}/${e.flow}/${e.upstream.address}:${e.upstream.port}`;
}

/** Everything that changes a proxy's behaviour, in a stable form (JSON of a fixed key order). */
function entryFingerprint(e: ProxyPlanEntry): string {
  return JSON.stringify([
    e.conduit,
    e.flow,
    e.protocol,
    e.mode,
    e.listenPort,
    e.upstream.address,
    e.upstream.port,
    e.upstream.family,
    e.sources,
    e.modbus ?? null,
    e.opcua ?? null,
    // Per-flow limits change the proxy's behaviour too: a changed limit restarts that flow's proxy.
    e.limits ?? null,
  ]);
}

interface Slot {
  key: string;
  entry: ProxyPlanEntry;
  fingerprint: string;
  factory: InspectorFactory;
  proxy: FlowProxy | undefined;
  state: EntryState;
  restarts: number;
  consecutiveFailures: number;
  startedAt: number;
  lastError?: string;
  retryTimer: NodeJS.Timeout | undefined;
  nextRetry?: number;
}

/** A function, not an inline test, because TS narrows `slot.state` across the awaits in #startSlot. */
function isStopped(slot: Slot): boolean {
  return slot.state === 'stopped';
}

const silentLogger: ProxyLogger = { info: () => {}, warn: () => {}, error: () => {} };

export class ProxySupervisor {
  readonly #options: SupervisorOptions;
  readonly #log: ProxyLogger;
  readonly #slots = new Map<string, Slot>();
  /** Serialises applyPlan/stop so two applies never interleave their stops and starts. */
  #queue: Promise<unknown> = Promise.resolve();
  #stopped = false;

  constructor(options: SupervisorOptions = {}) {
    this.#options = options;
    this.#log = options.logger ?? silentLogger;
  }

  applyPlan(plan: ProxyPlan, factories: InspectorFactories): Promise<ApplyResult> {
    const run = this.#queue.then(() => this.#apply(plan, factories));
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Stops every proxy; the supervisor cannot be used afterwards. */
  stop(): Promise<void> {
    const run = this.#queue.then(async () => {
      this.#stopped = true;
      await Promise.all([...this.#slots.values()].map((s) => this.#stopSlot(s)));
      this.#slots.clear();
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  health(): EntryHealth[] {
    return [...this.#slots.values()]
      .map((s) => ({
        key: s.key,
        conduit: s.entry.conduit,
        flow: s.entry.flow,
        protocol: s.entry.protocol,
        mode: s.entry.mode,
        listenPort: s.proxy?.port ?? s.entry.listenPort,
        upstream: s.entry.upstream,
        state: s.state,
        restarts: s.restarts,
        ...(s.lastError !== undefined ? { lastError: s.lastError } : {}),
        ...(s.state === 'down' && s.nextRetry !== undefined ? { nextRetry: s.nextRetry } : {}),
        ...(s.proxy !== undefined ? { stats: s.proxy.stats } : {}),
      }))
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /** The running proxy of an entry (for status and tests). */
  proxy(key: string): FlowProxy | undefined {
    return this.#slots.get(key)?.proxy;
  }

  async #apply(plan: ProxyPlan, factories: InspectorFactories): Promise<ApplyResult> {
    if (this.#stopped) throw new Error('ProxySupervisor is stopped');
    const result: ApplyResult = { started: [], restarted: [], stopped: [], unchanged: [], failed: [] };
    const wanted = new Map<string, ProxyPlanEntry>();
    for (const entry of plan.entries) {
      const key = entryKey(entry);
      if (wanted.has(key)) throw new Error(`proxy plan has two entries for ${key}`);
      wanted.set(key, entry);
    }
    // Stops first, all of them: a new or changed entry may take over a port a removed one held.
    const toStart: Slot[] = [];
    const stops: Promise<void>[] = [];
    for (const [key, slot] of this.#slots) {
      const entry = wanted.get(key);
      if (entry === undefined) {
        stops.push(this.#stopSlot(slot));
        this.#slots.delete(key);
        result.stopped.push(key);
        continue;
      }
      const factory = factories[entry.protocol];
      if (entryFingerprint(entry) === slot.fingerprint && factory === slot.factory) {
        result.unchanged.push(key);
        continue;
      }
      stops.push(this.#stopSlot(slot));
      const fresh = this.#newSlot(key, entry, factory);
      this.#slots.set(key, fresh);
      toStart.push(fresh);
      result.restarted.push(key);
    }
    for (const [key, entry] of wanted) {
      if (this.#slots.has(key)) continue;
      const slot = this.#newSlot(key, entry, factories[entry.protocol]);
      this.#slots.set(key, slot);
      toStart.push(slot);
      result.started.push(key);
    }
    await Promise.all(stops);
    await Promise.all(
      toStart.map(async (slot) => {
        if (!(await this.#startSlot(slot))) result.failed.push(slot.key);
      }),
    );
    for (const list of Object.values(result)) list.sort();
    return result;
  }

  #newSlot(key: string, entry: ProxyPlanEntry, factory: InspectorFactory): Slot {
    return {
      key,
      entry,
      fingerprint: entryFingerprint(entry),
      factory,
      proxy: undefined,
      state: 'starting',
      restarts: 0,
      consecutiveFailures: 0,
      startedAt: 0,
      retryTimer: undefined,
    };
  }

  /** Starts a fresh proxy for the slot; on failure schedules a retry. Returns whether it is up. */
  async #startSlot(slot: Slot): Promise<boolean> {
    if (slot.state === 'stopped') return false;
    slot.state = 'starting';
    let proxy: FlowProxy | undefined;
    const options: FlowProxyOptions = {
      ...(this.#options.host !== undefined ? { host: this.#options.host } : {}),
      ...(this.#options.limits !== undefined ? { limits: this.#options.limits } : {}),
      ...(this.#options.onEvent !== undefined ? { onEvent: this.#options.onEvent } : {}),
      logger: this.#log,
      onFailure: (err) => this.#onProxyFailure(slot, proxy, err),
    };
    try {
      proxy = (this.#options.createProxy ?? ((e, f, o) => new FlowProxy(e, f, o)))(
        slot.entry,
        slot.factory,
        options,
      );
      slot.proxy = proxy;
      await proxy.start();
    } catch (err) {
      if (proxy !== undefined) await proxy.stop();
      if (isStopped(slot)) return false;
      this.#scheduleRestart(slot, err);
      return false;
    }
    if (isStopped(slot)) {
      // Removed or replaced while binding.
      await proxy.stop();
      return false;
    }
    slot.state = 'up';
    slot.startedAt = Date.now();
    return true;
  }

  #onProxyFailure(slot: Slot, proxy: FlowProxy | undefined, err: Error): void {
    // A late failure report of a proxy this slot no longer runs is stale.
    if (slot.state === 'stopped' || slot.proxy !== proxy) return;
    const stable = this.#options.stableMs ?? 30_000;
    if (Date.now() - slot.startedAt >= stable) slot.consecutiveFailures = 0;
    this.#scheduleRestart(slot, err);
  }

  #scheduleRestart(slot: Slot, err: unknown): void {
    // The failed proxy has already closed its port: its flows are blocked until the restart succeeds.
    slot.state = 'down';
    slot.lastError = err instanceof Error ? err.message : String(err);
    const min = this.#options.minBackoffMs ?? 250;
    const max = this.#options.maxBackoffMs ?? 30_000;
    const delay = Math.min(max, min * 2 ** slot.consecutiveFailures);
    slot.consecutiveFailures++;
    slot.nextRetry = Date.now() + delay;
    this.#log.warn(
      { key: slot.key, port: slot.entry.listenPort, err: slot.lastError, retryInMs: delay },
      'flow proxy down; its flow is blocked until it restarts',
    );
    clearTimeout(slot.retryTimer);
    slot.retryTimer = setTimeout(() => {
      slot.retryTimer = undefined;
      if (slot.state !== 'down') return;
      slot.restarts++;
      void this.#startSlot(slot);
    }, delay);
  }

  async #stopSlot(slot: Slot): Promise<void> {
    slot.state = 'stopped';
    clearTimeout(slot.retryTimer);
    slot.retryTimer = undefined;
    await slot.proxy?.stop();
  }
}
