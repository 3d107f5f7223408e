/**
 * The blocked-traffic log pipeline against the real thing: nftables `log group` → NFLOG → ulogd2 (Debian
 * `ulogd2` + `ulogd2-json`) → JSON lines → JsonLineFollower → parseUlogdLine/toBlockedEvent → LogStore.
 * Runs in a network namespace of its own (prefix `slcU`); the packets never leave its loopback: an output
 * chain drops UDP to 127.0.0.2/127.0.0.3. Needs root; elsewhere it skips and says why (never in CI).
 *
 * ulogd `-d` forks into the background and `-p` records the daemon's pid (ulogd removes the file on
 * SIGTERM). Teardown kills that pid and, as a backstop, every pid `ip netns pids` lists in our namespace
 * (only processes this test started live there), then deletes the namespace.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { gate, needsFile, needsRoot } from './lab/gate.ts';
import type { BlockedEvent } from '../gateway/events.ts';
import { LogStore } from '../gateway/logstore.ts';
import { Nft } from '../gateway/nft.ts';
import {
  JsonLineFollower,
  findUlogdPluginDir,
  parseUlogdLine,
  toBlockedEvent,
  ulogdConfig,
} from '../gateway/ulogd.ts';
import { formatLogPrefix } from '../policies/compile.ts';

const { describe: suite } = gate('test/ulogd.test.ts', [
  needsRoot('network namespaces, nft and ulogd'),
  findUlogdPluginDir() === undefined && 'the ulogd2 and ulogd2-json packages (plugin directory)',
  needsFile('/usr/sbin/ulogd', 'ulogd2'),
]);

const NS = 'slcU-ulogd';
const GROUP = 37;
const DROP_PREFIX = formatLogPrefix({ verdict: 'drop', conduit: 'hmi-to-plc', reason: 'no-flow' });
const MONITOR_PREFIX = formatLogPrefix({ verdict: 'would-drop', reason: 'no-conduit' });

async function ip(args: string[]): Promise<{ exitCode: number; stdout: string }> {
  const r = await execa('ip', args, { reject: false });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout) };
}

/** Kill what runs in our namespace (only what this test started), then remove it. */
async function removeNamespace(): Promise<void> {
  const list = await ip(['netns', 'list']);
  if (!list.stdout.split('\n').some((l) => l.split(' ')[0] === NS)) return;
  const pids = await ip(['netns', 'pids', NS]);
  for (const pid of pids.stdout.split(/\s+/).filter((p) => /^\d+$/.test(p))) {
    try {
      process.kill(Number(pid), 'SIGTERM');
    } catch {
      // Already gone.
    }
  }
  await ip(['netns', 'del', NS]);
}

/** Send one UDP datagram from inside the namespace (the output chain sees it). */
async function sendUdp(host: string, port: number): Promise<void> {
  // bash's /dev/udp starts in milliseconds (node would take ~1 s here); the drop makes the write fail (EPERM).
  await execa('ip', ['netns', 'exec', NS, 'bash', '-c', `echo x > /dev/udp/${host}/${port}`], {
    reject: false,
  });
}

suite('NFLOG → ulogd2 → follower → store', () => {
  let dir = '';
  let pidFile = '';
  let store: LogStore | undefined;
  let follower: JsonLineFollower | undefined;
  const rejected: string[] = [];

  beforeAll(async () => {
    await removeNamespace();
    expect((await ip(['netns', 'add', NS])).exitCode).toBe(0);
    expect((await ip(['-n', NS, 'link', 'set', 'lo', 'up'])).exitCode).toBe(0);
    dir = mkdtempSync(join(tmpdir(), 'sluice-ulogd-'));
    const jsonFile = join(dir, 'drops.json');
    pidFile = join(dir, 'ulogd.pid');
    const conf = join(dir, 'ulogd.conf');
    writeFileSync(conf, ulogdConfig({ group: GROUP, jsonFile, logFile: join(dir, 'ulogd.log') }));

    await new Nft({ netns: NS }).load(`table inet slcu_test {
  chain out {
    type filter hook output priority filter; policy accept;
    ip daddr 127.0.0.2 udp dport 9 log prefix "${DROP_PREFIX}" group ${GROUP} drop
    ip daddr 127.0.0.3 udp dport 9 log prefix "${MONITOR_PREFIX}" group ${GROUP}
  }
}
`);

    const started = await execa('ip', ['netns', 'exec', NS, 'ulogd', '-d', '-c', conf, '-p', pidFile], {
      reject: false,
    });
    expect(started.exitCode, String(started.stderr)).toBe(0);

    store = LogStore.open(join(dir, 'logs.db'), {
      maxBytes: 64 * 1024 ** 2,
      maxAgeMs: 24 * 3600_000,
      flushMs: 100,
    });
    const s = store;
    follower = new JsonLineFollower(jsonFile, { start: 'beginning', pollMs: 500 });
    follower.on('lines', (lines) => {
      const events: BlockedEvent[] = [];
      for (const line of lines) {
        const r = parseUlogdLine(line);
        if (!r.ok) {
          rejected.push(r.reason);
          continue;
        }
        const e = toBlockedEvent(r.raw, (conduit) =>
          conduit === 'hmi-to-plc' ? { fromZone: 'enterprise', toZone: 'control' } : undefined,
        );
        if (e !== null) events.push(e);
      }
      s.enqueue(events);
    });
    await follower.start();

    // ulogd binds its NFLOG group after forking: probe with the monitor rule until a line comes through, so
    // the timed test below measures the pipeline, not ulogd's start-up.
    const deadline = Date.now() + 15_000;
    while (s.query({ verdict: 'would-drop' }).events.length === 0) {
      if (Date.now() > deadline) {
        const log = existsSync(join(dir, 'ulogd.log')) ? readFileSync(join(dir, 'ulogd.log'), 'utf8') : '';
        throw new Error(`ulogd produced no event within 15 s; its log:\n${log}`);
      }
      await sendUdp('127.0.0.3', 9);
      await sleep(200);
    }
  });

  afterAll(async () => {
    await follower?.stop();
    store?.close();
    if (pidFile !== '' && existsSync(pidFile)) {
      const pid = Number(readFileSync(pidFile, 'utf8').trim());
      if (Number.isInteger(pid) && pid > 1) {
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          // Already gone.
        }
      }
    }
    await removeNamespace();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  it('a dropped packet shows up in the store with its conduit, zones and verdict within 2 s', async () => {
    const s = store;
    if (s === undefined) throw new Error('store not open');
    const sentAt = Date.now();
    await sendUdp('127.0.0.2', 9);
    let found: ReturnType<LogStore['query']>['events'] = [];
    while (found.length === 0 && Date.now() - sentAt < 2000) {
      await sleep(50);
      found = s.query({ conduit: 'hmi-to-plc', since: sentAt - 1000 }).events;
    }
    const latency = Date.now() - sentAt;
    expect(found, `no event after ${latency} ms`).toHaveLength(1);
    expect(found[0]).toMatchObject({
      conduit: 'hmi-to-plc',
      fromZone: 'enterprise',
      toZone: 'control',
      verdict: 'drop',
      reason: 'no-flow',
      source: 'nflog',
      protocol: 'udp',
      src: '127.0.0.1',
      dst: '127.0.0.2',
      dstPort: 9,
      outIface: 'lo',
      count: 1,
    });
    expect(Math.abs((found[0]?.time ?? 0) - sentAt)).toBeLessThan(2000);
    // The packet's own time (from the kernel) splits the latency into sending it and the pipeline proper.
    const packetAt = found[0]?.time ?? sentAt;
    console.log(
      `ulogd pipeline: packet sent after ${packetAt - sentAt} ms, stored ${latency - (packetAt - sentAt)} ms later`,
    );
  });

  it('a monitor-mode packet outside any conduit is stored as would-drop without a conduit', () => {
    const events = store?.query({ conduit: null }).events ?? [];
    expect(events.length).toBeGreaterThan(0);
    expect(events[0]).toMatchObject({ verdict: 'would-drop', reason: 'no-conduit', dst: '127.0.0.3' });
    expect(events[0]?.conduit).toBeUndefined();
    expect(store?.counts().find((c) => c.conduit === 'hmi-to-plc')?.events).toBe(1);
    // Everything ulogd wrote was understood.
    expect(rejected).toEqual([]);
  });
});
