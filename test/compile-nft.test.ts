// Integration: compiled rulesets against the real nft and kernel, inside network namespaces of our own
// (prefix slcC-nft). Every example loads; a second load replaces the table atomically; a broken script
// leaves the running ruleset byte-identical; the fail-closed ruleset loads; and a small three-namespace
// topology proves the compiled semantics: an allowed flow passes, anything else is dropped and counted, a
// DPI destination lands on the proxy listener (never on the PLC directly), and the gateway itself may only
// connect to the plan's upstreams.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import type { ResultPromise } from 'execa';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { gate, needsFile, needsRoot, NFT_BINARY } from './lab/gate.ts';
import { Nft } from '../gateway/nft.ts';
import { compileFailClosed, compilePolicy } from '../policies/compile.ts';
import { NftError } from '../policies/errors.ts';
import type { Policy } from '../policies/types.ts';
import { validatePolicyText } from '../policies/validate.ts';

const here = dirname(fileURLToPath(import.meta.url));
const examplesDir = join(here, '..', 'examples');
const NOW = new Date('2026-06-01T00:00:00Z');
const PREFIX = 'slcC-nft';
const NS = { gw: `${PREFIX}-gw`, a: `${PREFIX}-a`, b: `${PREFIX}-b` };

const nftGate = gate('test/compile-nft.test.ts', [needsRoot(), needsFile(NFT_BINARY, 'nft')]);

async function ip(...args: string[]): Promise<void> {
  await execa('ip', args);
}

async function removeStale(): Promise<void> {
  const r = await execa('ip', ['netns', 'list'], { reject: false });
  for (const line of String(r.stdout).split('\n')) {
    const name = line.split(' ')[0] ?? '';
    if (name.startsWith(PREFIX)) await execa('ip', ['netns', 'delete', name], { reject: false });
  }
}

function policyFrom(text: string, file: string): Policy {
  const v = validatePolicyText(text, file, { now: NOW });
  if (!v.ok || v.policy === undefined) throw new Error(`${file}: ${JSON.stringify(v.errors)}`);
  return v.policy;
}

const children: ResultPromise[] = [];

beforeAll(async () => {
  if (!nftGate.run) return;
  await removeStale();
  for (const ns of Object.values(NS)) {
    await ip('netns', 'add', ns);
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
  }
  // Interfaces are created inside the namespaces, never in the host's: eth1/eth2 as the policy names them.
  await ip('-n', NS.gw, 'link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS.a);
  await ip('-n', NS.gw, 'link', 'add', 'eth2', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS.b);
  for (const [ns, dev, addr] of [
    [NS.gw, 'eth1', '10.1.0.1/24'],
    [NS.gw, 'eth2', '10.2.0.1/24'],
    [NS.a, 'eth0', '10.1.0.10/24'],
    [NS.b, 'eth0', '10.2.0.20/24'],
  ] as const) {
    await ip('-n', ns, 'addr', 'add', addr, 'dev', dev);
    await ip('-n', ns, 'link', 'set', dev, 'up');
  }
  await ip('-n', NS.a, 'route', 'add', 'default', 'via', '10.1.0.1');
  await ip('-n', NS.b, 'route', 'add', 'default', 'via', '10.2.0.1');
  await execa('ip', ['netns', 'exec', NS.gw, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
});

afterAll(async () => {
  for (const c of children) {
    if (c.pid !== undefined) {
      try {
        process.kill(c.pid, 'SIGTERM');
      } catch {
        // already gone
      }
    }
    await c.catch(() => undefined);
  }
  if (nftGate.run) await removeStale();
});

const nft = new Nft({ netns: NS.gw });

nftGate.describe('compiled rulesets in a real kernel', () => {
  const examples = readdirSync(examplesDir)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort();

  it('loads every example, and each load replaces the previous table whole', async () => {
    expect(examples.length).toBeGreaterThan(0);
    for (const file of examples) {
      const { ruleset } = compilePolicy(policyFrom(readFileSync(join(examplesDir, file), 'utf8'), file));
      await nft.check(ruleset);
      await nft.load(ruleset);
      const table = await nft.listTable();
      expect(table, file).toContain('table inet sluice {');
      expect(table).toContain('iifname . oifname vmap @zone_pairs');
      // Only this example's conduit chains are present: nothing left over from the previous one.
      const expected = [...ruleset.matchAll(/\n\tchain (c_[a-z0-9-]+) \{/g)].map((m) => m[1]).sort();
      const loaded = [...(table ?? '').matchAll(/\n\tchain (c_[a-z0-9-]+) \{/g)].map((m) => m[1]).sort();
      expect(loaded, file).toEqual(expected);
      // Loading the same script again (the table now exists) works too.
      await nft.load(ruleset);
      const counters = await nft.counters();
      expect(Object.keys(counters).sort()).toEqual(
        [...ruleset.matchAll(/\n\tcounter ([a-z0-9_-]+) \{/g)].map((m) => m[1]).sort(),
      );
    }
  });

  it('leaves the running ruleset byte-identical when a script fails', async () => {
    const good = compilePolicy(
      policyFrom(readFileSync(join(examplesDir, examples[0] ?? ''), 'utf8'), 'x'),
    ).ruleset;
    await nft.load(good);
    // Stateless listings: counters in the namespace may tick between listings; the rules must not change.
    const before = await nft.listRuleset({ stateless: true });
    // A semantic error late in the script (after the delete): the whole transaction must be refused.
    const late = good.replace(/\n\}\n$/, '\n\tchain late {\n\t\tip saddr @no_such_set accept\n\t}\n}\n');
    expect(late).not.toBe(good);
    await expect(nft.load(late)).rejects.toMatchObject({ code: 'nft.load-failed' });
    await expect(nft.check(late)).rejects.toBeInstanceOf(NftError);
    expect(await nft.listRuleset({ stateless: true })).toBe(before);
    // A syntax error, reported with its line number.
    const err = await nft.load(`${good}\nthis is not nft\n`).catch((e: unknown) => e);
    expect((err as NftError).code).toBe('nft.load-failed');
    expect((err as NftError).message).toMatch(/:\d+:\d+/);
    expect(await nft.listRuleset({ stateless: true })).toBe(before);
  });

  it('loads the fail-closed ruleset, with and without management', async () => {
    const mgmt = policyFrom(readFileSync(join(examplesDir, examples[0] ?? ''), 'utf8'), 'x').gateway
      .management;
    for (const script of [compileFailClosed(mgmt), compileFailClosed(undefined)]) {
      await nft.check(script);
      await nft.load(script);
      const table = await nft.listTable();
      expect(table).toContain('chain forward');
      expect(table).not.toContain('zone_pairs');
    }
    await nft.deleteTable();
    expect(await nft.listTable()).toBeUndefined();
    expect(await nft.counters()).toEqual({});
    await nft.deleteTable(); // absent table: still fine
  });
});

// ------------------------------------------------------------------------------------------------------
// Semantics: traffic through the gateway namespace.
// ------------------------------------------------------------------------------------------------------

const LAB_POLICY = `
version: 1
gateway:
  name: lab-gw
  management: { interface: mgmt0, allowFrom: [192.168.100.0/24] }
zones:
  operations: { securityLevel: 2, interfaces: [eth1], networks: [10.1.0.0/24] }
  cell: { securityLevel: 2, interfaces: [eth2], networks: [10.2.0.0/24] }
assets:
  hmi: { zone: operations, addresses: [10.1.0.10] }
  plc: { zone: cell, addresses: [10.2.0.20] }
conduits:
  hmi-to-plc:
    from: operations
    to: cell
    flows:
      - { name: web, protocol: tcp, from: [hmi], to: [plc], port: 8080 }
      - { name: poll, protocol: modbus, from: [hmi], to: [plc], modbus: { rules: [{ functions: [3], addresses: 0-9 }] } }
`;

// A server answering `<name>:<port>` on each port given; prints "ready" once all listen.
const SERVER = `
const net = require('node:net');
const [name, ...ports] = process.argv.slice(1);
let n = 0;
for (const p of ports) net.createServer((s) => s.end(name + ':' + p)).listen(Number(p), () => { if (++n === ports.length) console.log('ready'); });
`;
// The stand-in proxy: on each connection, fetches the upstream's answer and returns `proxy+<answer>`.
const PROXY = `
const net = require('node:net');
const [listen, host, port] = process.argv.slice(1);
net.createServer((c) => {
  const u = net.connect(Number(port), host);
  let data = '';
  u.on('data', (d) => (data += d));
  u.on('end', () => c.end('proxy+' + data));
  u.on('error', (e) => c.end('proxy-error ' + e.code));
}).listen(Number(listen), () => console.log('ready'));
`;
// Prints what the server sent, or ERR:<reason>; gives up after 1.5 s (a drop shows as a timeout).
const CLIENT = `
const net = require('node:net');
const [host, port] = process.argv.slice(1);
const s = net.connect(Number(port), host);
let data = '';
const t = setTimeout(() => { console.log('ERR:timeout'); process.exit(1); }, 1500);
s.on('data', (d) => (data += d));
s.on('end', () => { clearTimeout(t); console.log(data); process.exit(0); });
s.on('error', (e) => { clearTimeout(t); console.log('ERR:' + e.code); process.exit(1); });
`;

async function startIn(ns: string, script: string, args: string[]): Promise<void> {
  const child = execa('ip', ['netns', 'exec', ns, process.execPath, '-e', script, '--', ...args], {
    buffer: false,
    reject: false,
  });
  children.push(child);
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`server in ${ns} not ready`)), 10_000);
    child.stdout?.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) {
        clearTimeout(t);
        resolve();
      }
    });
  });
}

async function connect(ns: string, host: string, port: number): Promise<string> {
  const r = await execa(
    'ip',
    ['netns', 'exec', ns, process.execPath, '-e', CLIENT, '--', host, String(port)],
    {
      reject: false,
    },
  );
  return String(r.stdout).trim();
}

nftGate.describe('compiled semantics on the wire', () => {
  it('passes allowed flows, drops the rest, and sends DPI flows through the proxy listener only', async () => {
    const { ruleset, plan } = compilePolicy(policyFrom(LAB_POLICY, 'lab.yaml'));
    await nft.load(ruleset);
    const entry = plan.entries[0];
    expect(entry).toMatchObject({ flow: 'poll', upstream: { address: '10.2.0.20', port: 502 } });
    const listenPort = entry?.listenPort ?? 0;

    await startIn(NS.b, SERVER, ['plc', '8080', '8081', '502']);
    await startIn(NS.gw, PROXY, [String(listenPort), '10.2.0.20', '502']);

    // The tcp flow passes and is counted.
    expect(await connect(NS.a, '10.2.0.20', 8080)).toBe('plc:8080');
    // A port no flow allows is dropped (silently: a timeout) and counted on the conduit.
    expect(await connect(NS.a, '10.2.0.20', 8081)).toBe('ERR:timeout');
    // The Modbus destination is redirected to the proxy, which may reach exactly its upstream.
    expect(await connect(NS.a, '10.2.0.20', 502)).toBe('proxy+plc:502');
    // The listener is not reachable without the redirect.
    expect(await connect(NS.a, '10.1.0.1', listenPort)).toBe('ERR:timeout');
    // The PLC may not open connections into the operations zone: no conduit for that pair.
    expect(await connect(NS.b, '10.1.0.10', 22)).toBe('ERR:timeout');
    // The gateway's own connections go only to the plan's upstreams.
    expect(await connect(NS.gw, '10.2.0.20', 8080)).toBe('ERR:timeout');

    const counters = await nft.counters();
    expect(counters['f_hmi-to-plc_web']?.packets).toBeGreaterThan(0);
    expect(counters['f_hmi-to-plc_poll']?.packets).toBe(1); // nat sees the first packet of each connection
    expect(counters['x_hmi-to-plc']?.packets).toBeGreaterThan(0);
    expect(counters['r_input']?.packets).toBeGreaterThan(0);
    expect(counters['r_no-conduit']?.packets).toBeGreaterThan(0);
    expect(counters['r_output']?.packets).toBeGreaterThan(0);

    // Fail-closed: the allowed flow stops as well.
    await nft.load(compileFailClosed(undefined));
    expect(await connect(NS.a, '10.2.0.20', 8080)).toBe('ERR:timeout');
  });
});
