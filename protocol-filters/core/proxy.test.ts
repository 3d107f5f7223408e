import { createHash } from 'node:crypto';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { ProxyPlanEntry } from '../../policies/types.ts';
import type {
  ClientVerdict,
  ConnectionInspector,
  InspectorContext,
  InspectorFactory,
  ProxyEvent,
  ServerVerdict,
} from './inspector.ts';
import { ResponseOrderer } from './ordering.ts';
import {
  DEFAULT_PROXY_LIMITS,
  FlowProxy,
  effectiveLimits,
  normaliseAddress,
  sourceList,
  type PlanEntryWithLimits,
  type ProxyLimits,
} from './proxy.ts';
import { relayInspectorFactory } from './relay.ts';
import {
  connect,
  planEntry,
  probe,
  sleep,
  startUpstream,
  until,
  within,
  type Upstream,
} from './test-helpers.ts';

/**
 * A tiny line protocol standing in for Modbus/OPC UA: requests and answers are `\n`-terminated lines.
 * `deny…` is refused with `refused\n` (kept in order behind outstanding requests), `bad` closes the
 * connection, `boom` makes the inspector throw; everything else is forwarded. Server lines answer the
 * oldest outstanding request with the same text (the echo upstream guarantees that).
 */
class LineInspector implements ConnectionInspector {
  #buf = '';
  #srv = '';
  readonly #orderer: ResponseOrderer<string>;
  readonly ctx: InspectorContext;
  constructor(ctx: InspectorContext) {
    this.ctx = ctx;
    this.#orderer = new ResponseOrderer<string>(ctx.limits.maxOutstandingRequests);
  }
  onClientData(chunk: Buffer): ClientVerdict[] {
    this.#buf += chunk.toString('latin1');
    const out: ClientVerdict[] = [];
    let nl: number;
    while ((nl = this.#buf.indexOf('\n')) >= 0) {
      const line = this.#buf.slice(0, nl);
      this.#buf = this.#buf.slice(nl + 1);
      this.#completed++;
      if (line === 'boom') throw new Error('inspector bug');
      if (line === 'bad') {
        out.push({ action: 'close', event: { reason: 'malformed-frame', verdict: 'drop' } });
        return out;
      }
      if (line.startsWith('deny')) {
        const event = { reason: 'function-not-allowed', verdict: 'refuse' as const, detail: { line } };
        const now = this.#orderer.reply(Buffer.from('refused\n'));
        out.push(now ? { action: 'reply', bytes: now, event } : { action: 'log', event });
        continue;
      }
      if (!this.#orderer.request(line)) {
        out.push({ action: 'close', event: { reason: 'too-many-outstanding-requests', verdict: 'drop' } });
        return out;
      }
      out.push({ action: 'forward', bytes: Buffer.from(`${line}\n`) });
    }
    return out;
  }
  onServerData(chunk: Buffer): ServerVerdict[] {
    this.#srv += chunk.toString('latin1');
    const out: ServerVerdict[] = [];
    let nl: number;
    while ((nl = this.#srv.indexOf('\n')) >= 0) {
      const line = this.#srv.slice(0, nl);
      this.#srv = this.#srv.slice(nl + 1);
      const r = this.#orderer.answer(line);
      if (!r.matched) {
        out.push({ action: 'drop', event: { reason: 'unpaired-response', verdict: 'drop' } });
        continue;
      }
      out.push({ action: 'forward', bytes: Buffer.from(`${line}\n`) });
      for (const b of r.release) out.push({ action: 'forward', bytes: b });
    }
    return out;
  }
  hasPartialMessage(): boolean {
    return this.#buf.length > 0;
  }
  #completed = 0;
  completedMessages(): number {
    return this.#completed;
  }
}

const lineFactory: InspectorFactory = { create: (ctx) => new LineInspector(ctx) };

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(
  opts: {
    entry?: Partial<ProxyPlanEntry>;
    limits?: Partial<ProxyLimits>;
    factory?: InspectorFactory;
    upstream?: (s: net.Socket) => void;
  } = {},
): Promise<{ up: Upstream; proxy: FlowProxy; events: ProxyEvent[] }> {
  const up = await startUpstream(opts.upstream);
  cleanups.push(() => up.close());
  const events: ProxyEvent[] = [];
  const proxy = new FlowProxy(planEntry(up.port, opts.entry), opts.factory ?? relayInspectorFactory, {
    host: '127.0.0.1',
    ...(opts.limits ? { limits: opts.limits } : {}),
    onEvent: (e) => events.push(e),
  });
  await proxy.start();
  cleanups.push(() => proxy.stop());
  return { up, proxy, events };
}

async function client(port: number, localAddress?: string): ReturnType<typeof connect> {
  const c = await connect(port, localAddress);
  cleanups.push(() => void c.socket.destroy());
  return c;
}

describe('FlowProxy relay', () => {
  it('relays both ways from the gateway to the upstream and counts bytes', async () => {
    const { up, proxy } = await setup();
    const c = await client(proxy.port);
    c.socket.write('hello upstream');
    await c.waitFor((t) => t === 'hello upstream');
    expect(Buffer.concat(up.received[0] ?? []).toString()).toBe('hello upstream');
    expect(up.peers).toEqual(['127.0.0.1']);
    expect(proxy.stats).toMatchObject({ open: 1, accepted: 1, bytesToUpstream: 14, bytesToClient: 14 });
    expect(proxy.health()).toMatchObject({ state: 'listening', listening: true, port: proxy.port });
  });

  it('propagates a half-close: the answer still arrives after the client shut down writing', async () => {
    const { proxy } = await setup({
      upstream: (s) => {
        let got = '';
        s.on('data', (d: Buffer) => (got += d.toString()));
        s.on('end', () => s.end(`answer to ${got}`));
      },
    });
    const c = await client(proxy.port);
    c.socket.end('question');
    await within(c.closed);
    expect(c.data()).toBe('answer to question');
    await until(() => proxy.stats.open === 0);
  });

  it('closes the client when the upstream is unreachable and reports it', async () => {
    const { proxy, events, up } = await setup();
    await up.close(); // nothing listens on the upstream port any more
    const c = await client(proxy.port);
    await within(c.closed);
    await until(() => events.length > 0);
    expect(events[0]).toMatchObject({ reason: 'upstream-unreachable', verdict: 'drop', dstPort: up.port });
    expect(events[0]?.detail).toEqual({ error: 'ECONNREFUSED' });
  });

  it('stop() closes the port and every open connection', async () => {
    const { proxy } = await setup();
    const c = await client(proxy.port);
    c.socket.write('x');
    await c.waitFor((t) => t === 'x');
    const port = proxy.port;
    await proxy.stop();
    await within(c.closed);
    expect(await probe(port)).toBe('ECONNREFUSED');
    expect(proxy.state).toBe('stopped');
  });

  it('fails to start (rejects, nothing listening) when the port is taken', async () => {
    const { proxy: first } = await setup();
    const second = new FlowProxy(planEntry(1, { listenPort: first.port }), relayInspectorFactory, {
      host: '127.0.0.1',
    });
    await expect(second.start()).rejects.toThrow(/EADDRINUSE/);
    expect(second.health()).toMatchObject({ state: 'failed', listening: false });
  });
});

describe('FlowProxy source check', () => {
  it('refuses a source outside the entry sources with an event, and never connects upstream', async () => {
    const { proxy, events, up } = await setup({ entry: { sources: ['10.0.0.0/8', '127.0.0.2/32'] } });
    const c = await client(proxy.port, '127.0.0.1');
    const closed = await within(c.closed);
    expect(closed.error).toBe('ECONNRESET');
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      reason: 'source-not-allowed',
      verdict: 'refuse',
      conduit: 'hmi-to-plc',
      flow: 'poll',
      protocol: 'modbus',
      src: '127.0.0.1',
      dst: '127.0.0.1',
      dstPort: up.port,
    });
    expect(typeof events[0]?.time).toBe('number');
    expect(up.received).toHaveLength(0);
    expect(proxy.stats.refused).toBe(1);
    // The allowed /32 gets through.
    const ok = await client(proxy.port, '127.0.0.2');
    ok.socket.write('hi');
    await ok.waitFor((t) => t === 'hi');
  });

  it('in monitor mode relays a foreign source and logs would-refuse', async () => {
    const { proxy, events } = await setup({ entry: { sources: ['10.0.0.0/8'], mode: 'monitor' } });
    const c = await client(proxy.port);
    c.socket.write('hi');
    await c.waitFor((t) => t === 'hi');
    expect(events.map((e) => [e.reason, e.verdict, e.mode])).toEqual([
      ['source-not-allowed', 'would-refuse', 'monitor'],
    ]);
  });

  it('an empty source list admits nobody', async () => {
    const { proxy } = await setup({ entry: { sources: [] } });
    const c = await client(proxy.port);
    expect((await within(c.closed)).error).toBe('ECONNRESET');
  });

  it('parses CIDRs strictly and unmaps IPv4-mapped addresses', () => {
    expect(() => sourceList(['10.0.0.0/33'])).toThrow(/invalid source CIDR/);
    expect(() => sourceList(['nonsense/8'])).toThrow(/invalid source CIDR/);
    const list = sourceList(['10.1.0.0/16', 'fd00::/64']);
    expect(list.check('10.1.2.3', 'ipv4')).toBe(true);
    expect(list.check('10.2.0.1', 'ipv4')).toBe(false);
    expect(list.check('fd00::5', 'ipv6')).toBe(true);
    expect(normaliseAddress('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(normaliseAddress('fd00::1')).toBe('fd00::1');
  });

  it('refuses to construct with an invalid source (fail-closed at start, not at a connection)', () => {
    expect(() => new FlowProxy(planEntry(1, { sources: ['10.0.0.1/40'] }), relayInspectorFactory)).toThrow();
  });
});

describe('FlowProxy limits', () => {
  it('caps connections in total', async () => {
    const { proxy, events } = await setup({ limits: { maxConnections: 2 } });
    const a = await client(proxy.port, '127.0.0.1');
    await client(proxy.port, '127.0.0.2');
    await until(() => proxy.stats.open === 2);
    const c = await client(proxy.port, '127.0.0.3');
    expect((await within(c.closed)).error).toBe('ECONNRESET');
    expect(events.map((e) => e.reason)).toEqual(['too-many-connections']);
    // A slot frees up when a connection ends.
    a.socket.destroy();
    await until(() => proxy.stats.open === 1);
    const d = await client(proxy.port, '127.0.0.3');
    d.socket.write('again');
    await d.waitFor((t) => t === 'again');
  });

  it('caps connections per source without affecting other sources', async () => {
    const { proxy, events } = await setup({ limits: { maxConnectionsPerSource: 1 } });
    const a = await client(proxy.port, '127.0.0.1');
    await until(() => proxy.stats.open === 1);
    const b = await client(proxy.port, '127.0.0.1');
    expect((await within(b.closed)).error).toBe('ECONNRESET');
    expect(events.map((e) => [e.reason, e.src])).toEqual([['too-many-connections-from-source', '127.0.0.1']]);
    const other = await client(proxy.port, '127.0.0.2');
    other.socket.write('ok');
    await other.waitFor((t) => t === 'ok');
    a.socket.write('still');
    await a.waitFor((t) => t === 'still');
  });

  it('closes an idle connection, but not one that keeps talking', async () => {
    const { proxy, events } = await setup({ limits: { idleTimeoutMs: 400 } });
    const idle = await client(proxy.port);
    const busy = await client(proxy.port, '127.0.0.2');
    const started = Date.now();
    let sent = '';
    while (Date.now() - started < 900) {
      busy.socket.write('.');
      sent += '.';
      await sleep(100);
    }
    await within(idle.closed);
    expect(busy.socket.destroyed).toBe(false);
    await busy.waitFor((t) => t === sent);
    expect(events.map((e) => [e.reason, e.src])).toEqual([['idle-timeout', '127.0.0.1']]);
  });

  it('cuts a slow sender whose message trickles in a byte at a time', async () => {
    const { proxy, events, up } = await setup({ factory: lineFactory, limits: { messageTimeoutMs: 400 } });
    const fast = await client(proxy.port, '127.0.0.2');
    fast.socket.write('quick\n');
    await fast.waitFor((t) => t === 'quick\n');
    const slow = await client(proxy.port);
    const started = Date.now();
    // One byte every 100 ms: steady progress, but the line never completes within 400 ms.
    const timer = setInterval(() => slow.socket.writable && slow.socket.write('z'), 100);
    await within(slow.closed);
    clearInterval(timer);
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(350);
    expect(took).toBeLessThan(1500);
    expect(events.map((e) => e.reason)).toEqual(['message-timeout']);
    // Complete messages never start the clock: the fast client is untouched.
    fast.socket.write('again\n');
    await fast.waitFor((t) => t === 'quick\nagain\n');
    expect(up.received.flat().join('')).not.toContain('z');
  });

  it('does not cut a healthy pipelined sender whose every chunk ends one message and starts the next', async () => {
    const { proxy, events, up } = await setup({ factory: lineFactory, limits: { messageTimeoutMs: 300 } });
    const c = await client(proxy.port);
    // Every 100 ms a chunk completes the previous line and starts the next: a partial line is always held,
    // yet a message completes every 100 ms. 10 chunks = 1 s, far beyond the 300 ms message deadline.
    let k = 0;
    c.socket.write('l0-');
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        k++;
        c.socket.write(`${k - 1}\nl${k}-`);
        if (k === 10) {
          clearInterval(timer);
          resolve();
        }
      }, 100);
    });
    await c.waitFor((t) => t.split('\n').length === 11);
    expect(events.map((e) => e.reason)).toEqual([]);
    expect(up.received.flat().join('')).toContain('l9-9\n');
    // The deadline still holds for the last, never-completed line.
    await within(c.closed, 2000);
    expect(events.map((e) => e.reason)).toEqual(['message-timeout']);
  });

  it("applies the plan entry's own limits over the proxy defaults", async () => {
    let seen: InspectorContext | undefined;
    const factory: InspectorFactory = {
      create: (ctx) => {
        seen = ctx;
        return new LineInspector(ctx);
      },
    };
    const entry = {
      limits: { maxConnectionsPerSource: 1, maxOutstandingRequests: 3, requestTimeoutMs: 1234 },
    } as Partial<PlanEntryWithLimits>;
    const { proxy, events } = await setup({
      factory,
      entry,
      limits: { maxConnectionsPerSource: 5, maxOutstandingRequests: 7, idleTimeoutMs: 60_000 },
    });
    expect(proxy.limits).toMatchObject({
      maxConnectionsPerSource: 1,
      maxOutstandingRequests: 3,
      requestTimeoutMs: 1234,
      idleTimeoutMs: 60_000,
      maxConnections: DEFAULT_PROXY_LIMITS.maxConnections,
    });
    const first = await client(proxy.port);
    first.socket.write('x\n');
    await first.waitFor((t) => t === 'x\n');
    expect(seen?.limits).toEqual({ maxOutstandingRequests: 3, requestTimeoutMs: 1234 });
    const second = await client(proxy.port);
    await within(second.closed);
    expect(events.map((e) => e.reason)).toEqual(['too-many-connections-from-source']);
    expect(() =>
      effectiveLimits(planEntry(1, { limits: { idleTimeoutMs: -1 } } as Partial<PlanEntryWithLimits>)),
    ).toThrow(RangeError);
  });

  it('passes maxOutstandingRequests to the inspector, which enforces it', async () => {
    let seen: InspectorContext | undefined;
    const factory: InspectorFactory = {
      create: (ctx) => {
        seen = ctx;
        return new LineInspector(ctx);
      },
    };
    const { proxy, events } = await setup({
      factory,
      limits: { maxOutstandingRequests: 2 },
      upstream: () => {}, // never answers
    });
    const c = await client(proxy.port);
    c.socket.write('a\nb\nc\n');
    await within(c.closed);
    expect(seen?.limits.maxOutstandingRequests).toBe(2);
    expect(seen?.client.address).toBe('127.0.0.1');
    expect(events.map((e) => e.reason)).toEqual(['too-many-outstanding-requests']);
  });
});

describe('FlowProxy backpressure', () => {
  const TOTAL = 48 * 1024 * 1024;

  it('stops reading the client while the upstream does not read, then delivers every byte intact', async () => {
    let upstreamSocket: net.Socket | undefined;
    const hash = createHash('sha256');
    let got = 0;
    const { proxy } = await setup({
      upstream: (s) => {
        upstreamSocket = s;
        s.pause();
        s.on('data', (d: Buffer) => {
          hash.update(d);
          got += d.length;
        });
      },
    });
    const c = await client(proxy.port);
    const block = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < block.length; i++) block[i] = (i * 7919) & 0xff;
    const sentHash = createHash('sha256');
    for (let i = 0; i < TOTAL / block.length; i++) {
      c.socket.write(block);
      sentHash.update(block);
    }
    await until(() => upstreamSocket !== undefined);
    await sleep(500);
    // Without backpressure the proxy would have pulled everything into its own memory by now.
    expect(proxy.stats.bytesToUpstream).toBeLessThan(TOTAL / 2);
    upstreamSocket?.resume();
    await until(() => got === TOTAL, 20_000);
    expect(hash.digest('hex')).toBe(sentHash.digest('hex'));
  });

  it('stops reading the upstream while the client does not read, then delivers every byte intact', async () => {
    // A pattern with period 251 (prime, so never aligned with read sizes): a read buffer reused before its
    // bytes were written out would show up as a wrong byte at the client.
    const pattern = (i: number): number => i % 251;
    const { proxy } = await setup({
      upstream: (s) => {
        const block = Buffer.alloc(1024 * 1024);
        for (let i = 0; i < block.length; i++) block[i] = pattern(i);
        let left = TOTAL / block.length;
        const pump = (): void => {
          while (left > 0) {
            left--;
            if (!s.write(block)) {
              s.once('drain', pump);
              return;
            }
          }
          s.end();
        };
        pump();
      },
    });
    const c = await client(proxy.port);
    c.socket.pause();
    await sleep(500);
    expect(proxy.stats.bytesToClient).toBeLessThan(TOTAL / 2);
    let got = 0;
    let wrong = 0;
    c.socket.on('data', (d: Buffer) => {
      for (let i = 0; i < d.length; i++) if (d[i] !== pattern((got + i) % (1024 * 1024))) wrong++;
      got += d.length;
    });
    c.socket.resume();
    await until(() => got === TOTAL, 20_000);
    expect(wrong).toBe(0);
  });
});

describe('FlowProxy inspector verdicts', () => {
  it('answers a refused request itself, in request order, and never forwards it', async () => {
    // The upstream answers each line 50 ms late, so the refusal is decided while `one` is still outstanding.
    const { proxy, events, up } = await setup({
      factory: lineFactory,
      upstream: (s) => {
        s.on('data', (d: Buffer) => {
          up.received.at(-1)?.push(d);
          setTimeout(() => s.writable && s.write(d), 50);
        });
      },
    });
    const c = await client(proxy.port);
    c.socket.write('one\ndeny-write\ntwo\n');
    const text = await c.waitFor((t) => t.split('\n').length === 4);
    expect(text).toBe('one\nrefused\ntwo\n');
    expect(up.received.flat().join('')).toBe('one\ntwo\n');
    expect(events.map((e) => [e.reason, e.verdict, e.detail])).toEqual([
      ['function-not-allowed', 'refuse', { line: 'deny-write' }],
    ]);
    // With nothing outstanding a refusal goes out at once, and the connection stays usable.
    c.socket.write('deny-again\nthree\n');
    await c.waitFor((t) => t === 'one\nrefused\ntwo\nrefused\nthree\n');
  });

  it('closes only the offending connection on a close verdict; its bytes never reach the upstream', async () => {
    const { proxy, events, up } = await setup({ factory: lineFactory });
    const other = await client(proxy.port, '127.0.0.2');
    const c = await client(proxy.port);
    c.socket.write('fine\n');
    await c.waitFor((t) => t === 'fine\n');
    c.socket.write('bad\nafter\n');
    await within(c.closed);
    expect(events.map((e) => e.reason)).toEqual(['malformed-frame']);
    expect(up.received.flat().join('')).toBe('fine\n');
    other.socket.write('other\n');
    await other.waitFor((t) => t === 'other\n');
    expect(proxy.stats.cut).toBe(1);
  });

  it('drops a server message on a drop verdict and keeps relaying', async () => {
    const { proxy, events } = await setup({
      factory: lineFactory,
      upstream: (s) => {
        s.write('unsolicited\n');
        s.on('data', (d: Buffer) => s.write(d));
      },
    });
    const c = await client(proxy.port);
    await until(() => events.length === 1);
    c.socket.write('req\n');
    await c.waitFor((t) => t === 'req\n');
    expect(events.map((e) => [e.reason, e.verdict])).toEqual([['unpaired-response', 'drop']]);
  });

  it('server bytes an inspector keeps stay intact while later reads arrive', async () => {
    // Like the Modbus filter's ordering queue: answers are held by reference and released later. The proxy
    // reads upstream data into one shared buffer, so it must hand inspectors copies.
    const holdFactory: InspectorFactory = {
      create: () => {
        const held: Buffer[] = [];
        return {
          onClientData: (chunk) => [{ action: 'forward', bytes: chunk }],
          onServerData: (chunk) => {
            held.push(chunk);
            if (!chunk.toString('latin1').includes('flush')) return [];
            return held.splice(0).map((bytes) => ({ action: 'forward' as const, bytes }));
          },
          hasPartialMessage: () => false,
        };
      },
    };
    const { proxy } = await setup({
      factory: holdFactory,
      upstream: (s) => {
        s.write('first answer\n');
        setTimeout(() => s.write('second flush\n'), 200);
      },
    });
    const c = await client(proxy.port);
    expect(await c.waitFor((t) => t.includes('flush'))).toBe('first answer\nsecond flush\n');
  });

  it('an inspector that throws cuts its own connection only; the proxy keeps serving', async () => {
    const { proxy, events } = await setup({ factory: lineFactory });
    const c = await client(proxy.port);
    c.socket.write('boom\n');
    await within(c.closed);
    expect(events.map((e) => [e.reason, e.detail])).toEqual([
      ['inspector-error', { error: 'inspector bug' }],
    ]);
    expect(proxy.health()).toMatchObject({ state: 'listening', stats: { lastError: 'inspector bug' } });
    const d = await client(proxy.port);
    d.socket.write('ok\n');
    await d.waitFor((t) => t === 'ok\n');
  });

  it('refuses the connection when the factory cannot create an inspector', async () => {
    const { proxy, events, up } = await setup({
      factory: {
        create: () => {
          throw new Error('no parser');
        },
      },
    });
    const c = await client(proxy.port);
    expect((await within(c.closed)).error).toBe('ECONNRESET');
    expect(events.map((e) => e.reason)).toEqual(['inspector-error']);
    expect(up.received).toHaveLength(0);
    expect(proxy.state).toBe('listening');
  });

  it('a fault of the proxy itself closes its port and reports the failure', async () => {
    const up = await startUpstream();
    cleanups.push(() => up.close());
    const failures: Error[] = [];
    const proxy = new FlowProxy(planEntry(up.port), relayInspectorFactory, {
      host: '127.0.0.1',
      onFailure: (e) => failures.push(e),
    });
    await proxy.start();
    cleanups.push(() => proxy.stop());
    const c = await client(proxy.port);
    proxy.fail(new Error('handler crashed'));
    await within(c.closed);
    await until(() => failures.length === 1);
    expect(await probe(proxy.port)).toBe('ECONNREFUSED');
    expect(proxy.health()).toMatchObject({
      state: 'failed',
      listening: false,
      stats: { lastError: 'handler crashed' },
    });
  });
});
