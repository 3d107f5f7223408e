/**
 * The seam between the socket code (proxy.ts) and the protocol filters (modbus/, opcua/).
 *
 * The proxy only moves bytes and acts on verdicts; everything protocol-specific — framing, parsing, the
 * allow/refuse decision, building refusal answers — lives in a ConnectionInspector, which is pure with respect
 * to I/O: it never touches a socket or a timer, so it can be unit-tested (and fuzzed) with plain Buffers.
 *
 * ## Reply ordering
 * Many Modbus masters assume answers arrive in request order. A refusal is produced the moment a request is
 * parsed, but earlier requests may still be outstanding at the device. The rule is therefore: **the inspector
 * owns the ordering**. The proxy writes bytes to the client in exactly the order the inspector hands them out,
 * and never reorders or delays them. So an inspector that refuses a request while earlier forwarded requests
 * are unanswered must not return a `reply` yet; it returns `{ action: 'log', event }` (the refusal is recorded
 * now), keeps the answer bytes queued, and releases them as `{ action: 'forward', bytes }` right after the
 * server answer that unblocks them (`onServerData`), or when it gives up on that answer (`onTimer`). Device
 * answers themselves are forwarded on arrival, never held. `ResponseOrderer` (ordering.ts) implements that
 * bookkeeping; the Modbus filter uses it. The OPC UA filter answers refusals at once instead, since OPC UA
 * pairs responses by request id (see opcua/inspector.ts, "Limits").

 * ## Limits the inspector enforces
 * `ctx.limits.maxOutstandingRequests`: when a client pipelines more unanswered requests than this, the
 * inspector returns `close` (reason `too-many-outstanding-requests`). Message size limits are the
 * inspector's too (it knows the framing), and so is the per-request timeout (`requestTimeoutMs`, via
 * `nextDeadline`/`onTimer`: the proxy owns the timer, the inspector the clock-free decision). The proxy
 * enforces connection counts, idle time and the slow-sender cut (via `hasPartialMessage` and
 * `completedMessages`).
 */
import type { ConduitMode, ProxyPlanEntry } from '../../policies/types.ts';

/** What a filter decided, for the blocked-traffic log. `detail` carries protocol fields (unit, function, NodeIds…). */
export interface FilterEvent {
  /** Stable machine code, kebab-case: `function-not-allowed`, `source-not-allowed`, `malformed-frame`, … */
  reason: string;
  /**
   * `refuse`: a request or connection was refused (answered by the gateway or never relayed);
   * `would-refuse`: monitor mode — it was forwarded but enforce mode would have refused it;
   * `drop`: bytes were discarded or a connection was cut (malformed, unpaired answer, timeout).
   */
  verdict: 'refuse' | 'would-refuse' | 'drop';
  detail?: Record<string, unknown>;
}

/** A FilterEvent with the connection it happened on; what the proxy hands to `onEvent`. */
export interface ProxyEvent extends FilterEvent {
  conduit: string;
  flow: string;
  protocol: ProxyPlanEntry['protocol'];
  mode: ConduitMode;
  /** Client (source) address and port as seen by the gateway. */
  src: string;
  srcPort: number;
  /** The original destination: the plan entry's upstream. */
  dst: string;
  dstPort: number;
  /** Epoch milliseconds. */
  time: number;
}

export type ClientVerdict =
  /** Send these bytes to the upstream. `event` is set in monitor mode for a would-refuse. */
  | { action: 'forward'; bytes: Buffer; event?: FilterEvent }
  /** Answer the client with these bytes now (a refusal), do not forward anything. */
  | { action: 'reply'; bytes: Buffer; event: FilterEvent }
  /** Record an event only (e.g. a refusal whose answer is queued behind outstanding requests). */
  | { action: 'log'; event: FilterEvent }
  /** Malformed or forbidden: close this connection (only this one). Later verdicts in the list are ignored. */
  | { action: 'close'; event: FilterEvent };

export type ServerVerdict =
  /** Send these bytes to the client (a server answer, or a queued refusal released in order). */
  | { action: 'forward'; bytes: Buffer; event?: FilterEvent }
  /** Discard a server message (e.g. an unpaired Modbus response) and record why. */
  | { action: 'drop'; event: FilterEvent }
  | { action: 'log'; event: FilterEvent }
  | { action: 'close'; event: FilterEvent };

export interface InspectorLimits {
  /** Forwarded requests a client may have unanswered at once; beyond it the inspector closes the connection. */
  maxOutstandingRequests: number;
  /**
   * How long a forwarded request may wait for its answer before the inspector gives up on it (frees its
   * slot, releases what was queued behind it). Optional: inspectors that do not track answers ignore it.
   */
  requestTimeoutMs?: number;
}

export interface InspectorContext {
  entry: ProxyPlanEntry;
  client: { address: string; port: number };
  limits: InspectorLimits;
  /** Epoch milliseconds; injected so tests drive timeouts. Default `Date.now`. */
  now?: () => number;
}

/** One per connection; holds that connection's parser state. Methods are called strictly in stream order. */
export interface ConnectionInspector {
  /** Bytes from the client, in arrival order; verdicts are applied in the returned order. */
  onClientData(chunk: Buffer): ClientVerdict[];
  /** Bytes from the upstream server; verdicts are applied in the returned order. */
  onServerData(chunk: Buffer): ServerVerdict[];
  /**
   * True while the inspector holds an incomplete client message (or an incomplete multi-chunk sequence).
   * The proxy cuts the connection when this stays true for `messageTimeoutMs` from the moment it became
   * true — a sender trickling one byte every few seconds makes "progress" but never completes.
   */
  hasPartialMessage(): boolean;
  /**
   * How many client messages the inspector has completed so far. Optional. When it grows, the proxy restarts
   * the slow-sender deadline: a healthy pipelined sender whose every chunk ends one message and starts the
   * next always holds a partial message, yet it is making progress.
   */
  completedMessages?(): number;
  /** Epoch ms at which the proxy should call `onTimer`, or undefined for none. Optional. */
  nextDeadline?(): number | undefined;
  /**
   * The time from `nextDeadline` has come (`now` = Date.now()). The verdicts go the server → client way, as
   * from `onServerData` (released refusals, events, or close).
   */
  onTimer?(now: number): ServerVerdict[];
  /** The connection is gone (any reason); release resources. Optional. */
  onClose?(): void;
}

export interface InspectorFactory {
  create(ctx: InspectorContext): ConnectionInspector;
}
