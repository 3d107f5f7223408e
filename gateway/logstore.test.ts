import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SluiceError } from '../policies/errors.ts';
import type { BlockedEvent, StoredEvent } from './events.ts';
import { LogStore, decodeCursor, encodeCursor, type LogQuery, type LogStoreOptions } from './logstore.ts';

let dir: string;
const open: LogStore[] = [];
const BIG = { maxBytes: 1024 ** 3, maxAgeMs: 365 * 24 * 3600_000 };

function store(opts: Partial<LogStoreOptions> = {}, name = 'logs.db'): LogStore {
  const s = LogStore.open(join(dir, name), { ...BIG, ...opts });
  open.push(s);
  return s;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-logstore-'));
});
afterEach(() => {
  for (const s of open.splice(0)) s.close();
  rmSync(dir, { recursive: true, force: true });
});

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);

function ev(over: Partial<BlockedEvent> = {}): BlockedEvent {
  return {
    time: T0,
    fromZone: 'enterprise',
    toZone: 'control',
    conduit: 'hmi-to-plc',
    src: '10.1.0.5',
    dst: '10.2.0.10',
    srcPort: 40000,
    dstPort: 502,
    protocol: 'tcp',
    verdict: 'drop',
    reason: 'no-flow',
    source: 'nflog',
    count: 1,
    ...over,
  };
}

function strip(e: StoredEvent): BlockedEvent {
  const { id: _id, ...rest } = e;
  return rest;
}

describe('ingest and read back', () => {
  it('keeps every field, including optional ones and detail', () => {
    const s = store();
    const full = ev({
      flow: 'read-coils',
      inIface: 'eth1',
      outIface: 'eth2',
      verdict: 'refuse',
      reason: 'modbus.illegal-function',
      source: 'modbus',
      detail: { unit: 1, function: 8, addresses: [0, 10] },
    });
    const minimal: BlockedEvent = {
      time: T0 + 5000,
      src: 'fd00::1',
      dst: 'fd00::2',
      protocol: 'icmpv6',
      verdict: 'would-drop',
      reason: 'no-conduit',
      source: 'nflog',
      count: 1,
    };
    s.ingest([full, minimal]);
    const { events } = s.query();
    expect(events.map(strip)).toEqual([minimal, full]);
    expect(events[0]?.id).toBeGreaterThan(0);
  });

  it('rejects writes on a read-only store', () => {
    store().close();
    const ro = store({ readOnly: true });
    expect(() => ro.ingest([ev()])).toThrow(SluiceError);
  });
});

describe('openReader', () => {
  it('reads beside a live writer, refuses writes, and never applies retention of its own', () => {
    // The writer keeps a week; events from 2026-01-01 are far older than that by now, yet only the writer's
    // retention may remove them: opening a reader must not.
    const w = store({ maxAgeMs: 7 * 24 * 3600_000, now: () => T0 + 1000 });
    w.ingest([ev(), ev({ time: T0 + 500, src: '10.1.0.99' })]);
    const r = LogStore.openReader(join(dir, 'logs.db'));
    open.push(r);
    expect(r.query().events).toHaveLength(2);
    w.ingest([ev({ time: T0 + 800, dst: '10.2.0.99' })]);
    expect(r.query().events).toHaveLength(3);
    expect(() => r.ingest([ev()])).toThrow(SluiceError);
  });
});

describe('aggregation', () => {
  it('merges identical events within one second into one row with a count', () => {
    const s = store();
    s.ingest([ev({ time: T0 + 100 }), ev({ time: T0 + 900 }), ev({ time: T0 + 50, count: 3 })]);
    const { events } = s.query();
    expect(events).toHaveLength(1);
    expect(events[0]?.count).toBe(5);
    // The row keeps the first occurrence's time.
    expect(events[0]?.time).toBe(T0 + 50);
    expect(s.stats()).toMatchObject({ stored: 5, rows: 1 });
  });

  it('keeps events of different seconds or different fields apart', () => {
    const s = store();
    s.ingest([
      ev(),
      ev({ time: T0 + 1000 }),
      ev({ srcPort: 40001 }),
      ev({ verdict: 'would-drop' }),
      ev({ detail: { unit: 2 } }),
      ev({ detail: { unit: 3 } }),
      ev({ conduit: undefined }),
    ]);
    expect(s.query().events).toHaveLength(7);
    expect(s.stats()).toMatchObject({ stored: 7, rows: 7 });
  });

  it('merges into the row of the same second written by an earlier batch', () => {
    const s = store();
    s.ingest([ev({ time: T0 + 10 })]);
    s.ingest([ev({ time: T0 + 20 }), ev({ time: T0 + 1010 })]);
    s.ingest([ev({ time: T0 + 30 }), ev({ time: T0 + 1020 })]);
    const { events } = s.query();
    expect(events.map((e) => [e.time, e.count])).toEqual([
      [T0 + 1010, 2],
      [T0 + 10, 3],
    ]);
    expect(s.stats()).toMatchObject({ stored: 5, rows: 2 });
  });

  it('enqueue gathers events until flush, a full queue, or the timer', async () => {
    const s = store({ flushMs: 30, flushEvents: 3 });
    s.enqueue([ev()]);
    // The query path flushes first, so look at the persisted counter through a second, read-only handle.
    const ro = store({ readOnly: true });
    expect(ro.stats().rows).toBe(0);
    s.enqueue([ev({ time: T0 + 1000 }), ev({ time: T0 + 2000 })]);
    expect(ro.stats().rows).toBe(3);
    s.enqueue([ev({ time: T0 + 3000 })]);
    expect(ro.stats().rows).toBe(3);
    await new Promise((r) => setTimeout(r, 120));
    expect(ro.stats().rows).toBe(4);
    s.enqueue([ev({ time: T0 + 4000 })]);
    s.close();
    expect(ro.query().events).toHaveLength(5);
  });
});

describe('queries', () => {
  // A small world with every field varied; the oracle is a plain filter over the same array.
  const zones = ['enterprise', 'dmz', 'control'];
  const data: BlockedEvent[] = [];
  for (let i = 0; i < 240; i++) {
    const e: BlockedEvent = {
      time: T0 + i * 1000 + (i % 7),
      fromZone: zones[i % 3] as string,
      toZone: zones[(i + 1) % 3] as string,
      src: `10.1.0.${i % 5}`,
      dst: `10.2.0.${i % 4}`,
      protocol: i % 10 === 0 ? 'icmp' : i % 3 === 0 ? 'udp' : 'tcp',
      verdict: i % 11 === 0 ? 'refuse' : i % 4 === 0 ? 'would-drop' : 'drop',
      reason: i % 11 === 0 ? 'modbus.illegal-function' : i % 6 === 0 ? 'no-conduit' : 'no-flow',
      source: i % 11 === 0 ? 'modbus' : 'nflog',
      count: 1 + (i % 3),
    };
    if (e.reason !== 'no-conduit') e.conduit = `c${i % 4}`;
    if (e.protocol !== 'icmp') {
      // Some ports are below the ephemeral range (served by the partial index), some above.
      e.srcPort = i % 2 === 0 ? 502 : 40000 + (i % 3);
      e.dstPort = i % 2 === 0 ? 40000 + (i % 3) : [502, 4840, 22][i % 3];
    }
    if (i % 8 === 0) e.flow = 'f1';
    data.push(e);
  }
  const newestFirst = [...data].sort((a, b) => b.time - a.time);

  function oracle(q: LogQuery): BlockedEvent[] {
    return newestFirst.filter(
      (e) =>
        (q.since === undefined || e.time >= q.since) &&
        (q.until === undefined || e.time < q.until) &&
        (q.zone === undefined || e.fromZone === q.zone || e.toZone === q.zone) &&
        (q.fromZone === undefined || e.fromZone === q.fromZone) &&
        (q.toZone === undefined || e.toZone === q.toZone) &&
        (q.conduit === undefined ||
          (q.conduit === null ? e.conduit === undefined : e.conduit === q.conduit)) &&
        (q.flow === undefined || e.flow === q.flow) &&
        (q.src === undefined || e.src === q.src) &&
        (q.dst === undefined || e.dst === q.dst) &&
        (q.port === undefined || e.srcPort === q.port || e.dstPort === q.port) &&
        (q.srcPort === undefined || e.srcPort === q.srcPort) &&
        (q.dstPort === undefined || e.dstPort === q.dstPort) &&
        (q.protocol === undefined || e.protocol === q.protocol) &&
        (q.verdict === undefined || e.verdict === q.verdict) &&
        (q.reason === undefined || e.reason === q.reason) &&
        (q.source === undefined || e.source === q.source),
    );
  }

  const cases: [string, LogQuery][] = [
    ['everything', {}],
    ['since', { since: T0 + 100_000 }],
    ['until', { until: T0 + 50_000 }],
    ['time range', { since: T0 + 20_000, until: T0 + 80_000 }],
    ['zone (either side)', { zone: 'dmz' }],
    ['fromZone', { fromZone: 'control' }],
    ['toZone', { toZone: 'enterprise' }],
    ['conduit', { conduit: 'c1' }],
    ['no conduit', { conduit: null }],
    ['flow', { flow: 'f1' }],
    ['src', { src: '10.1.0.3' }],
    ['dst', { dst: '10.2.0.2' }],
    ['port (either side)', { port: 502 }],
    ['srcPort below ephemeral', { srcPort: 502 }],
    ['srcPort ephemeral', { srcPort: 40001 }],
    ['dstPort', { dstPort: 4840 }],
    ['protocol', { protocol: 'udp' }],
    ['verdict', { verdict: 'would-drop' }],
    ['reason', { reason: 'modbus.illegal-function' }],
    ['source', { source: 'modbus' }],
    ['src + dstPort', { src: '10.1.0.1', dstPort: 502 }],
    ['zone + port + time', { zone: 'enterprise', port: 40002, since: T0 + 30_000 }],
    ['conduit + verdict', { conduit: 'c2', verdict: 'drop' }],
    ['src + srcPort', { src: '10.1.0.2', srcPort: 502 }],
    ['unknown conduit', { conduit: 'nope' }],
    ['unknown src', { src: '10.9.9.9' }],
  ];

  it.each(cases)('filter: %s', (_name, q) => {
    const s = store();
    s.ingest(data);
    const want = oracle(q);
    const got = s.query({ ...q, limit: 1000, total: true });
    expect(got.events.map(strip)).toEqual(want);
    expect(got.total).toBe(want.length);
    expect(got.nextCursor).toBeUndefined();
  });

  it.each([
    ['no filter', {}],
    ['either-side zone', { zone: 'control' }],
    ['either-side port', { port: 502 }],
    ['conduit', { conduit: 'c0' }],
  ] as [string, LogQuery][])('pages without gaps or repeats: %s', (_name, q) => {
    const s = store();
    // Several rows per millisecond make the id tie-break matter.
    s.ingest(data.map((e, i) => ({ ...e, time: T0 + Math.floor(i / 3) })));
    const all = s.query({ ...q, limit: 1000 }).events;
    expect(all.length).toBeGreaterThan(20);
    const paged: StoredEvent[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = s.query(cursor === undefined ? { ...q, limit: 7 } : { ...q, limit: 7, cursor });
      expect(page.events.length).toBeLessThanOrEqual(7);
      paged.push(...page.events);
      cursor = page.nextCursor;
      pages++;
    } while (cursor !== undefined && pages < 1000);
    expect(paged.map((e) => e.id)).toEqual(all.map((e) => e.id));
    expect(new Set(paged.map((e) => e.id)).size).toBe(paged.length);
  });

  it('refuses a bad cursor or limit with a user error', () => {
    const s = store();
    expect(() => s.query({ cursor: 'garbage!' })).toThrow(SluiceError);
    expect(() => s.query({ cursor: Buffer.from('1:2; DROP TABLE events').toString('base64url') })).toThrow(
      /cursor/,
    );
    expect(() => s.query({ limit: 0 })).toThrow(/limit/);
    expect(() => s.query({ limit: 1001 })).toThrow(/limit/);
    expect(decodeCursor(encodeCursor(T0, 42))).toEqual({ time: T0, id: 42 });
  });

  it('treats hostile filter values as data', () => {
    const s = store();
    s.ingest(data);
    expect(s.query({ src: "' OR 1=1 --" }).events).toEqual([]);
    expect(s.query({ conduit: "c1' OR '1'='1" }).events).toEqual([]);
  });

  it('sees classes added by another writer from a read-only handle', () => {
    const w = store();
    w.ingest([ev()]);
    const ro = store({ readOnly: true });
    expect(ro.query({ conduit: 'hmi-to-plc' }).events).toHaveLength(1);
    w.ingest([ev({ conduit: 'later', time: T0 + 5000 })]);
    expect(ro.query({ conduit: 'later' }).events.map((e) => e.conduit)).toEqual(['later']);
  });
});

describe('counts per conduit', () => {
  it('counts lifetime events per conduit, null for no conduit, untouched by retention', () => {
    let now = T0 + 10_000;
    const s = store({ maxAgeMs: 60_000, now: () => now, retentionIntervalMs: 0 });
    s.ingest([
      ev({ count: 4 }),
      ev({ conduit: 'other', time: T0 + 2000 }),
      ev({ conduit: undefined, time: T0 + 3000 }),
    ]);
    s.ingest([ev({ time: T0 + 5000 })]);
    const want = [
      { conduit: 'hmi-to-plc', events: 5, lastTime: T0 + 5000 },
      { conduit: null, events: 1, lastTime: T0 + 3000 },
      { conduit: 'other', events: 1, lastTime: T0 + 2000 },
    ];
    expect(s.counts()).toEqual(want);
    now = T0 + 3600_000;
    expect(s.enforceRetention().droppedRows).toBe(4);
    expect(s.counts()).toEqual(want);
  });
});

describe('retention', () => {
  it('drops events older than maxAgeMs, oldest first, and counts them persistently', () => {
    // The clock starts early enough that the automatic pass after the first ingest finds nothing to drop.
    let now = T0 - 100_000;
    const s = store({ maxAgeMs: 10_000, now: () => now, retentionIntervalMs: 3_600_000 });
    s.ingest([
      ev({ time: T0 - 20_000, count: 2 }),
      ev({ time: T0 - 15_000 }),
      ev({ time: T0 - 5_000 }),
      ev({ time: T0 }),
    ]);
    expect(s.stats()).toMatchObject({ rows: 4, droppedByRetention: 0 });
    now = T0 + 1;
    expect(s.enforceRetention()).toEqual({ droppedEvents: 3, droppedRows: 2 });
    expect(s.query().events.map((e) => e.time)).toEqual([T0, T0 - 5_000]);
    expect(s.stats()).toMatchObject({ stored: 2, rows: 2, droppedByRetention: 3, droppedRowsByRetention: 2 });
    s.close();
    const again = store({ maxAgeMs: 10_000, now: () => now });
    expect(again.stats()).toMatchObject({ stored: 2, rows: 2, droppedByRetention: 3 });
  });

  it('runs by itself after ingest once the interval has passed', () => {
    let now = T0;
    const s = store({ maxAgeMs: 10_000, now: () => now, retentionIntervalMs: 1000 });
    s.ingest([ev({ time: T0 })]);
    now = T0 + 500;
    s.ingest([ev({ time: T0 - 60_000 })]);
    // Within the interval of the last pass (made by the first ingest at T0): the old row is still there.
    expect(s.stats().rows).toBe(2);
    now = T0 + 2000;
    s.ingest([ev({ time: now })]);
    expect(s.query().events.map((e) => e.time)).toEqual([T0 + 2000, T0]);
    expect(s.stats().droppedByRetention).toBe(1);
  });

  it('keeps the live data under maxBytes by dropping the oldest rows', () => {
    const maxBytes = 512 * 1024;
    const s = store({ maxBytes, retentionIntervalMs: 0, now: () => T0 + 100_000_000 });
    let ingested = 0;
    for (let b = 0; b < 30; b++) {
      const batch: BlockedEvent[] = [];
      for (let i = 0; i < 500; i++) {
        const n = b * 500 + i;
        batch.push(ev({ time: T0 + n * 10, src: `10.1.${n >> 8}.${n & 255}`, srcPort: 32768 + (n % 20000) }));
      }
      s.ingest(batch);
      ingested += batch.length;
    }
    const st = s.stats();
    expect(st.droppedByRetention).toBeGreaterThan(0);
    expect(st.stored + st.droppedByRetention).toBe(ingested);
    // The file holds the live data plus pages not yet handed back; the WAL is capped separately.
    const { events } = s.query({ limit: 1000 });
    expect(events[0]?.time).toBe(T0 + (ingested - 1) * 10);
    // Everything still stored is newer than everything dropped.
    const all: number[] = [];
    let cursor: string | undefined;
    do {
      const page = s.query(cursor === undefined ? { limit: 1000 } : { limit: 1000, cursor });
      all.push(...page.events.map((e) => e.time));
      cursor = page.nextCursor;
    } while (cursor !== undefined);
    expect(all).toHaveLength(st.rows);
    expect(Math.min(...all)).toBe(T0 + st.droppedRowsByRetention * 10);
    s.close();
    // After close (checkpoint) the file itself is bounded too.
    const reopened = store({ maxBytes, now: () => T0 + 100_000_000 });
    expect(reopened.stats().bytes).toBeLessThan(maxBytes * 1.5);
  });
});
