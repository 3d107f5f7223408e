/**
 * Test helper: a real self-signed RSA certificate made with `openssl req -x509` in a temp dir, as an OPC UA
 * application would present it in its OPN. Returns the DER and removes the files.
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function makeSelfSignedCertificate(cn: string): Buffer {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-opcua-cert-'));
  try {
    const key = join(dir, 'key.pem');
    const pem = join(dir, 'cert.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        key,
        '-out',
        pem,
        '-days',
        '2',
        '-subj',
        `/C=DE/O=Sluice Test/CN=${cn}`,
      ],
      { stdio: 'ignore' },
    );
    return Buffer.from(new X509Certificate(readFileSync(pem)).raw);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
