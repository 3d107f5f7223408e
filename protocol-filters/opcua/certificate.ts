/**
 * The sender certificate of an OPN (Part 6 §6.7.2.3): "the X.509 v3 Certificate assigned to the sending
 * application Instance … If the Certificate is part of a chain, the chain is the concatenation of DER-encoded
 * Certificates, the sender's first". The thumbprint the policy lists is the SHA-1 of the sender's own DER (the
 * same value Part 6 uses for ReceiverCertificateThumbprint), so only the first element is hashed.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { invalid, type CertificateInfo, type ParseResult } from './types.ts';

/** Certificates larger than this are not X.509 application certificates (RSA-4096 ones are ~2 KB). */
export const MAX_CERTIFICATE_LENGTH = 32 * 1024;

/**
 * Length of the first DER element (tag 0x30 SEQUENCE, definite length) at the start of `der`, or an invalid
 * result. Long-form lengths of 1–3 bytes are enough for MAX_CERTIFICATE_LENGTH.
 */
export function firstDerLength(der: Buffer): ParseResult<number> {
  if (der.length < 2) return invalid('opcua.certificate-der', 'certificate shorter than a DER header');
  if (der[0] !== 0x30)
    return invalid('opcua.certificate-der', 'certificate does not start with a DER SEQUENCE');
  const first = der[1] ?? 0;
  let length: number;
  let header: number;
  if (first < 0x80) {
    length = first;
    header = 2;
  } else {
    const n = first & 0x7f;
    if (n === 0 || n > 3) return invalid('opcua.certificate-der', `DER length of ${n} bytes`);
    if (der.length < 2 + n)
      return invalid('opcua.certificate-der', 'certificate truncated in its DER length');
    length = 0;
    for (let i = 0; i < n; i++) length = length * 256 + (der[2 + i] ?? 0);
    header = 2 + n;
  }
  const total = header + length;
  if (total > der.length) return invalid('opcua.certificate-der', 'certificate longer than its field');
  if (total > MAX_CERTIFICATE_LENGTH) return invalid('opcua.certificate-der', 'certificate too large');
  return { kind: 'frame', frame: total, consumed: total };
}

function commonNameOf(subject: string): string | null {
  // node:crypto prints one RDN per line (`C=DE\nO=Acme\nCN=hmi-1`); a CN with an embedded newline is escaped.
  for (const line of subject.split('\n')) {
    if (line.startsWith('CN=')) return line.slice(3);
  }
  return null;
}

/**
 * Thumbprint and subject of the sender's certificate in a SenderCertificate field. The thumbprint is computed
 * from the bytes alone; the subject needs a parseable X.509 certificate and is null otherwise (the server
 * rejects such a certificate itself; an allow-list never matches a thumbprint it does not list).
 */
export function parseSenderCertificate(field: Buffer): ParseResult<CertificateInfo> {
  const len = firstDerLength(field);
  if (len.kind !== 'frame') return len;
  const der = Buffer.from(field.subarray(0, len.frame));
  const thumbprint = createHash('sha1').update(der).digest('hex').toUpperCase();
  let subject: string | null;
  try {
    subject = new X509Certificate(der).subject;
  } catch {
    subject = null;
  }
  return {
    kind: 'frame',
    frame: { thumbprint, subject, commonName: subject === null ? null : commonNameOf(subject), der },
    consumed: len.frame,
  };
}
