import { describe, it, expect } from 'vitest';
import { LoginThrottle, SessionStore, sourceKey, FREE_ATTEMPTS } from './auth.ts';

describe('auth helpers', () => {
  it('attempt() counts before the password check: the check cannot be passed twice concurrently', () => {
    const t = new LoginThrottle({ now: () => 0 });
    const results = Array.from({ length: 10 }, () => t.attempt('s'));
    expect(results.filter((r) => r.refusedMs === 0)).toHaveLength(FREE_ATTEMPTS);
    t.success('s');
    expect(t.attempt('s').refusedMs).toBe(0);
  });

  it('touch with refresh false does not extend the idle period', () => {
    let now = 0;
    const s = new SessionStore({ idleTimeoutMs: 100, now: () => now });
    const x = s.create('u', 'operator', 'c');
    now = 60;
    expect(s.touch(x.id, { refresh: false })).toBeDefined();
    now = 120;
    expect(s.touch(x.id, { refresh: false })).toBeUndefined();
  });

  it('sourceKey groups IPv6 by /64', () => {
    expect(sourceKey('2001:db8::1')).toBe(sourceKey('2001:db8::ffff:1'));
    expect(sourceKey('2001:db8:0:1::1')).not.toBe(sourceKey('2001:db8::1'));
    expect(sourceKey('10.0.0.1')).toBe('10.0.0.1');
  });
});
