import { describe, expect, it } from 'vitest';
import { ResponseOrderer } from './ordering.ts';

const b = (s: string): Buffer => Buffer.from(s);
const text = (list: Buffer[]): string[] => list.map((x) => x.toString());

describe('ResponseOrderer', () => {
  it('sends a refusal at once when nothing is outstanding', () => {
    const o = new ResponseOrderer<number>(4);
    expect(o.reply(b('r1'))?.toString()).toBe('r1');
    expect(o.queuedReplies).toBe(0);
  });

  it('holds a refusal behind earlier requests and releases it after the last of them is answered', () => {
    const o = new ResponseOrderer<number>(4);
    expect(o.request(1)).toBe(true);
    expect(o.request(2)).toBe(true);
    expect(o.reply(b('refuse-3'))).toBeUndefined();
    expect(o.request(4)).toBe(true);
    expect(o.reply(b('refuse-5'))).toBeUndefined();
    expect(o.outstanding).toBe(3);
    expect(o.queuedReplies).toBe(2);
    expect(text(o.answer(1).release)).toEqual([]);
    expect(text(o.answer(2).release)).toEqual(['refuse-3']);
    expect(text(o.answer(4).release)).toEqual(['refuse-5']);
    expect(o.outstanding).toBe(0);
    expect(o.queuedReplies).toBe(0);
    expect(o.reply(b('now'))?.toString()).toBe('now');
  });

  it('copes with out-of-order answers: a reply waits for every request before it', () => {
    const o = new ResponseOrderer<number>(4);
    o.request(1);
    o.request(2);
    o.reply(b('r'));
    expect(text(o.answer(2).release)).toEqual([]);
    expect(text(o.answer(1).release)).toEqual(['r']);
  });

  it('reports unpaired answers and pairs a reused key with its earliest request', () => {
    const o = new ResponseOrderer<number>(4);
    expect(o.answer(9)).toEqual({ matched: false, release: [] });
    o.request(7);
    o.request(7);
    expect(o.answer(7).matched).toBe(true);
    expect(o.answer(7).matched).toBe(true);
    expect(o.answer(7).matched).toBe(false);
    expect(o.pending(7)).toBeUndefined();
  });

  it('enforces the outstanding limit, and counts queued replies against it', () => {
    const o = new ResponseOrderer<number>(2);
    expect(o.request(1)).toBe(true);
    expect(o.request(2)).toBe(true);
    expect(o.request(3)).toBe(false);
    expect(o.outstanding).toBe(2);
    o.answer(2);
    o.reply(b('a'));
    expect(o.size).toBe(2);
    o.reply(b('b'));
    expect(o.size).toBe(3);
  });

  it('an optional-answer request holds no reply, pairs if answered, expires silently and takes a slot', () => {
    const o = new ResponseOrderer<number, string>(2);
    expect(o.request(1, 'broadcast', 100, { optional: true })).toBe(true);
    expect(o.outstanding).toBe(0);
    expect(o.size).toBe(1);
    const refusal = Buffer.from('refused');
    expect(o.reply(refusal)).toBe(refusal);
    expect(o.answer(1)).toEqual({ matched: true, value: 'broadcast', release: [] });
    expect(o.answer(1).matched).toBe(false);

    o.request(2, 'b2', 100, { optional: true });
    expect(o.nextDeadline()).toBe(100);
    expect(o.expire(100)).toEqual({ expired: [], release: [] });
    expect(o.size).toBe(0);

    expect(o.request(10, 'b10', Infinity, { optional: true })).toBe(true);
    expect(o.request(11, 'poll')).toBe(true);
    // Limit 2: optional and waiting requests share it.
    expect(o.request(12, 'b12', Infinity, { optional: true })).toBe(false);
    expect(o.request(13, 'poll2')).toBe(false);
    expect(o.size).toBe(2);
  });

  it('pairs a key with a waiting request before an optional one, unless only the optional one accepts it', () => {
    const o = new ResponseOrderer<number, string>(4);
    o.request(0, 'broadcast', Infinity, { optional: true });
    o.request(0, 'poll');
    expect(o.pending(0)).toBe('poll');
    const isBroadcast = (v: string | undefined): boolean => v === 'broadcast';
    expect(o.pending(0, isBroadcast)).toBe('broadcast');
    expect(o.answer(0, isBroadcast)).toMatchObject({ matched: true, value: 'broadcast' });
    // A waiting request that does not accept still pairs (its caller reports the mismatch)…
    expect(o.answer(0, isBroadcast)).toMatchObject({ matched: true, value: 'poll' });
    // …but an optional one that does not accept never does.
    o.request(5, 'other', Infinity, { optional: true });
    expect(o.pending(5, isBroadcast)).toBeUndefined();
    expect(o.answer(5, isBroadcast).matched).toBe(false);
  });
});
