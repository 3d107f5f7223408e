import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';
import { describe, expect, it } from 'vitest';
import {
  PROXY_PORT_RANGE,
  compileFailClosed,
  compilePolicy,
  conduitCounterName,
  flowCounterName,
  flowMark,
  formatLogPrefix,
  monitorMark,
  parseCounterName,
  parseLogPrefix,
} from './compile.ts';
import { SluiceError } from './errors.ts';
import type { Conduit, Policy } from './types.ts';
import { OPCUA_DEFAULTS, validatePolicyText } from './validate.ts';

const here = dirname(fileURLToPath(import.meta.url));
const examplesDir = join(here, '..', 'examples');
const goldenDir = join(here, 'golden');
// Waivers in the examples expire; pin "today" so the golden files do not rot with the calendar.
const NOW = new Date('2026-06-01T00:00:00Z');

function policyFrom(text: string, file = 'test.yaml'): Policy {
  const v = validatePolicyText(text, file, { now: NOW });
  if (!v.ok || v.policy === undefined) {
    throw new Error(
      `${file} is invalid:\n${v.errors.map((e) => `${e.path.join('.')}: ${e.message}`).join('\n')}`,
    );
  }
  return v.policy;
}

/** A policy that touches every compiler path: dual stack, every protocol, both modes, port ranges. */
const BASE = `
version: 1
gateway:
  name: test-gw
  management: { interface: mgmt0, allowFrom: [192.168.100.0/24, 'fd00:100::/64'], ports: [8443, 22] }
defaults: { logRate: 5/minute }
zones:
  enterprise: { securityLevel: 1, interfaces: [eth1, eth9], networks: [10.1.0.0/16, 'fd00:1::/64'] }
  dmz: { securityLevel: 2, interfaces: [eth3], networks: [10.3.0.0/24] }
  control: { securityLevel: 2, interfaces: [eth2], networks: [10.2.0.0/24, 'fd00:2::/64'] }
assets:
  hmi-1: { zone: enterprise, addresses: [10.1.0.10, 'fd00:1::10'] }
  hmi-2: { zone: enterprise, addresses: [10.1.0.11] }
  plc-1: { zone: control, addresses: [10.2.0.20, 'fd00:2::20'] }
  plc-2: { zone: control, addresses: [10.2.0.21] }
  hist: { zone: dmz, addresses: [10.3.0.5] }
conduits:
  hmi-to-plc:
    from: enterprise
    to: control
    flows:
      - { name: poll, protocol: modbus, from: [hmi-1, hmi-2], to: [plc-2, plc-1], modbus: { rules: [{ functions: [3], addresses: 0-9 }] } }
      - { name: ua, protocol: opcua, from: [hmi-1], to: [plc-1] }
      - { name: web, protocol: tcp, from: [hmi-1], to: [plc-1], port: [80, 443, 8000-8100, 8050-8200] }
      - { name: ping, protocol: icmp, icmpTypes: [echo-request] }
      - { name: ts, protocol: icmp, from: [hmi-1], to: [plc-1], icmpTypes: [timestamp-request] }
  plc-to-dmz:
    from: control
    to: dmz
    mode: monitor
    flows:
      - { name: ntp, protocol: udp, from: [plc-1], to: [hist], port: 123 }
`;

describe('log prefixes and counter names', () => {
  it('round-trips every verdict and reason', () => {
    const p = formatLogPrefix({ verdict: 'drop', conduit: 'hmi-to-plc', reason: 'no-flow' });
    expect(p).toBe('sluice:drop:hmi-to-plc:no-flow:');
    expect(parseLogPrefix(p)).toEqual({ verdict: 'drop', conduit: 'hmi-to-plc', reason: 'no-flow' });
    expect(parseLogPrefix('sluice:would-drop::input: ')).toEqual({ verdict: 'would-drop', reason: 'input' });
    const longest = formatLogPrefix({ verdict: 'would-drop', conduit: 'a'.repeat(31), reason: 'dpi-direct' });
    expect(Buffer.byteLength(longest)).toBeLessThan(128);
  });
  it('refuses what it did not write', () => {
    expect(parseLogPrefix('sluice:drop:Bad:no-flow:')).toBeUndefined();
    expect(parseLogPrefix('sluice:accept::input:')).toBeUndefined();
    expect(parseLogPrefix('IN=eth1 OUT=eth2')).toBeUndefined();
    expect(() => formatLogPrefix({ verdict: 'drop', conduit: 'a"b', reason: 'input' })).toThrow(SluiceError);
  });
  it('maps counter names back to conduit and flow', () => {
    expect(parseCounterName(flowCounterName('hmi-to-plc', 'poll'))).toEqual({
      kind: 'flow',
      conduit: 'hmi-to-plc',
      flow: 'poll',
    });
    expect(parseCounterName(conduitCounterName('a-b'))).toEqual({ kind: 'conduit', conduit: 'a-b' });
    expect(parseCounterName('r_no-conduit')).toEqual({ kind: 'reason', reason: 'no-conduit' });
    expect(parseCounterName('f_a')).toBeUndefined();
    expect(parseCounterName('something')).toBeUndefined();
  });
});

/** Rule lines of one chain (without the hook line). */
function chain(ruleset: string, name: string): string[] {
  const m = new RegExp(`\\n\\tchain ${name} \\{\\n([\\s\\S]*?)\\n\\t\\}`).exec(ruleset);
  if (m === null) throw new Error(`no chain ${name}`);
  return (m[1] ?? '')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => !l.startsWith('type '));
}

function setBlock(ruleset: string, name: string): string {
  const m = new RegExp(`\\n\\t(?:set|map) ${name} \\{\\n([\\s\\S]*?)\\n\\t\\}`).exec(ruleset);
  if (m === null) throw new Error(`no set ${name}`);
  return m[1] ?? '';
}

describe('compilePolicy structure', () => {
  const policy = policyFrom(BASE);
  const { ruleset, plan } = compilePolicy(policy, { nflogGroup: 7, proxyPortBase: 31000 });

  it('replaces one table atomically', () => {
    const lines = ruleset.split('\n').filter((l) => !l.startsWith('#'));
    expect(lines.slice(0, 3)).toEqual([
      'table inet sluice {}',
      'delete table inet sluice',
      'table inet sluice {',
    ]);
    expect(ruleset.match(/^table /gm)).toHaveLength(2);
  });

  it('puts the anti-lockout first in input and output, for both families', () => {
    const input = chain(ruleset, 'input');
    const output = chain(ruleset, 'output');
    expect(input[0]).toBe(
      'iifname "mgmt0" meta l4proto tcp ip saddr @mgmt_allow4 tcp dport @mgmt_ports accept comment "sluice anti-lockout"',
    );
    expect(input[1]).toContain('ip6 saddr @mgmt_allow6 tcp dport @mgmt_ports accept');
    expect(output[0]).toContain(
      'oifname "mgmt0" meta l4proto tcp ip daddr @mgmt_allow4 tcp sport @mgmt_ports accept',
    );
    expect(setBlock(ruleset, 'mgmt_ports')).toContain('elements = { 22, 8443 }');
    expect(ruleset).toMatch(/type filter hook input priority filter; policy drop;/);
    expect(ruleset).toMatch(/type filter hook output priority filter; policy drop;/);
  });

  it('dispatches forward through the zone-pair verdict map, then logs and drops', () => {
    const fwd = chain(ruleset, 'forward');
    expect(fwd).toEqual([
      // Established traffic passes only while the flow (or monitor conduit) that accepted it is live.
      'ct state established,related ct mark @live_marks accept comment "sluice established"',
      'ct state invalid goto drop_invalid comment "sluice invalid"',
      'iifname . oifname vmap @zone_pairs comment "sluice zone-pair dispatch"',
      'limit rate 5/minute log group 7 prefix "sluice:drop::no-conduit:" comment "sluice no-conduit"',
      'counter name "r_no-conduit" drop comment "sluice no-conduit"',
    ]);
    expect(setBlock(ruleset, 'zone_pairs')).toContain(
      'elements = { "eth1" . "eth2" : goto c_hmi-to-plc, "eth9" . "eth2" : goto c_hmi-to-plc, ' +
        '"eth2" . "eth3" : goto c_plc-to-dmz }',
    );
    expect(chain(ruleset, 'drop_invalid')).toEqual([
      'limit rate 5/minute log group 7 prefix "sluice:drop::invalid:" comment "sluice invalid"',
      'counter name "r_invalid" drop comment "sluice invalid"',
    ]);
  });

  it('matches flows with named address and port sets and a named counter per flow', () => {
    const c = chain(ruleset, 'c_hmi-to-plc');
    expect(c).toContain(
      'ip saddr @f_hmi-to-plc_web_s4 ip daddr @f_hmi-to-plc_web_d4 meta l4proto tcp tcp dport @f_hmi-to-plc_web_p ' +
        `counter name "f_hmi-to-plc_web" ct mark set ${flowMark('hmi-to-plc', 'web')} accept comment "hmi-to-plc/web"`,
    );
    expect(c).toContain(
      'ip6 saddr @f_hmi-to-plc_web_s6 ip6 daddr @f_hmi-to-plc_web_d6 meta l4proto tcp tcp dport @f_hmi-to-plc_web_p ' +
        `counter name "f_hmi-to-plc_web" ct mark set ${flowMark('hmi-to-plc', 'web')} accept comment "hmi-to-plc/web"`,
    );
    // The marks of the policy's flows and monitor conduits are the live ones; a removed flow's are not.
    const live = setBlock(ruleset, 'live_marks');
    expect(live).toContain(flowMark('hmi-to-plc', 'web'));
    expect(live).toContain(monitorMark('plc-to-dmz'));
    expect(live).not.toContain(flowMark('hmi-to-plc', 'gone'));
    expect(flowMark('hmi-to-plc', 'web')).toMatch(/^0x[0-9a-f]{8}$/);
    expect(flowMark('hmi-to-plc', 'web')).not.toBe(flowMark('hmi-to-plc', 'ssh'));
    // Overlapping and adjacent ranges are merged (interval sets refuse overlaps).
    expect(setBlock(ruleset, 'f_hmi-to-plc_web_p')).toContain('elements = { 80, 443, 8000-8200 }');
    expect(setBlock(ruleset, 'f_hmi-to-plc_web_s4')).toContain('flags interval');
    // Whole-zone default: the zone's networks.
    expect(setBlock(ruleset, 'f_hmi-to-plc_ping_s4')).toContain('elements = { 10.1.0.0/16 }');
    expect(c).toContain(
      'ip saddr @f_hmi-to-plc_ping_s4 ip daddr @f_hmi-to-plc_ping_d4 meta l4proto icmp icmp type { echo-request } ' +
        `counter name "f_hmi-to-plc_ping" ct mark set ${flowMark('hmi-to-plc', 'ping')} accept comment "hmi-to-plc/ping"`,
    );
    expect(c.some((l) => l.includes('icmpv6 type { echo-request }'))).toBe(true);
    // timestamp-request exists for ICMPv4 only: no IPv6 rule for that flow.
    expect(c.filter((l) => l.includes('"hmi-to-plc/ts"'))).toHaveLength(1);
    for (const f of ['poll', 'ua', 'web', 'ping', 'ts'])
      expect(ruleset).toContain(`\tcounter f_hmi-to-plc_${f} {`);
    // No linear lists of addresses anywhere in rules: addresses only live in sets.
    for (const line of ruleset.split('\n').filter((l) => /(saddr|daddr) /.test(l))) {
      expect(line).not.toMatch(/(saddr|daddr) \{/);
      expect(line).not.toMatch(/(saddr|daddr) \d/);
    }
  });

  it('drops (enforce) or accepts (monitor) at the end of a conduit, logging behind a limit', () => {
    expect(chain(ruleset, 'c_hmi-to-plc').slice(-2)).toEqual([
      'limit rate 5/minute log group 7 prefix "sluice:drop:hmi-to-plc:no-flow:" comment "hmi-to-plc no-flow"',
      'counter name "x_hmi-to-plc" drop comment "hmi-to-plc no-flow"',
    ]);
    expect(chain(ruleset, 'c_plc-to-dmz').slice(-2)).toEqual([
      'limit rate 5/minute log group 7 prefix "sluice:would-drop:plc-to-dmz:no-flow:" comment "plc-to-dmz no-flow"',
      `counter name "x_plc-to-dmz" ct mark set ${monitorMark('plc-to-dmz')} accept comment "plc-to-dmz no-flow"`,
    ]);
  });

  it('redirects DPI flows through per-flow maps and never forwards a DPI destination directly', () => {
    expect(plan.entries.map((e) => [e.flow, e.upstream.address, e.upstream.port])).toEqual([
      ['poll', '10.2.0.20', 502],
      ['poll', '10.2.0.21', 502],
      ['poll', 'fd00:2::20', 502],
      ['ua', '10.2.0.20', 4840],
      ['ua', 'fd00:2::20', 4840],
    ]);
    const [p20, p21, p6, u20, u6] = plan.entries.map((e) => e.listenPort) as [
      number,
      number,
      number,
      number,
      number,
    ];
    for (const p of [p20, p21, p6, u20, u6]) {
      expect(p).toBeGreaterThanOrEqual(31000);
      expect(p).toBeLessThan(31000 + PROXY_PORT_RANGE);
    }
    expect(new Set([p20, p21, p6, u20, u6]).size).toBe(5);
    expect(plan.entries[0]).toMatchObject({
      conduit: 'hmi-to-plc',
      protocol: 'modbus',
      mode: 'enforce',
      sources: ['10.1.0.10/32', '10.1.0.11/32', 'fd00:1::10/128'],
      upstream: { family: 4 },
    });
    expect(plan.entries[0]?.modbus?.rules[0]?.functions).toEqual([3]);
    // No opcua section in the policy: the plan carries validation's defaults, not an empty spec.
    expect(plan.entries[3]).toMatchObject({ flow: 'ua', protocol: 'opcua', opcua: OPCUA_DEFAULTS });
    expect(setBlock(ruleset, 'f_hmi-to-plc_poll_r4')).toContain(
      `elements = { 10.2.0.20 . 502 : ${p20}, 10.2.0.21 . 502 : ${p21} }`,
    );
    expect(setBlock(ruleset, 'f_hmi-to-plc_poll_r4')).toContain(
      'type ipv4_addr . inet_service : inet_service',
    );
    expect(chain(ruleset, 'p_enterprise')).toContain(
      'meta l4proto tcp ip saddr @f_hmi-to-plc_poll_s4 ip daddr . tcp dport @f_hmi-to-plc_poll_r4 ' +
        'counter name "f_hmi-to-plc_poll" redirect to ip daddr . tcp dport map @f_hmi-to-plc_poll_r4 ' +
        'comment "hmi-to-plc/poll"',
    );
    expect(setBlock(ruleset, 'dpi_ingress')).toContain(
      '"eth1" : goto p_enterprise, "eth9" : goto p_enterprise',
    );
    expect(ruleset).toContain('type nat hook prerouting priority dstnat; policy accept;');
    // Listeners only for redirected connections; the gateway may connect to exactly the upstreams.
    expect(chain(ruleset, 'input')).toContain(
      'meta l4proto tcp ct status dnat tcp dport @dpi_listen accept comment "sluice dpi-listen"',
    );
    const listen = [p20, p21, p6, u20, u6].sort((a, b) => a - b).join(', ');
    expect(setBlock(ruleset, 'dpi_listen')).toContain(`elements = { ${listen} }`);
    expect(setBlock(ruleset, 'dpi_up4')).toContain(
      'elements = { 10.2.0.20 . 4840, 10.2.0.20 . 502, 10.2.0.21 . 502 }',
    );
    expect(setBlock(ruleset, 'dpi_up6')).toContain('elements = { fd00:2::20 . 4840, fd00:2::20 . 502 }');
    const output = chain(ruleset, 'output');
    expect(output.slice(-4)).toEqual([
      'meta l4proto tcp ip daddr . tcp dport @dpi_up4 accept comment "sluice dpi-upstream"',
      'meta l4proto tcp ip6 daddr . tcp dport @dpi_up6 accept comment "sluice dpi-upstream"',
      'limit rate 5/minute log group 7 prefix "sluice:drop::output:" comment "sluice output"',
      'counter name "r_output" drop comment "sluice output"',
    ]);
    // In the conduit chain the DPI destinations are diverted to a drop chain before any flow can accept them.
    const c = chain(ruleset, 'c_hmi-to-plc');
    expect(c[0]).toBe(
      'meta l4proto tcp ip daddr . tcp dport @c_hmi-to-plc_dpi4 goto d_hmi-to-plc comment "hmi-to-plc dpi-direct"',
    );
    expect(c[1]).toContain('@c_hmi-to-plc_dpi6 goto d_hmi-to-plc');
    expect(c.some((l) => l.includes('"hmi-to-plc/poll"') || l.includes('"hmi-to-plc/ua"'))).toBe(false);
    expect(chain(ruleset, 'd_hmi-to-plc')).toEqual([
      'limit rate 5/minute log group 7 prefix "sluice:drop:hmi-to-plc:dpi-direct:" comment "hmi-to-plc dpi-direct"',
      'counter name "x_hmi-to-plc" drop comment "hmi-to-plc dpi-direct"',
    ]);
  });

  it('gives every rule a short, safe comment', () => {
    const rules = ruleset
      .split('\n')
      .filter((l) => l.startsWith('\t\t') && !/^\t\t(type|flags|elements) /.test(l));
    expect(rules.length).toBeGreaterThan(20);
    for (const r of rules) {
      const m = / comment "([^"]*)"$/.exec(r);
      expect(m, r).not.toBeNull();
      expect(m?.[1]).toMatch(/^[a-z0-9_:/. -]{1,128}$/);
    }
  });

  it('has no DPI plumbing when there are no DPI flows', () => {
    const noDpi = policyFrom(BASE.replace(/ {6}- \{ name: (poll|ua),.*\n/g, ''));
    const r = compilePolicy(noDpi);
    expect(r.plan.entries).toEqual([]);
    expect(r.ruleset).not.toMatch(/prerouting|dpi_|redirect/);
  });
});

describe('determinism', () => {
  it('gives byte-identical output for the same input', () => {
    const a = compilePolicy(policyFrom(BASE));
    const b = compilePolicy(policyFrom(BASE));
    expect(b.ruleset).toBe(a.ruleset);
    expect(JSON.stringify(b.plan)).toBe(JSON.stringify(a.plan));
  });
  it('does not depend on the order of zones, assets, conduits, flows or addresses', () => {
    const p = policyFrom(BASE);
    const reversed = <K, V>(m: Map<K, V>): Map<K, V> => new Map([...m.entries()].reverse());
    const shuffled: Policy = {
      ...p,
      zones: reversed(p.zones),
      assets: reversed(p.assets),
      conduits: new Map(
        [...p.conduits.entries()].reverse().map(([k, c]): [string, Conduit] => [
          k,
          {
            ...c,
            flows: [...c.flows].reverse().map((f) => ({
              ...f,
              from: { ...f.from, addresses: [...f.from.addresses].reverse() },
              to: { ...f.to, addresses: [...f.to.addresses].reverse() },
              ports: [...f.ports].reverse(),
            })),
          },
        ]),
      ),
    };
    expect([...shuffled.conduits.keys()]).not.toEqual([...p.conduits.keys()]);
    const a = compilePolicy(p);
    const b = compilePolicy(shuffled);
    expect(b.ruleset).toBe(a.ruleset);
    expect(JSON.stringify(b.plan)).toBe(JSON.stringify(a.plan));
  });
});

describe('defensive whitelisting', () => {
  const expectUnsafe = (mutate: (p: Policy) => void): void => {
    const p = structuredClone(policyFrom(BASE));
    mutate(p);
    let err: unknown;
    try {
      compilePolicy(p);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SluiceError);
    expect((err as SluiceError).code).toBe('compile.unsafe-name');
  };
  const conduit = (p: Policy): Conduit => p.conduits.get('hmi-to-plc') as Conduit;

  it('refuses a conduit or flow name that is not a NAME', () => {
    expectUnsafe((p) => {
      conduit(p).name = 'x" accept';
    });
    expectUnsafe((p) => {
      const f = conduit(p).flows[2];
      if (f) f.name = 'web\n}';
    });
    expectUnsafe((p) => {
      p.gateway.name = 'gw;';
    });
  });
  it('refuses hostile interface names, addresses, ICMP types and rates', () => {
    expectUnsafe((p) => {
      const z = p.zones.get('control');
      if (z) z.interfaces = ['eth2" accept #'];
    });
    expectUnsafe((p) => {
      p.gateway.management.interface = 'mgmt0 } ';
    });
    expectUnsafe((p) => {
      const f = conduit(p).flows[2];
      if (f) f.to.addresses = [{ family: 4, text: '10.2.0.20/32 }', address: '10.2.0.20', prefix: 32 }];
    });
    expectUnsafe((p) => {
      const f = conduit(p).flows[2];
      if (f) f.to.addresses = [{ family: 4, text: '10.2.0.21/24', address: '10.2.0.21', prefix: 24 }];
    });
    expectUnsafe((p) => {
      const f = conduit(p).flows.find((x) => x.protocol === 'icmp');
      if (f) f.icmpTypes = ['echo-request } accept'];
    });
    expectUnsafe((p) => {
      p.defaults.logRate = { count: 1.5, unit: 'second' };
    });
    expectUnsafe((p) => {
      const f = conduit(p).flows[2];
      if (f) f.ports = [{ start: 80, end: 70000 }];
    });
  });
  it('never reads descriptions into the script', () => {
    const p = structuredClone(policyFrom(BASE));
    const a = compilePolicy(p).ruleset;
    for (const z of p.zones.values()) z.description = '"; flush ruleset #';
    conduit(p).description = '}\ntable ip evil {}';
    expect(compilePolicy(p).ruleset).toBe(a);
  });
});

describe('stable DPI listen ports', () => {
  const ports = (text: string): Map<string, number> =>
    new Map(
      compilePolicy(policyFrom(text)).plan.entries.map((e) => [
        `${e.conduit}/${e.flow}/${e.upstream.address}/${e.upstream.port}`,
        e.listenPort,
      ]),
    );

  it('keeps every existing listen port when flows are added or removed (hitless applies)', () => {
    const before = ports(BASE);
    // New flows that sort before and between the existing ones, and a new destination on an existing flow.
    const more = BASE.replace(
      '      - { name: ua,',
      `      - { name: aa, protocol: modbus, from: [hmi-1], to: [plc-2], port: 5021, modbus: { rules: [{ functions: [3] }] } }
      - { name: pz, protocol: modbus, from: [hmi-1], to: [plc-1], port: 5020, modbus: { rules: [{ functions: [3] }] } }
      - { name: ua,`,
    ).replace(
      '{ name: ua, protocol: opcua, from: [hmi-1], to: [plc-1] }',
      '{ name: ua, protocol: opcua, from: [hmi-1], to: [plc-1, plc-2] }',
    );
    const after = ports(more);
    expect(after.size).toBe(before.size + 4);
    for (const [key, port] of before) expect(after.get(key), key).toBe(port);
    // Removing a flow leaves the others where they were.
    const fewer = ports(BASE.replace(/ {6}- \{ name: poll,[^\n]*\n/, ''));
    for (const [key, port] of fewer) expect(before.get(key), key).toBe(port);
  });

  it('resolves collisions deterministically and within the range', () => {
    const flows = Array.from(
      { length: 200 },
      (_, i) =>
        `      - { name: f${i}, protocol: modbus, from: [hmi-1], to: [plc-2], port: ${1000 + i}, modbus: { rules: [{ functions: [3] }] } }`,
    ).join('\n');
    const text = BASE.replace('      - { name: ua,', `${flows}\n      - { name: ua,`);
    const a = compilePolicy(policyFrom(text), { proxyPortBase: 65300 });
    const b = compilePolicy(policyFrom(text), { proxyPortBase: 65300 });
    expect(a.ruleset).toBe(b.ruleset);
    const used = a.plan.entries.map((e) => e.listenPort);
    expect(new Set(used).size).toBe(used.length);
    for (const p of used) expect(p >= 65300 && p <= 65535).toBe(true);
  });
});

describe('DPI limits in the plan', () => {
  it("carries a flow's limits (in ms) into each of its plan entries, and nothing when unset", () => {
    const text = BASE.replace(
      'modbus: { rules: [{ functions: [3], addresses: 0-9 }] } }',
      'modbus: { rules: [{ functions: [3], addresses: 0-9 }] }, limits: { maxConnections: 4, idleTimeoutSeconds: 60 } }',
    );
    const { plan } = compilePolicy(policyFrom(text));
    const poll = plan.entries.filter((e) => e.flow === 'poll');
    expect(poll).toHaveLength(3); // plc-2, and plc-1 on both families
    for (const e of poll) expect(e.limits).toEqual({ maxConnections: 4, idleTimeoutMs: 60_000 });
    expect(plan.entries.find((e) => e.flow === 'ua')).not.toHaveProperty('limits');
  });
});

describe('compile errors a policy can cause', () => {
  it('refuses a DPI destination that is a network (validation refuses it first)', () => {
    const p = structuredClone(policyFrom(BASE));
    const poll = p.conduits.get('hmi-to-plc')?.flows.find((f) => f.name === 'poll');
    if (poll) poll.to.addresses = [{ family: 4, text: '10.2.0.0/30', address: '10.2.0.0', prefix: 30 }];
    expect(() => compilePolicy(p)).toThrow(/must be a single address/);
  });
  it('refuses two conduits for one zone pair (validation refuses it first)', () => {
    const p = structuredClone(policyFrom(BASE));
    const k = p.conduits.get('plc-to-dmz');
    if (k) p.conduits.set('again', { ...k, name: 'again' });
    expect(() => compilePolicy(p)).toThrow(/both go from zone control to zone dmz/);
  });
  it('refuses listen ports beyond 65535 and ports colliding with management', () => {
    expect(() => compilePolicy(policyFrom(BASE), { proxyPortBase: 65533 })).toThrow(SluiceError);
    expect(() => compilePolicy(policyFrom(BASE), { proxyPortBase: 8441 })).toThrow(/management/);
    expect(() => compilePolicy(policyFrom(BASE), { nflogGroup: -1 })).toThrow(SluiceError);
  });
});

describe('compileFailClosed', () => {
  const mgmt = policyFrom(BASE).gateway.management;
  const fc = compileFailClosed(mgmt, { nflogGroup: 9 });
  it('forwards nothing and keeps management reachable', () => {
    expect(chain(fc, 'forward')).toEqual([
      'limit rate 10/second log group 9 prefix "sluice:drop::no-conduit:" comment "sluice no-conduit"',
      'counter name "r_no-conduit" drop comment "sluice no-conduit"',
    ]);
    expect(chain(fc, 'input')[0]).toContain(
      'iifname "mgmt0" meta l4proto tcp ip saddr @mgmt_allow4 tcp dport',
    );
    expect(chain(fc, 'output')[0]).toContain(
      'oifname "mgmt0" meta l4proto tcp ip daddr @mgmt_allow4 tcp sport',
    );
    expect(fc).toContain('ct state established,related accept');
    expect(fc).not.toMatch(/prerouting|redirect|zone_pairs/);
    // Only these accepts exist: management, loopback, neighbour discovery, established.
    const accepts = fc.split('\n').filter((l) => / accept /.test(l) && !l.includes('policy'));
    expect(accepts.every((l) => /anti-lockout|loopback|neighbour|established/.test(l))).toBe(true);
  });
  it('works without management (loopback and established only)', () => {
    const bare = compileFailClosed(undefined);
    expect(bare).not.toContain('mgmt');
    expect(chain(bare, 'input')[0]).toBe('iif "lo" accept comment "sluice loopback"');
  });
});

describe('golden files for examples/', () => {
  const update = process.env.UPDATE_GOLDEN === '1';
  const examples = readdirSync(examplesDir)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort();
  it('has examples to compile', () => {
    expect(examples.length).toBeGreaterThan(0);
  });
  it('has no golden file without an example', () => {
    if (!existsSync(goldenDir)) return;
    const names = new Set(examples.map((f) => f.replace(/\.ya?ml$/, '')));
    const stale = readdirSync(goldenDir).filter((f) => !names.has(f.replace(/\.(nft|plan\.json)$/, '')));
    expect(stale).toEqual([]);
  });
  for (const file of examples) {
    it(`compiles ${file} to its golden ruleset and plan`, async () => {
      const name = file.replace(/\.ya?ml$/, '');
      const policy = policyFrom(readFileSync(join(examplesDir, file), 'utf8'), file);
      const { ruleset, plan } = compilePolicy(policy);
      const nftPath = join(goldenDir, `${name}.nft`);
      const planPath = join(goldenDir, `${name}.plan.json`);
      if (update) {
        mkdirSync(goldenDir, { recursive: true });
        writeFileSync(nftPath, ruleset);
        // Stored the way the repository's formatter wants JSON (`make lint` runs prettier --check .).
        const options = (await prettier.resolveConfig(planPath)) ?? {};
        writeFileSync(planPath, await prettier.format(JSON.stringify(plan), { ...options, parser: 'json' }));
      }
      expect(existsSync(nftPath), `${nftPath} missing: run with UPDATE_GOLDEN=1`).toBe(true);
      expect(ruleset).toBe(readFileSync(nftPath, 'utf8'));
      // The plan's bytes are covered by the determinism tests; here its content must match.
      expect(JSON.parse(JSON.stringify(plan))).toEqual(JSON.parse(readFileSync(planPath, 'utf8')));
    });
  }
});
