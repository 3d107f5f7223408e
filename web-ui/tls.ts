/**
 * The UI's TLS material. Without a configured certificate, a self-signed P-256 one is generated on first start
 * (openssl, run through execa with an argument array) and kept in the state dir (0600), so browsers can pin it
 * and it survives restarts. node:crypto can make keys but not X.509 certificates, hence openssl.
 */
import { execa } from 'execa';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { tmpdir, hostname, networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../gateway/state.ts';

export const TLS_KEY_FILE = 'ui-tls.key';
export const TLS_CERT_FILE = 'ui-tls.crt';

export interface TlsMaterial {
  key: string;
  cert: string;
  generated: boolean;
  /** Set when a kept certificate was replaced: the names it lacked (e.g. a new management address). */
  replacedFor?: string[];
}

/** A host name as it may appear in a certificate: anything outside `A-Za-z0-9.-` becomes `-`. */
function certName(name: string): string {
  return name.replace(/[^A-Za-z0-9.-]/g, '-');
}

/**
 * The names a generated certificate covers: the host name, localhost and both loopback addresses, the listen
 * address when it is a specific one, and, when the UI listens on every address (`0.0.0.0`, `::`), each address
 * of the gateway's interfaces (`addresses`, e.g. the management port's), so a browser that pins the
 * certificate finds the address it connected to. IPv6 link-local addresses are left out (they need a zone).
 */
export function subjectAltNames(listenHost: string, name: string, addresses: readonly string[]): string[] {
  const ips = ['127.0.0.1', '::1'];
  // Every spelling of "all addresses": 0.0.0.0, ::, ::0, 0:0:0:0:0:0:0:0 …
  const unspecified = listenHost === '0.0.0.0' || (isIP(listenHost) === 6 && /^[0:]+$/.test(listenHost));
  if (unspecified) ips.push(...addresses);
  else if (isIP(listenHost) !== 0) ips.push(listenHost);
  const usable = ips.filter((a) => isIP(a) !== 0 && !/^fe[89ab][0-9a-f]:/i.test(a));
  return [`DNS:${certName(name)}`, 'DNS:localhost', ...new Set(usable.map((a) => `IP:${a}`))];
}

/** Every address of this machine's interfaces (loopback included; subjectAltNames dedupes). */
function localAddresses(): string[] {
  return Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address));
}

/** The names of `san` (subjectAltNames' form) that the PEM certificate does not cover. */
export function uncoveredNames(pem: string, san: readonly string[]): string[] {
  const cert = new X509Certificate(pem);
  return san.filter((n) =>
    n.startsWith('IP:')
      ? cert.checkIP(n.slice(3)) === undefined
      : cert.checkHost(n.slice(4), { subject: 'never' }) === undefined,
  );
}

/**
 * The generated certificate, made on first start and kept, so browsers can pin it. It is made again only
 * when it no longer names an address the UI is reached at (an upgrade from a version that named fewer, a
 * management address that came later or changed): a browser would refuse it there anyway.
 */
export async function ensureSelfSignedCert(stateDir: string, host: string): Promise<TlsMaterial> {
  const keyFile = join(stateDir, TLS_KEY_FILE);
  const certFile = join(stateDir, TLS_CERT_FILE);
  const san = subjectAltNames(host, hostname(), localAddresses());
  let replacedFor: string[] | undefined;
  if (existsSync(keyFile) && existsSync(certFile)) {
    const key = await readFile(keyFile, 'utf8');
    const cert = await readFile(certFile, 'utf8');
    const missing = uncoveredNames(cert, san);
    if (missing.length === 0) return { key, cert, generated: false };
    replacedFor = missing;
  }
  const dir = await mkdtemp(join(tmpdir(), 'sluice-tls-'));
  try {
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
      `/CN=${certName(hostname())} sluice`,
      '-addext',
      `subjectAltName=${san.join(',')}`,
    ]);
    const key = await readFile(join(dir, 'key.pem'), 'utf8');
    const cert = await readFile(join(dir, 'cert.pem'), 'utf8');
    await writeFileAtomic(keyFile, key);
    await writeFileAtomic(certFile, cert);
    return { key, cert, generated: true, ...(replacedFor ? { replacedFor } : {}) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
