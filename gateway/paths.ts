/**
 * Names of the daemon's files in the state dir, in a module of their own: the CLI, the web UI and the tests
 * need the socket and the log store's path without loading the daemon (its proxies, filters and apply engine).
 */
import { join } from 'node:path';

export const SOCKET_NAME = 'sluice.sock';
export const LOG_DB_NAME = 'blocked.sqlite';
export const ULOGD_JSON_NAME = 'ulogd.json';

export function socketPath(stateDir: string): string {
  return join(stateDir, SOCKET_NAME);
}
