/**
 * MBAP framing (Modbus Messaging on TCP/IP Implementation Guide V1.0b, cited "TCP §x"):
 * TCP §3.1.3 MBAP header = transaction id (2) · protocol id (2, 0 = Modbus) · length (2, bytes that follow:
 * unit id + PDU) · unit id (1); the PDU is at most 253 bytes (MB §4.1), so length is 2…254 and a whole ADU
 * at most 260 bytes. TCP §4.4 (receive side): TCP is a stream, so one segment may carry part of an ADU or
 * several ADUs; the length field is the only frame delimiter.
 */
import { NEED_MORE, invalid } from '../core/parse.ts';
import type { Adu, Invalid, ParseResult } from './types.ts';

/** Transaction id, protocol id and length: the bytes before the unit id. */
export const MBAP_PREFIX_LENGTH = 6;
/** Smallest length field: unit id + function code. */
export const MIN_MBAP_LENGTH = 2;
/** Largest length field: unit id + 253-byte PDU (MB §4.1). */
export const MAX_MBAP_LENGTH = 254;
/** Largest ADU: 6 + 254. */
export const MAX_ADU_LENGTH = MBAP_PREFIX_LENGTH + MAX_MBAP_LENGTH;

// Shared with the OPC UA filter (core/parse.ts); re-exported for this folder's parsers.
export { NEED_MORE, invalid };

/**
 * Frames one ADU at the start of `buf` (TCP §3.1.3). Rejects a bad protocol id as soon as its 4 bytes are in
 * and a bad length as soon as its 6 bytes are in, so a peer cannot hold a connection open with a header that
 * can never become valid. The returned frame views `buf` (no copy): it stays valid as long as `buf` does.
 */
export function parseMbap(buf: Buffer): ParseResult<Adu> {
  const n = buf.length;
  if (n >= 4) {
    const protocolId = buf.readUInt16BE(2);
    if (protocolId !== 0) return invalid('mbap.protocol-id', `MBAP protocol id ${protocolId}, expected 0`);
  }
  if (n < MBAP_PREFIX_LENGTH) return NEED_MORE;
  const length = buf.readUInt16BE(4);
  if (length < MIN_MBAP_LENGTH || length > MAX_MBAP_LENGTH) {
    return invalid('mbap.length', `MBAP length ${length} outside ${MIN_MBAP_LENGTH}..${MAX_MBAP_LENGTH}`);
  }
  const total = MBAP_PREFIX_LENGTH + length;
  if (n < total) return NEED_MORE;
  const bytes = n === total ? buf : buf.subarray(0, total);
  return {
    kind: 'frame',
    frame: {
      transactionId: buf.readUInt16BE(0),
      unitId: buf[MBAP_PREFIX_LENGTH] ?? 0,
      pdu: bytes.subarray(MBAP_PREFIX_LENGTH + 1),
      bytes,
    },
    consumed: total,
  };
}

/** A decoder output: a complete ADU (`consumed` = its length, even when it spanned chunks) or the failure. */
export type StreamItem = Exclude<ParseResult<Adu>, { kind: 'need-more' }>;

/**
 * Incremental MBAP framing for one direction of one connection (TCP §4.4): push each received chunk, get the
 * complete ADUs it finishes, in order. Memory is bounded: the only state is one partial ADU, at most
 * MAX_ADU_LENGTH bytes, in a buffer allocated once. ADUs that lie wholly inside a chunk are views of that
 * chunk (no copy); an ADU reassembled from several chunks is copied out, because the reassembly buffer is
 * reused. After an invalid header the stream has lost its framing for good, so the decoder stays failed and
 * returns that same result for every later push: the caller closes the connection.
 */
export class ModbusStreamDecoder {
  #partial: Buffer | null = null;
  #partialLength = 0;
  #failed: Invalid | null = null;

  /** Bytes held for an incomplete ADU (never more than MAX_ADU_LENGTH). */
  get buffered(): number {
    return this.#partialLength;
  }

  get failed(): Invalid | null {
    return this.#failed;
  }

  push(chunk: Buffer): StreamItem[] {
    const out: StreamItem[] = [];
    if (this.#failed !== null) {
      out.push(this.#failed);
      return out;
    }
    let off = 0;
    if (this.#partialLength > 0) {
      off = this.#completePartial(chunk, out);
      if (off < 0) return out;
    }
    while (off < chunk.length) {
      const rest = off === 0 ? chunk : chunk.subarray(off);
      const r = parseMbap(rest);
      if (r.kind === 'frame') {
        out.push(r);
        off += r.consumed;
      } else if (r.kind === 'invalid') {
        this.#failed = r;
        out.push(r);
        return out;
      } else {
        // need-more implies rest < 6 bytes or < 6 + length ≤ MAX_ADU_LENGTH: it fits the reassembly buffer.
        this.#partial ??= Buffer.alloc(MAX_ADU_LENGTH);
        this.#partialLength = rest.copy(this.#partial, 0);
        break;
      }
    }
    return out;
  }

  /**
   * Feeds the held partial ADU from `chunk`. Returns the offset in `chunk` where unframed bytes start, or -1
   * when the chunk was used up (still partial) or the header turned out invalid.
   */
  #completePartial(chunk: Buffer, out: StreamItem[]): number {
    const partial = this.#partial;
    if (partial === null) return 0;
    let off = 0;
    for (;;) {
      // Until the 6-byte prefix is in, the ADU size is unknown: take the prefix first, then the rest.
      const need =
        this.#partialLength < MBAP_PREFIX_LENGTH
          ? MBAP_PREFIX_LENGTH
          : MBAP_PREFIX_LENGTH + partial.readUInt16BE(4);
      const take = Math.min(need - this.#partialLength, chunk.length - off);
      chunk.copy(partial, this.#partialLength, off, off + take);
      this.#partialLength += take;
      off += take;
      const r = parseMbap(partial.subarray(0, this.#partialLength));
      if (r.kind === 'invalid') {
        this.#failed = r;
        this.#partialLength = 0;
        out.push(r);
        return -1;
      }
      if (r.kind === 'frame') {
        // Copy out: `partial` is overwritten by the next ADU.
        const copy = Buffer.from(r.frame.bytes);
        out.push({
          kind: 'frame',
          frame: {
            transactionId: r.frame.transactionId,
            unitId: r.frame.unitId,
            pdu: copy.subarray(MBAP_PREFIX_LENGTH + 1),
            bytes: copy,
          },
          consumed: r.consumed,
        });
        this.#partialLength = 0;
        return off;
      }
      if (off >= chunk.length) return -1;
    }
  }
}
