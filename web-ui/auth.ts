/**
 * Sessions and login throttling, in memory: a restart of the UI logs everyone out, which is the safe side.
 * Session ids and CSRF tokens are 256-bit random values; a session ends after an idle period (IEC 62443-4-2
 * CR 2.5) or at logout, and the server forgets it (a stolen cookie is then worthless).
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { isIPv6 } from 'node:net';
import type { Role } from './users.ts';

const DEFAULT_IDLE_TIMEOUT_MS = 15 * 60 * 1000;
/** Hard cap on concurrent sessions, so a login flood cannot exhaust memory. */
const MAX_SESSIONS = 1000;

export interface Session {
  id: string;
  user: string;
  role: Role;
  /** The account record's creation time at login: a removed and re-added account is another account. */
  userCreated: string;
  csrf: string;
  created: number;
  lastSeen: number;
}

export class SessionStore {
  private readonly sessions = new Map<string, Session>();
  readonly idleTimeoutMs: number;
  private readonly now: () => number;

  constructor(opts: { idleTimeoutMs?: number; now?: () => number } = {}) {
    this.idleTimeoutMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.now = opts.now ?? Date.now;
  }

  create(user: string, role: Role, userCreated: string): Session {
    this.sweep();
    if (this.sessions.size >= MAX_SESSIONS) {
      // Evict the least recently used session rather than refuse a legitimate login.
      let oldest: Session | undefined;
      for (const s of this.sessions.values())
        if (oldest === undefined || s.lastSeen < oldest.lastSeen) oldest = s;
      if (oldest !== undefined) this.sessions.delete(oldest.id);
    }
    const t = this.now();
    const s: Session = {
      id: randomBytes(32).toString('base64url'),
      user,
      role,
      userCreated,
      csrf: randomBytes(32).toString('base64url'),
      created: t,
      lastSeen: t,
    };
    this.sessions.set(s.id, s);
    return s;
  }

  /**
   * The live session for this id; undefined (and forgotten) when unknown or idle too long. Only requests made
   * by the person (refresh: true) restart the idle timer: the pages' background polls pass false, or an open
   * tab would keep a session alive for ever.
   */
  touch(id: string | undefined, opts: { refresh?: boolean } = {}): Session | undefined {
    if (id === undefined) return undefined;
    const s = this.sessions.get(id);
    if (s === undefined) return undefined;
    const t = this.now();
    if (t - s.lastSeen > this.idleTimeoutMs) {
      this.sessions.delete(id);
      return undefined;
    }
    if (opts.refresh !== false) s.lastSeen = t;
    return s;
  }

  destroy(id: string): void {
    this.sessions.delete(id);
  }

  destroyUser(user: string): void {
    for (const [id, s] of this.sessions) if (s.user === user) this.sessions.delete(id);
  }

  private sweep(): void {
    const t = this.now();
    for (const [id, s] of this.sessions) if (t - s.lastSeen > this.idleTimeoutMs) this.sessions.delete(id);
  }
}

export function csrfMatches(session: Session, header: string | undefined): boolean {
  if (header === undefined) return false;
  const a = Buffer.from(header);
  const b = Buffer.from(session.csrf);
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Login throttling per source address (IEC 62443-4-2 CR 1.11). After a few free attempts each failure doubles
 * the wait, capped at MAX_DELAY_MS: guessing becomes slow, but nobody is ever locked out for good — an attacker
 * on one address cannot lock the admins out from theirs, and an admin who mistyped waits at most a minute.
 */
export const FREE_ATTEMPTS = 5;
const BASE_DELAY_MS = 1000;
export const MAX_DELAY_MS = 60_000;
const MAX_TRACKED = 10_000;

interface Attempts {
  failures: number;
  blockedUntil: number;
  last: number;
}

export class LoginThrottle {
  private readonly bySource = new Map<string, Attempts>();
  private readonly now: () => number;

  constructor(opts: { now?: () => number } = {}) {
    this.now = opts.now ?? Date.now;
  }

  /**
   * Checks and counts an attempt in one synchronous step, before the slow password check: parallel requests
   * cannot all pass the check before any of them is recorded. A successful login then clears the record.
   * Returns the wait (> 0: refused) or, when allowed, the delay this attempt imposes if it fails.
   */
  attempt(source: string): { refusedMs: number; delayIfFailed: number } {
    const wait = this.waitMs(source);
    if (wait > 0) return { refusedMs: wait, delayIfFailed: 0 };
    return { refusedMs: 0, delayIfFailed: this.failure(source) };
  }

  /** Milliseconds this source must still wait before trying again (0 = may try now). */
  waitMs(source: string): number {
    const a = this.bySource.get(source);
    if (a === undefined) return 0;
    return Math.max(0, a.blockedUntil - this.now());
  }

  failure(source: string): number {
    const t = this.now();
    if (this.bySource.size >= MAX_TRACKED && !this.bySource.has(source)) {
      // Forget sources that have been quiet longest; keeps memory bounded under a spoofed-source storm.
      for (const [k, v] of this.bySource) if (t - v.last > MAX_DELAY_MS) this.bySource.delete(k);
    }
    const a = this.bySource.get(source) ?? { failures: 0, blockedUntil: 0, last: t };
    a.failures++;
    a.last = t;
    const over = a.failures - FREE_ATTEMPTS;
    const delay = over < 0 ? 0 : Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** Math.min(over, 20));
    a.blockedUntil = t + delay;
    this.bySource.set(source, a);
    return delay;
  }

  success(source: string): void {
    this.bySource.delete(source);
  }
}

/**
 * The throttling key of a client address: IPv6 clients usually hold a whole /64, so rotating addresses inside
 * it must not reset the count; IPv4-mapped IPv6 addresses count as their IPv4 address.
 */
export function sourceKey(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped !== null) return mapped[1] as string;
  if (!isIPv6(ip)) return ip;
  const [head = '', tail = ''] = ip.toLowerCase().split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === '' ? [] : tail.split(':');
  const groups = ip.includes('::')
    ? [...left, ...new Array<string>(8 - left.length - right.length).fill('0'), ...right]
    : left;
  return groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')
    .concat('::/64');
}

/**
 * Rate limit for failed-login audit entries: the audit log is bounded, so a guessing storm must not push the
 * real changes out of it. At most one entry per source per window, and at most MAX_PER_WINDOW entries per
 * window in all; what is held back is counted and reported in the next entry written.
 */
export class FailureAuditLimiter {
  static readonly WINDOW_MS = 60_000;
  static readonly MAX_PER_WINDOW = 20;
  private readonly perSource = new Map<string, { at: number; held: number }>();
  private windowStart = 0;
  private written = 0;
  private heldGlobal = 0;
  private readonly now: () => number;

  constructor(opts: { now?: () => number } = {}) {
    this.now = opts.now ?? Date.now;
  }

  /** Whether to write an entry now, and how many failures it stands for (this one included). */
  record(source: string): { write: false } | { write: true; count: number; othersHeld: number } {
    const t = this.now();
    const W = FailureAuditLimiter.WINDOW_MS;
    if (t - this.windowStart >= W) {
      this.windowStart = t;
      this.written = 0;
      for (const [k, v] of this.perSource) if (t - v.at >= W && v.held === 0) this.perSource.delete(k);
    }
    const s = this.perSource.get(source);
    if ((s !== undefined && t - s.at < W) || this.written >= FailureAuditLimiter.MAX_PER_WINDOW) {
      if (s !== undefined && t - s.at < W) s.held++;
      else this.heldGlobal++;
      // Memory stays bounded: past the cap, unknown sources only bump the global counter.
      return { write: false };
    }
    const count = (s?.held ?? 0) + 1;
    const othersHeld = this.heldGlobal;
    this.heldGlobal = 0;
    this.written++;
    if (this.perSource.size < 10_000) this.perSource.set(source, { at: t, held: 0 });
    return { write: true, count, othersHeld };
  }
}
