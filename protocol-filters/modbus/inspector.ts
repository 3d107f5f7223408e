/**
 * ModbusInspector: the Modbus TCP filter as a ConnectionInspector, i.e. the glue between the socket side
 * (core/proxy.ts moves bytes and applies verdicts) and the pure parser/decision in this folder.
 *
 * Per connection it keeps one MBAP decoder per direction and one TransactionTracker:
 * - client → device: every complete ADU is parsed and decided. Allowed (and, in monitor mode, would-refuse)
 *   requests are forwarded untouched and tracked; refused ones get an exception ADU built by the gateway,
 *   never reach the device, and the connection stays usable. Device answers go to the client as they
 *   arrive; the gateway's refusals keep request order (many masters match answers by position rather than
 *   by transaction id), so a refusal behind a request still at the device is only logged now and released
 *   right after the answer that unblocks it, or when that request times out (`requestTimeoutMs`: a device
 *   that loses an answer must not freeze the connection). See core/inspector.ts, "Reply ordering".
 * - Writes to unit 0 may be broadcasts (answerOptional in response.ts): forwarded and paired if answered, but
 *   they hold no refusal and go silently when no answer comes. Refused ones are logged and not answered: a
 *   broadcast is never answered, not even with an exception, and a master that does not wait for one would
 *   take a stray exception as the answer to its next request.
 * - A request that is well framed but asks for something no device can do (a quantity outside the
 *   function's range, an address range past 65535, a coil value other than 0/0xFF00, bad diagnostics data)
 *   is answered like a device would (MB §7: exception 03, or 02 for the address overflow) and the
 *   connection stays usable: the framing is intact. It is never forwarded.
 * - device → client: every ADU is paired to its request by transaction id and checked against it (unit id,
 *   function, byte counts). Unpaired answers are dropped (a device must not be able to inject an answer the
 *   master never asked for); an answer inconsistent with its request means the two ends disagree on the
 *   stream, so the connection is closed.
 * - Anything malformed from the client (bad MBAP header, impossible length, a byte count inconsistent with
 *   the PDU) closes this connection only: after a bad length the framing is lost for good, and a frame the
 *   parser rejects is exactly what must never reach a PLC. This holds in monitor mode too — monitor mode relaxes the *policy*
 *   (which functions/addresses/values), not the protocol's well-formedness (IEC 62443-4-2 CR 3.5 input
 *   validation protects the device whatever the conduit's mode).
 *
 * Event reasons are stable `modbus.*` codes (gateway/events.ts); `detail` is flat and JSON-ready: unit,
 * function, addresses, values (describeRequest), the exception code and the human reason.
 */
import type {
  ClientVerdict,
  ConnectionInspector,
  FilterEvent,
  InspectorContext,
  InspectorFactory,
  ServerVerdict,
} from '../core/inspector.ts';
import type { ConduitMode, ModbusSpec } from '../../policies/types.ts';
import { Verdicts, joined } from '../core/verdicts.ts';
import { decideRequest, type RefusalCode } from './decide.ts';
import { describeRequest } from './describe.ts';
import { buildException } from './exception.ts';
import { exceptionName } from './functions.ts';
import { ModbusStreamDecoder } from './mbap.ts';
import { parseRequestAdu } from './pdu.ts';
import { answerOptional, parseResponseAdu, TransactionTracker } from './response.ts';
import type { Adu, Invalid, ModbusRequest } from './types.ts';

/** Stable event reasons of this filter (the blocked-traffic log's `reason`). */
export const MODBUS_EVENT_REASONS = {
  /** Request refused (or would be, in monitor mode) with exception 01. */
  illegalFunction: 'modbus.illegal-function',
  /** … with exception 02. */
  illegalDataAddress: 'modbus.illegal-data-address',
  /** … with exception 03. */
  illegalDataValue: 'modbus.illegal-data-value',
  /** … with exception 0A: the unit id is not allowed on this flow. */
  unitNotAllowed: 'modbus.unit-not-allowed',
  /** A client frame failed MBAP framing or PDU parsing: the connection was closed. */
  malformed: 'modbus.malformed',
  /** A device frame failed MBAP framing: the connection was closed. */
  malformedResponse: 'modbus.malformed-response',
  /** A device answer did not fit the request it was paired with: the connection was closed. */
  badResponse: 'modbus.bad-response',
  /** A device answer with no request waiting for its transaction id: dropped. */
  unsolicited: 'modbus.unsolicited',
  /** The client pipelined more unanswered requests than the limit: the connection was closed. */
  tooManyOutstanding: 'too-many-outstanding-requests',
  /** The device did not answer a forwarded request within requestTimeoutMs: given up, slot freed. */
  requestTimeout: 'modbus.request-timeout',
} as const;

/**
 * Parser codes of requests that are well framed but ask for something out of range: a device answers
 * these with an exception (MB §6.x state diagrams: quantity/value checks → 03, address checks → 02) and
 * keeps the connection, so the gateway does the same. Every other parser code is a framing or consistency
 * fault (bad length, byte count, reserved function codes) and closes the connection.
 */
const DEVICE_EXCEPTIONS: Readonly<Record<string, RefusalCode>> = {
  'pdu.quantity': 0x03,
  'pdu.coil-value': 0x03,
  'pdu.diagnostic-data': 0x03,
  'pdu.address-overflow': 0x02,
};

function refusalReason(code: RefusalCode): string {
  switch (code) {
    case 0x01:
      return MODBUS_EVENT_REASONS.illegalFunction;
    case 0x02:
      return MODBUS_EVENT_REASONS.illegalDataAddress;
    case 0x03:
      return MODBUS_EVENT_REASONS.illegalDataValue;
    case 0x0a:
      return MODBUS_EVENT_REASONS.unitNotAllowed;
  }
}

/** The event of a refused (or would-be refused) request: what it asked for and why it was refused. */
function refusalEvent(
  req: ModbusRequest,
  verdict: 'refuse' | 'would-refuse',
  code: RefusalCode,
  why: string,
): FilterEvent {
  const d = describeRequest(req);
  const detail: Record<string, unknown> = {
    transactionId: req.transactionId,
    unit: d.unit,
    function: d.function,
    functionName: d.functionName,
    addresses: d.addresses,
    exception: code,
    exceptionName: exceptionName(code),
    why,
  };
  if (d.values !== undefined) detail.values = d.values;
  if (d.detail !== undefined) detail.subFunction = d.detail;
  return { reason: refusalReason(code), verdict, detail };
}

function malformedEvent(reason: string, bad: Invalid, adu?: Adu): FilterEvent {
  const detail: Record<string, unknown> = { code: bad.code, message: bad.reason };
  if (adu !== undefined) {
    detail.transactionId = adu.transactionId;
    detail.unit = adu.unitId;
    detail.function = adu.pdu[0] ?? null;
  }
  return { reason, verdict: 'drop', detail };
}

/** The parsers of a framed ADU never ask for more bytes; should one ever do, that is a malformed frame. */
function asInvalid(r: Invalid | { kind: 'need-more' }): Invalid {
  return r.kind === 'invalid'
    ? r
    : { kind: 'invalid', code: 'frame.truncated', reason: 'frame shorter than its content' };
}

/**
 * The request as far as a well-framed ADU tells without its data field: enough to answer it with an
 * exception and to describe it in the event.
 */
function unparsedRequest(adu: Adu): ModbusRequest {
  const fn = adu.pdu[0] ?? 0;
  return {
    transactionId: adu.transactionId,
    unitId: adu.unitId,
    function: fn,
    subFunction: fn === 0x08 && adu.pdu.length >= 3 ? adu.pdu.readUInt16BE(1) : null,
    read: null,
    write: null,
    files: null,
    values: null,
    opaque: false,
    known: true,
    pdu: adu.pdu,
    adu: adu.bytes,
  };
}

export class ModbusInspector implements ConnectionInspector {
  readonly #spec: ModbusSpec;
  readonly #mode: ConduitMode;
  readonly #fromClient = new ModbusStreamDecoder();
  readonly #fromServer = new ModbusStreamDecoder();
  readonly #tracker: TransactionTracker;
  readonly #now: () => number;
  /** Complete client ADUs so far (core/inspector.ts `completedMessages`). */
  #completed = 0;
  /** Set once a close verdict was returned: nothing more is parsed (the proxy drops later bytes anyway). */
  #closed = false;

  constructor(ctx: InspectorContext) {
    const spec = ctx.entry.modbus;
    // A modbus plan entry without rules is a compiler bug; refusing the connection (the proxy turns a throw
    // here into `inspector-error`) fails closed instead of guessing a policy.
    if (ctx.entry.protocol !== 'modbus' || spec === undefined) {
      throw new Error(`plan entry ${ctx.entry.conduit}/${ctx.entry.flow} has no modbus spec`);
    }
    this.#spec = spec;
    this.#mode = ctx.entry.mode;
    this.#tracker = new TransactionTracker(
      ctx.limits.maxOutstandingRequests,
      ctx.limits.requestTimeoutMs ?? Infinity,
    );
    this.#now = ctx.now ?? Date.now;
  }

  onClientData(chunk: Buffer): ClientVerdict[] {
    const out = new Verdicts<ClientVerdict>();
    if (this.#closed) return out.done();
    for (const item of this.#fromClient.push(chunk)) {
      if (item.kind === 'invalid')
        return this.#close(out, malformedEvent(MODBUS_EVENT_REASONS.malformed, item));
      const adu = item.frame;
      this.#completed++;
      const parsed = parseRequestAdu(adu);
      let req: ModbusRequest;
      let decision: ReturnType<typeof decideRequest>;
      if (parsed.kind === 'frame') {
        req = parsed.frame;
        decision = decideRequest(req, this.#spec, this.#mode);
      } else {
        const bad = asInvalid(parsed);
        const code = DEVICE_EXCEPTIONS[bad.code];
        if (code === undefined) {
          return this.#close(out, malformedEvent(MODBUS_EVENT_REASONS.malformed, bad, adu));
        }
        // Answered like the device would, in every mode: monitor relaxes the policy, not the protocol.
        req = unparsedRequest(adu);
        decision = { verdict: 'refuse', exceptionCode: code, reason: bad.reason };
      }
      if (decision.verdict === 'refuse' && answerOptional(req)) {
        out.push({
          action: 'log',
          event: refusalEvent(
            req,
            'refuse',
            decision.exceptionCode,
            `${decision.reason} (broadcast: not answered)`,
          ),
        });
        continue;
      }
      if (decision.verdict === 'refuse') {
        const answer = buildException(req.transactionId, req.unitId, req.function, decision.exceptionCode);
        const r = this.#tracker.submit(req, answer, this.#now());
        if (r.kind === 'full') return this.#close(out, this.#tooMany());
        const event = refusalEvent(req, 'refuse', decision.exceptionCode, decision.reason);
        // `release` holds the refusal itself when nothing earlier is outstanding; otherwise it is queued in
        // the tracker and leaves with the device answer that precedes it.
        if (r.release.length === 0) out.push({ action: 'log', event });
        else out.push({ action: 'reply', bytes: joined(r.release), event });
        continue;
      }
      const r = this.#tracker.submit(req, null, this.#now());
      if (r.kind === 'full') return this.#close(out, this.#tooMany());
      out.forward(
        req.adu,
        decision.verdict === 'would-refuse'
          ? refusalEvent(req, 'would-refuse', decision.exceptionCode, decision.reason)
          : undefined,
      );
    }
    return out.done();
  }

  onServerData(chunk: Buffer): ServerVerdict[] {
    const out = new Verdicts<ServerVerdict>();
    if (this.#closed) return out.done();
    for (const item of this.#fromServer.push(chunk)) {
      if (item.kind === 'invalid') {
        return this.#close(out, malformedEvent(MODBUS_EVENT_REASONS.malformedResponse, item));
      }
      const adu = item.frame;
      const req = this.#tracker.pending(adu.transactionId, adu.unitId);
      if (req === undefined) {
        out.push({
          action: 'drop',
          event: {
            reason: MODBUS_EVENT_REASONS.unsolicited,
            verdict: 'drop',
            detail: {
              transactionId: adu.transactionId,
              unit: adu.unitId,
              function: adu.pdu[0] ?? null,
              why: 'no request is waiting for this transaction id',
            },
          },
        });
        continue;
      }
      const parsed = parseResponseAdu(adu, req);
      if (parsed.kind !== 'frame') {
        return this.#close(out, malformedEvent(MODBUS_EVENT_REASONS.badResponse, asInvalid(parsed), adu));
      }
      const m = this.#tracker.respond(adu.transactionId, adu.unitId);
      // The device's answer goes out now, then the refusals it unblocked. (`pending` found the request a
      // moment ago, so this pairs; the check keeps the types honest.)
      out.forward(adu.bytes);
      if (m.kind === 'paired') for (const b of m.release) out.forward(b);
    }
    return out.done();
  }

  completedMessages(): number {
    return this.#completed;
  }

  nextDeadline(): number | undefined {
    return this.#closed ? undefined : this.#tracker.nextDeadline();
  }

  onTimer(now: number): ServerVerdict[] {
    const out: ServerVerdict[] = [];
    if (this.#closed) return out;
    const r = this.#tracker.expire(now);
    for (const req of r.expired) {
      out.push({
        action: 'log',
        event: {
          reason: MODBUS_EVENT_REASONS.requestTimeout,
          verdict: 'drop',
          detail: {
            transactionId: req.transactionId,
            unit: req.unitId,
            function: req.function,
            ms: this.#tracker.timeoutMs,
            why: 'the device did not answer in time; a late answer will be dropped as unsolicited',
          },
        },
      });
    }
    if (r.release.length > 0) out.push({ action: 'forward', bytes: joined(r.release) });
    return out;
  }

  hasPartialMessage(): boolean {
    // Only the client's side: the slow-sender cut is about masters; a device's partial answer is bounded
    // by the idle timeout.
    return this.#fromClient.buffered > 0;
  }

  onClose(): void {
    this.#closed = true;
  }

  #tooMany(): FilterEvent {
    return {
      reason: MODBUS_EVENT_REASONS.tooManyOutstanding,
      verdict: 'drop',
      detail: { limit: this.#tracker.maxOutstanding },
    };
  }

  #close<V extends ClientVerdict | ServerVerdict>(out: Verdicts<V>, event: FilterEvent): V[] {
    this.#closed = true;
    out.push({ action: 'close', event } as V);
    return out.done();
  }
}

/** One shared, stateless factory: every connection gets its own ModbusInspector. */
export const modbusInspectorFactory: InspectorFactory = {
  create: (ctx) => new ModbusInspector(ctx),
};
