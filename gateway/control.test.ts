import { describe, it, expect, afterEach } from 'vitest';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { ControlServer, ControlError, assertNoDaemon, controlCall } from './control.ts';
import { SluiceError } from '../policies/errors.ts';

let dir: string | undefined;
let server: ControlServer | undefined;
afterEach(async () => {
  await server?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

async function start(handlers: ConstructorParameters<typeof ControlServer>[1]) {
  dir = await mkdtemp(join(tmpdir(), 'sluice-control-'));
  server = new ControlServer(join(dir, 'sluice.sock'), handlers);
  await server.start();
  return server.socketPath;
}

describe('control socket', () => {
  it('answers a call with the handler result and is not world-accessible', async () => {
    const path = await start({ echo: async (p) => ({ got: p['x'] }) });
    await expect(controlCall(path, 'echo', { x: 42 })).resolves.toEqual({ got: 42 });
    expect((await stat(path)).mode & 0o007).toBe(0);
  });

  it('carries the stable code of a SluiceError and its data back to the caller', async () => {
    const path = await start({
      fail: async () => {
        throw new ControlError('policy.invalid', 'bad policy', [{ path: ['zones'] }]);
      },
      plain: async () => {
        throw new SluiceError('state.missing', 'no version 7');
      },
    });
    const err = await controlCall(path, 'fail').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ControlError);
    expect((err as ControlError).code).toBe('policy.invalid');
    expect((err as ControlError).data).toEqual([{ path: ['zones'] }]);
    await expect(controlCall(path, 'plain')).rejects.toMatchObject({ code: 'state.missing' });
    await expect(controlCall(path, 'nope')).rejects.toMatchObject({ code: 'control.unknown-method' });
  });

  it('survives garbage on the socket and keeps serving', async () => {
    const path = await start({ ping: async () => 'pong' });
    const raw = net.createConnection(path);
    const answer = await new Promise<string>((resolve) => {
      raw.on('data', (d) => resolve(d.toString()));
      raw.write('{not json\n');
    });
    raw.destroy();
    expect(JSON.parse(answer)).toMatchObject({ error: { code: 'control.bad-request' } });
    await expect(controlCall(path, 'ping')).resolves.toBe('pong');
  });

  it('says clearly when no daemon is running', async () => {
    await expect(controlCall('/nonexistent/sluice.sock', 'status')).rejects.toThrow(/daemon is not running/);
  });

  it("refuses to take over a live daemon's socket, and replaces a stale one", async () => {
    const path = await start({ ping: async () => 'pong' });
    const second = new ControlServer(path, { ping: async () => 'second' });
    await expect(second.start()).rejects.toMatchObject({ code: 'daemon.running' });
    await expect(assertNoDaemon(path)).rejects.toThrow(/already runs on this state dir/);
    // The first daemon still owns the socket.
    await expect(controlCall(path, 'ping')).resolves.toBe('pong');
    await server?.stop();
    server = undefined;
    // A file nobody listens on (left by a killed daemon) is stale: a new daemon may take its place.
    await writeFile(path, '');
    await expect(assertNoDaemon(path)).resolves.toBeUndefined();
    server = new ControlServer(path, { ping: async () => 'new' });
    await server.start();
    await expect(controlCall(path, 'ping')).resolves.toBe('new');
  });
});
