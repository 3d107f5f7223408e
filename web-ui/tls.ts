/**
 * The UI's TLS material. Without a configured certificate, a self-signed P-256 one is generated on first start
 * (openssl, run through execa with an argument array) and kept in the state dir (0600), so browsers can pin it
 * and it survives restarts. node:crypto can make keys but not X.509 certificates, hence openssl.
 */
import { execa } from 'execa';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir, hostname } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../gateway/state.ts';

export const TLS_KEY_FILE = 'ui-tls.key';
export const TLS_CERT_FILE = 'ui-tls.crt';

export interface TlsMaterial {
  key: string;
  cert: string;
  generated: boolean;
}

export async function ensureSelfSignedCert(stateDir: string, host: string): Promise<TlsMaterial> {
  const keyFile = join(stateDir, TLS_KEY_FILE);
  const certFile = join(stateDir, TLS_CERT_FILE);
  if (existsSync(keyFile) && existsSync(certFile))
    return { key: await readFile(keyFile, 'utf8'), cert: await readFile(certFile, 'utf8'), generated: false };
  const dir = await mkdtemp(join(tmpdir(), 'sluice-tls-'));
  try {
    const san = [`DNS:${hostname()}`, 'DNS:localhost', 'IP:127.0.0.1'];
    if (/^[0-9.]+$/.test(host) && host !== '127.0.0.1' && host !== '0.0.0.0') san.push(`IP:${host}`);
    await execa('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      join(dir, 'key.pem'),
      '-out',
      join(dir, 'cert.pem'),
      '-days',
      '825',
      '-subj',
      `/CN=${hostname().replace(/[^A-Za-z0-9.-]/g, '-')} sluice`,
      '-addext',
      `subjectAltName=${san.join(',')}`,
    ]);
    const key = await readFile(join(dir, 'key.pem'), 'utf8');
    const cert = await readFile(join(dir, 'cert.pem'), 'utf8');
    await writeFileAtomic(keyFile, key);
    await writeFileAtomic(certFile, cert);
    return { key, cert, generated: true };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
