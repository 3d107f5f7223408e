/**
 * startUi: binds the UI app to the management address. HTTPS unless told otherwise; plain HTTP is refused
 * anywhere but loopback (the lab), because session cookies and passwords must not cross a network in clear.
 */
import pino, { type Logger } from 'pino';
import { isIP } from 'node:net';
import { mkdir } from 'node:fs/promises';
import { buildApp, type DaemonCall } from './app.ts';
import { ensureSelfSignedCert } from './tls.ts';
import { controlCall } from '../gateway/control.ts';
import { socketPath } from '../gateway/daemon.ts';
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
  onSetupToken?: (url: string, token: string) => void;
}

export interface RunningUi {
  url: string;
  /** The one-time setup token when no admin existed at start (also handed to onSetupToken). */
  setupToken?: string;
  close(): Promise<void>;
}

export function parseListen(listen: string): { host: string; port: number } {
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

export function isLoopback(host: string): boolean {
  return host === '::1' || /^127\./.test(host);
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
    if (m.generated) logger.info('generated a self-signed TLS certificate for the UI in the state dir');
    https = { key: m.key, cert: m.cert };
  } else if (tlsMode !== false) {
    https = tlsMode;
  }
  const sock = socketPath(opts.stateDir);
  const daemon: DaemonCall =
    opts.daemon ?? ((method, params) => controlCall(sock, method, params, { timeoutMs: 30_000 }));
  const { app, users } = await buildApp({
    stateDir: opts.stateDir,
    daemon,
    https: https !== undefined,
    logger,
    ...(https === undefined ? {} : { tlsOptions: https }),
    ...(opts.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: opts.idleTimeoutMs }),
    ...(opts.banner === undefined ? {} : { banner: opts.banner }),
  });
  const scheme = https === undefined ? 'http' : 'https';
  const shownHost = host.includes(':') ? `[${host}]` : host;
  await app.listen({ host, port });
  const addr = app.server.address();
  const boundPort = typeof addr === 'object' && addr !== null ? addr.port : port;
  const url = `${scheme}://${shownHost}:${boundPort}`;
  logger.info({ url }, 'web UI listening');
  const result: RunningUi = { url, close: () => app.close() };
  const token = await users.issueSetupToken();
  if (token !== undefined) {
    const link = `${url}/#setup=${token}`;
    (
      opts.onSetupToken ??
      ((l: string) =>
        process.stderr.write(
          `\nNo admin account yet. Create the first one (link valid 1 hour, single use):\n  ${l}\n  or on the gateway: sluice user add NAME --role admin\n\n`,
        ))
    )(link, token);
    result.setupToken = token;
  }
  return result;
}
