/**
 * Incremental chunk framing for one direction of one connection. TCP is a stream: a segment may hold part of
 * a chunk or several chunks; the MessageSize field of the header (Part 6 §7.1.2.2) is the only delimiter.
 *
 * Memory is bounded: the only state is one partial chunk, held in a buffer allocated once its size is known
 * (and only after that size passed the limit check), so at most `maxChunkSize` (or the transport-message
 * maximum) bytes. Chunks wholly inside a pushed buffer are views of it (no copy); a chunk reassembled from
 * several pushes is its own buffer. After an invalid header the stream has lost its framing for good: the
 * decoder stays failed and returns that result for every later push, and the caller closes the connection.
 *
 * With a BudgetAccount the partial chunk's buffer is charged to the budget shared with other connections
 * (budget.ts) before it is allocated, and released when the chunk completes, the decoder fails, or on
 * `clear()`; a charge that does not fit fails the decoder with `opcua.memory-budget`.
 */
import { MEMORY_BUDGET_CODE, type BudgetAccount } from './budget.ts';
import { MESSAGE_HEADER_SIZE, parseChunk } from './transport.ts';
import { MIN_BUFFER_SIZE, type Chunk, type Invalid, type ParseResult } from './types.ts';

export type StreamItem = Exclude<ParseResult<Chunk>, { kind: 'need-more' }>;

export class OpcuaChunkDecoder {
  #maxChunkSize: number;
  /** Header bytes of a partial chunk (until its 8-byte header is complete). */
  readonly #head = Buffer.alloc(MESSAGE_HEADER_SIZE);
  #headLength = 0;
  /** The partial chunk itself, sized exactly once its header validated. */
  #body: Buffer | null = null;
  #bodyLength = 0;
  #failed: Invalid | null = null;
  readonly #account: BudgetAccount | undefined;

  /** Before HEL/ACK negotiated anything, chunks are bounded by the size every stack must accept. */
  constructor(maxChunkSize = MIN_BUFFER_SIZE, account?: BudgetAccount) {
    this.#maxChunkSize = maxChunkSize;
    this.#account = account;
  }

  get maxChunkSize(): number {
    return this.#maxChunkSize;
  }

  /** Applies a negotiated buffer size (already capped by the gateway's own limit). */
  set maxChunkSize(n: number) {
    this.#maxChunkSize = n;
  }

  /** Bytes held for an incomplete chunk. */
  get buffered(): number {
    return this.#body === null ? this.#headLength : this.#bodyLength;
  }

  get failed(): Invalid | null {
    return this.#failed;
  }

  /** Drops any partial chunk and returns its bytes to the budget (the connection is going away). */
  clear(): void {
    this.#dropBody();
    this.#headLength = 0;
  }

  /** The partial chunk's buffer, charged first; null when the budget has no room for it. */
  #allocate(size: number): Buffer | null {
    if (this.#account !== undefined && !this.#account.tryCharge(size)) return null;
    return Buffer.allocUnsafe(size);
  }

  #dropBody(): void {
    if (this.#body !== null) this.#account?.release(this.#body.length);
    this.#body = null;
    this.#bodyLength = 0;
  }

  #budgetExhausted(size: number): Invalid {
    return {
      kind: 'invalid',
      code: MEMORY_BUDGET_CODE,
      reason: `no room for a ${size}-byte chunk in the gateway-wide reassembly memory budget`,
    };
  }

  push(chunk: Buffer): StreamItem[] {
    const out: StreamItem[] = [];
    if (this.#failed !== null) {
      out.push(this.#failed);
      return out;
    }
    let off = 0;
    if (this.buffered > 0) {
      off = this.#completePartial(chunk, out);
      if (off < 0) return out;
    }
    while (off < chunk.length) {
      const rest = off === 0 ? chunk : chunk.subarray(off);
      const r = parseChunk(rest, this.#maxChunkSize);
      if (r.kind === 'frame') {
        out.push(r);
        off += r.consumed;
      } else if (r.kind === 'invalid') {
        return this.#fail(r, out);
      } else {
        this.#hold(rest, out);
        break;
      }
    }
    return out;
  }

  #fail(r: Invalid, out: StreamItem[]): StreamItem[] {
    this.#failed = r;
    this.#headLength = 0;
    this.#dropBody();
    out.push(r);
    return out;
  }

  /** Keeps an incomplete chunk (`rest` passed every header check parseChunk could make on it). */
  #hold(rest: Buffer, out: StreamItem[]): void {
    if (rest.length < MESSAGE_HEADER_SIZE) {
      this.#headLength = rest.copy(this.#head, 0);
      return;
    }
    // The header is whole and valid, so its size is within the limit: allocate exactly that.
    const size = rest.readUInt32LE(4);
    const body = this.#allocate(size);
    if (body === null) {
      this.#fail(this.#budgetExhausted(size), out);
      return;
    }
    this.#body = body;
    // need-more means rest.length < size: the copy never fills the buffer.
    this.#bodyLength = rest.copy(body, 0);
  }

  /**
   * Feeds the held partial chunk from `chunk`. Returns the offset in `chunk` where unframed bytes start, or -1
   * when the chunk was used up (still partial) or the header turned out invalid.
   */
  #completePartial(chunk: Buffer, out: StreamItem[]): number {
    let off = 0;
    if (this.#body === null) {
      // Complete the 8-byte header first, validating as it grows.
      const take = Math.min(MESSAGE_HEADER_SIZE - this.#headLength, chunk.length);
      chunk.copy(this.#head, this.#headLength, 0, take);
      this.#headLength += take;
      off = take;
      const r = parseChunk(this.#head.subarray(0, this.#headLength), this.#maxChunkSize);
      if (r.kind === 'invalid') {
        this.#fail(r, out);
        return -1;
      }
      if (this.#headLength < MESSAGE_HEADER_SIZE) return -1;
      if (r.kind === 'frame') {
        // An 8-byte message is impossible (every type has fields), but handle it rather than assume.
        out.push({ kind: 'frame', frame: { ...r.frame, bytes: Buffer.from(r.frame.bytes) }, consumed: 8 });
        this.#headLength = 0;
        return off;
      }
      const size = this.#head.readUInt32LE(4);
      const allocated = this.#allocate(size);
      if (allocated === null) {
        this.#fail(this.#budgetExhausted(size), out);
        return -1;
      }
      this.#body = allocated;
      this.#head.copy(allocated, 0);
      this.#bodyLength = MESSAGE_HEADER_SIZE;
      this.#headLength = 0;
    }
    const body = this.#body;
    const take = Math.min(body.length - this.#bodyLength, chunk.length - off);
    chunk.copy(body, this.#bodyLength, off, off + take);
    this.#bodyLength += take;
    off += take;
    if (this.#bodyLength < body.length) return -1;
    // The completed chunk goes to the caller, which copies what it keeps (and charges that copy itself).
    this.#dropBody();
    const r = parseChunk(body, this.#maxChunkSize);
    if (r.kind !== 'frame') {
      this.#fail(
        r.kind === 'invalid' ? r : { kind: 'invalid', code: 'opcua.internal', reason: 'partial' },
        out,
      );
      return -1;
    }
    out.push(r);
    return off;
  }
}
