import { describe, it, expect, beforeAll } from 'vitest';
import { createHash, X509Certificate } from 'node:crypto';
import { firstDerLength, parseSenderCertificate } from './certificate.ts';
import { openRequest } from './frames.ts';
import { makeSelfSignedCertificate } from './test-certificate.ts';
import { parseOpenHeader } from './transport.ts';

let der: Buffer = Buffer.alloc(0);
let issuerDer: Buffer = Buffer.alloc(0);

beforeAll(() => {
  der = makeSelfSignedCertificate('hmi-1');
  issuerDer = makeSelfSignedCertificate('plant-ca');
});

describe('sender certificate (Part 6 §6.7.2.3)', () => {
  it('reads subject, CN and the upper-case SHA-1 thumbprint of a real certificate', () => {
    const r = parseSenderCertificate(der);
    expect(r.kind).toBe('frame');
    if (r.kind !== 'frame') return;
    expect(r.frame.thumbprint).toBe(createHash('sha1').update(der).digest('hex').toUpperCase());
    expect(r.frame.thumbprint).toMatch(/^[0-9A-F]{40}$/);
    expect(r.frame.thumbprint).toBe(new X509Certificate(der).fingerprint.replace(/:/g, ''));
    expect(r.frame.commonName).toBe('hmi-1');
    expect(r.frame.subject).toContain('O=Sluice Test');
  });

  it('hashes only the sender certificate of a chain', () => {
    const r = parseSenderCertificate(Buffer.concat([der, issuerDer]));
    expect(r.kind === 'frame' && r.frame.thumbprint).toBe(
      createHash('sha1').update(der).digest('hex').toUpperCase(),
    );
    expect(r.kind === 'frame' && r.frame.der.equals(der)).toBe(true);
  });

  it('reads the certificate and policy from an OPN in clear', () => {
    const r = parseOpenHeader(
      openRequest({ policy: 'Basic256Sha256', certificate: der, receiverThumbprint: Buffer.alloc(20, 1) }),
    );
    expect(r).toMatchObject({
      kind: 'frame',
      frame: {
        securityPolicy: 'Basic256Sha256',
        senderCertificate: { commonName: 'hmi-1' },
        senderCertificateLength: der.length,
      },
    });
  });

  it('keeps a DER SEQUENCE that is no certificate (thumbprint yes, subject null)', () => {
    const fake = Buffer.from([0x30, 0x03, 0x02, 0x01, 0x05]);
    expect(parseSenderCertificate(fake)).toMatchObject({
      kind: 'frame',
      frame: { subject: null, commonName: null },
    });
  });

  const faults: [string, Buffer][] = [
    ['one byte', Buffer.from([0x30])],
    ['not a SEQUENCE', Buffer.from([0x04, 0x01, 0x00])],
    ['length longer than the field', Buffer.from([0x30, 0x82, 0x10, 0x00, 0x00])],
    ['indefinite length', Buffer.from([0x30, 0x80, 0x00, 0x00])],
    ['five-byte length', Buffer.from([0x30, 0x85, 1, 2, 3, 4, 5])],
    ['truncated long length', Buffer.from([0x30, 0x82, 0x01])],
  ];
  for (const [name, buf] of faults) {
    it(`invalid DER: ${name}`, () => {
      expect(firstDerLength(buf)).toMatchObject({ kind: 'invalid', code: 'opcua.certificate-der' });
    });
  }
});
