/**
 * The daemon's control channel: newline-delimited JSON over a unix socket in the state dir.
 * No TCP: access is guarded by file permissions (socket 0660 in a 0700/0750 state dir), so only root or
 * the sluice group can apply policies (IEC 62443-4-2 CR 2.1).
 *
 * Request:  {"id": 1, "method": "status", "params": {...}}
 * Response: {"id": 1, "result": ...} or {"id": 1, "error": {"code": "...", "message": "...", "data": ...}}
 */
import net from 'node:net';
import { chmod, rm } from 'node:fs/promises';
import { SluiceError } from '../policies/errors.ts';

/** Bounded request size: a policy file is far below this; anything larger is a misbehaving client. */
const MAX_REQUEST_BYTES = 4 * 1024 * 1024;

export class ControlError extends SluiceError {
  readonly data: unknown;
  constructor(code: string, message: string, data?: unknown) {
    super(code, message);
    this.data = data;
  }
}

export type ControlHandler = (params: Record<string, unknown>) => Promise<unknown>;

interface ErrorBody {
  code: string;
  message: string;
  data?: unknown;
}

function errorBody(err: unknown): ErrorBody {
  if (err instanceof SluiceError) {
    const data = err instanceof ControlError ? err.data : (err as { problems?: unknown }).problems;
    return data === undefined
      ? { code: err.code, message: err.message }
      : { code: err.code, message: err.message, data };
  }
  return { code: 'internal', message: err instanceof Error ? err.message : String(err) };
}

/**
 * True when something accepts connections on `socketPath` (a running daemon), false when the file is absent
 * or stale (ECONNREFUSED: its daemon died). A socket that neither accepts nor refuses within `timeoutMs`
 * counts as alive: a hung daemon still owns its state dir.
 */
export async function daemonAnswers(socketPath: string, timeoutMs = 1000): Promise<boolean> {
  return await new Promise<boolean>((resolve) => {
    const socket = net.createConnection(socketPath);
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(true);
    }, timeoutMs);
    socket.on('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(true);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      // EACCES: a socket we may not use is still someone's live socket; only "nobody there" is stale.
      resolve(!(err.code === 'ENOENT' || err.code === 'ECONNREFUSED' || err.code === 'ENOTSOCK'));
    });
  });
}

/** Refuses (SluiceError `daemon.running`) when a daemon already answers on `socketPath`. */
export async function assertNoDaemon(socketPath: string): Promise<void> {
  if (await daemonAnswers(socketPath)) {
    throw new SluiceError(
      'daemon.running',
      `a sluice daemon already runs on this state dir (it answers on ${socketPath}); stop it first, or use another --state-dir`,
    );
  }
}

export class ControlServer {
  readonly socketPath: string;
  private readonly handlers: Map<string, ControlHandler>;
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();

  constructor(socketPath: string, handlers: Record<string, ControlHandler>) {
    this.socketPath = socketPath;
    this.handlers = new Map(Object.entries(handlers));
  }

  async start(): Promise<void> {
    // A socket file left by a killed daemon would make listen() fail with EADDRINUSE, so it is removed, but
    // only when nothing answers on it: removing a live daemon's socket would silently take over from it.
    await assertNoDaemon(this.socketPath);
    await rm(this.socketPath, { force: true });
    const server = net.createServer((socket) => this.onConnection(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    await chmod(this.socketPath, 0o660);
    this.server = server;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(this.socketPath, { force: true });
  }

  private onConnection(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    let buffered = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      if (buffered.length > MAX_REQUEST_BYTES) {
        socket.end(
          JSON.stringify({ id: null, error: { code: 'control.too-large', message: 'request too large' } }) +
            '\n',
        );
        return;
      }
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.trim() !== '') void this.handleLine(socket, line);
      }
    });
  }

  private async handleLine(socket: net.Socket, line: string): Promise<void> {
    let id: unknown = null;
    let reply: object;
    try {
      let req: unknown;
      try {
        req = JSON.parse(line);
      } catch {
        throw new ControlError('control.bad-request', 'request is not JSON');
      }
      if (typeof req !== 'object' || req === null)
        throw new ControlError('control.bad-request', 'request must be an object');
      const { id: rid, method, params } = req as { id?: unknown; method?: unknown; params?: unknown };
      id = rid ?? null;
      if (typeof method !== 'string')
        throw new ControlError('control.bad-request', 'method must be a string');
      const handler = this.handlers.get(method);
      if (handler === undefined)
        throw new ControlError('control.unknown-method', `unknown method '${method}'`);
      const p = typeof params === 'object' && params !== null ? (params as Record<string, unknown>) : {};
      reply = { id, result: (await handler(p)) ?? null };
    } catch (err) {
      reply = { id, error: errorBody(err) };
    }
    if (!socket.destroyed) socket.write(JSON.stringify(reply) + '\n');
  }
}

/** Calls one method on the daemon; throws ControlError with the daemon's code on failure. */
export async function controlCall(
  socketPath: string,
  method: string,
  params: Record<string, unknown> = {},
  opts: { timeoutMs?: number } = {},
): Promise<unknown> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return await new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath);
    let buffered = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new ControlError('control.timeout', `the daemon did not answer '${method}' within ${timeoutMs} ms`),
      );
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(JSON.stringify({ id: 1, method, params }) + '\n'));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const hint =
        err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
          ? `the sluice daemon is not running (no socket at ${socketPath}); start it with 'sluice run'`
          : err.code === 'EACCES'
            ? `permission denied on ${socketPath}: run as root or as a member of the sluice group`
            : `cannot reach the daemon at ${socketPath}: ${err.message}`;
      reject(new ControlError('control.unreachable', hint));
    });
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      const nl = buffered.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      socket.end();
      try {
        const res = JSON.parse(buffered.slice(0, nl)) as { result?: unknown; error?: ErrorBody };
        if (res.error !== undefined)
          reject(new ControlError(res.error.code, res.error.message, res.error.data));
        else resolve(res.result);
      } catch {
        reject(new ControlError('control.bad-response', 'the daemon sent an unreadable answer'));
      }
    });
  });
}
