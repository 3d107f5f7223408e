/**
 * The redirect path end to end, with real nft and network namespaces (prefix `slcP`), no mocks:
 *
 *   slcP-c (client 10.231.1.2) ── slcP-gw (10.231.1.1 | 10.231.2.1) ── slcP-s (server 10.231.2.2)
 *
 * The gateway's nat prerouting chain redirects `10.231.2.2 . 502` through a map to the local port 20502,
 * where a FlowProxy (plain relay) runs in a child process inside slcP-gw. The server answers every
 * connection with the peer address it saw, so the client can tell "went through the proxy" (peer is the
 * gateway, 10.231.2.1) from "was routed past it" (peer is the client itself).
 *
 * The forward chain here deliberately accepts everything: if the redirect did not catch the flow, or a
 * stopped proxy let it fall through, the connection would reach the server directly — the control probe on
 * port 503 (not in the map) shows that path is open. So "refused while the proxy is down" can only come
 * from fail-closed behaviour of the redirect, not from a drop elsewhere.
 */
import { follow, type Follower as Lines } from './lab/follow.ts';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { gate, needsRoot } from './lab/gate.ts';
import { Nft } from '../gateway/nft.ts';
import type { ProxyPlanEntry } from '../policies/types.ts';
import { addNetns, delNetns, ip, nsExec, nsSpawn, nsSysctl, removeStale, type Spawned } from './lab/netns.ts';

const { describe: suite } = gate('test/proxy-relay.test.ts', [needsRoot()]);

const PREFIX = 'slcP';
const NS_C = `${PREFIX}-c`;
const NS_GW = `${PREFIX}-gw`;
const NS_S = `${PREFIX}-s`;
const CLIENT = '10.231.1.2';
const GW_C = '10.231.1.1';
const GW_S = '10.231.2.1';
const SERVER = '10.231.2.2';
const LISTEN_PORT = 20502;

const ENTRY: ProxyPlanEntry = {
  conduit: 'hmi-to-plc',
  flow: 'poll',
  protocol: 'modbus',
  mode: 'enforce',
  listenPort: LISTEN_PORT,
  upstream: { address: SERVER, port: 502, family: 4 },
  sources: ['10.231.1.0/24'],
};

// Same shape as the compiler's redirect (platform notes: the l4 protocol must be stated before the map).
const RULESET = `table inet slcp_test {}
delete table inet slcp_test
table inet slcp_test {
  map dpi_ports {
    type ipv4_addr . inet_service : inet_service
    elements = { ${SERVER} . 502 : ${LISTEN_PORT} }
  }
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    meta l4proto tcp redirect to ip daddr . tcp dport map @dpi_ports
  }
  chain forward_all {
    type filter hook forward priority filter; policy accept;
  }
}
`;

const SERVER_JS = `
const net = require('node:net');
for (const port of [502, 503]) {
  net.createServer((s) => {
    console.log(JSON.stringify({ port, peer: s.remoteAddress }));
    s.on('error', () => {});
    s.once('data', () => s.end('pong ' + s.remoteAddress));
  }).listen(port, '0.0.0.0', () => console.log(JSON.stringify({ listening: port })));
}
`;

const CLIENT_JS = `
const net = require('node:net');
const [host, port] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port) });
const t = setTimeout(() => { console.log(JSON.stringify({ error: 'timeout' })); process.exit(0); }, 3000);
let got = '';
s.on('connect', () => s.write('ping'));
s.on('data', (d) => { got += d; });
s.on('end', () => { clearTimeout(t); console.log(JSON.stringify({ reply: got })); process.exit(0); });
s.on('error', (e) => { clearTimeout(t); console.log(JSON.stringify({ error: e.code || e.message })); process.exit(0); });
`;

// Hosts the FlowProxy inside the gateway namespace (Node cannot switch namespaces in-process).
// SIGUSR2 stops the proxy (its port closes) while the process stays alive; SIGKILL is the crash case.
const PROXY_HOST_JS = `
const [proxyUrl, relayUrl, entryJson] = process.argv.slice(1);
const { FlowProxy } = await import(proxyUrl);
const { relayInspectorFactory } = await import(relayUrl);
const proxy = new FlowProxy(JSON.parse(entryJson), relayInspectorFactory, {
  onEvent: (e) => console.log(JSON.stringify({ event: e })),
});
await proxy.start();
console.log(JSON.stringify({ ready: proxy.port }));
process.on('SIGUSR2', async () => {
  await proxy.stop();
  console.log(JSON.stringify({ stopped: true }));
});
setInterval(() => {}, 60_000);
`;

const here = path.dirname(new URL(import.meta.url).pathname);
const proxyUrl = pathToFileURL(path.join(here, '../protocol-filters/core/proxy.ts')).href;
const relayUrl = pathToFileURL(path.join(here, '../protocol-filters/core/relay.ts')).href;

async function clientConnect(host: string, port: number): Promise<{ reply?: string; error?: string }> {
  const r = await nsExec(NS_C, process.execPath, ['-e', CLIENT_JS, host, String(port)], { timeout: 10_000 });
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { reply?: string; error?: string };
}

async function startProxyHost(): Promise<{ child: Spawned; out: Lines }> {
  const child = nsSpawn(NS_GW, process.execPath, [
    '--input-type=module',
    '-e',
    PROXY_HOST_JS,
    proxyUrl,
    relayUrl,
    JSON.stringify(ENTRY),
  ]);
  const out = follow(child);
  try {
    await out.waitFor((l) => l.ready === LISTEN_PORT);
  } catch (err) {
    child.kill('SIGKILL');
    const r = await child;
    throw new Error(`proxy host did not start: ${String(r.stderr)}`, { cause: err });
  }
  return { child, out };
}

suite('FlowProxy behind the nft redirect (netns slcP)', () => {
  let server: Spawned | undefined;
  let serverOut: Lines;
  let proxyHost: { child: Spawned; out: Lines } | undefined;

  beforeAll(async () => {
    await removeStale(PREFIX);
    for (const ns of [NS_C, NS_GW, NS_S]) await addNetns(ns);
    // Veths are created inside the gateway namespace with their peer moved straight into the other one:
    // they never exist in the host's namespace.
    await ip(['-n', NS_GW, 'link', 'add', 'gw-c', 'type', 'veth', 'peer', 'name', 'c-gw', 'netns', NS_C]);
    await ip(['-n', NS_GW, 'link', 'add', 'gw-s', 'type', 'veth', 'peer', 'name', 's-gw', 'netns', NS_S]);
    await ip(['-n', NS_GW, 'addr', 'add', `${GW_C}/24`, 'dev', 'gw-c']);
    await ip(['-n', NS_GW, 'addr', 'add', `${GW_S}/24`, 'dev', 'gw-s']);
    await ip(['-n', NS_C, 'addr', 'add', `${CLIENT}/24`, 'dev', 'c-gw']);
    await ip(['-n', NS_S, 'addr', 'add', `${SERVER}/24`, 'dev', 's-gw']);
    for (const [ns, dev] of [
      [NS_GW, 'gw-c'],
      [NS_GW, 'gw-s'],
      [NS_C, 'c-gw'],
      [NS_S, 's-gw'],
    ] as const) {
      await ip(['-n', ns, 'link', 'set', dev, 'up']);
    }
    await ip(['-n', NS_C, 'route', 'add', 'default', 'via', GW_C]);
    await ip(['-n', NS_S, 'route', 'add', 'default', 'via', GW_S]);
    await nsSysctl(NS_GW, { 'net.ipv4.ip_forward': 1 });
    await new Nft({ netns: NS_GW }).load(RULESET);

    server = nsSpawn(NS_S, process.execPath, ['-e', SERVER_JS]);
    serverOut = follow(server);
    await serverOut.waitFor((l) => l.listening === 502);
    await serverOut.waitFor((l) => l.listening === 503);
  });

  afterAll(async () => {
    proxyHost?.child.kill('SIGKILL');
    server?.kill('SIGKILL');
    // delNetns kills whatever is left inside each namespace; the ruleset goes with the gateway namespace.
    for (const ns of [NS_C, NS_GW, NS_S]) await delNetns(ns).catch(() => undefined);
  });

  const connectionsTo502 = (): Record<string, unknown>[] => serverOut.lines.filter((l) => l.port === 502);

  it('control: a destination outside the redirect map is routed straight to the server', async () => {
    expect(await clientConnect(SERVER, 503)).toEqual({ reply: `pong ${CLIENT}` });
  });

  it('a redirected connection reaches the upstream through the proxy (the server sees the gateway)', async () => {
    proxyHost = await startProxyHost();
    expect(await clientConnect(SERVER, 502)).toEqual({ reply: `pong ${GW_S}` });
    expect(connectionsTo502()).toEqual([{ port: 502, peer: GW_S }]);
  });

  it('with the proxy stopped the redirected flow is refused, never routed past it', async () => {
    if (proxyHost === undefined) proxyHost = await startProxyHost();
    const before = connectionsTo502().length;
    proxyHost.child.kill('SIGUSR2');
    await proxyHost.out.waitFor((l) => l.stopped === true);
    expect(await clientConnect(SERVER, 502)).toEqual({ error: 'ECONNREFUSED' });
    await sleep(200);
    expect(connectionsTo502()).toHaveLength(before);
    // The unredirected path is still open, so the refusal above came from the redirect meeting a closed port.
    expect(await clientConnect(SERVER, 503)).toEqual({ reply: `pong ${CLIENT}` });
  });

  it('a crashed proxy process also leaves the flow blocked; a restarted one serves it again', async () => {
    proxyHost?.child.kill('SIGKILL');
    await proxyHost?.child;
    proxyHost = await startProxyHost();
    expect(await clientConnect(SERVER, 502)).toEqual({ reply: `pong ${GW_S}` });
    const before = connectionsTo502().length;
    proxyHost.child.kill('SIGKILL');
    await proxyHost.child;
    proxyHost = undefined;
    expect(await clientConnect(SERVER, 502)).toEqual({ error: 'ECONNREFUSED' });
    await sleep(200);
    expect(connectionsTo502()).toHaveLength(before);
  });
});
