/**
 * FlowProxy: the socket side of one proxy-plan entry (one DPI flow and destination).
 *
 * nftables redirects the flow's client connections to `listenPort` on the gateway; this accepts them,
 * re-checks the source, connects to the original destination (the entry's upstream) from the gateway, and
 * relays bytes through a ConnectionInspector, acting on its verdicts. It holds no protocol knowledge.
 *
 * Failure model: anything that goes wrong on one connection (upstream unreachable, inspector throws, filter
 * verdict `close`, timeouts) ends that connection only. A fault of the proxy itself (the listening socket
 * errors, or a bug in this file's handlers) stops the whole proxy — its port closes, so its redirected flows
 * are refused rather than routed around the filter — and is reported through `onFailure` so the supervisor
 * can restart it.
 */
import net from 'node:net';
import type { ProxyPlanEntry } from '../../policies/types.ts';
import type {
  ClientVerdict,
  ConnectionInspector,
  FilterEvent,
  InspectorFactory,
  ProxyEvent,
  ServerVerdict,
} from './inspector.ts';

export interface ProxyLimits {
  /** Open connections for this flow, all sources together. */
  maxConnections: number;
  /** Open connections for this flow from one source address. */
  maxConnectionsPerSource: number;
  /** A connection with no bytes either way for this long is closed. */
  idleTimeoutMs: number;
  /** Time allowed for the TCP connect to the upstream. */
  connectTimeoutMs: number;
  /** Slow-sender cut: a partial client message must complete within this long of its first byte. */
  messageTimeoutMs: number;
  /** Passed to the inspector (ctx.limits); it closes a connection that pipelines more than this. */
  maxOutstandingRequests: number;
  /** Passed to the inspector (ctx.limits): how long a forwarded request may wait for its answer. */
  requestTimeoutMs: number;
  /** After one side has closed (or a filter closed the connection), how long the other may take to flush. */
  closeGraceMs: number;
}

/**
 * Defaults sized for OT flows: a handful of masters/HMIs per PLC, request/response traffic. Polling keeps
 * healthy connections active far more often than every 5 minutes; a Modbus ADU (≤ 260 bytes) or an OPC UA
 * chunk arrives in well under 10 s even on a slow serial-backed link.
 */
export const DEFAULT_PROXY_LIMITS: ProxyLimits = {
  maxConnections: 512,
  maxConnectionsPerSource: 64,
  idleTimeoutMs: 300_000,
  connectTimeoutMs: 5_000,
  messageTimeoutMs: 10_000,
  maxOutstandingRequests: 32,
  requestTimeoutMs: 10_000,
  closeGraceMs: 2_000,
};

/** pino-compatible subset, so the daemon can pass its logger (or a child of it). */
export interface ProxyLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

const silentLogger: ProxyLogger = { info: () => {}, warn: () => {}, error: () => {} };

/**
 * One read buffer for every upstream socket of the process (`onread`): Node then reads into it instead of
 * allocating a 64 KiB buffer per read and pushing it through the stream machinery, which was a fifth of the
 * proxy's CPU per relayed answer. Safe to share because the callback consumes it synchronously: what an
 * inspector keeps or forwards is a copy (small copies come from Buffer's pool). Node offers no `onread` for
 * accepted sockets, so the client side still reads through 'data'.
 */
const UPSTREAM_READ_BUFFER = Buffer.allocUnsafeSlow(64 * 1024); // never a slice of Buffer's shared pool

export interface FlowProxyOptions {
  /** Listen address; default `0.0.0.0` (family 4) or `::` (family 6, IPv6 only). Tests use loopback. */
  host?: string;
  /** Defaults for this proxy (the supervisor's); the plan entry's own `limits` override them. */
  limits?: Partial<ProxyLimits>;
  onEvent?: (event: ProxyEvent) => void;
  /** Called once when the proxy fails after start (it has already closed its port and connections). */
  onFailure?: (err: Error) => void;
  logger?: ProxyLogger;
}

export interface FlowProxyStats {
  open: number;
  accepted: number;
  /** Connections refused at accept: source not allowed, connection limits, inspector could not be created. */
  refused: number;
  /** Connections ended by the proxy: filter close verdicts, timeouts, upstream failures. */
  cut: number;
  events: number;
  bytesToUpstream: number;
  bytesToClient: number;
  lastError?: string;
}

export type FlowProxyState = 'new' | 'starting' | 'listening' | 'stopped' | 'failed';

export interface FlowProxyHealth {
  state: FlowProxyState;
  listening: boolean;
  host: string;
  port: number;
  stats: FlowProxyStats;
}

/**
 * A plan entry whose `limits` may set any proxy limit: the policy's FlowLimits (policies/types.ts) set a
 * subset; tests and tools may set the rest, and effectiveLimits honours every field present.
 */
export type PlanEntryWithLimits = ProxyPlanEntry & { limits?: Partial<ProxyLimits> | undefined };

/**
 * The limits one flow runs with: built-in defaults, then the daemon's (supervisor) defaults, then the flow's
 * own `limits` from the policy. Undefined fields do not override. Invalid values throw (fail at start).
 */
export function effectiveLimits(entry: ProxyPlanEntry, defaults?: Partial<ProxyLimits>): ProxyLimits {
  const out: ProxyLimits = { ...DEFAULT_PROXY_LIMITS };
  const own = (entry as PlanEntryWithLimits).limits;
  for (const layer of [defaults, own]) {
    if (layer === undefined) continue;
    for (const key of Object.keys(DEFAULT_PROXY_LIMITS) as (keyof ProxyLimits)[]) {
      const v = layer[key];
      if (v === undefined) continue;
      if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
        throw new RangeError(`proxy limit ${key} must be a positive number, got ${String(v)}`);
      }
      out[key] = v;
    }
  }
  return out;
}

/** Strips the IPv4-mapped prefix a dual-stack socket reports, so v4 CIDRs match. */
export function normaliseAddress(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m?.[1] ?? address;
}

/** Builds a BlockList (used as an allow-list) from CIDR texts. Throws on an invalid CIDR: fail at start, not open. */
export function sourceList(sources: readonly string[]): net.BlockList {
  const list = new net.BlockList();
  for (const text of sources) {
    const slash = text.lastIndexOf('/');
    const address = slash < 0 ? text : text.slice(0, slash);
    const family = net.isIP(address);
    if (family === 0) throw new Error(`invalid source CIDR: ${text}`);
    const bits = family === 4 ? 32 : 128;
    const prefix = slash < 0 ? bits : Number(text.slice(slash + 1));
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > bits)
      throw new Error(`invalid source CIDR: ${text}`);
    list.addSubnet(address, prefix, family === 4 ? 'ipv4' : 'ipv6');
  }
  return list;
}

export class FlowProxy {
  readonly entry: ProxyPlanEntry;
  readonly limits: ProxyLimits;
  readonly #factory: InspectorFactory;
  readonly #host: string;
  readonly #sources: net.BlockList;
  readonly #onEvent: (event: ProxyEvent) => void;
  readonly #onFailure: ((err: Error) => void) | undefined;
  readonly #log: ProxyLogger;
  #server: net.Server | undefined;
  #state: FlowProxyState = 'new';
  /** Remembered after binding so health still names the port once the server has closed. */
  #boundPort: number | undefined;
  readonly #connections = new Set<Connection>();
  readonly #perSource = new Map<string, number>();
  readonly #stats: FlowProxyStats = {
    open: 0,
    accepted: 0,
    refused: 0,
    cut: 0,
    events: 0,
    bytesToUpstream: 0,
    bytesToClient: 0,
  };

  constructor(entry: ProxyPlanEntry, factory: InspectorFactory, options: FlowProxyOptions = {}) {
    this.entry = entry;
    this.#factory = factory;
    this.limits = effectiveLimits(entry, options.limits);
    this.#host = options.host ?? (entry.upstream.family === 6 ? '::' : '0.0.0.0');
    // Parsed here so a bad plan entry fails construction/start (fail-closed), never a live connection.
    this.#sources = sourceList(entry.sources);
    this.#onEvent = options.onEvent ?? (() => {});
    this.#onFailure = options.onFailure;
    this.#log = options.logger ?? silentLogger;
  }

  get state(): FlowProxyState {
    return this.#state;
  }

  /** The bound port (differs from `entry.listenPort` only when that is 0, as in tests). */
  get port(): number {
    return this.#boundPort ?? this.entry.listenPort;
  }

  get stats(): FlowProxyStats {
    return { ...this.#stats, open: this.#connections.size };
  }

  health(): FlowProxyHealth {
    return {
      state: this.#state,
      listening: this.#server?.listening ?? false,
      host: this.#host,
      port: this.port,
      stats: this.stats,
    };
  }

  /** Listens on the entry's port; rejects (and leaves nothing listening) if the port cannot be bound. */
  async start(): Promise<void> {
    if (this.#state !== 'new') throw new Error(`FlowProxy.start() in state ${this.#state}`);
    this.#state = 'starting';
    // allowHalfOpen: a client may shut down its sending side and still wait for the answer.
    const server = net.createServer({ allowHalfOpen: true, noDelay: true });
    this.#server = server;
    server.on('connection', (socket) => this.#guard(() => this.#accept(socket)));
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        server.off('listening', onListening);
        reject(err);
      };
      const onListening = (): void => {
        server.off('error', onError);
        resolve();
      };
      server.once('error', onError);
      server.once('listening', onListening);
      server.listen({
        host: this.#host,
        port: this.entry.listenPort,
        ipv6Only: this.entry.upstream.family === 6,
      });
    }).catch((err: unknown) => {
      this.#state = 'failed';
      this.#stats.lastError = errorText(err);
      server.close();
      throw err;
    });
    if (this.#state !== 'starting') {
      // stop() ran while we were binding: it saw no listening server, so close it here.
      await new Promise<void>((resolve) => server.close(() => resolve()));
      return;
    }
    this.#state = 'listening';
    const addr = server.address();
    if (addr !== null && typeof addr === 'object') this.#boundPort = addr.port;
    server.on('error', (err) => this.#fail(err));
    this.#log.info({ ...this.#ids(), port: this.port, host: this.#host }, 'flow proxy listening');
  }

  /** Closes the port and every connection of this proxy. Idempotent. */
  async stop(): Promise<void> {
    if (this.#state !== 'failed') this.#state = 'stopped';
    await this.#closeAll();
  }

  async #closeAll(): Promise<void> {
    const server = this.#server;
    for (const c of this.#connections) c.abort();
    if (server === undefined || !server.listening) return;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /**
   * Takes the proxy down as a failure: its port and connections close, then `onFailure` reports it.
   * For whoever notices the proxy is broken from outside (a health probe), and for supervisor tests.
   */
  fail(err: Error): void {
    this.#fail(err);
  }

  /** Proxy-level fault: fail closed (port and connections go), then tell the supervisor. */
  #fail(err: unknown): void {
    if (this.#state === 'failed' || this.#state === 'stopped') return;
    this.#state = 'failed';
    this.#stats.lastError = errorText(err);
    this.#log.error({ ...this.#ids(), err }, 'flow proxy failed');
    void this.#closeAll().finally(() =>
      this.#onFailure?.(err instanceof Error ? err : new Error(String(err))),
    );
  }

  /** Runs a socket handler of this file; an exception there is a bug in the proxy, not in one connection. */
  #guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#fail(err);
    }
  }

  #ids(): { conduit: string; flow: string; protocol: string } {
    return { conduit: this.entry.conduit, flow: this.entry.flow, protocol: this.entry.protocol };
  }

  #emit(event: FilterEvent, src: string, srcPort: number): void {
    this.#stats.events++;
    const full: ProxyEvent = {
      ...event,
      conduit: this.entry.conduit,
      flow: this.entry.flow,
      protocol: this.entry.protocol,
      mode: this.entry.mode,
      src,
      srcPort,
      dst: this.entry.upstream.address,
      dstPort: this.entry.upstream.port,
      time: Date.now(),
    };
    try {
      this.#onEvent(full);
    } catch (err) {
      // The event sink is someone else's code; a fault there must not take the data path down.
      this.#log.error({ ...this.#ids(), err }, 'proxy event sink threw');
    }
  }

  #accept(socket: net.Socket): void {
    if (this.#state !== 'listening') {
      socket.destroy();
      return;
    }
    const raw = socket.remoteAddress;
    const srcPort = socket.remotePort ?? 0;
    if (raw === undefined) {
      socket.destroy(); // already gone
      return;
    }
    const src = normaliseAddress(raw);
    // Errors on a refused socket (a reset racing our own) are expected; without a listener they would throw.
    socket.on('error', () => {});
    const refuse = (reason: string, detail?: Record<string, unknown>): void => {
      this.#stats.refused++;
      this.#emit({ reason, verdict: 'refuse', ...(detail ? { detail } : {}) }, src, srcPort);
      // RST rather than FIN: the client learns at once that nothing will answer on this connection.
      resetSocket(socket);
    };
    if (this.#connections.size >= this.limits.maxConnections) {
      refuse('too-many-connections', { limit: this.limits.maxConnections });
      return;
    }
    const fromSource = this.#perSource.get(src) ?? 0;
    if (fromSource >= this.limits.maxConnectionsPerSource) {
      refuse('too-many-connections-from-source', { limit: this.limits.maxConnectionsPerSource });
      return;
    }
    if (!this.#sources.check(src, net.isIPv6(src) ? 'ipv6' : 'ipv4')) {
      if (this.entry.mode === 'enforce') {
        refuse('source-not-allowed');
        return;
      }
      this.#emit({ reason: 'source-not-allowed', verdict: 'would-refuse' }, src, srcPort);
    }
    let inspector: ConnectionInspector;
    try {
      inspector = this.#factory.create({
        entry: this.entry,
        client: { address: src, port: srcPort },
        limits: {
          maxOutstandingRequests: this.limits.maxOutstandingRequests,
          requestTimeoutMs: this.limits.requestTimeoutMs,
        },
      });
    } catch (err) {
      this.#stats.lastError = errorText(err);
      refuse('inspector-error', { error: errorText(err) });
      return;
    }
    this.#stats.accepted++;
    this.#perSource.set(src, fromSource + 1);
    const conn = new Connection(this, socket, inspector, {
      guard: (fn) => this.#guard(fn),
      emit: (event) => this.#emit(event, src, srcPort),
      counted: (toUpstream, toClient) => {
        this.#stats.bytesToUpstream += toUpstream;
        this.#stats.bytesToClient += toClient;
      },
      cut: (err) => {
        this.#stats.cut++;
        if (err !== undefined) this.#stats.lastError = errorText(err);
      },
      closed: () => {
        this.#connections.delete(conn);
        const n = (this.#perSource.get(src) ?? 1) - 1;
        if (n <= 0) this.#perSource.delete(src);
        else this.#perSource.set(src, n);
      },
    });
    this.#connections.add(conn);
    conn.start();
  }
}

interface ConnectionHooks {
  guard(fn: () => void): void;
  emit(event: FilterEvent): void;
  counted(toUpstream: number, toClient: number): void;
  /** The proxy ended this connection (not a normal close by a peer). */
  cut(err?: unknown): void;
  closed(): void;
}

/** One relayed client connection and its upstream twin. Internal to FlowProxy. */
class Connection {
  readonly #proxy: FlowProxy;
  readonly #client: net.Socket;
  readonly #inspector: ConnectionInspector;
  readonly #hooks: ConnectionHooks;
  #upstream: net.Socket | undefined;
  #connected = false;
  /** Set once the proxy decided to end this connection; later bytes either way are discarded. */
  #closing = false;
  #done = false;
  #clientPaused = false;
  #upstreamPaused = false;
  #connectTimer: NodeJS.Timeout | undefined;
  #idleTimer: NodeJS.Timeout | undefined;
  #partialTimer: NodeJS.Timeout | undefined;
  /** The inspector's completed-message count when the slow-sender deadline was last (re)started. */
  #completed = 0;
  #deadlineTimer: NodeJS.Timeout | undefined;
  #deadlineAt: number | undefined;
  #graceTimer: NodeJS.Timeout | undefined;
  #clientClosed = false;
  #upstreamClosed = false;

  constructor(proxy: FlowProxy, client: net.Socket, inspector: ConnectionInspector, hooks: ConnectionHooks) {
    this.#proxy = proxy;
    this.#client = client;
    this.#inspector = inspector;
    this.#hooks = hooks;
  }

  start(): void {
    const client = this.#client;
    const { limits, entry } = this.#proxy;
    // No 'data' listener yet: the client's bytes wait in the kernel until the upstream is connected.
    client.on('error', (err) => this.#hooks.guard(() => this.#onSocketError('client', err)));
    client.on('close', () => this.#hooks.guard(() => this.#onSocketClose('client')));
    client.on('end', () => this.#hooks.guard(() => this.#onEnd('client')));
    client.on('drain', () => this.#hooks.guard(() => this.#updateFlow()));

    const upstream = net.connect({
      host: entry.upstream.address,
      port: entry.upstream.port,
      family: entry.upstream.family,
      allowHalfOpen: true,
      noDelay: true,
      // Reading starts only once connected (Node reads after 'connect'); pause()/resume() still apply.
      onread: {
        buffer: UPSTREAM_READ_BUFFER,
        callback: (n, buf) => {
          const chunk = Buffer.from(buf.subarray(0, n));
          this.#hooks.guard(() => this.#onServerData(chunk));
          return true;
        },
      },
    });
    this.#upstream = upstream;
    this.#connectTimer = setTimeout(
      () =>
        this.#hooks.guard(() =>
          this.#cut({
            reason: 'upstream-connect-timeout',
            verdict: 'drop',
            detail: { ms: limits.connectTimeoutMs },
          }),
        ),
      limits.connectTimeoutMs,
    );
    upstream.on('connect', () => this.#hooks.guard(() => this.#onConnected()));
    upstream.on('error', (err) => this.#hooks.guard(() => this.#onSocketError('upstream', err)));
    upstream.on('close', () => this.#hooks.guard(() => this.#onSocketClose('upstream')));
    upstream.on('end', () => this.#hooks.guard(() => this.#onEnd('upstream')));
    upstream.on('drain', () => this.#hooks.guard(() => this.#updateFlow()));
  }

  #onConnected(): void {
    clearTimeout(this.#connectTimer);
    this.#connectTimer = undefined;
    if (this.#closing) return;
    this.#connected = true;
    const upstream = this.#upstream;
    if (upstream === undefined) return;
    this.#idleTimer = setTimeout(
      () =>
        this.#hooks.guard(() =>
          this.#cut({
            reason: 'idle-timeout',
            verdict: 'drop',
            detail: { ms: this.#proxy.limits.idleTimeoutMs },
          }),
        ),
      this.#proxy.limits.idleTimeoutMs,
    );
    this.#client.on('data', (chunk: Buffer) => this.#hooks.guard(() => this.#onClientData(chunk)));
  }

  #onClientData(chunk: Buffer): void {
    if (this.#closing) return;
    this.#idleTimer?.refresh();
    let verdicts: ClientVerdict[];
    try {
      verdicts = this.#inspector.onClientData(chunk);
    } catch (err) {
      this.#inspectorFault(err);
      return;
    }
    let toUpstream = 0;
    let toClient = 0;
    for (const v of verdicts) {
      if (v.action === 'forward') {
        if (v.event) this.#emit(v.event);
        this.#upstream?.write(v.bytes);
        toUpstream += v.bytes.length;
      } else if (v.action === 'reply') {
        this.#emit(v.event);
        this.#client.write(v.bytes);
        toClient += v.bytes.length;
      } else if (v.action === 'log') {
        this.#emit(v.event);
      } else {
        this.#hooks.counted(toUpstream, toClient);
        this.#emit(v.event);
        this.#shutdown();
        return;
      }
    }
    this.#hooks.counted(toUpstream, toClient);
    this.#updatePartial();
    this.#updateDeadline();
    this.#updateFlow();
  }

  #onServerData(chunk: Buffer): void {
    if (this.#closing) return;
    this.#idleTimer?.refresh();
    let verdicts: ServerVerdict[];
    try {
      verdicts = this.#inspector.onServerData(chunk);
    } catch (err) {
      this.#inspectorFault(err);
      return;
    }
    this.#applyServer(verdicts);
  }

  /** The inspector's deadline came (e.g. a request the device never answered). */
  #onTimer(): void {
    this.#deadlineTimer = undefined;
    this.#deadlineAt = undefined;
    if (this.#closing) return;
    let verdicts: ServerVerdict[];
    try {
      verdicts = this.#inspector.onTimer?.(Date.now()) ?? [];
    } catch (err) {
      this.#inspectorFault(err);
      return;
    }
    this.#applyServer(verdicts);
  }

  #applyServer(verdicts: ServerVerdict[]): void {
    let toClient = 0;
    for (const v of verdicts) {
      if (v.action === 'forward') {
        if (v.event) this.#emit(v.event);
        this.#client.write(v.bytes);
        toClient += v.bytes.length;
      } else if (v.action === 'drop' || v.action === 'log') {
        this.#emit(v.event);
      } else {
        this.#hooks.counted(0, toClient);
        this.#emit(v.event);
        this.#shutdown();
        return;
      }
    }
    this.#hooks.counted(0, toClient);
    this.#updateDeadline();
    this.#updateFlow();
  }

  /** Keeps one timer at or before the inspector's next deadline (if it has any). */
  #updateDeadline(): void {
    if (this.#closing || this.#inspector.nextDeadline === undefined) return;
    let at: number | undefined;
    try {
      at = this.#inspector.nextDeadline();
    } catch (err) {
      this.#inspectorFault(err);
      return;
    }
    // Lazy: a timer already armed at or before `at` stays (and one armed when nothing is due any more stays
    // too); it may fire early, finds nothing due (the inspector decides by the clock) and re-arms. A poll
    // loop moves the deadline on every request and answer, so re-arming each time would cost a
    // clearTimeout + setTimeout pair twice per request for nothing.
    if (at === undefined) return;
    if (this.#deadlineTimer !== undefined && this.#deadlineAt !== undefined && this.#deadlineAt <= at) return;
    clearTimeout(this.#deadlineTimer);
    this.#deadlineAt = at;
    this.#deadlineTimer = setTimeout(
      () => this.#hooks.guard(() => this.#onTimer()),
      Math.max(0, at - Date.now()),
    );
  }

  #inspectorFault(err: unknown): void {
    // A filter bug must fail closed for this connection only; the other connections keep their inspectors.
    this.#cut({ reason: 'inspector-error', verdict: 'drop', detail: { error: errorText(err) } }, err);
  }

  /**
   * Slow-sender cut. The deadline runs from the moment a partial message appeared and is not extended by
   * further bytes, so a trickle of one byte every few seconds is cut as surely as a stalled sender. It
   * restarts only when a message completes (`completedMessages` grew): a pipelined sender whose chunks each
   * end one message and start the next is making progress, even though a partial message is always held.
   */
  #updatePartial(): void {
    let partial: boolean;
    let completed: number;
    try {
      partial = this.#inspector.hasPartialMessage();
      completed = this.#inspector.completedMessages?.() ?? 0;
    } catch (err) {
      this.#inspectorFault(err);
      return;
    }
    if (!partial || completed !== this.#completed) {
      clearTimeout(this.#partialTimer);
      this.#partialTimer = undefined;
      this.#completed = completed;
    }
    if (partial && this.#partialTimer === undefined && !this.#clientPaused) {
      const ms = this.#proxy.limits.messageTimeoutMs;
      this.#partialTimer = setTimeout(
        () =>
          this.#hooks.guard(() => this.#cut({ reason: 'message-timeout', verdict: 'drop', detail: { ms } })),
        ms,
      );
    }
  }

  /**
   * Backpressure both ways: stop reading a side while the socket its bytes go to has a full write buffer.
   * The client is also paused while its own write buffer is full, since gateway replies are produced from
   * its requests — a client that never reads cannot make the gateway buffer refusals without bound.
   */
  #updateFlow(): void {
    const upstream = this.#upstream;
    if (upstream === undefined || !this.#connected || this.#closing) return;
    const clientBlocked = upstream.writableNeedDrain || this.#client.writableNeedDrain;
    if (clientBlocked && !this.#clientPaused) {
      this.#clientPaused = true;
      this.#client.pause();
      // The stall is ours, not the sender's: do not count it against the message deadline.
      clearTimeout(this.#partialTimer);
      this.#partialTimer = undefined;
    } else if (!clientBlocked && this.#clientPaused) {
      this.#clientPaused = false;
      this.#client.resume();
      this.#updatePartial();
    }
    const upstreamBlocked = this.#client.writableNeedDrain;
    if (upstreamBlocked && !this.#upstreamPaused) {
      this.#upstreamPaused = true;
      upstream.pause();
    } else if (!upstreamBlocked && this.#upstreamPaused) {
      this.#upstreamPaused = false;
      upstream.resume();
    }
  }

  #onEnd(side: 'client' | 'upstream'): void {
    if (this.#closing) return;
    // Propagate the half-close: a client may send its request, shut down writing, and wait for the answer.
    if (side === 'client') this.#upstream?.end();
    else this.#client.end();
  }

  #onSocketError(side: 'client' | 'upstream', err: Error): void {
    if (side === 'upstream' && !this.#connected && !this.#closing) {
      const code = (err as NodeJS.ErrnoException).code ?? err.message;
      this.#cut({ reason: 'upstream-unreachable', verdict: 'drop', detail: { error: code } }, err);
      return;
    }
    // Resets and the like after the relay was up: the 'close' that follows ends the other side.
  }

  #onSocketClose(side: 'client' | 'upstream'): void {
    if (side === 'client') this.#clientClosed = true;
    else this.#upstreamClosed = true;
    if (this.#clientClosed && (this.#upstreamClosed || this.#upstream === undefined)) {
      this.#finish();
      return;
    }
    // One side is fully gone: let the other flush what it has, then end it; the grace timer bounds that.
    const other = side === 'client' ? this.#upstream : this.#client;
    if (other !== undefined && !other.destroyed) {
      if (!this.#connected) other.destroy();
      else other.end();
    }
    this.#armGrace();
  }

  #armGrace(): void {
    if (this.#graceTimer !== undefined) return;
    this.#graceTimer = setTimeout(() => this.abort(), this.#proxy.limits.closeGraceMs);
  }

  #emit(event: FilterEvent): void {
    this.#hooks.emit(event);
  }

  /** Filter verdict `close`: stop relaying at once, let already-written bytes (e.g. a refusal) flush, then go. */
  #shutdown(): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#hooks.cut();
    this.#stopTimers();
    this.#client.pause();
    this.#upstream?.pause();
    this.#client.end();
    this.#upstream?.end();
    this.#armGrace();
  }

  /** Proxy-initiated cut (timeouts, upstream failure, inspector fault): event, then both sockets go now. */
  #cut(event: FilterEvent, err?: unknown): void {
    if (this.#done) return;
    this.#emit(event);
    this.#hooks.cut(err);
    this.abort(true);
  }

  /** Destroys both sockets now (with `reset`, the client gets an RST). Also used by FlowProxy.stop(). */
  abort(reset = false): void {
    this.#closing = true;
    if (reset) resetSocket(this.#client);
    else this.#client.destroy();
    this.#upstream?.destroy();
    this.#finish();
  }

  #stopTimers(): void {
    clearTimeout(this.#connectTimer);
    clearTimeout(this.#idleTimer);
    clearTimeout(this.#partialTimer);
    clearTimeout(this.#deadlineTimer);
    this.#connectTimer = this.#idleTimer = this.#partialTimer = this.#deadlineTimer = undefined;
    this.#deadlineAt = undefined;
  }

  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    this.#closing = true;
    this.#stopTimers();
    clearTimeout(this.#graceTimer);
    this.#client.destroy();
    this.#upstream?.destroy();
    this.#hooks.closed();
    try {
      this.#inspector.onClose?.();
    } catch {
      // Nothing left to protect: the connection is gone either way.
    }
  }
}

function resetSocket(socket: net.Socket): void {
  // resetAndDestroy() needs a live handle; a socket that is already gone only needs destroy().
  if (socket.destroyed) return;
  try {
    socket.resetAndDestroy();
  } catch {
    socket.destroy();
  }
}

function errorText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code !== undefined ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}
