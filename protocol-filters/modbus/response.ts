/**
 * Responses from the device (MB = Modbus Application Protocol Specification V1.1b3), checked against the
 * request they answer, and the per-connection transaction tracker that pairs them (TCP §3.1.3: the
 * transaction id pairs a response with its request; the server copies it, and the unit id, from the request).
 */
import { FC, MEI } from './functions.ts';
import { ResponseOrderer } from '../core/ordering.ts';
import { invalid, parseMbap } from './mbap.ts';
import type { Adu, ModbusRequest, ModbusResponse, ParseResult } from './types.ts';

type ResponseResult = ParseResult<ModbusResponse>;

function ok(adu: Adu, fn: number, exception: number | null): ResponseResult {
  return {
    kind: 'frame',
    frame: {
      transactionId: adu.transactionId,
      unitId: adu.unitId,
      function: fn,
      exception,
      pdu: adu.pdu,
      adu: adu.bytes,
    },
    consumed: adu.bytes.length,
  };
}

function badLength(fn: number, got: number, want: number | string): ResponseResult {
  return invalid('response.length', `function ${fn} response: PDU of ${got} bytes, expected ${want}`);
}

function quantity(req: ModbusRequest): number {
  return req.read === null ? 0 : req.read.end - req.read.start + 1;
}

/**
 * Parses a response ADU that answers `req` (paired by the tracker) and checks it is consistent with it:
 * same unit id, same function (or function | 0x80 with an exception code, MB §7), and a byte count matching
 * what was asked (MB §6.x, "Response" tables). Functions whose response the request does not determine
 * (unknown, user-defined, CANopen) are passed through unchecked beyond framing.
 */
export function parseResponseAdu(adu: Adu, req: ModbusRequest): ResponseResult {
  const pdu = adu.pdu;
  const n = pdu.length;
  if (adu.transactionId !== req.transactionId) {
    return invalid('response.transaction-mismatch', 'response transaction id differs from its request');
  }
  if (adu.unitId !== req.unitId) {
    return invalid('response.unit-mismatch', `response unit id ${adu.unitId}, request unit id ${req.unitId}`);
  }
  if (n < 1) return invalid('response.length', 'empty PDU');
  const fn = req.function;
  const code = pdu[0] ?? 0;
  if (code === (fn | 0x80)) {
    // MB §7: exception response = function | 0x80, one exception code byte.
    if (n !== 2) return badLength(fn, n, 2);
    const exception = pdu[1] ?? 0;
    if (exception === 0) return invalid('response.exception-code', 'exception code 0');
    return ok(adu, fn, exception);
  }
  if (code !== fn) {
    return invalid('response.function-mismatch', `response function ${code} to a request for function ${fn}`);
  }
  switch (fn) {
    case FC.READ_COILS: // MB §6.1
    case FC.READ_DISCRETE_INPUTS: // MB §6.2
      return byteCounted(adu, fn, (quantity(req) + 7) >> 3);
    case FC.READ_HOLDING_REGISTERS: // MB §6.3
    case FC.READ_INPUT_REGISTERS: // MB §6.4
    case FC.READ_WRITE_MULTIPLE_REGISTERS: // MB §6.17: the read registers
      return byteCounted(adu, fn, quantity(req) * 2);
    case FC.WRITE_SINGLE_COIL: // MB §6.5: echo of the request
    case FC.WRITE_SINGLE_REGISTER: // MB §6.6: echo of the request
    case FC.WRITE_MULTIPLE_COILS: // MB §6.11: address + quantity
    case FC.WRITE_MULTIPLE_REGISTERS: // MB §6.12: address + quantity
      if (n !== 5) return badLength(fn, n, 5);
      if (fn === FC.WRITE_MULTIPLE_COILS || fn === FC.WRITE_MULTIPLE_REGISTERS) {
        // Address and quantity echoed: compare the 4 bytes in place (no allocation).
        if (pdu.compare(req.pdu, 1, 5, 1, 5) !== 0) {
          return invalid(
            'response.echo',
            `function ${fn} response: address/quantity differ from the request`,
          );
        }
      } else if (pdu.readUInt16BE(1) !== req.pdu.readUInt16BE(1)) {
        return invalid('response.echo', `function ${fn} response: address differs from the request`);
      }
      return ok(adu, fn, null);
    case FC.MASK_WRITE_REGISTER: // MB §6.16: echo of the request
      if (n !== 7) return badLength(fn, n, 7);
      if (pdu.readUInt16BE(1) !== req.pdu.readUInt16BE(1)) {
        return invalid('response.echo', 'function 22 response: address differs from the request');
      }
      return ok(adu, fn, null);
    case FC.READ_EXCEPTION_STATUS: // MB §6.7: one byte of output data
      return n === 2 ? ok(adu, fn, null) : badLength(fn, n, 2);
    case FC.DIAGNOSTICS: // MB §6.8: echoes the sub-function and a data field of the request's size
      if (n !== req.pdu.length) return badLength(fn, n, req.pdu.length);
      if (pdu.readUInt16BE(1) !== req.subFunction) {
        return invalid('response.echo', 'function 8 response: sub-function differs from the request');
      }
      return ok(adu, fn, null);
    case FC.GET_COMM_EVENT_COUNTER: // MB §6.9: status (2) + event count (2)
      return n === 5 ? ok(adu, fn, null) : badLength(fn, n, 5);
    case FC.GET_COMM_EVENT_LOG: {
      // MB §6.10: byte count N = 6 + events (0..64), status, event count, message count, events.
      const r = byteCounted(adu, fn, null);
      const byteCount = pdu[1] ?? 0;
      if (r.kind === 'frame' && (byteCount < 6 || byteCount > 70)) {
        return invalid('response.byte-count', `function 12 response: byte count ${byteCount} outside 6..70`);
      }
      return r;
    }
    case FC.REPORT_SERVER_ID: // MB §6.13: byte count + device-specific data
      return byteCounted(adu, fn, null);
    case FC.READ_FILE_RECORD:
      return readFileRecordResponse(adu, req);
    case FC.WRITE_FILE_RECORD: // MB §6.15: echo of the request
      return pdu.equals(req.pdu) ? ok(adu, fn, null) : invalid('response.echo', 'function 21: not an echo');
    case FC.READ_FIFO_QUEUE: {
      // MB §6.18: byte count (2) = 2 + 2 × FIFO count, FIFO count (2) ≤ 31, the registers.
      if (n < 5) return badLength(fn, n, '≥ 5');
      const byteCount = pdu.readUInt16BE(1);
      const fifoCount = pdu.readUInt16BE(3);
      if (fifoCount > 31 || byteCount !== 2 + fifoCount * 2) {
        return invalid(
          'response.byte-count',
          `function 24 response: byte count ${byteCount}, FIFO ${fifoCount}`,
        );
      }
      return n === 3 + byteCount ? ok(adu, fn, null) : badLength(fn, n, 3 + byteCount);
    }
    case FC.ENCAPSULATED_INTERFACE_TRANSPORT:
      if (n < 2 || pdu[1] !== req.subFunction) {
        return invalid('response.echo', 'function 43 response: MEI type differs from the request');
      }
      return req.subFunction === MEI.READ_DEVICE_IDENTIFICATION ? deviceIdResponse(adu) : ok(adu, fn, null);
    default:
      // Unknown and user-defined functions: the request says nothing about the response's shape.
      return ok(adu, fn, null);
  }
}

/** "function, byte count N, N bytes": checks N (against `expected` when the request fixes it) and the length. */
function byteCounted(adu: Adu, fn: number, expected: number | null): ResponseResult {
  const pdu = adu.pdu;
  const n = pdu.length;
  if (n < 2) return badLength(fn, n, '≥ 2');
  const byteCount = pdu[1] ?? 0;
  if (expected !== null && byteCount !== expected) {
    return invalid(
      'response.byte-count',
      `function ${fn} response: byte count ${byteCount}, expected ${expected}`,
    );
  }
  return n === 2 + byteCount ? ok(adu, fn, null) : badLength(fn, n, 2 + byteCount);
}

/**
 * MB §6.14 response: data length, then per sub-request: file response length (1 + 2 × records), reference
 * type 6, the records. Must answer the request's sub-requests one for one.
 */
function readFileRecordResponse(adu: Adu, req: ModbusRequest): ResponseResult {
  const fn = FC.READ_FILE_RECORD;
  const pdu = adu.pdu;
  const n = pdu.length;
  if (n < 2) return badLength(fn, n, '≥ 2');
  const dataLength = pdu[1] ?? 0;
  if (n !== 2 + dataLength) return badLength(fn, n, 2 + dataLength);
  const files = req.files ?? [];
  let off = 2;
  for (const f of files) {
    const subLength = pdu[off] ?? -1;
    if (subLength !== 1 + f.count * 2 || pdu[off + 1] !== 6 || off + 1 + subLength > n) {
      return invalid('response.byte-count', 'function 20 response: sub-response does not match its request');
    }
    off += 1 + subLength;
  }
  return off === n ? ok(adu, fn, null) : invalid('response.byte-count', 'function 20 response: extra bytes');
}

/**
 * MB §6.21 response: MEI 14, read device id code, conformity level, more follows (0x00/0xFF), next object
 * id, number of objects, then objects (id, length, value) exactly filling the PDU.
 */
function deviceIdResponse(adu: Adu): ResponseResult {
  const fn = FC.ENCAPSULATED_INTERFACE_TRANSPORT;
  const pdu = adu.pdu;
  const n = pdu.length;
  if (n < 7) return badLength(fn, n, '≥ 7');
  const more = pdu[4];
  if (more !== 0x00 && more !== 0xff) {
    return invalid(
      'response.device-id',
      `function 43/14 response: more-follows 0x${(more ?? 0).toString(16)}`,
    );
  }
  const objects = pdu[6] ?? 0;
  let off = 7;
  for (let i = 0; i < objects; i++) {
    if (off + 2 > n) return invalid('response.device-id', 'function 43/14 response: truncated object list');
    off += 2 + (pdu[off + 1] ?? 0);
  }
  return off === n
    ? ok(adu, fn, null)
    : invalid('response.device-id', 'function 43/14 response: bad object list');
}

/** Frames and parses one response ADU at the start of `buf` against `req`. */
export function parseResponse(buf: Buffer, req: ModbusRequest): ResponseResult {
  const r = parseMbap(buf);
  return r.kind === 'frame' ? parseResponseAdu(r.frame, req) : r;
}

/** MB §6.8.1 sub-function 04 (Force Listen Only Mode): the device returns no response. */
export function expectsResponse(req: ModbusRequest): boolean {
  return !(req.function === FC.DIAGNOSTICS && req.subFunction === 0x04);
}

/**
 * The writes a serial line broadcasts (MB over Serial Line §2.1: broadcast requests are writes; the Modicon
 * reference guide PI-MBUS-300 lists broadcast for 05, 06, 15 and 16, not for 22 Mask Write).
 */
const BROADCAST_WRITES: ReadonlySet<number> = new Set([
  FC.WRITE_SINGLE_COIL,
  FC.WRITE_SINGLE_REGISTER,
  FC.WRITE_MULTIPLE_COILS,
  FC.WRITE_MULTIPLE_REGISTERS,
]);

/**
 * How long a broadcast write is kept for pairing a possible answer. A TCP device answers in milliseconds; a
 * serial line allows 100–200 ms of turnaround after a broadcast (MB over Serial Line §2.1). Short, because
 * each one holds an outstanding slot: a master broadcasting several times a second must not fill them.
 */
export const BROADCAST_ANSWER_MS = 1000;

/**
 * A write to unit 0 may or may not be answered. Unit 0 is the serial line's broadcast address (Modbus over
 * Serial Line V1.02 §2.1: every slave executes it, none answers), and a Modbus TCP-to-serial gateway passes
 * it on as such; yet on TCP/IP unit 0 also addresses a TCP device itself (Modbus Messaging on TCP/IP
 * Implementation Guide V1.0b §4.4.2), which answers. The master knows which it talks to; the filter does not.
 */
export function answerOptional(req: ModbusRequest): boolean {
  return req.unitId === 0 && BROADCAST_WRITES.has(req.function);
}

export type SubmitResult = { kind: 'ok'; release: Buffer[] } | { kind: 'full' };

export type ResponseMatch =
  | { kind: 'paired'; request: ModbusRequest; release: Buffer[] }
  | { kind: 'unsolicited'; verdict: 'drop'; reason: 'unsolicited' };

export interface ExpiredRequests {
  /** Forwarded requests the device did not answer in time, oldest first. */
  expired: ModbusRequest[];
  /** Refusals that were queued behind them and may now go to the client, in order. */
  release: Buffer[];
}

const UNSOLICITED: ResponseMatch = Object.freeze({
  kind: 'unsolicited',
  verdict: 'drop',
  reason: 'unsolicited',
} as const);

/**
 * Pure, per-connection bookkeeping of requests in flight (core/ordering.ts does the ordering). The device's
 * answers go to the client as they arrive; only the gateway's own refusals are held, behind the requests
 * sent before them, so a master that matches answers by position still sees request order. A forwarded
 * request the device does not answer within `timeoutMs` is given up (its slot freed, refusals behind it
 * released; a late answer is then unsolicited) — a lost answer must not freeze the connection.
 * At most `maxOutstanding` entries (forwarded + queued refusals) are held; beyond that `submit` says `full`
 * and the inspector closes the connection. A transaction id used twice while in flight is paired oldest
 * first, which is what an in-order device does.
 */
export class TransactionTracker {
  readonly maxOutstanding: number;
  readonly timeoutMs: number;
  readonly #orderer: ResponseOrderer<number, ModbusRequest>;

  constructor(maxOutstanding: number, timeoutMs = Infinity) {
    if (!Number.isInteger(maxOutstanding) || maxOutstanding < 1) {
      throw new RangeError(`maxOutstanding must be a positive integer, got ${maxOutstanding}`);
    }
    if (!(timeoutMs > 0)) throw new RangeError(`timeoutMs must be positive, got ${timeoutMs}`);
    this.maxOutstanding = maxOutstanding;
    this.timeoutMs = timeoutMs;
    this.#orderer = new ResponseOrderer(maxOutstanding);
  }

  /** Entries held: requests at the device (broadcast writes included) plus refusals queued behind them. */
  get size(): number {
    return this.#orderer.size;
  }

  /**
   * Records a request at time `now` (epoch ms). `localAnswer` is the refusal ADU when the gateway answers it
   * itself, null when it is forwarded to the device. Returns the refusal when it may go to the client now.
   * A forwarded request that gets no response (see `expectsResponse`) is not tracked; one whose answer is
   * optional (`answerOptional`, broadcast writes) holds a slot for BROADCAST_ANSWER_MS at most, holds no
   * refusal, and is forgotten silently when its time is up.
   */
  submit(request: ModbusRequest, localAnswer: Buffer | null, now = 0): SubmitResult {
    if (localAnswer === null && !expectsResponse(request)) return { kind: 'ok', release: [] };
    if (this.size >= this.maxOutstanding) return { kind: 'full' };
    if (localAnswer === null && answerOptional(request)) {
      const deadline = now + Math.min(this.timeoutMs, BROADCAST_ANSWER_MS);
      this.#orderer.request(request.transactionId, request, deadline, { optional: true });
      return { kind: 'ok', release: [] };
    }
    if (localAnswer !== null) {
      const send = this.#orderer.reply(localAnswer);
      return { kind: 'ok', release: send === undefined ? [] : [send] };
    }
    this.#orderer.request(request.transactionId, request, now + this.timeoutMs);
    return { kind: 'ok', release: [] };
  }

  /**
   * The forwarded request a response with this transaction id and unit id pairs with: the oldest one waiting
   * for its answer, unless that one is for another unit and a broadcast write is the one answered (a master
   * reusing one transaction id for broadcasts and polls, talking to a TCP device that answers unit 0).
   */
  pending(transactionId: number, unitId: number): ModbusRequest | undefined {
    return this.#orderer.pending(transactionId, (r) => r?.unitId === unitId);
  }

  /**
   * A response arrived from the device: pairs it with the oldest waiting request of that transaction id.
   * Unknown transaction id → `unsolicited` (drop and log). The response itself goes to the client at once;
   * `release` is the refusals it unblocked, to send right after it.
   */
  respond(transactionId: number, unitId: number): ResponseMatch {
    const r = this.#orderer.answer(transactionId, (r) => r?.unitId === unitId);
    if (!r.matched || r.value === undefined) return UNSOLICITED;
    return { kind: 'paired', request: r.value, release: r.release };
  }

  /** When `expire` should next be called (epoch ms), or undefined while nothing is at the device. */
  nextDeadline(): number | undefined {
    return this.#orderer.nextDeadline();
  }

  /** Gives up on requests the device has not answered by `now`. */
  expire(now: number): ExpiredRequests {
    const r = this.#orderer.expire(now);
    return { expired: r.expired.filter((x) => x !== undefined), release: r.release };
  }
}
