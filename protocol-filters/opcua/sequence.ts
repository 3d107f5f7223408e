/**
 * Keeps UA Secure Conversation sequence numbers contiguous after the gateway changed a stream (mode None only:
 * under Sign/SignAndEncrypt the numbers are signed and cannot be touched, so there the gateway never drops or
 * injects a chunk — it closes instead).
 *
 * Part 6 §6.7.2.4: every chunk (OPN, MSG, CLO) of a channel carries a SequenceNumber that increases by one per
 * chunk, across token renewals (a renew OPN changes the token id, not the numbering); it may wrap only after
 * exceeding 4 294 966 271 (UInt32.MaxValue − 1024), to a value below 1024. The receiver checks this. So:
 * - client → server: when the gateway swallows a refused request, the server would see a gap;
 * - server → client: when the gateway injects a ServiceFault, the client would see an extra number.
 *
 * One `SequenceDirection` per direction. It validates the numbers as they arrive (so a replayed or skipped
 * number is still caught now that the receiver only sees the gateway's numbers), and assigns numbers as
 * chunks are emitted: as long as nothing was dropped, injected or reordered the origin's numbers pass
 * unchanged; from the first divergence on, the direction runs its own counter continuing from the last
 * number it emitted. Emission order, not arrival order, is what the receiver sees, which is why numbers are
 * assigned at emission (the inspector emits exactly in the order it hands bytes to the proxy).
 */

/** Part 6 §6.7.2.4: no wrap before the number exceeds this. */
export const SEQUENCE_WRAP_THRESHOLD = 4_294_966_271;
/** After a wrap the first number must be below this. */
export const SEQUENCE_WRAP_LIMIT = 1024;

/** The next number after `n`, wrapping like the spec allows (to 1, as node-opcua and most stacks do). */
export function nextSequenceNumber(n: number): number {
  return n > SEQUENCE_WRAP_THRESHOLD ? 1 : n + 1;
}

/** Is `next` a valid successor of `prev` (Part 6 §6.7.2.4)? */
export function isNextSequenceNumber(prev: number, next: number): boolean {
  if (next === prev + 1 && next <= 0xffffffff) return true;
  return prev >= SEQUENCE_WRAP_THRESHOLD && next < SEQUENCE_WRAP_LIMIT;
}

export class SequenceDirection {
  /** Last number that arrived from the origin, or null before the first. */
  #lastIn: number | null = null;
  /** Last number emitted to the receiver, or null before the first. */
  #lastOut: number | null = null;
  /** True once emitted numbers no longer equal the origin's. */
  #renumbering = false;

  get renumbering(): boolean {
    return this.#renumbering;
  }

  get lastOut(): number | null {
    return this.#lastOut;
  }

  /** A chunk arrived from the origin with number `n`: false when it does not follow the previous one. */
  arrive(n: number): boolean {
    const ok = this.#lastIn === null || isNextSequenceNumber(this.#lastIn, n);
    if (ok) this.#lastIn = n;
    return ok;
  }

  /** The number to write into an origin chunk (which carried `n`) that is being emitted now. */
  emit(n: number): number {
    if (!this.#renumbering) {
      if (this.#lastOut === null || isNextSequenceNumber(this.#lastOut, n)) {
        this.#lastOut = n;
        return n;
      }
      this.#renumbering = true;
    }
    const out = this.#lastOut === null ? n : nextSequenceNumber(this.#lastOut);
    this.#lastOut = out;
    return out;
  }

  /**
   * The number for a chunk the gateway injects now, or null when nothing was emitted yet (the receiver's
   * numbering has not started, so there is no number to continue: the caller must not inject).
   */
  inject(): number | null {
    if (this.#lastOut === null) return null;
    this.#renumbering = true;
    this.#lastOut = nextSequenceNumber(this.#lastOut);
    return this.#lastOut;
  }
}

/** Both directions of one channel. */
export class SequenceRewriter {
  readonly client = new SequenceDirection();
  readonly server = new SequenceDirection();
}

/** `chunk` with the UInt32 at `offset` set to `n`: the same buffer when unchanged, else a copy. */
export function withSequenceNumber(chunk: Buffer, offset: number, n: number): Buffer {
  if (offset + 4 > chunk.length || chunk.readUInt32LE(offset) === n) return chunk;
  const copy = Buffer.from(chunk);
  copy.writeUInt32LE(n >>> 0, offset);
  return copy;
}
