import { describe, it, expect } from 'vitest';
import { LINT_RULES, lintPolicy } from './lint.ts';
import type {
  Cidr,
  Conduit,
  Flow,
  LintFinding,
  ModbusSpec,
  OpcuaSpec,
  Policy,
  SecurityLevel,
  Waiver,
  Zone,
} from './types.ts';

// ---- a small builder for validated Policy objects -------------------------------------------------------

function cidr(text: string): Cidr {
  const [address = '', prefix = '32'] = text.split('/');
  return { family: address.includes(':') ? 6 : 4, text, address, prefix: Number(prefix) };
}

function zone(name: string, securityLevel: SecurityLevel, n: number): Zone {
  return { name, securityLevel, interfaces: [`eth${n}`], networks: [cidr(`10.${n}.0.0/24`)] };
}

const READ_ONLY_MODBUS: ModbusSpec = {
  unitIds: [1],
  rules: [{ functions: [3, 4], addresses: [{ start: 0, end: 99 }] }],
};

function opcua(over: Partial<OpcuaSpec> = {}): OpcuaSpec {
  return {
    securityModes: ['SignAndEncrypt'],
    securityPolicies: ['Basic256Sha256'],
    services: ['discovery', 'session', 'read', 'browse', 'subscribe'],
    write: [],
    call: [],
    anonymous: false,
    certificates: [],
    ...over,
  };
}

function flow(name: string, protocol: Flow['protocol'], over: Partial<Flow> = {}): Flow {
  const defaults: Partial<Flow> =
    protocol === 'modbus'
      ? { ports: [{ start: 502, end: 502 }], modbus: READ_ONLY_MODBUS }
      : protocol === 'opcua'
        ? { ports: [{ start: 4840, end: 4840 }], opcua: opcua() }
        : protocol === 'icmp'
          ? { ports: [] }
          : { ports: [{ start: 443, end: 443 }] };
  return {
    name,
    protocol,
    from: { refs: [], addresses: [] },
    to: { refs: [], addresses: [] },
    ports: [],
    icmpTypes: [],
    ...defaults,
    ...over,
  };
}

interface Build {
  /** Zone name → SL-T; zones get eth1.. and 10.n.0.0/24 in this order. */
  zones: Record<string, SecurityLevel>;
  conduits: Array<{ name: string; from: string; to: string; flows: Flow[] }>;
  waivers?: Waiver[];
}

function policy(b: Build): Policy {
  const zones = new Map<string, Zone>();
  Object.entries(b.zones).forEach(([name, sl], i) => zones.set(name, zone(name, sl, i + 1)));
  const conduits = new Map<string, Conduit>();
  for (const c of b.conduits) conduits.set(c.name, { ...c, mode: 'enforce' });
  return {
    version: 1,
    gateway: {
      name: 'gw',
      management: { interface: 'mgmt0', allowFrom: [cidr('192.168.100.0/24')], ports: [22, 8443] },
    },
    defaults: { logRate: { count: 10, unit: 'second' } },
    zones,
    assets: new Map(),
    conduits,
    waivers: b.waivers ?? [],
  };
}

/** One conduit a → b with the given SL-T pair and flows. */
function one(slFrom: SecurityLevel, slTo: SecurityLevel, flows: Flow[], waivers?: Waiver[]): Policy {
  return policy({
    zones: { a: slFrom, b: slTo },
    conduits: [{ name: 'a-to-b', from: 'a', to: 'b', flows }],
    waivers,
  });
}

const NOW = new Date('2026-11-21T12:00:00Z');
const rules = (fs: LintFinding[]): string[] => fs.map((f) => f.rule);

// ---- rules ------------------------------------------------------------------------------------------------

describe('LINT_RULES', () => {
  it('lists every rule once with a 62443 citation', () => {
    const ids = LINT_RULES.map((r) => r.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toEqual(
      expect.arrayContaining([
        'SL-write-from-lower',
        'SL-unauthenticated-into-high',
        'SL-skip',
        'any-port',
        'waiver-expired',
        'waiver-unknown-rule',
        'waiver-unused',
      ]),
    );
    for (const r of LINT_RULES) expect(r.cites).toMatch(/^62443-3-[23] /);
  });

  it('findings carry the citation of their rule', () => {
    const [f] = lintPolicy(one(1, 3, []), NOW);
    expect(f?.rule).toBe('SL-skip');
    expect(f?.cites).toBe(LINT_RULES.find((r) => r.id === 'SL-skip')?.cites);
  });
});

describe('SL-write-from-lower', () => {
  const writes = (fc: number): ModbusSpec => ({
    unitIds: [1],
    rules: [
      { functions: [3], addresses: null },
      { functions: [fc], addresses: [{ start: 100, end: 110 }] },
    ],
  });

  it.each([5, 6, 15, 16, 21, 22, 23])('fires on modbus function %i from SL2 into SL3', (fc) => {
    const fs = lintPolicy(one(2, 3, [flow('poll', 'modbus', { modbus: writes(fc) })]), NOW);
    expect(fs).toHaveLength(1);
    expect(fs[0]).toMatchObject({
      rule: 'SL-write-from-lower',
      severity: 'error',
      conduit: 'a-to-b',
      flow: 'poll',
      path: ['conduits', 'a-to-b', 'flows', 0, 'modbus', 'rules', 1, 'functions'],
    });
    expect(fs[0]?.message).toContain(`${fc} (`);
    expect(fs[0]?.waiver).toBeUndefined();
  });

  it.each(['write', 'call'] as const)('fires on OPC UA %s from SL2 into SL3', (svc) => {
    const f = flow('ua', 'opcua', { opcua: opcua({ services: ['session', 'read', svc] }) });
    const fs = lintPolicy(one(2, 3, [f]), NOW);
    expect(fs).toEqual([
      expect.objectContaining({
        rule: 'SL-write-from-lower',
        severity: 'error',
        path: ['conduits', 'a-to-b', 'flows', 0, 'opcua', 'services'],
      }),
    ]);
  });

  it('does not fire on reads, on equal or higher source SL, or into SL-T below 3', () => {
    const mw = flow('poll', 'modbus', { modbus: writes(16) });
    const uw = flow('ua', 'opcua', { opcua: opcua({ services: ['session', 'write', 'call'] }) });
    expect(lintPolicy(one(2, 3, [flow('poll', 'modbus'), flow('ua', 'opcua')]), NOW)).toEqual([]);
    expect(lintPolicy(one(3, 3, [mw, uw]), NOW)).toEqual([]);
    expect(lintPolicy(one(4, 3, [mw, uw]), NOW)).toEqual([]);
    expect(lintPolicy(one(1, 2, [mw, uw]), NOW)).toEqual([]);
  });

  it('fires into SL4 from SL3', () => {
    expect(rules(lintPolicy(one(3, 4, [flow('poll', 'modbus', { modbus: writes(6) })]), NOW))).toEqual([
      'SL-write-from-lower',
    ]);
  });
});

describe('SL-unauthenticated-into-high', () => {
  const none = (services: OpcuaSpec['services']): Flow =>
    flow('ua', 'opcua', { opcua: opcua({ securityModes: ['None', 'SignAndEncrypt'], services }) });

  it('fires on security mode None into SL-T 3, whatever the source SL', () => {
    for (const src of [1, 3, 4] as const) {
      const fs = lintPolicy(one(src, 3, [none(['discovery', 'session', 'read'])]), NOW).filter(
        (f) => f.rule === 'SL-unauthenticated-into-high',
      );
      expect(fs).toEqual([
        expect.objectContaining({
          severity: 'error',
          conduit: 'a-to-b',
          flow: 'ua',
          path: ['conduits', 'a-to-b', 'flows', 0, 'opcua', 'securityModes'],
        }),
      ]);
    }
  });

  it('does not fire for discovery alone, for Sign modes, or into SL-T below 3', () => {
    expect(lintPolicy(one(2, 3, [none(['discovery'])]), NOW)).toEqual([]);
    const signed = flow('ua', 'opcua', { opcua: opcua({ securityModes: ['Sign', 'SignAndEncrypt'] }) });
    expect(lintPolicy(one(2, 3, [signed]), NOW)).toEqual([]);
    expect(lintPolicy(one(2, 2, [none(['discovery', 'session', 'read'])]), NOW)).toEqual([]);
  });

  it('does not fire on plain modbus (the issue names OPC UA None only)', () => {
    expect(lintPolicy(one(2, 3, [flow('poll', 'modbus')]), NOW)).toEqual([]);
  });
});

describe('SL-skip', () => {
  it.each([
    [1, 3],
    [1, 4],
    [2, 4],
    [4, 2],
    [3, 1],
  ] as const)('warns on SL%i → SL%i', (a, b) => {
    expect(lintPolicy(one(a, b, [flow('ping', 'icmp')]), NOW)).toEqual([
      expect.objectContaining({
        rule: 'SL-skip',
        severity: 'warning',
        conduit: 'a-to-b',
        path: ['conduits', 'a-to-b'],
      }),
    ]);
  });

  it.each([
    [1, 2],
    [2, 3],
    [3, 4],
    [3, 2],
    [2, 2],
  ] as const)('is silent on SL%i → SL%i', (a, b) => {
    expect(lintPolicy(one(a, b, [flow('ping', 'icmp')]), NOW)).toEqual([]);
  });
});

describe('any-port', () => {
  it.each(['tcp', 'udp'] as const)('is an error for %s without ports into SL-T ≥ 2', (p) => {
    for (const sl of [2, 3] as const) {
      expect(lintPolicy(one(sl, sl, [flow('ok', p), flow('all', p, { ports: [] })]), NOW)).toEqual([
        expect.objectContaining({
          rule: 'any-port',
          severity: 'error',
          flow: 'all',
          path: ['conduits', 'a-to-b', 'flows', 1],
        }),
      ]);
    }
  });

  it('treats a port set covering (nearly) every port as any port', () => {
    for (const ports of [
      [{ start: 0, end: 65535 }],
      [{ start: 1, end: 65535 }],
      [{ start: 1024, end: 65535 }],
      [
        { start: 1, end: 40000 },
        { start: 30000, end: 65535 },
      ],
    ]) {
      expect(lintPolicy(one(2, 2, [flow('wide', 'tcp', { ports })]), NOW)).toEqual([
        expect.objectContaining({
          rule: 'any-port',
          severity: 'error',
          path: ['conduits', 'a-to-b', 'flows', 0, 'port'],
          message: expect.stringMatching(/in effect any port/),
        }),
      ]);
    }
    // Wide but deliberate ranges below the threshold stay allowed.
    expect(lintPolicy(one(2, 2, [flow('hi', 'tcp', { ports: [{ start: 1025, end: 65535 }] })]), NOW)).toEqual(
      [],
    );
  });

  it('is a warning into SL-T 1', () => {
    expect(lintPolicy(one(2, 1, [flow('all', 'udp', { ports: [] })]), NOW)).toEqual([
      expect.objectContaining({ rule: 'any-port', severity: 'warning' }),
    ]);
  });

  it('does not fire with a port restriction or for icmp', () => {
    expect(lintPolicy(one(2, 2, [flow('web', 'tcp'), flow('ping', 'icmp')]), NOW)).toEqual([]);
  });
});

// ---- waivers ----------------------------------------------------------------------------------------------

describe('waivers', () => {
  const writing = flow('poll', 'modbus', {
    modbus: { unitIds: null, rules: [{ functions: [6], addresses: null }] },
  });
  const waiver = (over: Partial<Waiver> = {}): Waiver => ({
    rule: 'SL-write-from-lower',
    conduit: 'a-to-b',
    rationale: 'bounded setpoints, reviewed',
    expires: '2027-06-30',
    ...over,
  });

  it('a valid waiver marks the matching error as accepted risk, keeping its severity', () => {
    const w = waiver();
    const fs = lintPolicy(one(2, 3, [writing], [w]), NOW);
    expect(fs).toEqual([
      expect.objectContaining({ rule: 'SL-write-from-lower', severity: 'error', waiver: w }),
    ]);
  });

  it('a waiver expiring today is still valid (UTC dates)', () => {
    const w = waiver({ expires: '2026-11-21' });
    // Late in the UTC day, where a local time zone east of UTC would already be on the 22nd.
    const fs = lintPolicy(one(2, 3, [writing], [w]), new Date('2026-11-21T23:59:59Z'));
    expect(fs).toEqual([expect.objectContaining({ rule: 'SL-write-from-lower', waiver: w })]);
  });

  it('an expired waiver is an error and does not waive', () => {
    const fs = lintPolicy(one(2, 3, [writing], [waiver({ expires: '2026-11-20' })]), NOW);
    expect(rules(fs)).toEqual(['SL-write-from-lower', 'waiver-expired']);
    expect(fs[0]?.waiver).toBeUndefined();
    expect(fs[1]).toMatchObject({ severity: 'error', path: ['waivers', 0, 'expires'] });
    // Expiry is judged on the UTC date: 00:30 UTC on the 21st is already past a waiver ending on the 20th.
    expect(
      rules(
        lintPolicy(
          one(2, 3, [writing], [waiver({ expires: '2026-11-20' })]),
          new Date('2026-11-21T00:30:00Z'),
        ),
      ),
    ).toEqual(['SL-write-from-lower', 'waiver-expired']);
  });

  it('a waiver naming an unknown or unwaivable rule is an error', () => {
    for (const rule of ['SL-write-from-lowr', 'waiver-expired']) {
      const fs = lintPolicy(one(2, 3, [writing], [waiver({ rule })]), NOW);
      expect(rules(fs)).toEqual(['SL-write-from-lower', 'waiver-unknown-rule']);
      expect(fs[0]?.waiver).toBeUndefined();
      expect(fs[1]).toMatchObject({ severity: 'error', path: ['waivers', 0, 'rule'] });
    }
  });

  it('a waiver that matches no finding is a warning', () => {
    // Right rule, clean conduit.
    let fs = lintPolicy(one(2, 3, [flow('poll', 'modbus')], [waiver()]), NOW);
    expect(fs).toEqual([
      expect.objectContaining({ rule: 'waiver-unused', severity: 'warning', path: ['waivers', 0] }),
    ]);
    // Conduit that does not exist.
    fs = lintPolicy(one(2, 3, [writing], [waiver({ conduit: 'nope' })]), NOW);
    expect(rules(fs)).toEqual(['SL-write-from-lower', 'waiver-unused']);
    expect(fs[1]?.message).toContain('no conduit nope');
    // Rule that does not fire on that conduit.
    fs = lintPolicy(one(2, 3, [writing], [waiver(), waiver({ rule: 'any-port' })]), NOW);
    expect(rules(fs)).toEqual(['SL-write-from-lower', 'waiver-unused']);
    expect(fs[1]?.path).toEqual(['waivers', 1]);
  });

  it('a duplicate waiver is unused; the first one applies', () => {
    const first = waiver();
    const fs = lintPolicy(one(2, 3, [writing], [first, waiver({ expires: '2027-12-31' })]), NOW);
    expect(fs[0]?.waiver).toBe(first);
    expect(fs[1]).toMatchObject({ rule: 'waiver-unused', path: ['waivers', 1] });
    expect(fs[1]?.message).toContain('waiver 0');
  });

  it('waives only the named conduit', () => {
    const p = policy({
      zones: { a: 2, b: 3 },
      conduits: [
        { name: 'one', from: 'a', to: 'b', flows: [writing] },
        { name: 'two', from: 'a', to: 'b', flows: [writing] },
      ],
      waivers: [waiver({ conduit: 'two' })],
    });
    const fs = lintPolicy(p, NOW);
    expect(fs.map((f) => [f.conduit, f.waiver === undefined])).toEqual([
      ['one', true],
      ['two', false],
    ]);
  });

  it('a waiver also documents an accepted warning', () => {
    const w = waiver({ rule: 'SL-skip' });
    expect(lintPolicy(one(1, 3, [flow('ping', 'icmp')], [w]), NOW)).toEqual([
      expect.objectContaining({ rule: 'SL-skip', severity: 'warning', waiver: w }),
    ]);
  });
});

// ---- order and purity --------------------------------------------------------------------------------------

describe('order', () => {
  it('sorts by conduit map order, then flow index (conduit-level first), then rule; waivers last', () => {
    const p = policy({
      zones: { low: 1, mid: 2, high: 3 },
      conduits: [
        // Map order, not alphabetical: "zz" comes first.
        {
          name: 'zz',
          from: 'mid',
          to: 'high',
          flows: [
            flow('web', 'tcp', { ports: [] }),
            flow('ua', 'opcua', {
              opcua: opcua({ securityModes: ['None'], services: ['session', 'write'] }),
            }),
          ],
        },
        { name: 'aa', from: 'low', to: 'high', flows: [flow('udp', 'udp', { ports: [] })] },
      ],
      waivers: [{ rule: 'bogus', conduit: 'zz', rationale: 'x', expires: '2030-01-01' }],
    });
    const fs = lintPolicy(p, NOW);
    expect(fs.map((f) => [f.conduit, f.flow, f.rule])).toEqual([
      ['zz', 'web', 'any-port'],
      ['zz', 'ua', 'SL-unauthenticated-into-high'],
      ['zz', 'ua', 'SL-write-from-lower'],
      ['aa', undefined, 'SL-skip'],
      ['aa', 'udp', 'any-port'],
      ['zz', undefined, 'waiver-unknown-rule'],
    ]);
    // Pure and deterministic: same input, same output, input untouched.
    expect(lintPolicy(p, NOW)).toEqual(fs);
    expect(p.waivers).toHaveLength(1);
  });
});
