import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { ProxyPlan, ProxyPlanEntry } from '../../policies/types.ts';
import type { InspectorFactory, ProxyEvent } from './inspector.ts';
import { RelayInspector, relayInspectorFactory } from './relay.ts';
import { ProxySupervisor, entryKey, type InspectorFactories } from './supervisor.ts';
import {
  connect,
  freePort,
  planEntry,
  probe,
  startUpstream,
  until,
  within,
  type Upstream,
} from './test-helpers.ts';

const factories: InspectorFactories = { modbus: relayInspectorFactory, opcua: relayInspectorFactory };
const plan = (...entries: ProxyPlanEntry[]): ProxyPlan => ({ version: 1, entries });

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function fixture(): Promise<{
  up: Upstream;
  sup: ProxySupervisor;
  a: ProxyPlanEntry;
  b: ProxyPlanEntry;
}> {
  const up = await startUpstream();
  cleanups.push(() => up.close());
  const events: ProxyEvent[] = [];
  const sup = new ProxySupervisor({ host: '127.0.0.1', minBackoffMs: 100, onEvent: (e) => events.push(e) });
  cleanups.push(() => sup.stop());
  const a = planEntry(up.port, { flow: 'poll', listenPort: await freePort() });
  const b = planEntry(up.port, { flow: 'write', listenPort: await freePort(), protocol: 'opcua' });
  return { up, sup, a, b };
}

async function echoes(port: number, msg: string): Promise<void> {
  const c = await connect(port);
  try {
    c.socket.write(msg);
    await c.waitFor((t) => t === msg);
  } finally {
    c.socket.destroy();
  }
}

async function openClient(port: number): ReturnType<typeof connect> {
  const c = await connect(port);
  cleanups.push(() => void c.socket.destroy());
  c.socket.write('hello');
  await c.waitFor((t) => t === 'hello');
  return c;
}

describe('ProxySupervisor', () => {
  it('starts one proxy per entry and reports health', async () => {
    const { sup, a, b } = await fixture();
    const r = await sup.applyPlan(plan(a, b), factories);
    expect(r).toEqual({
      started: [entryKey(a), entryKey(b)].sort(),
      restarted: [],
      stopped: [],
      unchanged: [],
      failed: [],
    });
    await echoes(a.listenPort, 'via a');
    await echoes(b.listenPort, 'via b');
    const health = sup.health();
    expect(health.map((h) => [h.flow, h.state, h.listenPort, h.protocol])).toEqual([
      ['poll', 'up', a.listenPort, 'modbus'],
      ['write', 'up', b.listenPort, 'opcua'],
    ]);
    expect(health[0]?.stats?.accepted).toBe(1);
  });

  it('leaves unchanged entries (and their connections) alone, restarts changed ones, stops removed ones', async () => {
    const { sup, a, b } = await fixture();
    await sup.applyPlan(plan(a, b), factories);
    const ca = await openClient(a.listenPort);
    const cb = await openClient(b.listenPort);
    const b2: ProxyPlanEntry = { ...b, sources: ['127.0.0.1/32'] };
    const r = await sup.applyPlan(plan({ ...a }, b2), factories);
    expect(r.unchanged).toEqual([entryKey(a)]);
    expect(r.restarted).toEqual([entryKey(b)]);
    // The changed entry's old connections were cut: they were admitted under the old spec.
    await within(cb.closed);
    ca.socket.write(' again');
    await ca.waitFor((t) => t === 'hello again');
    await echoes(b.listenPort, 'new b');

    const r2 = await sup.applyPlan(plan(a), factories);
    expect(r2.stopped).toEqual([entryKey(b)]);
    expect(r2.unchanged).toEqual([entryKey(a)]);
    expect(await probe(b.listenPort)).toBe('ECONNREFUSED');
    expect(sup.health().map((h) => h.flow)).toEqual(['poll']);
    ca.socket.write('!');
    await ca.waitFor((t) => t === 'hello again!');
  });

  it('restarts an entry whose inspector factory changed', async () => {
    const { sup, a } = await fixture();
    await sup.applyPlan(plan(a), factories);
    const other: InspectorFactory = { create: () => new RelayInspector() };
    const r = await sup.applyPlan(plan(a), { ...factories, modbus: other });
    expect(r.restarted).toEqual([entryKey(a)]);
    const r2 = await sup.applyPlan(plan(a), { ...factories, modbus: other });
    expect(r2.unchanged).toEqual([entryKey(a)]);
  });

  it("runs each proxy with the entry's own limits over the supervisor defaults; a changed limit restarts it", async () => {
    const up = await startUpstream();
    cleanups.push(() => up.close());
    const sup = new ProxySupervisor({
      host: '127.0.0.1',
      limits: { idleTimeoutMs: 60_000, maxConnections: 9 },
    });
    cleanups.push(() => sup.stop());
    const base = planEntry(up.port, { listenPort: await freePort() });
    const limited = { ...base, limits: { maxConnections: 2 } };
    await sup.applyPlan(plan(limited), factories);
    expect(sup.proxy(entryKey(base))?.limits).toMatchObject({ maxConnections: 2, idleTimeoutMs: 60_000 });
    const same = await sup.applyPlan(plan({ ...limited, limits: { maxConnections: 2 } }), factories);
    expect(same.unchanged).toEqual([entryKey(base)]);
    const changed = await sup.applyPlan(plan({ ...base, limits: { maxConnections: 3 } }), factories);
    expect(changed.restarted).toEqual([entryKey(base)]);
    expect(sup.proxy(entryKey(base))?.limits.maxConnections).toBe(3);
    await sup.applyPlan(plan(base), factories);
    expect(sup.proxy(entryKey(base))?.limits.maxConnections).toBe(9);
  });

  it('moves a port from a removed entry to a new one in the same apply', async () => {
    const { sup, a, b } = await fixture();
    await sup.applyPlan(plan(a), factories);
    const moved = { ...b, listenPort: a.listenPort };
    const r = await sup.applyPlan(plan(moved), factories);
    expect(r).toMatchObject({ stopped: [entryKey(a)], started: [entryKey(b)], failed: [] });
    await echoes(a.listenPort, 'same port, new flow');
  });

  it('retries an entry that cannot bind with backoff, without touching the others', async () => {
    const { sup, a, b } = await fixture();
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(b.listenPort, '127.0.0.1', resolve));
    const r = await sup.applyPlan(plan(a, b), factories);
    expect(r.started).toEqual([entryKey(a), entryKey(b)].sort());
    expect(r.failed).toEqual([entryKey(b)]);
    const down = sup.health().find((h) => h.flow === 'write');
    expect(down).toMatchObject({ state: 'down' });
    expect(down?.lastError).toMatch(/EADDRINUSE/);
    expect(down?.nextRetry).toBeGreaterThan(Date.now() - 1000);
    const ca = await openClient(a.listenPort);
    await new Promise<void>((resolve) => blocker.close(() => resolve()));
    await until(() => sup.health().find((h) => h.flow === 'write')?.state === 'up', 5000);
    expect(sup.health().find((h) => h.flow === 'write')?.restarts).toBeGreaterThanOrEqual(1);
    await echoes(b.listenPort, 'b is back');
    ca.socket.write('+');
    await ca.waitFor((t) => t === 'hello+');
  });

  it('a proxy that crashes is down (port closed, flow blocked) until its restart, others untouched', async () => {
    const { sup, a, b } = await fixture();
    await sup.applyPlan(plan(a, b), factories);
    const ca = await openClient(a.listenPort);
    const cb = await openClient(b.listenPort);
    const crashed = sup.proxy(entryKey(b));
    crashed?.fail(new Error('handler crashed'));
    await within(cb.closed);
    // Fail-closed: between the crash and the restart nothing answers on the port.
    expect(await probe(b.listenPort)).toBe('ECONNREFUSED');
    expect(sup.health().find((h) => h.flow === 'write')).toMatchObject({
      state: 'down',
      lastError: 'handler crashed',
    });
    await until(() => sup.health().find((h) => h.flow === 'write')?.state === 'up', 5000);
    expect(sup.proxy(entryKey(b))).not.toBe(crashed);
    expect(sup.health().find((h) => h.flow === 'write')?.restarts).toBe(1);
    await echoes(b.listenPort, 'restarted');
    ca.socket.write('+');
    await ca.waitFor((t) => t === 'hello+');
  });

  it('stop() closes every port; a stopped supervisor refuses new plans', async () => {
    const { sup, a, b } = await fixture();
    await sup.applyPlan(plan(a, b), factories);
    await sup.stop();
    expect(await probe(a.listenPort)).toBe('ECONNREFUSED');
    expect(await probe(b.listenPort)).toBe('ECONNREFUSED');
    await expect(sup.applyPlan(plan(a), factories)).rejects.toThrow(/stopped/);
  });

  it('rejects a plan with two entries for the same flow and destination', async () => {
    const { sup, a } = await fixture();
    await expect(sup.applyPlan(plan(a, { ...a, listenPort: a.listenPort + 1 }), factories)).rejects.toThrow(
      /two entries/,
    );
  });
});
