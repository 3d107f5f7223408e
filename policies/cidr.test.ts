import { describe, expect, it } from 'vitest';
import {
  cidrContains,
  cidrOverlaps,
  findCidrOverlaps,
  formatIp,
  isHostCidr,
  normaliseCidrSet,
  parseCidr,
  parseIp,
} from './cidr.ts';
import type { Cidr } from './types.ts';

function c(text: string): Cidr {
  const p = parseCidr(text);
  if (!p) throw new Error(`test setup: ${text} does not parse`);
  return p.cidr;
}

describe('parseCidr', () => {
  it('canonicalises IPv4: bare address → /32, host bits cleared and flagged', () => {
    expect(parseCidr('10.1.0.10')).toEqual({
      cidr: { family: 4, text: '10.1.0.10/32', address: '10.1.0.10', prefix: 32 },
      hostBitsSet: false,
    });
    expect(parseCidr('10.1.2.3/16')).toEqual({
      cidr: { family: 4, text: '10.1.0.0/16', address: '10.1.0.0', prefix: 16 },
      hostBitsSet: true,
    });
    expect(parseCidr('0.0.0.0/0')?.cidr.text).toBe('0.0.0.0/0');
  });

  it('canonicalises IPv6 per RFC 5952 (lower case, longest zero run compressed)', () => {
    expect(parseCidr('FD00:0:0:0:0:0:0:1')?.cidr.text).toBe('fd00::1/128');
    expect(parseCidr('fd00:0000:0001::/48')?.cidr.text).toBe('fd00:0:1::/48');
    expect(parseCidr('2001:db8:0:0:1:0:0:1')?.cidr.text).toBe('2001:db8::1:0:0:1/128');
    expect(parseCidr('1:0:2:3:4:5:6:7')?.cidr.text).toBe('1:0:2:3:4:5:6:7/128');
    expect(parseCidr('::/0')?.cidr.text).toBe('::/0');
    expect(parseCidr('::ffff:10.1.2.3')?.cidr.text).toBe('::ffff:a01:203/128');
    expect(parseCidr('fd00::1/64')).toEqual({
      cidr: { family: 6, text: 'fd00::/64', address: 'fd00::', prefix: 64 },
      hostBitsSet: true,
    });
  });

  it.each([
    '',
    '10.1.0',
    '10.1.0.256',
    '010.1.0.1',
    '10.1.0.1/33',
    '10.1.0.1/',
    '10.1.0.1/08',
    '10.1.0.1/-1',
    ' 10.1.0.1',
    'fd00::1::2',
    'fd00::1/129',
    'fe80::1%eth0',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7',
    '12345::',
    'a;b',
    '10.0.0.0/8; drop',
    '1.2.3.4\n',
  ])('rejects %j', (text) => {
    expect(parseCidr(text)).toBeUndefined();
  });

  it('round-trips addresses through formatIp', () => {
    const ip = parseIp('2001:db8::8:800:200c:417a');
    expect(ip && formatIp(ip.family, ip.value)).toBe('2001:db8::8:800:200c:417a');
  });
});

describe('containment and sets', () => {
  it('contains / overlaps respect family and prefix', () => {
    expect(cidrContains(c('10.1.0.0/16'), c('10.1.2.0/24'))).toBe(true);
    expect(cidrContains(c('10.1.2.0/24'), c('10.1.0.0/16'))).toBe(false);
    expect(cidrContains(c('10.1.0.0/16'), c('10.2.0.1'))).toBe(false);
    expect(cidrOverlaps(c('10.1.2.0/24'), c('10.1.0.0/16'))).toBe(true);
    expect(cidrOverlaps(c('::/0'), c('10.1.0.0/16'))).toBe(false);
    expect(isHostCidr(c('fd00::1'))).toBe(true);
    expect(isHostCidr(c('10.0.0.0/31'))).toBe(false);
  });

  it('normaliseCidrSet sorts, de-duplicates and drops contained entries', () => {
    const out = normaliseCidrSet([
      c('fd00::1'),
      c('10.1.0.10'),
      c('10.1.0.0/16'),
      c('10.0.0.1'),
      c('10.1.0.0/16'),
    ]);
    expect(out.map((x) => x.text)).toEqual(['10.0.0.1/32', '10.1.0.0/16', 'fd00::1/128']);
  });

  it('findCidrOverlaps reports entries overlapping another owner, not the same owner', () => {
    const items = [
      { cidr: c('10.0.0.0/8'), owner: 'a' },
      { cidr: c('10.1.0.0/16'), owner: 'a' },
      { cidr: c('10.1.2.0/24'), owner: 'b' },
      { cidr: c('192.168.0.0/24'), owner: 'c' },
      { cidr: c('192.168.0.0/24'), owner: 'd' },
      { cidr: c('fd00::/64'), owner: 'e' },
    ];
    const found = findCidrOverlaps(items).map((o) => [o.inner.owner, o.inner.cidr.text, o.outer.owner]);
    expect(found).toEqual([
      ['b', '10.1.2.0/24', 'a'],
      ['d', '192.168.0.0/24', 'c'],
    ]);
  });
});
