/**
 * The verdict list an inspector builds for one onClientData/onServerData/onTimer call, shared by the protocol
 * filters. Consecutive plain forwards are merged so that a segment of several pipelined messages stays one
 * socket write on the proxy side (fewer syscalls and TCP segments than one write per message).
 */
import type { ClientVerdict, FilterEvent, ServerVerdict } from './inspector.ts';

/** One buffer for several; a single one is returned as is (concat would copy it for nothing). */
export function joined(parts: readonly Buffer[]): Buffer {
  return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
}

/** Collects verdicts in order, merging consecutive plain forwards into one buffer. */
export class Verdicts<V extends ClientVerdict | ServerVerdict> {
  readonly list: V[] = [];
  #pending: Buffer[] = [];
  #closed = false;

  get closed(): boolean {
    return this.#closed;
  }

  /** A forward with an event (monitor mode) stays its own verdict, so the event names exactly its bytes. */
  forward(bytes: Buffer, event?: FilterEvent): void {
    if (event === undefined) {
      this.#pending.push(bytes);
      return;
    }
    this.#flush();
    this.list.push({ action: 'forward', bytes, event } as V);
  }

  push(v: V): void {
    this.#flush();
    this.list.push(v);
    if (v.action === 'close') this.#closed = true;
  }

  #flush(): void {
    if (this.#pending.length === 0) return;
    const bytes = joined(this.#pending);
    this.#pending = [];
    this.list.push({ action: 'forward', bytes } as V);
  }

  /** The verdicts; nothing forwarded after a close is kept (the proxy would ignore it anyway). */
  done(): V[] {
    if (!this.#closed) this.#flush();
    return this.list;
  }
}
