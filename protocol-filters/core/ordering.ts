/**
 * Keeps gateway-made answers (refusals) in request order relative to the device's answers, for inspectors
 * whose protocol pairs answers by position as much as by id (Modbus: many masters assume answers come in
 * request order). Used by the Modbus TransactionTracker (modbus/response.ts) and the proxy's tests; the
 * OPC UA filter does not need it (OPC UA pairs responses by request id, so its refusals go out at once).
 *
 * Model: a queue of what the client has sent, in order — forwarded requests (waiting for the device) and
 * refusal answers the gateway produced. A refusal may go to the client only once every request sent before
 * it has been answered (or timed out); device answers themselves are never held (the inspector forwards them
 * on arrival, even out of order, because holding them would change the device's behaviour as seen by the
 * client — and one lost answer would freeze every later one).
 *
 * A forwarded request may carry a deadline: a device that never answers must not hold the queued refusals
 * (and the outstanding slot) forever. `expire(now)` gives up on overdue requests — they count as answered,
 * so the refusals behind them are released, and a late answer is then unmatched.
 *
 * Usage in an inspector:
 * - request forwarded:   `if (!orderer.request(id, value, deadline)) → close (too-many-outstanding-requests)`
 * - request refused:     `const now = orderer.reply(bytes)` → `now ? reply(now) : log(event)`
 * - device answer `id`:  `const r = orderer.answer(id)`; if `!r.matched` drop it as unpaired; else forward the
 *                        answer, then forward each of `r.release` in order.
 * - timer:               `orderer.nextDeadline()`; at that time `orderer.expire(now)` → forward `release`.
 *
 * A request may also be forwarded as one whose answer is optional (`request(…, { optional: true })`): Modbus
 * broadcast writes (unit 0), which a serial-line gateway executes without answering while a TCP device may
 * answer them. Such a request never holds later refusals (a master that broadcasts does not wait for an
 * answer, so holding a refusal behind it would time the master out), is paired only with an answer the
 * caller accepts as its own (see `answer`), and goes silently at its deadline. It counts against the
 * outstanding limit like any forwarded request, so a flood of them is cut as any other would be.
 *
 * Pure and synchronous (the caller supplies the clock); keys are compared with `===`.
 */

type RequestEntry<K, V> = {
  kind: 'request';
  key: K;
  value: V | undefined;
  deadline: number;
  answered: boolean;
};
type Entry<K, V> = RequestEntry<K, V> | { kind: 'reply'; bytes: Buffer };

export interface AnswerResult<V = undefined> {
  /** False when no unanswered request had this key (an unsolicited, duplicate or too late answer). */
  matched: boolean;
  /** The value recorded with the request (when matched). */
  value?: V | undefined;
  /** Queued gateway replies that may now go to the client, in order, after the answer itself. */
  release: Buffer[];
}

export interface ExpireResult<V> {
  /** Values of the requests given up on, oldest first. */
  expired: (V | undefined)[];
  /** Queued gateway replies that may now go to the client, in order. */
  release: Buffer[];
}

export class ResponseOrderer<K, V = undefined> {
  readonly #maxOutstanding: number;
  #queue: Entry<K, V>[] = [];
  /** Forwarded requests whose answer is optional, oldest first; outside the ordered queue. */
  #optional: RequestEntry<K, V>[] = [];
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
   * Records a request that is about to be forwarded, with an optional value (returned on answer) and
   * deadline (epoch ms; default never). Returns false (and records nothing) when it would exceed the limit
   * of outstanding requests; the caller should then close the connection.
   */
  request(key: K, value?: V, deadline = Infinity, opts: { optional?: boolean } = {}): boolean {
    if (this.#outstanding + this.#optional.length >= this.#maxOutstanding) return false;
    if (opts.optional === true) {
      this.#optional.push({ kind: 'request', key, value, deadline, answered: false });
      return true;
    }
    this.#queue.push({ kind: 'request', key, value, deadline, answered: false });
    this.#outstanding++;
    return true;
  }

  /**
   * A gateway answer to a refused request. Returns the bytes when they may be sent now (nothing earlier is
   * pending), or undefined when they were queued and will come out of a later `answer()` or `expire()`.
   * Queued replies count in `size`, against the same limit as requests.
   */
  reply(bytes: Buffer): Buffer | undefined {
    if (this.#queue.length === 0) return bytes;
    this.#queue.push({ kind: 'reply', bytes });
    this.#queuedReplies++;
    return undefined;
  }

  /**
   * The device answered a request with this key. It pairs with the earliest unanswered request with the key
   * that waits for its answer, unless `accepts` says the answer is not that request's and an optional-answer
   * request with the key accepts it (masters that reuse one transaction id broadcast and poll alike). An
   * optional-answer request is never paired with an answer it does not accept: that answer is unmatched.
   * Without `accepts` every request accepts every answer.
   */
  answer(key: K, accepts?: (value: V | undefined) => boolean): AnswerResult<V> {
    const picked = this.#pick(key, accepts);
    if (picked === undefined) return { matched: false, release: [] };
    if (picked.kind === 'optional') {
      this.#optional.splice(picked.index, 1);
      return { matched: true, value: picked.entry.value, release: [] };
    }
    picked.entry.answered = true;
    this.#outstanding--;
    return { matched: true, value: picked.entry.value, release: this.#drain() };
  }

  /** The value of the request `answer(key, accepts)` would pair with. */
  pending(key: K, accepts?: (value: V | undefined) => boolean): V | undefined {
    return this.#pick(key, accepts)?.entry.value;
  }

  /**
   * Everything held against the limit: requests at the device (optional-answer ones included) and replies
   * queued behind them. The caller refuses new entries at the limit, so a client cannot grow the queue
   * without bound by sending refused requests behind one request the device never answers.
   */
  get size(): number {
    return this.#outstanding + this.#optional.length + this.#queuedReplies;
  }

  #pick(
    key: K,
    accepts: ((value: V | undefined) => boolean) | undefined,
  ): { kind: 'queued' | 'optional'; entry: RequestEntry<K, V>; index: number } | undefined {
    const queued = this.#find(key);
    if (queued !== undefined && (accepts === undefined || accepts(queued.value)))
      return { kind: 'queued', entry: queued, index: -1 };
    const index = this.#optional.findIndex(
      (e) => e.key === key && (accepts === undefined || accepts(e.value)),
    );
    const optional = this.#optional[index];
    if (optional !== undefined) return { kind: 'optional', entry: optional, index };
    // A waiting request that does not accept the answer still pairs: the caller treats the mismatch as the
    // two ends disagreeing on the stream, as before optional requests existed.
    return queued === undefined ? undefined : { kind: 'queued', entry: queued, index: -1 };
  }

  /** The earliest deadline of an unanswered request, or undefined when none has one. */
  nextDeadline(): number | undefined {
    let next = Infinity;
    for (const e of this.#queue) {
      if (e.kind === 'request' && !e.answered && e.deadline < next) next = e.deadline;
    }
    for (const e of this.#optional) if (e.deadline < next) next = e.deadline;
    return next === Infinity ? undefined : next;
  }

  /**
   * Gives up on every unanswered request whose deadline is at or before `now`; optional-answer requests due
   * by then are forgotten without being reported (no answer was the expected outcome).
   */
  expire(now: number): ExpireResult<V> {
    this.#optional = this.#optional.filter((e) => e.deadline > now);
    const expired: (V | undefined)[] = [];
    for (const e of this.#queue) {
      if (e.kind === 'request' && !e.answered && e.deadline <= now) {
        e.answered = true;
        this.#outstanding--;
        expired.push(e.value);
      }
    }
    return { expired, release: expired.length > 0 ? this.#drain() : [] };
  }

  #find(key: K): RequestEntry<K, V> | undefined {
    for (const e of this.#queue) {
      if (e.kind === 'request' && !e.answered && e.key === key) return e;
    }
    return undefined;
  }

  /** Drains the head: answered requests vanish, replies whose predecessors are all answered go out. */
  #drain(): Buffer[] {
    const release: Buffer[] = [];
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
    return release;
  }
}
