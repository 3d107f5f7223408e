import { describe, it, expect } from 'vitest';
import type { ClientVerdict, FilterEvent } from './inspector.ts';
import { Verdicts, joined } from './verdicts.ts';

const event: FilterEvent = { reason: 'r', verdict: 'would-refuse' };
const b = (s: string): Buffer => Buffer.from(s);

describe('Verdicts', () => {
  it('merges consecutive plain forwards and keeps order around other verdicts', () => {
    const out = new Verdicts<ClientVerdict>();
    out.forward(b('a'));
    out.forward(b('b'));
    out.forward(b('c'), event);
    out.push({ action: 'log', event });
    out.forward(b('d'));
    expect(out.done()).toEqual([
      { action: 'forward', bytes: b('ab') },
      { action: 'forward', bytes: b('c'), event },
      { action: 'log', event },
      { action: 'forward', bytes: b('d') },
    ]);
  });

  it('flushes forwards before a close and keeps nothing after it', () => {
    const out = new Verdicts<ClientVerdict>();
    out.forward(b('a'));
    out.push({ action: 'close', event });
    out.forward(b('late'));
    expect(out.closed).toBe(true);
    expect(out.done()).toEqual([
      { action: 'forward', bytes: b('a') },
      { action: 'close', event },
    ]);
  });

  it('joined returns a single buffer itself, without a copy', () => {
    const one = b('x');
    expect(joined([one])).toBe(one);
    expect(joined([b('x'), b('y')])).toEqual(b('xy'));
  });
});
