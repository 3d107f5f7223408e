import { describe, it, expect } from 'vitest';
import { benchVerdict } from '../bench/ui.ts';

// bench/ui needs root and 60 s, so its pass/fail rule is tested here on its own: a run can fail.
describe('bench/ui verdict', () => {
  const ok = { ratio: 1.1, pollErrors: 0, loadErrors: 0, loadRequests: 1000 };
  it('passes only within 1.2× and without errors', () => {
    expect(benchVerdict(ok)).toEqual({ ok: true, reasons: [] });
    expect(benchVerdict({ ...ok, ratio: 1.25 }).ok).toBe(false);
    expect(benchVerdict({ ...ok, ratio: NaN }).ok).toBe(false);
    expect(benchVerdict({ ...ok, loadErrors: 3 }).reasons).toEqual(['3 UI request error(s)']);
    expect(benchVerdict({ ...ok, pollErrors: 1 }).ok).toBe(false);
    expect(benchVerdict({ ...ok, loadRequests: 0 }).ok).toBe(false);
  });
});
