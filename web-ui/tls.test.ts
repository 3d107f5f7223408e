import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ensureSelfSignedCert, subjectAltNames, uncoveredNames } from './tls.ts';

describe('subjectAltNames', () => {
  it('covers the host name, localhost and both loopbacks for a loopback listen address', () => {
    expect(subjectAltNames('127.0.0.1', 'gw-1', ['10.9.0.1'])).toEqual([
      'DNS:gw-1',
      'DNS:localhost',
      'IP:127.0.0.1',
      'IP:::1',
    ]);
  });

  it('adds a specific listen address, IPv4 or IPv6', () => {
    expect(subjectAltNames('10.99.0.1', 'gw', [])).toContain('IP:10.99.0.1');
    expect(subjectAltNames('fd00:99::1', 'gw', [])).toContain('IP:fd00:99::1');
  });

  it('adds every interface address when listening on all of them, without link-local ones or repeats', () => {
    const san = subjectAltNames('::', 'gw', ['127.0.0.1', '10.99.0.1', 'fd00:99::1', 'fe80::1', '::1']);
    expect(san).toEqual([
      'DNS:gw',
      'DNS:localhost',
      'IP:127.0.0.1',
      'IP:::1',
      'IP:10.99.0.1',
      'IP:fd00:99::1',
    ]);
    expect(subjectAltNames('0.0.0.0', 'gw', ['192.168.5.5'])).toContain('IP:192.168.5.5');
    for (const all of ['::0', '0:0:0:0:0:0:0:0'])
      expect(subjectAltNames(all, 'gw', ['192.168.5.5'])).toContain('IP:192.168.5.5');
  });

  it('never lets a host name break the extension text', () => {
    expect(subjectAltNames('127.0.0.1', 'a,IP:1.2.3.4 b', [])[0]).toBe('DNS:a-IP-1.2.3.4-b');
  });
});

describe('ensureSelfSignedCert', () => {
  it('generates a certificate naming the listen address, then reuses it', async () => {
    const d = await mkdtemp(join(tmpdir(), 'sluice-tls-test-'));
    try {
      const first = await ensureSelfSignedCert(d, 'fd00:99::7');
      expect(first.generated).toBe(true);
      const cert = new X509Certificate(first.cert);
      expect(cert.subjectAltName).toContain('IP Address:FD00:99:0:0:0:0:0:7');
      expect(cert.subjectAltName).toContain('IP Address:0:0:0:0:0:0:0:1');
      expect(cert.checkPrivateKey((await import('node:crypto')).createPrivateKey(first.key))).toBe(true);
      const again = await ensureSelfSignedCert(d, 'fd00:99::7');
      expect(again).toEqual({ key: first.key, cert: first.cert, generated: false });
      expect(uncoveredNames(first.cert, ['IP:fd00:99::7', 'IP:10.1.1.1', 'DNS:localhost'])).toEqual([
        'IP:10.1.1.1',
      ]);
      // The UI moved to another address: the kept certificate does not name it, so it is made again.
      const moved = await ensureSelfSignedCert(d, '10.99.0.7');
      expect(moved.generated).toBe(true);
      expect(moved.replacedFor).toEqual(['IP:10.99.0.7']);
      expect(moved.cert).not.toBe(first.cert);
      expect(uncoveredNames(moved.cert, subjectAltNames('10.99.0.7', 'x', []).slice(1))).toEqual([]);
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });
});
