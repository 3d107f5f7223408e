/**
 * The blocked-traffic log store: SQLite (WAL) through Node's built-in `node:sqlite`, which needs no native
 * build — that matters on ARM gateways where a compiler toolchain is not a given.
 *
 * Design choices, each for the stated targets (≥ 50,000 events/s ingest, p95 < 100 ms over 1,000,000 rows,
 * bounded disk); bench/logs.ts measures them:
 * - The low-cardinality fields (zones, conduit, flow, interfaces, protocol, verdict, reason, source) together
 *   form an event *class*, stored once in `classes`; an event row holds the class id, addresses, ports,
 *   detail and count. Every index entry costs CPU and WAL bytes at ingest, so one `(class, time)` index
 *   serves all class filters: the store resolves a filter such as `verdict = 'refuse'` or `zone = 'dmz'`
 *   (either side) to the matching class ids in memory and walks one index range per id, merging newest-first.
 * - Addresses and ports get their own `(column, time)` index; `time` has one for unfiltered pages and ranges.
 * - Identical events within one wall-clock second are aggregated in memory per batch and merged into the row
 *   of the same second already written (a small map of the last two seconds' row ids), so a flood costs an
 *   UPDATE per distinct event and second, not an INSERT per packet.
 * - Random-position index inserts dirty one page each, and every dirty page is rewritten to the WAL at each
 *   commit: small transactions multiply disk writes. `enqueue()` therefore gathers events and commits them
 *   every `flushMs` or `flushEvents`, whichever comes first; `ingest()` commits one given batch at once.
 * - Pagination is keyset on `(time, id)`, never OFFSET, so page 1,000 costs what page 1 costs.
 * - Retention deletes the oldest rows first by age and by size; what it dropped is counted in `meta` so the
 *   operator sees that evidence was discarded.
 */
import { statSync } from 'node:fs';
import { DatabaseSync, type SQLInputValue, type SQLOutputValue, type StatementSync } from 'node:sqlite';
import { SluiceError } from '../policies/errors.ts';
import type { BlockedEvent, BlockedSource, BlockedVerdict, EventDetail, StoredEvent } from './events.ts';

export interface LogStoreOptions {
  /** Upper bound for the live data in the database file (the WAL is capped separately, at ~8 MiB). */
  maxBytes: number;
  /** Events older than this are deleted. */
  maxAgeMs: number;
  /** Open an existing store for queries only (e.g. a CLI next to the running daemon). */
  readOnly?: boolean;
  /** Clock for the age cut-off and the retention throttle; tests inject one. */
  now?: () => number;
  /** Minimum time between automatic retention passes after a commit; 0 = after every commit. Default 1000. */
  retentionIntervalMs?: number;
  /** `enqueue()` commits at the latest this long after the first queued event. Default 250 ms. */
  flushMs?: number;
  /** `enqueue()` commits as soon as this many events are queued. Default 10,000. */
  flushEvents?: number;
  /** Where a failed background commit (from `enqueue`'s timer) is reported; without it, it is thrown. */
  onError?: (err: unknown) => void;
}

export interface LogQuery {
  /** Inclusive lower bound, ms epoch. */
  since?: number;
  /** Exclusive upper bound, ms epoch. */
  until?: number;
  /** Either side: events leaving or entering this zone. */
  zone?: string;
  fromZone?: string;
  toZone?: string;
  /** `null` selects events that matched no conduit. */
  conduit?: string | null;
  flow?: string;
  src?: string;
  dst?: string;
  /** Either side: source or destination port. */
  port?: number;
  srcPort?: number;
  dstPort?: number;
  protocol?: string;
  verdict?: BlockedVerdict;
  reason?: string;
  source?: BlockedSource;
  /** Page size, 1..1000; default 100. */
  limit?: number;
  /** `nextCursor` of the previous page. */
  cursor?: string;
  /** Also count the matching rows (an extra pass over the matching index range). */
  total?: boolean;
}

export interface LogQueryResult {
  /** Newest first. */
  events: StoredEvent[];
  /** Number of matching rows (an aggregated row counts once); only when `total: true` was asked. */
  total?: number;
  /** Present when more rows match: pass it as `cursor` for the next page. */
  nextCursor?: string;
}

export interface ConduitCount {
  /** `null` for events that matched no conduit. */
  conduit: string | null;
  /** Events ever ingested for this conduit (retention does not lower it). */
  events: number;
  lastTime: number;
}

export interface LogStoreStats {
  /** Events currently stored (sum of the aggregation counts). */
  stored: number;
  /** Rows currently stored. */
  rows: number;
  /** Events deleted by retention since the store was created (persisted). */
  droppedByRetention: number;
  /** Rows deleted by retention since the store was created (persisted). */
  droppedRowsByRetention: number;
  /** Database file plus WAL on disk. */
  bytes: number;
}

export interface RetentionResult {
  droppedEvents: number;
  droppedRows: number;
}

export const DEFAULT_QUERY_LIMIT = 100;
export const MAX_QUERY_LIMIT = 1000;
/** Up to this many matching classes are walked one index range each; more means a common value: scan by time. */
const MAX_CLASS_RANGES = 32;

/** The class fields: the `BlockedEvent` key and its column in `classes`. */
const CLASS_FIELDS = [
  ['fromZone', 'from_zone'],
  ['toZone', 'to_zone'],
  ['conduit', 'conduit'],
  ['flow', 'flow'],
  ['inIface', 'in_iface'],
  ['outIface', 'out_iface'],
  ['protocol', 'protocol'],
  ['verdict', 'verdict'],
  ['reason', 'reason'],
  ['source', 'source'],
] as const;
type ClassField = (typeof CLASS_FIELDS)[number][0];
type EventClass = Partial<Record<ClassField, string>>;

/**
 * Source ports from here up are ephemeral (Linux 32768–60999, Windows 49152–65535): random per connection,
 * so indexing them would scatter inserts over the whole index and rewrite most of it to the WAL at every
 * commit. The source-port index is partial; a query for an ephemeral source port scans by time instead.
 */
export const EPHEMERAL_PORTS = 32768;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS classes (
  id INTEGER PRIMARY KEY,
  ${CLASS_FIELDS.map(([, c]) => `${c} TEXT`).join(', ')}
);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY,
  time INTEGER NOT NULL,
  class INTEGER NOT NULL,
  src TEXT NOT NULL,
  dst TEXT NOT NULL,
  src_port INTEGER,
  dst_port INTEGER,
  detail TEXT,
  count INTEGER NOT NULL
);
-- src_port rides along in the time index so a search for an ephemeral source port (not in the partial index
-- below) tests it from the index alone; time-ordered appends keep this index cheap to maintain.
CREATE INDEX IF NOT EXISTS events_time ON events (time, src_port);
CREATE INDEX IF NOT EXISTS events_class ON events (class, time);
CREATE INDEX IF NOT EXISTS events_src ON events (src, time);
CREATE INDEX IF NOT EXISTS events_dst ON events (dst, time);
CREATE INDEX IF NOT EXISTS events_src_port ON events (src_port, time) WHERE src_port < ${EPHEMERAL_PORTS};
CREATE INDEX IF NOT EXISTS events_dst_port ON events (dst_port, time);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conduit_counts (
  conduit TEXT PRIMARY KEY, events INTEGER NOT NULL, last_time INTEGER NOT NULL
) WITHOUT ROWID;
`;

const META_KEYS = ['storedEvents', 'storedRows', 'droppedEvents', 'droppedRows'] as const;
type MetaKey = (typeof META_KEYS)[number];

type ResolvedOptions = Required<Omit<LogStoreOptions, 'onError'>> & Pick<LogStoreOptions, 'onError'>;

interface Pending {
  key: string;
  sec: number;
  time: number;
  count: number;
  classId: number;
  src: string;
  dst: string;
  srcPort: number | null;
  dstPort: number | null;
  detail: string | null;
}

interface Condition {
  sql: string;
  params: SQLInputValue[];
}

function num(v: SQLOutputValue | undefined): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  return 0;
}

function optNum(v: SQLOutputValue | undefined): number | undefined {
  return typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined;
}

function optPort(p: number | undefined): number | null {
  return p !== undefined && Number.isInteger(p) && p >= 0 && p <= 65535 ? p : null;
}

function classKey(c: EventClass): string {
  // \u001f never occurs in names, codes or interface names; undefined and '' stay distinct.
  return CLASS_FIELDS.map(([k]) => (c[k] === undefined ? '\u0000' : c[k])).join('\u001f');
}

export function encodeCursor(time: number, id: number): string {
  return Buffer.from(`${time}:${id}`).toString('base64url');
}

export function decodeCursor(cursor: string): { time: number; id: number } {
  const m = /^(-?\d{1,16}):(\d{1,16})$/.exec(Buffer.from(cursor, 'base64url').toString('latin1'));
  if (m === null) throw new SluiceError('logs.bad-cursor', 'invalid pagination cursor');
  return { time: Number(m[1]), id: Number(m[2]) };
}

export class LogStore {
  readonly path: string;
  #db: DatabaseSync;
  #opts: ResolvedOptions;
  #classIds = new Map<string, number>();
  #classes = new Map<number, EventClass>();
  #stmts = new Map<string, StatementSync>();
  #meta: Record<MetaKey, number> = { storedEvents: 0, storedRows: 0, droppedEvents: 0, droppedRows: 0 };
  /** Row ids of the last two seconds written, by aggregation key: lets the next batch merge into them. */
  #recent = new Map<number, Map<string, number>>();
  #lastRetention = 0;
  #queue: BlockedEvent[] = [];
  #timer: NodeJS.Timeout | undefined;

  private constructor(path: string, db: DatabaseSync, opts: ResolvedOptions) {
    this.path = path;
    this.#db = db;
    this.#opts = opts;
  }

  /**
   * A read-only handle for readers beside the daemon (`sluice logs`, the UI): SQLite WAL lets them read while
   * the daemon writes. Retention is the writer's business, so the reader's limits never apply.
   */
  static openReader(path: string): LogStore {
    return LogStore.open(path, {
      maxBytes: Number.MAX_SAFE_INTEGER,
      maxAgeMs: Number.MAX_SAFE_INTEGER,
      readOnly: true,
    });
  }

  static open(path: string, opts: LogStoreOptions): LogStore {
    if (!(opts.maxBytes > 0) || !(opts.maxAgeMs > 0)) {
      throw new SluiceError('logs.bad-options', 'maxBytes and maxAgeMs must be positive', {
        userError: false,
      });
    }
    const readOnly = opts.readOnly ?? false;
    const db = new DatabaseSync(path, { readOnly });
    const store = new LogStore(path, db, {
      maxBytes: opts.maxBytes,
      maxAgeMs: opts.maxAgeMs,
      readOnly,
      now: opts.now ?? Date.now,
      retentionIntervalMs: opts.retentionIntervalMs ?? 1000,
      flushMs: opts.flushMs ?? 250,
      flushEvents: opts.flushEvents ?? 10_000,
      onError: opts.onError,
    });
    try {
      store.#init();
    } catch (err) {
      db.close();
      throw err;
    }
    return store;
  }

  #init(): void {
    const db = this.#db;
    db.exec('PRAGMA busy_timeout = 5000');
    if (!this.#opts.readOnly) {
      // auto_vacuum only takes effect before the first table exists; incremental lets retention give pages back.
      db.exec('PRAGMA auto_vacuum = INCREMENTAL');
      db.exec('PRAGMA journal_mode = WAL');
      // NORMAL in WAL mode never corrupts; a power cut may lose the last transactions, acceptable for a log.
      db.exec('PRAGMA synchronous = NORMAL');
      // Truncate the WAL after checkpoints so it cannot stay large after a burst.
      db.exec('PRAGMA journal_size_limit = 8388608');
      db.exec(SCHEMA);
    }
    db.exec('PRAGMA temp_store = MEMORY');
    db.exec('PRAGMA cache_size = -32768');
    this.#loadClasses();
    this.#loadMeta();
  }

  #stmt(sql: string): StatementSync {
    let s = this.#stmts.get(sql);
    if (s === undefined) {
      // Filter combinations produce a bounded but possibly large set of shapes; keep the cache bounded too.
      if (this.#stmts.size > 256) this.#stmts.clear();
      s = this.#db.prepare(sql);
      this.#stmts.set(sql, s);
    }
    return s;
  }

  #loadClasses(): void {
    this.#classIds.clear();
    this.#classes.clear();
    for (const row of this.#stmt('SELECT * FROM classes').all()) {
      const c: EventClass = {};
      for (const [k, col] of CLASS_FIELDS) {
        const v = row[col];
        if (typeof v === 'string') c[k] = v;
      }
      const id = num(row.id);
      this.#classes.set(id, c);
      this.#classIds.set(classKey(c), id);
    }
  }

  #loadMeta(): void {
    for (const row of this.#stmt('SELECT key, value FROM meta').all()) {
      const key = row.key;
      if (typeof key === 'string' && (META_KEYS as readonly string[]).includes(key)) {
        this.#meta[key as MetaKey] = num(row.value);
      }
    }
  }

  #classOf(e: BlockedEvent): number {
    const c: EventClass = {};
    for (const [k] of CLASS_FIELDS) {
      const v = e[k];
      if (typeof v === 'string') c[k] = v;
    }
    const key = classKey(c);
    const id = this.#classIds.get(key);
    if (id !== undefined) return id;
    const r = this.#stmt(
      `INSERT INTO classes (${CLASS_FIELDS.map(([, col]) => col).join(', ')})
       VALUES (${CLASS_FIELDS.map(() => '?').join(', ')})`,
    ).run(...CLASS_FIELDS.map(([k]) => c[k] ?? null));
    const newId = Number(r.lastInsertRowid);
    this.#classIds.set(key, newId);
    this.#classes.set(newId, c);
    return newId;
  }

  #class(id: number): EventClass | undefined {
    let c = this.#classes.get(id);
    if (c === undefined) {
      // A reader's cache lags the writer.
      this.#loadClasses();
      c = this.#classes.get(id);
    }
    return c;
  }

  /**
   * Queue events for the next commit (after `flushMs`, or at once when `flushEvents` are waiting): the
   * daemon's path, because it turns a stream of small follower reads into few large transactions.
   */
  enqueue(events: readonly BlockedEvent[]): void {
    if (events.length === 0) return;
    for (const e of events) this.#queue.push(e);
    if (this.#queue.length >= this.#opts.flushEvents) {
      this.flush();
    } else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        try {
          this.flush();
        } catch (err) {
          if (this.#opts.onError === undefined) throw err;
          this.#opts.onError(err);
        }
      }, this.#opts.flushMs);
      // Pending events are committed by close(); the timer alone must not keep a process alive.
      this.#timer.unref();
    }
  }

  /** Commit whatever `enqueue()` gathered. */
  flush(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#queue.length === 0) return;
    const batch = this.#queue;
    this.#queue = [];
    this.ingest(batch);
  }

  /** Store a batch in one transaction; identical events within a second become one row with a count. */
  ingest(events: readonly BlockedEvent[]): void {
    if (this.#opts.readOnly)
      throw new SluiceError('logs.read-only', 'log store opened read-only', { userError: false });
    if (events.length === 0) return;
    const db = this.#db;
    const pending = new Map<string, Pending>();
    const perConduit = new Map<string, { events: number; lastTime: number }>();
    let added = 0;
    let insertedRows = 0;
    db.exec('BEGIN IMMEDIATE');
    try {
      for (const e of events) {
        if (!Number.isFinite(e.time)) continue;
        const count = Number.isInteger(e.count) && e.count > 0 ? e.count : 1;
        const sec = Math.floor(e.time / 1000);
        const classId = this.#classOf(e);
        const srcPort = optPort(e.srcPort);
        const dstPort = optPort(e.dstPort);
        const detail = e.detail === undefined ? null : JSON.stringify(e.detail);
        const key = `${sec}\u001f${classId}\u001f${e.src}\u001f${e.dst}\u001f${srcPort}\u001f${dstPort}\u001f${detail}`;
        const p = pending.get(key);
        if (p === undefined) {
          pending.set(key, {
            key,
            sec,
            time: e.time,
            count,
            classId,
            src: e.src,
            dst: e.dst,
            srcPort,
            dstPort,
            detail,
          });
        } else {
          p.count += count;
          if (e.time < p.time) p.time = e.time;
        }
        added += count;
        const conduit = e.conduit ?? '';
        const c = perConduit.get(conduit);
        if (c === undefined) perConduit.set(conduit, { events: count, lastTime: e.time });
        else {
          c.events += count;
          if (e.time > c.lastTime) c.lastTime = e.time;
        }
      }
      const update = this.#stmt('UPDATE events SET count = count + ? WHERE id = ?');
      const insert = this.#stmt(
        'INSERT INTO events (time, class, src, dst, src_port, dst_port, detail, count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      );
      let newest = -Infinity;
      for (const p of pending.values()) if (p.sec > newest) newest = p.sec;
      for (const p of pending.values()) {
        const bucket = this.#recent.get(p.sec);
        const existing = bucket?.get(p.key);
        if (existing !== undefined && update.run(p.count, existing).changes === 1) continue;
        const r = insert.run(p.time, p.classId, p.src, p.dst, p.srcPort, p.dstPort, p.detail, p.count);
        insertedRows++;
        if (p.sec >= newest - 1) {
          let b = bucket;
          if (b === undefined) {
            b = new Map();
            this.#recent.set(p.sec, b);
          }
          b.set(p.key, Number(r.lastInsertRowid));
        }
      }
      // Only the last two seconds can still receive identical events in practice; forget older buckets.
      let maxSec = -Infinity;
      for (const s of this.#recent.keys()) if (s > maxSec) maxSec = s;
      for (const s of this.#recent.keys()) if (s < maxSec - 1) this.#recent.delete(s);

      const upsert = this.#stmt(
        `INSERT INTO conduit_counts (conduit, events, last_time) VALUES (?, ?, ?)
         ON CONFLICT (conduit) DO UPDATE SET events = events + excluded.events,
           last_time = max(last_time, excluded.last_time)`,
      );
      for (const [conduit, c] of perConduit) upsert.run(conduit, c.events, c.lastTime);
      this.#meta.storedEvents += added;
      this.#meta.storedRows += insertedRows;
      this.#saveMeta();
      db.exec('COMMIT');
    } catch (err) {
      this.#rollback();
      throw err;
    }
    if (this.#opts.now() - this.#lastRetention >= this.#opts.retentionIntervalMs) this.enforceRetention();
  }

  #rollback(): void {
    if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
    // The caches may name rows or classes that the rollback undid: rebuild them from the database.
    this.#recent.clear();
    this.#loadClasses();
    this.#loadMeta();
  }

  #saveMeta(): void {
    const s = this.#stmt(
      'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
    );
    for (const k of META_KEYS) s.run(k, this.#meta[k]);
  }

  /** Delete by age, then oldest-first until the live data fits `maxBytes`; counts what it dropped. */
  enforceRetention(): RetentionResult {
    if (this.#opts.readOnly) return { droppedEvents: 0, droppedRows: 0 };
    const now = this.#opts.now();
    this.#lastRetention = now;
    let droppedEvents = 0;
    let droppedRows = 0;
    const drop = (where: string, params: SQLInputValue[]): void => {
      const agg = this.#stmt(
        `SELECT count(*) AS n, coalesce(sum(count), 0) AS c FROM events WHERE ${where}`,
      ).get(...params);
      const n = num(agg?.n);
      if (n === 0) return;
      this.#stmt(`DELETE FROM events WHERE ${where}`).run(...params);
      droppedRows += n;
      droppedEvents += num(agg?.c);
    };
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      drop('time < ?', [now - this.#opts.maxAgeMs]);
      // Deleting rows frees table pages at once but index pages only as they empty: re-measure and repeat.
      for (let i = 0; i < 8; i++) {
        const used = this.#usedBytes();
        const rows = this.#meta.storedRows - droppedRows;
        if (used <= this.#opts.maxBytes || rows <= 0) break;
        // Aim 10% below the bound so retention runs in chunks, not on every commit.
        const perRow = used / rows;
        const n = Math.min(rows, Math.max(1, Math.ceil((used - this.#opts.maxBytes * 0.9) / perRow)));
        const edge = this.#stmt('SELECT time, id FROM events ORDER BY time, id LIMIT 1 OFFSET ?').get(n - 1);
        if (edge === undefined) break;
        drop('(time, id) <= (?, ?)', [num(edge.time), num(edge.id)]);
      }
      if (droppedRows > 0) {
        this.#meta.storedRows -= droppedRows;
        this.#meta.storedEvents -= droppedEvents;
        this.#meta.droppedRows += droppedRows;
        this.#meta.droppedEvents += droppedEvents;
        this.#saveMeta();
        this.#recent.clear();
      }
      this.#db.exec('COMMIT');
    } catch (err) {
      this.#rollback();
      throw err;
    }
    // Hand free pages back to the file system so the disk footprint, not just the live data, stays bounded.
    if (droppedRows > 0) this.#db.exec('PRAGMA incremental_vacuum');
    return { droppedEvents, droppedRows };
  }

  #usedBytes(): number {
    const pageSize = num(this.#stmt('PRAGMA page_size').get()?.page_size);
    const pages = num(this.#stmt('PRAGMA page_count').get()?.page_count);
    const free = num(this.#stmt('PRAGMA freelist_count').get()?.freelist_count);
    return (pages - free) * pageSize;
  }

  /** Ids of the classes a query's class filters select; undefined when it has none. */
  #matchingClasses(q: LogQuery): number[] | undefined {
    const tests: ((c: EventClass) => boolean)[] = [];
    const eq = (k: ClassField, v: string | undefined): void => {
      if (v !== undefined) tests.push((c) => c[k] === v);
    };
    eq('fromZone', q.fromZone);
    eq('toZone', q.toZone);
    if (q.conduit === null) tests.push((c) => c.conduit === undefined);
    else eq('conduit', q.conduit);
    eq('flow', q.flow);
    eq('protocol', q.protocol);
    eq('verdict', q.verdict);
    eq('reason', q.reason);
    eq('source', q.source);
    if (q.zone !== undefined) {
      const z = q.zone;
      tests.push((c) => c.fromZone === z || c.toZone === z);
    }
    if (tests.length === 0) return undefined;
    // A reader may not have seen classes the writer added since: refresh before deciding.
    if (this.#opts.readOnly) this.#loadClasses();
    const ids: number[] = [];
    for (const [id, c] of this.#classes) if (tests.every((t) => t(c))) ids.push(id);
    return ids;
  }

  query(q: LogQuery = {}): LogQueryResult {
    const limit = q.limit ?? DEFAULT_QUERY_LIMIT;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_QUERY_LIMIT) {
      throw new SluiceError('logs.bad-limit', `limit must be an integer between 1 and ${MAX_QUERY_LIMIT}`);
    }
    this.flush();
    const classes = this.#matchingClasses(q);
    if (classes !== undefined && classes.length === 0)
      return q.total === true ? { events: [], total: 0 } : { events: [] };

    const base: Condition[] = [];
    if (q.since !== undefined) base.push({ sql: 'time >= ?', params: [q.since] });
    if (q.until !== undefined) base.push({ sql: 'time < ?', params: [q.until] });
    if (q.src !== undefined) base.push({ sql: 'src = ?', params: [q.src] });
    if (q.dst !== undefined) base.push({ sql: 'dst = ?', params: [q.dst] });
    // Without per-value statistics SQLite may walk a port index when an address index is far more selective;
    // `+column` takes a term out of index selection, so addresses win, then ports, then classes, then time.
    const addressGiven = q.src !== undefined || q.dst !== undefined;
    if (q.srcPort !== undefined) {
      base.push(addressGiven ? { sql: '+src_port = ?', params: [q.srcPort] } : srcPortCondition(q.srcPort));
    }
    if (q.dstPort !== undefined)
      base.push({ sql: `${addressGiven ? '+' : ''}dst_port = ?`, params: [q.dstPort] });
    const otherIndexed =
      q.src !== undefined ||
      q.dst !== undefined ||
      (q.srcPort !== undefined && q.srcPort < EPHEMERAL_PORTS) ||
      q.dstPort !== undefined;

    // Alternatives are OR-ed; each runs as its own index-ordered query and the results are merged, because
    // an OR across index ranges would make SQLite sort every match before applying the limit.
    let alternatives: Condition[][] = [[]];
    if (classes !== undefined) {
      if (otherIndexed || classes.length > MAX_CLASS_RANGES) {
        // `+class` keeps the planner off the class index: an address/port index, or a newest-first time scan
        // for a value common enough to match many classes, finds the page sooner.
        base.push({ sql: `+class IN (${classes.map(() => '?').join(', ')})`, params: classes });
      } else {
        alternatives = classes.map((id) => [{ sql: 'class = ?', params: [id] }]);
      }
    }
    if (q.port !== undefined) {
      const port = q.port;
      alternatives = alternatives.flatMap((alt) =>
        [srcPortCondition(port), { sql: 'dst_port = ?', params: [port] }].map((c) => [...alt, c]),
      );
    }

    const page: Condition[] = [];
    if (q.cursor !== undefined) {
      const c = decodeCursor(q.cursor);
      page.push({ sql: '(time, id) < (?, ?)', params: [c.time, c.id] });
    }
    const rows = new Map<number, Record<string, SQLOutputValue>>();
    for (const alt of alternatives) {
      const conds = [...base, ...alt, ...page];
      const sql = `SELECT * FROM events ${where(conds)} ORDER BY time DESC, id DESC LIMIT ?`;
      for (const r of this.#stmt(sql).all(...conds.flatMap((c) => c.params), limit + 1))
        rows.set(num(r.id), r);
    }
    const sorted = [...rows.values()].sort((a, b) => num(b.time) - num(a.time) || num(b.id) - num(a.id));
    const result: LogQueryResult = { events: sorted.slice(0, limit).map((r) => this.#toEvent(r)) };
    const last = result.events[limit - 1];
    if (sorted.length > limit && last !== undefined) result.nextCursor = encodeCursor(last.time, last.id);
    if (q.total === true) {
      const conds = [...base];
      if (alternatives.length > 1 || (alternatives[0]?.length ?? 0) > 0) {
        conds.push({
          sql: `(${alternatives.map((a) => `(${a.map((c) => c.sql).join(' AND ')})`).join(' OR ')})`,
          params: alternatives.flatMap((a) => a.flatMap((c) => c.params)),
        });
      }
      result.total = num(
        this.#stmt(`SELECT count(*) AS n FROM events ${where(conds)}`).get(...conds.flatMap((c) => c.params))
          ?.n,
      );
    }
    return result;
  }

  #toEvent(r: Record<string, SQLOutputValue>): StoredEvent {
    const c = this.#class(num(r.class)) ?? {};
    const e: StoredEvent = {
      id: num(r.id),
      time: num(r.time),
      src: String(r.src),
      dst: String(r.dst),
      protocol: c.protocol ?? '',
      verdict: (c.verdict ?? 'drop') as BlockedVerdict,
      reason: c.reason ?? '',
      source: (c.source ?? 'nflog') as BlockedSource,
      count: num(r.count),
    };
    if (c.fromZone !== undefined) e.fromZone = c.fromZone;
    if (c.toZone !== undefined) e.toZone = c.toZone;
    if (c.conduit !== undefined) e.conduit = c.conduit;
    if (c.flow !== undefined) e.flow = c.flow;
    if (c.inIface !== undefined) e.inIface = c.inIface;
    if (c.outIface !== undefined) e.outIface = c.outIface;
    const srcPort = optNum(r.src_port);
    if (srcPort !== undefined) e.srcPort = srcPort;
    const dstPort = optNum(r.dst_port);
    if (dstPort !== undefined) e.dstPort = dstPort;
    if (typeof r.detail === 'string') {
      try {
        e.detail = JSON.parse(r.detail) as EventDetail;
      } catch {
        // Written by us from JSON.stringify; a damaged value is dropped rather than failing the whole page.
      }
    }
    return e;
  }

  /** Lifetime event counts per conduit, most events first. */
  counts(): ConduitCount[] {
    this.flush();
    return this.#stmt('SELECT conduit, events, last_time FROM conduit_counts ORDER BY events DESC, conduit')
      .all()
      .map((r) => ({
        conduit: typeof r.conduit === 'string' && r.conduit !== '' ? r.conduit : null,
        events: num(r.events),
        lastTime: num(r.last_time),
      }));
  }

  stats(): LogStoreStats {
    this.flush();
    // A reader's copy lags the writer's: read the persisted counters.
    if (this.#opts.readOnly) this.#loadMeta();
    let bytes = 0;
    for (const suffix of ['', '-wal']) {
      try {
        bytes += statSync(this.path + suffix).size;
      } catch {
        // No WAL after a checkpoint that truncated it, or an in-memory store.
      }
    }
    return {
      stored: this.#meta.storedEvents,
      rows: this.#meta.storedRows,
      droppedByRetention: this.#meta.droppedEvents,
      droppedRowsByRetention: this.#meta.droppedRows,
      bytes,
    };
  }

  /** Commits queued events and closes the database; safe to call twice. */
  close(): void {
    if (!this.#db.isOpen) return;
    try {
      if (!this.#opts.readOnly) {
        this.flush();
        // Keep planner statistics current for the next open; limited so it stays fast.
        this.#db.exec('PRAGMA analysis_limit = 1000');
        this.#db.exec('PRAGMA optimize');
      }
    } finally {
      this.#db.close();
    }
  }
}

/** The literal bound lets SQLite prove that the partial source-port index applies. */
function srcPortCondition(port: number): Condition {
  return port < EPHEMERAL_PORTS
    ? { sql: `src_port = ? AND src_port < ${EPHEMERAL_PORTS}`, params: [port] }
    : { sql: 'src_port = ?', params: [port] };
}

function where(conds: readonly Condition[]): string {
  return conds.length === 0 ? '' : `WHERE ${conds.map((c) => c.sql).join(' AND ')}`;
}
