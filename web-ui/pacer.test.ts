import { describe, it, expect } from 'vitest';
import { RequestPacer } from './pacer.ts';

describe('RequestPacer', () => {
  it('lets a burst through, then paces a client to its rate, then rejects beyond the longest delay', () => {
    let t = 1_000_000;
    const p = new RequestPacer({ ratePerSecond: 10, burst: 5, maxDelayMs: 500, maxClients: 10 }, () => t);
    for (let i = 0; i < 5; i++) expect(p.decide('a')).toEqual({ kind: 'go', delayMs: 0 });
    // The 6th at the same instant waits one interval, the next two, …
    expect(p.decide('a')).toEqual({ kind: 'go', delayMs: 100 });
    expect(p.decide('a')).toEqual({ kind: 'go', delayMs: 200 });
    for (let i = 0; i < 3; i++) p.decide('a');
    expect(p.decide('a').kind).toBe('reject');
    // Another client is not affected.
    expect(p.decide('b')).toEqual({ kind: 'go', delayMs: 0 });
    // After a quiet second the bucket has refilled.
    t += 2000;
    expect(p.decide('a')).toEqual({ kind: 'go', delayMs: 0 });
  });

  it('holds a closed-loop client to the rate: n requests take about n/rate seconds', () => {
    let t = 0;
    const p = new RequestPacer({ ratePerSecond: 20, burst: 10, maxDelayMs: 10_000, maxClients: 10 }, () => t);
    for (let i = 0; i < 210; i++) {
      const d = p.decide('loop');
      expect(d.kind).toBe('go');
      if (d.kind === 'go') t += d.delayMs;
    }
    // 10 free, 200 paced at 20/s: about 10 s.
    expect(t).toBeGreaterThanOrEqual(9900);
    expect(t).toBeLessThanOrEqual(10_100);
  });

  it('forgets the least recently seen client when full', () => {
    // burst 1: a remembered client's second request waits, a forgotten (new) one does not.
    const p = new RequestPacer({ maxClients: 3, ratePerSecond: 1, burst: 1, maxDelayMs: 10_000 }, () => 0);
    for (const k of ['a', 'b', 'c', 'a', 'd']) p.decide(k);
    expect(p.clients).toBe(3);
    // 'b' was the least recently seen when 'd' came ('a' was seen again after it): 'b' starts afresh.
    expect(p.decide('b')).toEqual({ kind: 'go', delayMs: 0 });
    expect(p.decide('a')).toEqual({ kind: 'go', delayMs: 2000 });
  });
});

describe('the UI paces every API request before doing any work', () => {
  it('answers 429 with Retry-After once a client is past its bucket and the longest delay', async () => {
    const { mkdtemp, rm } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { buildApp } = await import('./app.ts');
    const dir = await mkdtemp(join(tmpdir(), 'sluice-pacer-'));
    const { app } = await buildApp({
      stateDir: dir,
      daemon: async () => {
        throw new Error('not used');
      },
      https: false,
      pacer: { ratePerSecond: 1, burst: 2, maxDelayMs: 0 },
    });
    try {
      const codes: number[] = [];
      for (let i = 0; i < 4; i++)
        codes.push((await app.inject({ method: 'GET', url: '/api/health' })).statusCode);
      expect(codes).toEqual([200, 200, 429, 429]);
      const r = await app.inject({ method: 'GET', url: '/api/health' });
      expect(r.headers['retry-after']).toBeDefined();
    } finally {
      await app.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
