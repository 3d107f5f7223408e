/**
 * Request pacing for the UI (IEC 62443-4-2 CR 7.1: denial-of-service protection; the essential function,
 * forwarding and filtering, keeps running while the UI is flooded). Each client (session, or source address
 * before login) gets a token bucket; a request beyond it is *delayed* until a token is due rather than
 * rejected, so a client hammering in a closed loop is slowed to the bucket's rate instead of turning every
 * refusal into another request. A client that would have to wait longer than `maxDelayMs` gets 429 at once,
 * so delayed requests cannot pile up without bound. A browser page (a few requests every few seconds) never
 * waits.
 */
export interface PacerOptions {
  /** Sustained requests per second per client. */
  ratePerSecond: number;
  /** Requests a client may make at once before pacing starts. */
  burst: number;
  /** The longest a request is held; beyond it the answer is 429. */
  maxDelayMs: number;
  /** Clients remembered at most (oldest forgotten first), so random keys cannot grow memory. */
  maxClients: number;
}

const DEFAULT_PACER: PacerOptions = {
  ratePerSecond: 25,
  burst: 50,
  maxDelayMs: 2000,
  maxClients: 10_000,
};

interface Bucket {
  /** Time (ms) at which the bucket is full again: the "theoretical arrival time" of the next request. */
  tat: number;
}

export type PaceDecision = { kind: 'go'; delayMs: number } | { kind: 'reject'; retryAfterMs: number };

export class RequestPacer {
  readonly #o: PacerOptions;
  readonly #now: () => number;
  readonly #buckets = new Map<string, Bucket>();

  constructor(options: Partial<PacerOptions> = {}, now: () => number = Date.now) {
    this.#o = { ...DEFAULT_PACER, ...options };
    this.#now = now;
  }

  /** Generic cell rate algorithm: one request costs 1/rate seconds; `burst` requests may be early. */
  decide(key: string): PaceDecision {
    const now = this.#now();
    const interval = 1000 / this.#o.ratePerSecond;
    const slack = interval * this.#o.burst;
    let b = this.#buckets.get(key);
    if (b === undefined) {
      if (this.#buckets.size >= this.#o.maxClients) {
        const oldest = this.#buckets.keys().next().value;
        if (oldest !== undefined) this.#buckets.delete(oldest);
      }
      b = { tat: now };
    } else {
      // Re-insert: Map order is insertion order, so the least recently seen client is evicted first.
      this.#buckets.delete(key);
    }
    this.#buckets.set(key, b);
    const tat = Math.max(b.tat, now);
    const delayMs = Math.max(0, tat - slack - now + interval);
    if (delayMs > this.#o.maxDelayMs) return { kind: 'reject', retryAfterMs: Math.ceil(delayMs) };
    b.tat = tat + interval;
    return { kind: 'go', delayMs: Math.ceil(delayMs) };
  }

  get clients(): number {
    return this.#buckets.size;
  }
}
