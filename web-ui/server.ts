/**
 * startUi: binds the UI app to the management address. HTTPS unless told otherwise; plain HTTP is refused
 * anywhere but loopback (the lab), because session cookies and passwords must not cross a network in clear.
 */
import pino, { type Logger } from 'pino';
import { isIP } from 'node:net';
import { X509Certificate } from 'node:crypto';
import { networkInterfaces } from 'node:os';
import { mkdir } from 'node:fs/promises';
import { buildApp, type DaemonCall } from './app.ts';
import { ensureSelfSignedCert } from './tls.ts';
import { controlCall } from '../gateway/control.ts';
import { LOG_DB_NAME, socketPath } from '../gateway/paths.ts';
import { LogStore, type LogQuery, type LogQueryResult } from '../gateway/logstore.ts';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../policies/errors.ts';

export interface StartUiOptions {
  stateDir: string;
  /** `ADDR:PORT`, `[v6]:PORT`. */
  listen: string;
  logger?: Logger;
  /** Default: plain HTTP on loopback, otherwise 'auto' (self-signed certificate in the state dir). */
  tls?: 'auto' | { cert: string; key: string } | false;
  /** Test hooks; the daemon's control socket in the state dir by default. */
  daemon?: DaemonCall;
  idleTimeoutMs?: number;
  banner?: string;
  /** Where the one-time setup link goes; default: stderr, so it shows on the console but not in the JSON log. */
  onSetupToken?: (url: string, token: string, fingerprint?: string) => void;
  /**
   * Extra Origins accepted for state changes (e.g. `https://gw.plant.example:8443` when the UI is reached by a
   * name or through a port forward); the listen address's own origins are always accepted.
   */
  publicOrigins?: readonly string[];
}

export interface RunningUi {
  url: string;
  /** The one-time setup token when no admin existed at start (also handed to onSetupToken). */
  setupToken?: string;
  /** SHA-256 fingerprint of the TLS certificate (colon-separated hex), to compare with the browser's. */
  fingerprint?: string;
  close(): Promise<void>;
}

function parseListen(listen: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(listen) ?? /^([^:]+):(\d{1,5})$/.exec(listen);
  const port = m === null ? NaN : Number(m[2]);
  const host = m?.[1] ?? '';
  if (m === null || isIP(host) === 0 || port > 65535)
    throw new UsageError(
      'ui.listen',
      `--listen must be ADDR:PORT with an IP address (e.g. 127.0.0.1:8443), not '${listen}'`,
    );
  return { host, port };
}

function isLoopback(host: string): boolean {
  return host === '::1' || /^127\./.test(host);
}

/** The SHA-256 fingerprint of a PEM certificate, as browsers show it (AA:BB:…). */
function certFingerprint(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

/**
 * The origins a browser uses for this listen address: the address itself, every local address when bound to
 * the unspecified address, and `localhost` on loopback. Never taken from the request's Host header.
 */
function originsFor(scheme: string, host: string, port: number): string[] {
  const hosts = new Set<string>([host]);
  if (host === '0.0.0.0' || host === '::') {
    for (const list of Object.values(networkInterfaces()))
      for (const i of list ?? []) if (host === '::' || i.family === 'IPv4') hosts.add(i.address);
  }
  if (isLoopback(host) || host === '0.0.0.0' || host === '::') hosts.add('localhost');
  return [...hosts].map((h) => `${scheme}://${h.includes(':') ? `[${h}]` : h}:${port}`.toLowerCase());
}

/** A read-only handle on the daemon's blocked-traffic store, opened on first use. */
class LocalLogReader {
  readonly #path: string;
  #store: LogStore | undefined;
  constructor(path: string) {
    this.#path = path;
  }
  available(): boolean {
    return this.#store !== undefined || existsSync(this.#path);
  }
  query(params: Record<string, unknown>): LogQueryResult {
    this.#store ??= LogStore.openReader(this.#path);
    return this.#store.query(params as LogQuery);
  }
  close(): void {
    this.#store?.close();
    this.#store = undefined;
  }
}

export async function startUi(opts: StartUiOptions): Promise<RunningUi> {
  const { host, port } = parseListen(opts.listen);
  const logger = opts.logger ?? pino({ name: 'sluice-ui' });
  const tlsMode = opts.tls ?? (isLoopback(host) ? false : 'auto');
  if (tlsMode === false && !isLoopback(host))
    throw new UsageError('ui.plain-http', `plain HTTP is only allowed on loopback; ${host} needs TLS`);
  await mkdir(opts.stateDir, { recursive: true, mode: 0o700 });
  let https: { key: string; cert: string } | undefined;
  if (tlsMode === 'auto') {
    const m = await ensureSelfSignedCert(opts.stateDir, host);
    if (m.replacedFor !== undefined)
      logger.warn(
        { missing: m.replacedFor, fingerprint: certFingerprint(m.cert) },
        'made the self-signed UI certificate again: the kept one did not name every address of the UI',
      );
    else if (m.generated) logger.info('generated a self-signed TLS certificate for the UI in the state dir');
    https = { key: m.key, cert: m.cert };
  } else if (tlsMode !== false) {
    https = tlsMode;
  }
  const sock = socketPath(opts.stateDir);
  const logs = new LocalLogReader(join(opts.stateDir, LOG_DB_NAME));
  const daemon: DaemonCall =
    opts.daemon ??
    ((method, params) =>
      // Log queries run here, in the UI process (idle class, own unit), straight from the SQLite file (WAL
      // allows readers beside the daemon's writer): a flood of browsers then costs the UI's CPU, never the
      // daemon's event loop, which is also the one moving the protocol filters' bytes.
      method === 'logs.query' && logs.available()
        ? Promise.resolve(logs.query(params))
        : controlCall(sock, method, params, { timeoutMs: 30_000 }));
  const { app, users, origins } = await buildApp({
    stateDir: opts.stateDir,
    daemon,
    https: https !== undefined,
    logger,
    ...(https === undefined ? {} : { tlsOptions: https }),
    ...(opts.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: opts.idleTimeoutMs }),
    ...(opts.banner === undefined ? {} : { banner: opts.banner }),
    // Every client is paced (web-ui/pacer.ts): a flood of browsers slows itself, not the gateway.
    pacer: {},
  });
  const scheme = https === undefined ? 'http' : 'https';
  const shownHost = host.includes(':') ? `[${host}]` : host;
  await app.listen({ host, port });
  const addr = app.server.address();
  const boundPort = typeof addr === 'object' && addr !== null ? addr.port : port;
  const url = `${scheme}://${shownHost}:${boundPort}`;
  for (const o of originsFor(scheme, host, boundPort)) origins.add(o);
  for (const o of opts.publicOrigins ?? []) origins.add(o.replace(/\/+$/, '').toLowerCase());
  const fingerprint = https === undefined ? undefined : certFingerprint(https.cert);
  logger.info({ url, ...(fingerprint === undefined ? {} : { certSha256: fingerprint }) }, 'web UI listening');
  const result: RunningUi = {
    url,
    close: async () => {
      await app.close();
      logs.close();
    },
  };
  if (fingerprint !== undefined) result.fingerprint = fingerprint;
  const token = await users.issueSetupToken();
  if (token !== undefined) {
    const link = `${url}/#setup=${token}`;
    (
      opts.onSetupToken ??
      ((l: string, _t: string, fp?: string) =>
        process.stderr.write(
          `\nNo admin account yet. Create the first one (link valid 1 hour, single use):\n  ${l}\n` +
            (fp === undefined
              ? ''
              : `  The browser must show this certificate (SHA-256 fingerprint):\n  ${fp}\n`) +
            `  or on the gateway: sluice user add NAME --role admin\n\n`,
        ))
    )(link, token, fingerprint);
    result.setupToken = token;
  }
  return result;
}
