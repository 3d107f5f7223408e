/**
 * Keeps gateway-made answers (refusals) in request order relative to the device's answers, for inspectors.
 *
 * Model: a queue of what the client has sent, in order — forwarded requests (waiting for the device) and
 * refusal answers the gateway produced. A refusal may go to the client only once every request sent before
 * it has been answered; device answers themselves are never held (the proxy forwards them on arrival, even
 * out of order, because holding them would change the device's behaviour as seen by the client).
 *
 * Usage in an inspector:
 * - request forwarded:   `if (!orderer.request(id)) → close (too-many-outstanding-requests)`
 * - request refused:     `const now = orderer.reply(bytes)` → `now ? reply(now) : log(event)`
 * - device answer `id`:  `const r = orderer.answer(id)`; if `!r.matched` drop it as unpaired; else forward the
 *                        answer, then forward each of `r.release` in order.
 *
 * Pure and synchronous; keys are compared with `===` (Modbus transaction id, OPC UA request id).
 */

type Entry<K> = { kind: 'request'; key: K; answered: boolean } | { kind: 'reply'; bytes: Buffer };

export interface AnswerResult {
  /** False when no unanswered request had this key (an unsolicited or duplicate answer). */
  matched: boolean;
  /** Queued gateway replies that may now go to the client, in order, after the answer itself. */
  release: Buffer[];
}

export class ResponseOrderer<K> {
  readonly #maxOutstanding: number;
  #queue: Entry<K>[] = [];
  #outstanding = 0;
  #queuedReplies = 0;

  constructor(maxOutstanding: number) {
    this.#maxOutstanding = maxOutstanding;
  }

  /** Forwarded requests still waiting for the device. */
  get outstanding(): number {
    return this.#outstanding;
  }

  /** Gateway replies waiting behind outstanding requests. */
  get queuedReplies(): number {
    return this.#queuedReplies;
  }

  /**
   * Records a request that is about to be forwarded. Returns false (and records nothing) when it would
   * exceed the limit of outstanding requests; the caller should then close the connection.
   */
  request(key: K): boolean {
    if (this.#outstanding >= this.#maxOutstanding) return false;
    this.#queue.push({ kind: 'request', key, answered: false });
    this.#outstanding++;
    return true;
  }

  /**
   * A gateway answer to a refused request. Returns the bytes when they may be sent now (nothing earlier is
   * pending), or undefined when they were queued and will come out of a later `answer()`.
   * Queued replies count against the same limit as requests — otherwise a client could grow the queue
   * without bound by sending refused requests behind one request the device never answers.
   */
  reply(bytes: Buffer): Buffer | undefined {
    if (this.#queue.length === 0) return bytes;
    this.#queue.push({ kind: 'reply', bytes });
    this.#queuedReplies++;
    return undefined;
  }

  /** True when neither requests nor queued replies exceed the limit. */
  withinLimit(): boolean {
    return this.#outstanding + this.#queuedReplies <= this.#maxOutstanding;
  }

  /** The device answered the earliest unanswered request with this key. */
  answer(key: K): AnswerResult {
    const entry = this.#queue.find((e) => e.kind === 'request' && !e.answered && e.key === key);
    if (entry === undefined || entry.kind !== 'request') return { matched: false, release: [] };
    entry.answered = true;
    this.#outstanding--;
    const release: Buffer[] = [];
    // Drain the head: answered requests vanish, replies whose predecessors are all answered go out.
    let head = 0;
    while (head < this.#queue.length) {
      const e = this.#queue[head];
      if (e === undefined) break;
      if (e.kind === 'request') {
        if (!e.answered) break;
      } else {
        release.push(e.bytes);
        this.#queuedReplies--;
      }
      head++;
    }
    if (head > 0) this.#queue = this.#queue.slice(head);
    return { matched: true, release };
  }

  /** Whether an unanswered request with this key exists (for pairing checks before parsing further). */
  has(key: K): boolean {
    return this.#queue.some((e) => e.kind === 'request' && !e.answered && e.key === key);
  }
}
