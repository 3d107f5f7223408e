/**
 * A reassembly byte budget shared by many connections. Each connection's own limits (types.ts OpcuaLimits)
 * bound what one peer can make the gateway hold (~1 MiB of reassembly plus two 64 KiB chunk buffers), but
 * not the sum: 512 connections × ~1 MiB is half a gigabyte (the CVE-2022-21208 pattern, spread over
 * connections). Every byte a connection holds for reassembly — partial chunks in its decoders, chunks kept
 * by its MessageAssembler — is charged here before it is allocated, and released when the message completes,
 * is aborted, expires, fails, or the connection closes.
 *
 * When a charge would exceed the budget, the connection asking for it is refused (its inspector closes it
 * with `opcua.memory-budget`). That is deliberately simple: it never touches connections that already hold
 * their bytes (no eviction, no cross-connection state), so the worst an attacker achieves is that new large
 * messages are refused while the budget is full; small single-chunk requests of healthy clients need no
 * budget at all (they are views of the socket's buffers, never copied), and the attacker's bytes are freed by
 * the per-message timeout. Fairer schemes (evicting the biggest holder) would let an attacker choose victims.
 */

/** Default budget: 64 MiB, i.e. ~60 connections reassembling maximal (1 MiB) messages at once. */
export const DEFAULT_REASSEMBLY_BUDGET_BYTES = 64 * 1024 * 1024;

export class ReassemblyBudget {
  readonly limit: number;
  #used = 0;

  constructor(limit: number = DEFAULT_REASSEMBLY_BUDGET_BYTES) {
    if (!Number.isSafeInteger(limit) || limit < 0) {
      throw new RangeError(`reassembly budget must be a non-negative integer, got ${limit}`);
    }
    this.limit = limit;
  }

  /** Bytes currently charged by all connections. */
  get used(): number {
    return this.#used;
  }

  /** Charges `bytes` if they fit; false (nothing charged) when they would exceed the limit. */
  tryCharge(bytes: number): boolean {
    if (this.#used + bytes > this.limit) return false;
    this.#used += bytes;
    return true;
  }

  release(bytes: number): void {
    // Never below zero: a release is always matched by an earlier charge (BudgetAccount guarantees it).
    this.#used = Math.max(0, this.#used - bytes);
  }
}

/**
 * One connection's share of a ReassemblyBudget. It remembers what this connection charged, so a release can
 * never free another connection's bytes and closing the connection returns everything at once (no leak even
 * if a component forgot to release).
 */
export class BudgetAccount {
  readonly #budget: ReassemblyBudget;
  #charged = 0;

  constructor(budget: ReassemblyBudget) {
    this.#budget = budget;
  }

  /** Bytes this connection holds charged. */
  get charged(): number {
    return this.#charged;
  }

  tryCharge(bytes: number): boolean {
    if (!this.#budget.tryCharge(bytes)) return false;
    this.#charged += bytes;
    return true;
  }

  release(bytes: number): void {
    const n = Math.min(bytes, this.#charged);
    this.#charged -= n;
    this.#budget.release(n);
  }

  releaseAll(): void {
    this.release(this.#charged);
  }
}

/** The process-wide budget of every inspector not given its own (`opcuaInspectorFactory` uses it). */
export const sharedReassemblyBudget = new ReassemblyBudget();

export const MEMORY_BUDGET_CODE = 'opcua.memory-budget';
