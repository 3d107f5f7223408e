import { describe, it, expect } from 'vitest';
import { parseLogMaxAgeMs, parseLogMaxBytes } from './daemon.ts';

describe('log retention options', () => {
  it('reads sizes in bytes or with binary units', () => {
    expect(parseLogMaxBytes('536870912')).toBe(512 * 1024 ** 2);
    expect(parseLogMaxBytes('512M')).toBe(512 * 1024 ** 2);
    expect(parseLogMaxBytes('2g')).toBe(2 * 1024 ** 3);
    expect(parseLogMaxBytes('2048k')).toBe(2 * 1024 ** 2);
    expect(parseLogMaxBytes('64MiB')).toBe(64 * 1024 ** 2);
  });

  it('refuses sizes that are not sizes or would prune everything', () => {
    for (const bad of ['', '512', '0M', '-1G', '1T', '1.5G', 'lots'])
      expect(() => parseLogMaxBytes(bad), bad).toThrow(/at least 1M/);
  });

  it('reads ages with s, m, h or d', () => {
    expect(parseLogMaxAgeMs('30d')).toBe(30 * 86_400_000);
    expect(parseLogMaxAgeMs('12h')).toBe(12 * 3_600_000);
    expect(parseLogMaxAgeMs('90m')).toBe(90 * 60_000);
    expect(parseLogMaxAgeMs('3600s')).toBe(3_600_000);
    for (const bad of ['30', '10s', '1w', 'd', '0d'])
      expect(() => parseLogMaxAgeMs(bad), bad).toThrow(/at least 1m/);
  });
});
