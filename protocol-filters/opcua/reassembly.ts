/**
 * Reassembly of multi-chunk request messages (Part 6 §6.7.2.2: a message is split into chunks; all but the
 * last carry IsFinal = C, the last F; an A chunk aborts the message, §6.7.3). Chunks belong to a message by
 * their RequestId (sequence header, §6.7.2.4).
 *
 * Hard limits, because a reassembly buffer is exactly what an attacker fills (node-opcua CVE-2022-21208: a
 * client sending endless intermediate chunks grew the server's memory without bound):
 * - chunks per message ≤ maxChunkCount, body bytes per message ≤ maxMessageSize;
 * - body bytes held for all partial messages together ≤ maxMessageSize (one shared budget, so interleaving
 *   several large messages cannot multiply the bound), partial messages at once ≤ maxPartialMessages;
 * - an incomplete message older than messageTimeoutMs (the caller passes `now`) fails the stream;
 * - with a BudgetAccount, every kept chunk byte is charged to the budget shared with other connections
 *   (budget.ts) before it is copied, and released when its message completes, aborts, expires or fails, or on
 *   `clear()`; a charge that does not fit fails the stream with `opcua.memory-budget`.
 * Any violation returns `invalid`, drops everything held, and the caller closes the connection: the stream's
 * state is no longer one the gateway can vouch for.
 *
 * A single-chunk message (the common case) is returned as views of the chunk without copying; chunks kept
 * across calls are copied, so they neither pin the socket's buffers nor depend on them staying unchanged.
 */
import { MEMORY_BUDGET_CODE, type BudgetAccount } from './budget.ts';
import { invalid, type ChunkType, type Invalid, type OpcuaLimits } from './types.ts';

export type AssemblyLimits = Pick<
  OpcuaLimits,
  'maxMessageSize' | 'maxChunkCount' | 'messageTimeoutMs' | 'maxPartialMessages'
>;

export interface AssembledMessage {
  kind: 'message';
  requestId: number;
  /** Every chunk of the message, in order (what is forwarded when the request is allowed). */
  chunks: Buffer[];
  /** The chunk bodies concatenated (signatures already excluded by the caller's body bounds). */
  body: Buffer;
}

export interface AbortedMessage {
  kind: 'aborted';
  requestId: number;
  /** The chunks held before the abort, then the A chunk itself. */
  chunks: Buffer[];
}

export type AssemblyResult = { kind: 'partial' } | AssembledMessage | AbortedMessage | Invalid;

interface Partial {
  requestId: number;
  started: number;
  chunks: Buffer[];
  bodies: Buffer[];
  bodyBytes: number;
}

const PARTIAL: { kind: 'partial' } = Object.freeze({ kind: 'partial' });

export class MessageAssembler {
  readonly #limits: AssemblyLimits;
  #partials: Partial[] = [];
  #heldBodyBytes = 0;
  #heldChunkBytes = 0;
  readonly #account: BudgetAccount | undefined;

  constructor(limits: AssemblyLimits, account?: BudgetAccount) {
    this.#limits = limits;
    this.#account = account;
  }

  /** True while any message is incomplete. */
  get pending(): boolean {
    return this.#partials.length > 0;
  }

  get partialCount(): number {
    return this.#partials.length;
  }

  /** Bytes of chunks held (headers and signatures included). */
  get bufferedBytes(): number {
    return this.#heldChunkBytes;
  }

  /** Request id of the oldest incomplete message, if any. */
  get firstPendingRequestId(): number | undefined {
    return this.#partials[0]?.requestId;
  }

  clear(): void {
    this.#account?.release(this.#heldChunkBytes);
    this.#partials = [];
    this.#heldBodyBytes = 0;
    this.#heldChunkBytes = 0;
  }

  #fail(code: string, reason: string): Invalid {
    this.clear();
    return invalid(code, reason);
  }

  /** Fails when an incomplete message has waited longer than the timeout. */
  expire(now: number): Invalid | null {
    for (const p of this.#partials) {
      if (now - p.started >= this.#limits.messageTimeoutMs) {
        return this.#fail(
          'opcua.reassembly-timeout',
          `request ${p.requestId} incomplete after ${this.#limits.messageTimeoutMs} ms`,
        );
      }
    }
    return null;
  }

  #remove(p: Partial): void {
    this.#partials.splice(this.#partials.indexOf(p), 1);
    this.#heldBodyBytes -= p.bodyBytes;
    let bytes = 0;
    for (const c of p.chunks) bytes += c.length;
    this.#heldChunkBytes -= bytes;
    this.#account?.release(bytes);
  }

  /**
   * One chunk of a request. `bodyStart`..`bodyEnd` delimit its body inside `chunk` (after the sequence
   * header, before any signature).
   */
  add(
    chunkType: ChunkType,
    requestId: number,
    chunk: Buffer,
    bodyStart: number,
    bodyEnd: number,
    now: number,
  ): AssemblyResult {
    const expired = this.expire(now);
    if (expired !== null) return expired;
    if (bodyStart < 0 || bodyEnd < bodyStart || bodyEnd > chunk.length) {
      return this.#fail('opcua.chunk-body', 'chunk body bounds outside the chunk');
    }
    const bodyLength = bodyEnd - bodyStart;
    const p = this.#partials.find((x) => x.requestId === requestId);

    if (chunkType === 'A') {
      if (p === undefined) return { kind: 'aborted', requestId, chunks: [chunk] };
      this.#remove(p);
      p.chunks.push(chunk);
      return { kind: 'aborted', requestId, chunks: p.chunks };
    }

    if (p === undefined) {
      if (bodyLength > this.#limits.maxMessageSize) {
        return this.#fail(
          'opcua.message-too-large',
          `request ${requestId} exceeds ${this.#limits.maxMessageSize} bytes`,
        );
      }
      if (chunkType === 'F') {
        return { kind: 'message', requestId, chunks: [chunk], body: chunk.subarray(bodyStart, bodyEnd) };
      }
      if (this.#partials.length >= this.#limits.maxPartialMessages) {
        return this.#fail(
          'opcua.too-many-partial-messages',
          `more than ${this.#limits.maxPartialMessages} requests in reassembly`,
        );
      }
      if (this.#limits.maxChunkCount < 2) {
        return this.#fail(
          'opcua.too-many-chunks',
          `request ${requestId} exceeds ${this.#limits.maxChunkCount} chunks`,
        );
      }
      if (this.#heldBodyBytes + bodyLength > this.#limits.maxMessageSize) {
        return this.#fail(
          'opcua.reassembly-budget',
          `partial requests together exceed ${this.#limits.maxMessageSize} bytes`,
        );
      }
      const held = this.#keep(chunk);
      if (!Buffer.isBuffer(held)) return held;
      this.#partials.push({
        requestId,
        started: now,
        chunks: [held],
        bodies: [held.subarray(bodyStart, bodyEnd)],
        bodyBytes: bodyLength,
      });
      this.#heldBodyBytes += bodyLength;
      return PARTIAL;
    }

    // A continuation: check the limits before keeping anything. An intermediate chunk must leave room for
    // the final one, so a run of C chunks is cut as soon as it can no longer become a valid message.
    if (
      p.chunks.length + 1 > this.#limits.maxChunkCount ||
      (chunkType === 'C' && p.chunks.length + 1 >= this.#limits.maxChunkCount)
    ) {
      return this.#fail(
        'opcua.too-many-chunks',
        `request ${requestId} exceeds ${this.#limits.maxChunkCount} chunks`,
      );
    }
    if (p.bodyBytes + bodyLength > this.#limits.maxMessageSize) {
      return this.#fail(
        'opcua.message-too-large',
        `request ${requestId} exceeds ${this.#limits.maxMessageSize} bytes`,
      );
    }
    if (chunkType === 'F') {
      this.#remove(p);
      p.chunks.push(chunk);
      p.bodies.push(chunk.subarray(bodyStart, bodyEnd));
      return {
        kind: 'message',
        requestId,
        chunks: p.chunks,
        body: Buffer.concat(p.bodies, p.bodyBytes + bodyLength),
      };
    }
    if (this.#heldBodyBytes + bodyLength > this.#limits.maxMessageSize) {
      return this.#fail(
        'opcua.reassembly-budget',
        `partial requests together exceed ${this.#limits.maxMessageSize} bytes`,
      );
    }
    const held = this.#keep(chunk);
    if (!Buffer.isBuffer(held)) return held;
    p.chunks.push(held);
    p.bodies.push(held.subarray(bodyStart, bodyEnd));
    p.bodyBytes += bodyLength;
    this.#heldBodyBytes += bodyLength;
    return PARTIAL;
  }

  #keep(chunk: Buffer): Buffer | Invalid {
    // Chunk bytes beyond body bytes (headers, signatures) are bounded too: ≤ 56 bytes per chunk × chunk count,
    // but a non-conforming peer could send chunks that are all header; the shared budget covers them as well.
    if (this.#heldChunkBytes + chunk.length > this.#limits.maxMessageSize + this.#limits.maxChunkCount * 64) {
      return this.#fail('opcua.reassembly-budget', 'held chunks exceed the reassembly budget');
    }
    if (this.#account !== undefined && !this.#account.tryCharge(chunk.length)) {
      return this.#fail(MEMORY_BUDGET_CODE, 'the gateway-wide reassembly memory budget is exhausted');
    }
    this.#heldChunkBytes += chunk.length;
    return Buffer.from(chunk);
  }
}
