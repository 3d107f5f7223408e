/**
 * Loopback fixtures shared by the core's unit tests: an upstream that records what it saw, a client that
 * collects what it receives, and plan entries pointing at them. Not used by production code.
 */
import net from 'node:net';
import type { ProxyPlanEntry } from '../../policies/types.ts';

export interface Upstream {
  server: net.Server;
  port: number;
  /** Every byte received, per connection, in accept order. */
  received: Buffer[][];
  /** Remote addresses of accepted connections. */
  peers: string[];
  sockets: Set<net.Socket>;
  close(): Promise<void>;
}

/** An upstream server; by default it echoes. `onSocket` replaces the echo. */
export async function startUpstream(onSocket?: (s: net.Socket) => void): Promise<Upstream> {
  const received: Buffer[][] = [];
  const peers: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    const mine: Buffer[] = [];
    received.push(mine);
    peers.push(socket.remoteAddress ?? '');
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    if (onSocket) {
      onSocket(socket);
      return;
    }
    socket.on('data', (d: Buffer) => {
      mine.push(d);
      socket.write(d);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    server,
    port,
    received,
    peers,
    sockets,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

export function planEntry(upstreamPort: number, over: Partial<ProxyPlanEntry> = {}): ProxyPlanEntry {
  return {
    conduit: 'hmi-to-plc',
    flow: 'poll',
    protocol: 'modbus',
    mode: 'enforce',
    listenPort: 0,
    upstream: { address: '127.0.0.1', port: upstreamPort, family: 4 },
    sources: ['127.0.0.0/8'],
    ...over,
  };
}

export interface Client {
  socket: net.Socket;
  data(): string;
  /** Resolves when the socket closes; `error` holds the error code if it closed on one. */
  closed: Promise<{ error?: string }>;
  /** Waits until the received text satisfies `pred` (or rejects after `ms`). */
  waitFor(pred: (text: string) => boolean, ms?: number): Promise<string>;
}

export async function connect(port: number, localAddress?: string): Promise<Client> {
  const socket = net.connect({ host: '127.0.0.1', port, ...(localAddress ? { localAddress } : {}) });
  const chunks: Buffer[] = [];
  let error: string | undefined;
  socket.on('data', (d: Buffer) => chunks.push(d));
  socket.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
  const closed = new Promise<{ error?: string }>((resolve) =>
    socket.on('close', () => resolve(error !== undefined ? { error } : {})),
  );
  // A refused connection may be reset before Node reports 'connect'; callers then see it in `closed`.
  await new Promise<void>((resolve) => {
    socket.once('connect', resolve);
    socket.once('close', resolve);
  });
  const data = (): string => Buffer.concat(chunks).toString('latin1');
  return {
    socket,
    data,
    closed,
    waitFor: (pred, ms = 3000) =>
      new Promise<string>((resolve, reject) => {
        const deadline = Date.now() + ms;
        const tick = (): void => {
          const text = data();
          if (pred(text)) resolve(text);
          else if (Date.now() > deadline)
            reject(new Error(`timed out waiting; have ${JSON.stringify(text)}`));
          else setTimeout(tick, 10);
        };
        tick();
      }),
  };
}

/** Resolves with the connect error code, or 'connected' (and closes) if the port answered. */
export function probe(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

/** A port that was free a moment ago (the supervisor needs fixed listen ports in its plans). */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `pred` every 10 ms until true or `ms` elapse. */
export async function until(pred: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(10);
  }
}

/** Rejects if `p` does not settle within `ms` (keeps a broken test from hanging until the suite timeout). */
export function within<T>(p: Promise<T>, ms = 3000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not settled within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
