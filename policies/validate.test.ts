import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parsePolicyText } from './load.ts';
import { mergeRanges } from './ranges.ts';
import {
  OPCUA_DEFAULTS,
  isIsoDate,
  isNodeIdPattern,
  validatePolicy,
  validatePolicyText,
} from './validate.ts';
import type { ValidationResult } from './validate.ts';
import type { DocPath, Problem } from './types.ts';
import { posOf } from './test-helpers.ts';

const NOW = new Date('2026-12-01T12:00:00Z');
const FILE = 'p.yaml';

const HEAD = `version: 1
gateway:
  name: gw
  management:
    interface: mgmt0
    allowFrom: [192.168.100.0/24]
`;
const ZONES = `zones:
  enterprise: { securityLevel: 1, interfaces: [eth1], networks: [10.1.0.0/16] }
  scada: { securityLevel: 2, interfaces: [eth2], networks: [10.2.0.0/24, 'fd00:2::/64'] }
  control: { securityLevel: 2, interfaces: [eth3], networks: [10.3.0.0/24] }
`;
const ASSETS = `assets:
  hmi-1: { zone: scada, addresses: [10.2.0.10, 'fd00:2::10'] }
  hmi-2: { zone: scada, addresses: [10.2.0.11] }
  plc-1: { zone: control, addresses: [10.3.0.20] }
  plc-2: { zone: control, addresses: [10.3.0.21] }
  cell: { zone: control, addresses: [10.3.0.128/28] }
`;

const PING = `  scada-to-control:
    from: scada
    to: control
    flows:
      - name: ping
        protocol: icmp
        icmpTypes: [echo-request]
`;

/** A valid policy around the given conduits section (and optional extra top-level text). */
function policy(conduits: string, extra = ''): string {
  return `${HEAD}${ZONES}${ASSETS}conduits:\n${conduits}${extra}`;
}

const POLL = `  scada-to-control:
    from: scada
    to: control
    flows:
      - name: poll
        protocol: modbus
        from: [hmi-1]
        to: [plc-1]
        modbus:
          rules:
            - functions: [read-holding-registers]
`;

function run(text: string): ValidationResult {
  return validatePolicyText(text, FILE, { now: NOW });
}

/** Asserts that `code` is the only problem (of its severity) and sits at `path` and at `needle` in the text. */
function expectOnly(
  text: string,
  code: string,
  path: DocPath,
  needle: string | [string, number],
  severity: 'error' | 'warning' = 'error',
): Problem {
  const r = run(text);
  const list = severity === 'error' ? r.errors : r.warnings;
  expect(list.map((p) => p.code)).toEqual([code]);
  const p = list[0] as Problem;
  expect(p.path).toEqual(path);
  expect(p.file).toBe(FILE);
  const [n, k] = typeof needle === 'string' ? [needle, 1] : needle;
  expect(p.position).toEqual(posOf(text, n, k));
  if (severity === 'error') expect(r.ok).toBe(false);
  return p;
}

describe('a valid policy', () => {
  it('validates and normalises the base policy', () => {
    const r = run(policy(POLL));
    expect(r.errors).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.policy).toBeDefined();
  });
});

describe('schema', () => {
  it('names an unknown field at its key, with the allowed fields', () => {
    const text = policy(POLL.replace('protocol: modbus', 'protocol: modbus\n        prot: tcp'));
    const p = expectOnly(text, 'schema', ['conduits', 'scada-to-control', 'flows', 0, 'prot'], 'prot:');
    expect(p.message).toBe(
      "unknown field 'prot' (allowed: name, protocol, from, to, port, icmpTypes, modbus, opcua, limits)",
    );
  });

  it('explains enum values in words', () => {
    const text = policy(POLL).replace('securityLevel: 1', 'securityLevel: 5');
    const p = expectOnly(text, 'schema', ['zones', 'enterprise', 'securityLevel'], '5,');
    expect(p.message).toBe('securityLevel must be 1, 2, 3 or 4');
  });

  it('reports a missing required field at its parent', () => {
    const text = policy(POLL).replace(
      '  plc-2: { zone: control, addresses: [10.3.0.21] }\n',
      '  plc-2: { zone: control }\n',
    );
    const p = expectOnly(text, 'schema', ['assets', 'plc-2', 'addresses'], '{ zone: control }');
    expect(p.message).toBe("missing required field 'addresses'");
  });

  it('checks map keys against the name rule, at the key', () => {
    const text = policy(POLL).replace('  hmi-2:', '  Hmi_2:');
    const p = expectOnly(text, 'schema', ['assets', 'Hmi_2'], 'Hmi_2');
    expect(p.message).toBe(
      "'Hmi_2' is not a valid name: must be a name: a lower-case letter, then at most 30 of a-z, 0-9 and '-'",
    );
  });

  it('describes one-of shapes (port) and types in words', () => {
    const text = policy(POLL.replace('to: [plc-1]', 'to: [plc-1]\n        port: { a: 1 }'));
    const p = expectOnly(text, 'schema', ['conduits', 'scada-to-control', 'flows', 0, 'port'], '{ a: 1 }');
    expect(p.message).toBe("port must be a number, a range 'a-b' or a list of those");
    const t2 = policy(POLL.replace('to: [plc-1]', 'to: plc-1'));
    const p2 = expectOnly(t2, 'schema', ['conduits', 'scada-to-control', 'flows', 0, 'to'], 'plc-1\n');
    expect(p2.message).toBe('to must be a list');
  });

  it('checks version, logRate, empty lists and the length of free text', () => {
    const long = 'x'.repeat(513);
    const text = policy(POLL, `defaults:\n  logRate: 10/day\n`)
      .replace('version: 1', 'version: 2')
      .replace('interfaces: [eth1]', 'interfaces: []')
      .replace('securityLevel: 1,', `securityLevel: 1, description: ${long},`);
    const r = run(text);
    // In source order: the description was inserted before the interfaces.
    expect(r.errors.map((p) => [p.path.join('.'), p.message])).toEqual([
      ['version', 'version must be 1'],
      ['zones.enterprise.description', 'description is too long (at most 512 characters)'],
      ['zones.enterprise.interfaces', 'interfaces must not be empty'],
      ['defaults.logRate', "logRate must be a rate such as '10/second' (N/second, N/minute or N/hour)"],
    ]);
  });

  it('rejects documents that are not mappings', () => {
    for (const text of ['', '- a\n', '42\n']) {
      const r = run(text);
      expect(r.ok).toBe(false);
      expect(r.errors[0]).toMatchObject({ code: 'schema', path: [], position: { line: 1, column: 1 } });
    }
    expect(run('').errors[0]?.message).toBe('the policy must be a mapping (key: value)');
  });

  it('reports all problems at once, schema and semantic', () => {
    const text = policy(POLL.replace('read-holding-registers', '99').replace('from: scada', 'from: nowhere'))
      .replace('version: 1', 'version: 3')
      .replace('  hmi-2: { zone: scada,', '  hmi-2: { zone: scada, colour: red,');
    const r = run(text);
    expect(r.errors.map((p) => p.code)).toEqual([
      'schema',
      'schema',
      'semantic.unknown-zone',
      'semantic.modbus-function',
    ]);
  });

  it('does not repeat a schema error as a semantic one', () => {
    // An invalid zone name in an asset is a schema error; "unknown zone" would say the same thing again.
    const text = policy(POLL).replace('  hmi-2: { zone: scada,', '  hmi-2: { zone: Scada,');
    expectOnly(text, 'schema', ['assets', 'hmi-2', 'zone'], 'Scada');
  });
});

describe('semantic checks', () => {
  const C: DocPath = ['conduits', 'scada-to-control'];
  const F: DocPath = [...C, 'flows', 0];

  it('semantic.unknown-zone: asset zone and conduit ends', () => {
    const t1 = policy(POLL).replace('  hmi-2: { zone: scada,', '  hmi-2: { zone: dmz,');
    expectOnly(t1, 'semantic.unknown-zone', ['assets', 'hmi-2', 'zone'], 'dmz');
    const t2 = policy(POLL.replace('to: control', 'to: safety'));
    const p = expectOnly(t2, 'semantic.unknown-zone', [...C, 'to'], 'safety');
    expect(p.message).toBe("unknown zone 'safety'");
  });

  it('semantic.unknown-asset', () => {
    const text = policy(POLL.replace('to: [plc-1]', 'to: [plc-9]'));
    const p = expectOnly(text, 'semantic.unknown-asset', [...F, 'to', 0], 'plc-9');
    expect(p.message).toBe("unknown asset 'plc-9'");
  });

  it('semantic.invalid-cidr', () => {
    const text = policy(POLL).replace('networks: [10.3.0.0/24]', 'networks: [10.3.0.0/33]');
    const p = expectOnly(text, 'semantic.invalid-cidr', ['zones', 'control', 'networks', 0], '10.3.0.0/33');
    expect(p.message).toBe("'10.3.0.0/33' is not an IPv4 or IPv6 network");
  });

  it('semantic.invalid-endpoint', () => {
    const text = policy(POLL.replace('from: [hmi-1]', 'from: ["hmi 1; drop"]'));
    expectOnly(text, 'semantic.invalid-endpoint', [...F, 'from', 0], '"hmi 1; drop"');
  });

  it('semantic.cidr-host-bits is a warning and the CIDR is canonicalised', () => {
    const text = policy(POLL).replace('networks: [10.3.0.0/24]', 'networks: [10.3.0.7/24]');
    expectOnly(
      text,
      'semantic.cidr-host-bits',
      ['zones', 'control', 'networks', 0],
      '10.3.0.7/24',
      'warning',
    );
    expect(
      run(text)
        .policy?.zones.get('control')
        ?.networks.map((n) => n.text),
    ).toEqual(['10.3.0.0/24']);
  });

  it('semantic.zone-overlap', () => {
    const text = policy(POLL).replace('networks: [10.3.0.0/24]', 'networks: [10.1.3.0/24]');
    const r = run(text);
    const overlap = r.errors.filter((p) => p.code === 'semantic.zone-overlap');
    expect(overlap).toHaveLength(1);
    expect(overlap[0]?.path).toEqual(['zones', 'control', 'networks', 0]);
    expect(overlap[0]?.position).toEqual(posOf(text, '10.1.3.0/24'));
    expect(overlap[0]?.message).toBe(
      "network 10.1.3.0/24 of zone 'control' overlaps 10.1.0.0/16 of zone 'enterprise'",
    );
  });

  it('semantic.interface-conflict', () => {
    const text = policy(POLL).replace('interfaces: [eth3]', 'interfaces: [eth3, eth1]');
    const p = expectOnly(
      text,
      'semantic.interface-conflict',
      ['zones', 'control', 'interfaces', 1],
      ['eth1', 2],
    );
    expect(p.message).toBe(
      "interface 'eth1' is already in zone 'enterprise' (an interface belongs to one zone)",
    );
  });

  it('semantic.management-interface', () => {
    const text = policy(POLL).replace('interfaces: [eth3]', 'interfaces: [mgmt0]');
    expectOnly(text, 'semantic.management-interface', ['zones', 'control', 'interfaces', 0], ['mgmt0', 2]);
  });

  it('semantic.asset-outside-zone', () => {
    const text = policy(POLL).replace('addresses: [10.3.0.21]', 'addresses: [10.2.0.21]');
    const p = expectOnly(
      text,
      'semantic.asset-outside-zone',
      ['assets', 'plc-2', 'addresses', 0],
      '10.2.0.21',
    );
    expect(p.message).toBe("address 10.2.0.21/32 of asset 'plc-2' is outside zone 'control' (10.3.0.0/24)");
  });

  it('semantic.conduit-self', () => {
    const text = policy(PING.replace('to: control', 'to: scada'));
    const p = expectOnly(text, 'semantic.conduit-self', [...C, 'to'], 'scada\n    flows');
    expect(p.message).toBe(
      "conduit 'scada-to-control' goes from zone 'scada' to itself; a conduit joins two different zones",
    );
  });

  it('semantic.conduit-duplicate: one conduit per ordered zone pair', () => {
    const second = PING.replace('scada-to-control:', 'again:');
    const text = policy(POLL + second);
    const p = expectOnly(text, 'semantic.conduit-duplicate', ['conduits', 'again'], 'again:');
    expect(p.message).toMatch(/^conduit 'scada-to-control' already goes from zone 'scada' to 'control'/);
    // The reverse direction is a different pair.
    const reverse = POLL.replace('scada-to-control:', 'back:')
      .replace('from: scada', 'from: X')
      .replace('to: control', 'to: scada')
      .replace('from: X', 'from: control')
      .replace('from: [hmi-1]', 'from: [plc-1]')
      .replace('to: [plc-1]', 'to: [hmi-1]');
    expect(run(policy(POLL + reverse)).errors).toEqual([]);
  });

  it('semantic.duplicate-flow', () => {
    const text = policy(`${POLL}      - name: poll\n        protocol: tcp\n        port: 22\n`);
    expectOnly(text, 'semantic.duplicate-flow', [...C, 'flows', 1, 'name'], ['poll', 2]);
  });

  it('semantic.port-range: bounds and order', () => {
    const t1 = policy(POLL.replace('to: [plc-1]', 'to: [plc-1]\n        port: 70000'));
    const p1 = expectOnly(t1, 'semantic.port-range', [...F, 'port'], '70000');
    expect(p1.message).toBe('port 70000 is out of range (0–65535)');
    const t2 = policy(`${POLL}      - name: web\n        protocol: tcp\n        port: [80, 9000-8000]\n`);
    const p2 = expectOnly(t2, 'semantic.port-range', [...C, 'flows', 1, 'port', 1], '9000-8000');
    expect(p2.message).toBe('port range 9000-8000 is reversed (start must be ≤ end)');
  });

  it('semantic.address-range', () => {
    const text = policy(
      POLL.replace(
        '[read-holding-registers]',
        '[read-holding-registers]\n              addresses: [0-9, 10-65536]',
      ),
    );
    expectOnly(text, 'semantic.address-range', [...F, 'modbus', 'rules', 0, 'addresses', 1], '10-65536');
  });

  it('semantic.value-range', () => {
    const text = policy(
      POLL.replace('[read-holding-registers]', '[write-single-register]\n              values: 10-5'),
    );
    expectOnly(text, 'semantic.value-range', [...F, 'modbus', 'rules', 0, 'values'], '10-5');
  });

  it('semantic.modbus-function: unknown codes and names', () => {
    const text = policy(
      POLL.replace(
        '- functions: [read-holding-registers]',
        '- functions: [read-coils]\n            - functions: [99, read-holding-registers]',
      ),
    );
    const p = expectOnly(
      text,
      'semantic.modbus-function',
      [...F, 'modbus', 'rules', 1, 'functions', 0],
      '99',
    );
    expect(p.message).toBe('99 is not a Modbus function code');
    const t2 = policy(POLL.replace('[read-holding-registers]', '[read-holding-register]'));
    const p2 = expectOnly(
      t2,
      'semantic.modbus-function',
      [...F, 'modbus', 'rules', 0, 'functions', 0],
      'read-holding-register',
    );
    expect(p2.message).toMatch(
      /^'read-holding-register' is not a Modbus function name \(known: read-coils, /,
    );
  });

  it('semantic.unit-id', () => {
    const text = policy(POLL.replace('          rules:', '          unitIds: [1, 256]\n          rules:'));
    const p = expectOnly(text, 'semantic.unit-id', [...F, 'modbus', 'unitIds', 1], '256');
    expect(p.message).toBe('unit id 256 is out of range (0–255)');
  });

  it('semantic.values-not-write: values only on rules whose functions all write', () => {
    const text = policy(
      POLL.replace(
        '[read-holding-registers]',
        '[write-single-register, read-coils]\n              values: 0-10',
      ),
    );
    expectOnly(text, 'semantic.values-not-write', [...F, 'modbus', 'rules', 0, 'values'], 'values:');
    const ok = policy(
      POLL.replace('[read-holding-registers]', '[5, 6, 15, 16, 22, 23]\n              values: 0-10'),
    );
    expect(run(ok).errors.filter((p) => p.code.startsWith('semantic'))).toEqual([]);
  });

  it('semantic.modbus-missing', () => {
    const text = policy(
      POLL.replace(
        '        modbus:\n          rules:\n            - functions: [read-holding-registers]\n',
        '',
      ),
    );
    expectOnly(text, 'semantic.modbus-missing', [...F, 'modbus'], 'name: poll');
  });

  it('semantic.protocol-section: modbus/opcua section on another protocol', () => {
    const text = policy(POLL.replace('protocol: modbus', 'protocol: tcp'));
    const p = expectOnly(text, 'semantic.protocol-section', [...F, 'modbus'], 'modbus:');
    expect(p.message).toBe("a modbus section only applies to modbus flows; this flow's protocol is tcp");
  });

  const UA = `  scada-to-control:
    from: scada
    to: control
    flows:
      - name: ua
        protocol: opcua
        from: [hmi-1]
        to: [plc-1]
        opcua:
          services: [read, write]
          write: ["ns=2;s=Line1.Setpoint*", "i=2253"]
`;

  it('semantic.opcua-nodeid', () => {
    expect(run(policy(UA)).errors).toEqual([]);
    const text = policy(UA.replace('"i=2253"', '"ns=2;s=a*b"'));
    const p = expectOnly(text, 'semantic.opcua-nodeid', [...F, 'opcua', 'write', 1], '"ns=2;s=a*b"');
    expect(p.message).toMatch(/^'ns=2;s=a\*b' is not a NodeId pattern/);
  });

  it('semantic.opcua-security-mode, -security-policy, -service', () => {
    const t1 = policy(
      UA.replace('services: [read, write]', 'securityModes: [Encrypt]\n          services: [read, write]'),
    );
    expectOnly(t1, 'semantic.opcua-security-mode', [...F, 'opcua', 'securityModes', 0], 'Encrypt');
    const t2 = policy(
      UA.replace(
        'services: [read, write]',
        'securityPolicies: [Basic512]\n          services: [read, write]',
      ),
    );
    expectOnly(t2, 'semantic.opcua-security-policy', [...F, 'opcua', 'securityPolicies', 0], 'Basic512');
    const t3 = policy(UA.replace('services: [read, write]', 'services: [read, write, delete]'));
    const p = expectOnly(t3, 'semantic.opcua-service', [...F, 'opcua', 'services', 2], 'delete');
    expect(p.message).toMatch(/^'delete' is not an OPC UA service group \(allowed: discovery, session, /);
  });

  it('semantic.opcua-certificate', () => {
    const text = policy(
      UA.replace('services: [read, write]', 'services: [read, write]\n          certificates: [abc]'),
    );
    expectOnly(text, 'semantic.opcua-certificate', [...F, 'opcua', 'certificates', 0], 'abc');
  });

  it('semantic.opcua-unused-patterns warns when write patterns have no write service', () => {
    const text = policy(UA.replace('services: [read, write]', 'services: [read]'));
    expectOnly(text, 'semantic.opcua-unused-patterns', [...F, 'opcua', 'write'], 'write:', 'warning');
  });

  it('semantic.icmp-type', () => {
    expect(run(policy(PING)).errors).toEqual([]);
    const text = policy(PING.replace('[echo-request]', '[echo-request, ping]'));
    expectOnly(text, 'semantic.icmp-type', [...F, 'icmpTypes', 1], 'ping]');
  });

  it('semantic.icmp-types-protocol', () => {
    const text = policy(PING.replace('protocol: icmp', 'protocol: udp\n        port: 53'));
    expectOnly(text, 'semantic.icmp-types-protocol', [...F, 'icmpTypes'], 'icmpTypes');
  });

  it('semantic.icmp-port', () => {
    const text = policy(PING.replace('protocol: icmp', 'protocol: icmp\n        port: 7'));
    expectOnly(text, 'semantic.icmp-port', [...F, 'port'], 'port:');
  });

  it('semantic.endpoint-outside-zone: asset of another zone, CIDR outside the zone', () => {
    const t1 = policy(POLL.replace('from: [hmi-1]', 'from: [plc-2]'));
    const p1 = expectOnly(t1, 'semantic.endpoint-outside-zone', [...F, 'from', 0], 'plc-2]');
    expect(p1.message).toBe("asset 'plc-2' is in zone 'control', not in the conduit's from-zone 'scada'");
    const t2 = policy(POLL.replace('from: [hmi-1]', 'from: [10.2.0.0/25, 10.9.0.0/24]'));
    const p2 = expectOnly(t2, 'semantic.endpoint-outside-zone', [...F, 'from', 1], '10.9.0.0/24');
    expect(p2.message).toBe(
      "10.9.0.0/24 is not inside the conduit's from-zone 'scada' (10.2.0.0/24, fd00:2::/64)",
    );
  });

  it('semantic.dpi-host-destination: whole-zone default, networks and network assets', () => {
    const t1 = policy(POLL.replace('        to: [plc-1]\n', ''));
    expectOnly(t1, 'semantic.dpi-host-destination', [...F, 'to'], 'name: poll');
    const t2 = policy(POLL.replace('to: [plc-1]', 'to: [10.3.0.0/30]'));
    expectOnly(t2, 'semantic.dpi-host-destination', [...F, 'to', 0], '10.3.0.0/30');
    const t3 = policy(POLL.replace('to: [plc-1]', 'to: [plc-1, cell]'));
    const p = expectOnly(t3, 'semantic.dpi-host-destination', [...F, 'to', 1], 'cell]');
    expect(p.message).toMatch(/asset 'cell' has network 10\.3\.0\.128\/28/);
  });

  it('semantic.dpi-port: one port per DPI flow', () => {
    const text = policy(POLL.replace('to: [plc-1]', 'to: [plc-1]\n        port: [502, 503]'));
    expectOnly(text, 'semantic.dpi-port', [...F, 'port'], '[502, 503]');
  });

  it('semantic.dpi-conflict: same destination and port, overlapping sources', () => {
    const second = `      - name: poll-2\n        protocol: modbus\n        from: [10.2.0.0/24]\n        to: [plc-2, plc-1]\n        modbus:\n          rules:\n            - functions: [1]\n`;
    const text = policy(POLL + second);
    const p = expectOnly(text, 'semantic.dpi-conflict', [...C, 'flows', 1, 'to'], '[plc-2, plc-1]');
    expect(p.message).toMatch(
      /^flow 'poll' of conduit 'scada-to-control' already inspects connections to 10\.3\.0\.20 port 502/,
    );
    // Disjoint sources may share a destination.
    const disjoint = policy(POLL + second.replace('[10.2.0.0/24]', '[hmi-2]'));
    expect(run(disjoint).errors).toEqual([]);
  });

  const WAIVER = `waivers:
  - rule: SL-skip
    conduit: scada-to-control
    rationale: reviewed
    expires: 2027-06-30
`;

  it('semantic.waiver-conduit', () => {
    const text = policy(POLL, WAIVER.replace('conduit: scada-to-control', 'conduit: nope'));
    expectOnly(text, 'semantic.waiver-conduit', ['waivers', 0, 'conduit'], 'nope');
  });

  it('semantic.waiver-expires: a real calendar date', () => {
    const text = policy(POLL, WAIVER.replace('2027-06-30', '2027-02-29'));
    const p = expectOnly(text, 'semantic.waiver-expires', ['waivers', 0, 'expires'], '2027-02-29');
    expect(p.message).toBe("'2027-02-29' is not a calendar date");
    const bad = policy(POLL, WAIVER.replace('2027-06-30', 'next year'));
    expectOnly(bad, 'schema', ['waivers', 0, 'expires'], 'next year');
    expect(isIsoDate('2028-02-29')).toBe(true);
    expect(isIsoDate('2027-13-01')).toBe(false);
  });
});

describe('normalisation', () => {
  it('fills defaults and resolves references', () => {
    const text = policy(
      `  scada-to-control:
    from: scada
    to: control
    flows:
      - name: poll
        protocol: modbus
        to: [plc-1, 10.3.0.21]
        modbus:
          rules:
            - functions: [read-input-registers, 3, read-input-registers]
              addresses: [100-199, 0-99, 300]
      - name: ua
        protocol: opcua
        from: [hmi-1, hmi-2]
        to: [plc-1]
      - name: web
        protocol: tcp
        port: [443, 8000-8080, 8080-8090]
      - name: ping
        protocol: icmp
`,
    );
    const r = run(text);
    expect(r.errors).toEqual([]);
    const p = r.policy;
    if (!p) throw new Error('no policy');
    expect(p.version).toBe(1);
    expect(p.gateway).toEqual({
      name: 'gw',
      management: {
        interface: 'mgmt0',
        allowFrom: [{ family: 4, text: '192.168.100.0/24', address: '192.168.100.0', prefix: 24 }],
        ports: [22, 8443],
      },
    });
    expect(p.defaults.logRate).toEqual({ count: 10, unit: 'second' });
    expect([...p.zones.keys()]).toEqual(['enterprise', 'scada', 'control']);
    expect(p.assets.get('hmi-1')?.addresses.map((a) => a.text)).toEqual(['10.2.0.10/32', 'fd00:2::10/128']);
    const c = p.conduits.get('scada-to-control');
    expect(c?.mode).toBe('enforce');
    const [poll, ua, web, ping] = c?.flows ?? [];
    expect(poll?.from).toEqual({
      refs: [],
      addresses: [
        { family: 4, text: '10.2.0.0/24', address: '10.2.0.0', prefix: 24 },
        { family: 6, text: 'fd00:2::/64', address: 'fd00:2::', prefix: 64 },
      ],
    });
    expect(poll?.to.refs).toEqual(['plc-1', '10.3.0.21']);
    expect(poll?.to.addresses.map((a) => a.text)).toEqual(['10.3.0.20/32', '10.3.0.21/32']);
    expect(poll?.ports).toEqual([{ start: 502, end: 502 }]);
    expect(poll?.modbus).toEqual({
      unitIds: null,
      rules: [
        {
          functions: [3, 4],
          addresses: [
            { start: 0, end: 199 },
            { start: 300, end: 300 },
          ],
        },
      ],
    });
    expect(ua?.ports).toEqual([{ start: 4840, end: 4840 }]);
    expect(ua?.opcua).toEqual(OPCUA_DEFAULTS);
    expect(ua?.from.addresses.map((a) => a.text)).toEqual(['10.2.0.10/32', '10.2.0.11/32', 'fd00:2::10/128']);
    expect(web?.ports).toEqual([
      { start: 443, end: 443 },
      { start: 8000, end: 8090 },
    ]);
    expect(web?.modbus).toBeUndefined();
    expect(ping?.ports).toEqual([]);
    expect(ping?.icmpTypes).toEqual([]);
    expect(p.waivers).toEqual([]);
  });

  it('keeps ssh and the UI in the management ports whatever the policy lists (anti-lockout)', () => {
    const text = policy(POLL).replace(
      'allowFrom: [192.168.100.0/24]',
      'allowFrom: [192.168.100.0/24]\n    ports: [80]',
    );
    const r = run(text);
    expect(r.errors).toEqual([]);
    expect(r.policy?.gateway.management.ports).toEqual([22, 80, 8443]);
  });

  it('keeps explicit settings: monitor mode, logRate, management ports, opcua options', () => {
    const text = `${HEAD.replace('allowFrom: [192.168.100.0/24]', "allowFrom: ['192.168.100.7', 'FD00::1/64']\n    ports: [8443, 22, 2222]")}defaults:\n  logRate: 5/minute\n${ZONES}${ASSETS}conduits:
  scada-to-control:
    from: scada
    to: control
    mode: monitor
    flows:
      - name: ua
        protocol: opcua
        from: [hmi-1]
        to: [plc-1]
        port: 4841
        opcua:
          securityModes: [Sign, SignAndEncrypt, Sign]
          securityPolicies: [Basic256Sha256]
          services: [discovery, session, read, call]
          call: ["ns=2;s=Line1.Reset"]
          anonymous: true
          certificates: ["ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01"]
`;
    const r = run(text);
    expect(r.errors).toEqual([]);
    const p = r.policy;
    expect(p?.gateway.management.allowFrom.map((a) => a.text)).toEqual(['192.168.100.7/32', 'fd00::/64']);
    expect(p?.gateway.management.ports).toEqual([22, 2222, 8443]);
    expect(p?.defaults.logRate).toEqual({ count: 5, unit: 'minute' });
    const c = p?.conduits.get('scada-to-control');
    expect(c?.mode).toBe('monitor');
    expect(c?.flows[0]?.ports).toEqual([{ start: 4841, end: 4841 }]);
    expect(c?.flows[0]?.opcua).toEqual({
      securityModes: ['Sign', 'SignAndEncrypt'],
      securityPolicies: ['Basic256Sha256'],
      services: ['discovery', 'session', 'read', 'call'],
      write: [],
      call: ['ns=2;s=Line1.Reset'],
      anonymous: true,
      certificates: ['ABCDEF0123456789ABCDEF0123456789ABCDEF01'],
    });
  });

  it('gives the same policy for JSON and YAML input, with JSON positions', () => {
    const yamlText = policy(POLL);
    const loaded = parsePolicyText(yamlText, 'p.yaml');
    if (!loaded.ok) throw new Error('setup');
    const jsonText = JSON.stringify(loaded.doc.data, null, 2);
    const fromJson = validatePolicyText(jsonText, 'p.json', { now: NOW });
    expect(fromJson.errors).toEqual([]);
    expect(fromJson.policy).toEqual(run(yamlText).policy);
    const bad = jsonText.replace('"read-holding-registers"', '99');
    const r = validatePolicyText(bad, 'p.json', { now: NOW });
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]?.position).toEqual(posOf(bad, '99'));
    expect(r.errors[0]?.file).toBe('p.json');
  });

  it('mergeRanges merges overlapping and adjacent ranges', () => {
    expect(
      mergeRanges([
        { start: 5, end: 9 },
        { start: 0, end: 4 },
        { start: 20, end: 30 },
        { start: 25, end: 26 },
      ]),
    ).toEqual([
      { start: 0, end: 9 },
      { start: 20, end: 30 },
    ]);
  });

  it('isNodeIdPattern', () => {
    for (const ok of [
      'ns=2;s=Line1.Setpoint',
      'ns=2;s=Line1.*',
      'i=2253',
      'ns=1;i=5',
      'ns=3;g=09087e75-8e5e-499b-954f-f2a9603db28a',
      'ns=1;b=M/RbKBsRVkePCePcx24oRA==',
      'ns=2;s=*',
    ]) {
      expect(isNodeIdPattern(ok), ok).toBe(true);
    }
    for (const bad of [
      'Line1',
      'ns=2;s=',
      'ns=x;s=a',
      'ns=70000;i=1',
      'i=',
      'i=99999999999',
      'ns=2;s=a*b',
      'ns=2;s=a\nb',
      'ns=1;g=xyz',
      'ns=1;b=abc',
      's=a**',
    ]) {
      expect(isNodeIdPattern(bad), bad).toBe(false);
    }
  });
});

describe('lint merge', () => {
  const WRITE = POLL.replace('to: control', 'to: high').replace(
    '[read-holding-registers]',
    '[write-single-register]',
  );
  const high = (conduits: string, extra = ''): string =>
    policy(conduits, extra)
      .replace(
        '  control: { securityLevel: 2, interfaces: [eth3], networks: [10.3.0.0/24] }\n',
        '  control: { securityLevel: 2, interfaces: [eth3], networks: [10.3.0.0/24] }\n  high: { securityLevel: 3, interfaces: [eth4], networks: [10.4.0.0/24] }\n',
      )
      .replace(
        '  plc-1: { zone: control, addresses: [10.3.0.20] }',
        '  plc-1: { zone: high, addresses: [10.4.0.20] }',
      );

  it('turns an unwaived lint error into an error with code lint.<rule>, position and citation', () => {
    const text = high(WRITE);
    const r = run(text);
    expect(r.ok).toBe(false);
    expect(r.policy).toBeUndefined();
    expect(r.errors.map((p) => p.code)).toEqual(['lint.SL-write-from-lower']);
    const e = r.errors[0] as Problem;
    expect(e.path).toEqual(['conduits', 'scada-to-control', 'flows', 0, 'modbus', 'rules', 0, 'functions']);
    expect(e.position).toEqual(posOf(text, '[write-single-register]'));
    expect(e.message).toMatch(/\[62443-3-3 SR 2\.1, SR 5\.2\]$/);
    expect(r.lint.map((f) => [f.rule, f.position])).toEqual([['SL-write-from-lower', e.position]]);
  });

  it('a valid waiver makes it an accepted risk; an expired one is an error', () => {
    const waiver = `waivers:\n  - rule: SL-write-from-lower\n    conduit: scada-to-control\n    rationale: interlocks\n    expires: 2027-06-30\n`;
    const r = run(high(WRITE, waiver));
    expect(r.errors).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.lint).toHaveLength(1);
    expect(r.lint[0]?.waiver?.rationale).toBe('interlocks');
    const later = validatePolicyText(high(WRITE, waiver), FILE, { now: new Date('2027-07-01T00:00:00Z') });
    expect(later.errors.map((p) => p.code).sort()).toEqual([
      'lint.SL-write-from-lower',
      'lint.waiver-expired',
    ]);
  });

  it('lint warnings go to warnings with positions', () => {
    const skip = POLL.replace('from: scada', 'from: enterprise')
      .replace('to: control', 'to: high')
      .replace('from: [hmi-1]', 'from: [10.1.0.5]');
    const text = high(skip);
    const r = run(text);
    expect(r.ok).toBe(true);
    expect(r.warnings.map((p) => [p.code, p.position])).toEqual([
      ['lint.SL-skip', posOf(text, 'from: enterprise')],
    ]);
  });
});

describe('hostile input', () => {
  const HOSTILE = [
    '"',
    '\n',
    ';',
    '{',
    '}',
    '#',
    'a"; drop; #',
    '}\n}\ntable inet x {',
    '\u00e9'.repeat(64) + 'x',
    '\u0000',
    '\u001b[2J',
    'constructor',
    '__proto__',
    'toString',
  ];

  it('never throws, and every hostile string in any string field yields a problem or a safe policy', () => {
    const base = parsePolicyText(
      policy(
        POLL,
        'waivers:\n  - { rule: SL-skip, conduit: scada-to-control, rationale: r, expires: 2027-01-01 }\n',
      ),
      'p.yaml',
    );
    if (!base.ok) throw new Error('setup');
    const data = base.doc.data;
    /** Every path to a string leaf and every map key. */
    const slots: { path: DocPath; key: boolean }[] = [];
    const walk = (node: unknown, path: DocPath): void => {
      if (typeof node === 'string') slots.push({ path, key: false });
      else if (Array.isArray(node)) node.forEach((v, i) => walk(v, [...path, i]));
      else if (typeof node === 'object' && node !== null)
        for (const [k, v] of Object.entries(node)) {
          slots.push({ path: [...path, k], key: true });
          walk(v, [...path, k]);
        }
    };
    walk(data, []);
    expect(slots.length).toBeGreaterThan(40);
    const NAMEISH = /^[a-z][a-z0-9-]{0,30}$/;
    fc.assert(
      fc.property(
        fc.constantFrom(...slots),
        fc.oneof(fc.constantFrom(...HOSTILE), fc.string({ unit: 'binary', maxLength: 40 })),
        fc.boolean(),
        ({ path, key }, hostile, asJson) => {
          const copy = structuredClone(data) as Record<string, unknown>;
          let node: unknown = copy;
          for (const seg of path.slice(0, -1)) node = (node as Record<string | number, unknown>)[seg];
          const last = path[path.length - 1] as string | number;
          const parent = node as Record<string | number, unknown>;
          if (key) {
            const value = parent[last];
            Reflect.deleteProperty(parent, last);
            Object.defineProperty(parent, hostile, {
              value,
              enumerable: true,
              configurable: true,
              writable: true,
            });
          } else parent[last] = hostile;
          const text = asJson ? JSON.stringify(copy) : `${JSON.stringify(copy, null, 1)}\n`;
          const r = validatePolicyText(text, 'h.json', { now: NOW });
          if (r.ok) {
            // Accepted: only free text or a value that is itself a well-formed name/address can get through.
            const field = path[path.length - 1];
            const free = field === 'description' || field === 'rationale';
            expect(
              free ||
                NAMEISH.test(hostile) ||
                /^[0-9a-fA-F.:/]+$/.test(hostile) ||
                r.warnings.length > 0 ||
                hostile === '',
            ).toBe(true);
          } else {
            expect(r.errors.length).toBeGreaterThan(0);
            for (const e of r.errors) expect(typeof e.message).toBe('string');
          }
        },
      ),
      { numRuns: 120, seed: 62443 },
    );
  });

  it('rejects hostile names with a clear message', () => {
    const text = policy(POLL.replace('name: poll', 'name: "poll; drop"'));
    const p = expectOnly(
      text,
      'schema',
      ['conduits', 'scada-to-control', 'flows', 0, 'name'],
      '"poll; drop"',
    );
    expect(p.message).toBe("name must be a name: a lower-case letter, then at most 30 of a-z, 0-9 and '-'");
    const r = run(policy(POLL).replace('interfaces: [eth1]', 'interfaces: ["eth1\\"; flush ruleset #"]'));
    expect(r.errors.map((e) => e.code)).toEqual(['schema']);
  });

  it('validatePolicy accepts a document without locateKey', () => {
    const text = policy(POLL.replace('protocol: modbus', 'protocol: modbus\n        prot: 12345'));
    const loaded = parsePolicyText(text, FILE);
    if (!loaded.ok) throw new Error('setup');
    const { locateKey: _unused, ...rest } = loaded.doc;
    const r = validatePolicy(rest, { now: NOW });
    // Without locateKey the unknown field is shown at its value.
    expect(r.errors[0]?.position).toEqual(posOf(text, '12345'));
  });
});

describe('DPI flow limits', () => {
  const LIMITED = POLL.replace(
    'protocol: modbus',
    'protocol: modbus\n        limits: { maxConnections: 8, maxConnectionsPerSource: 2, idleTimeoutSeconds: 300, maxOutstandingRequests: 4, messageTimeoutSeconds: 5 }',
  );

  it('normalises limits to ms and leaves them out when absent', () => {
    const r = run(policy(LIMITED));
    expect(r.errors).toEqual([]);
    const flow = r.policy?.conduits.get('scada-to-control')?.flows[0];
    expect(flow?.limits).toEqual({
      maxConnections: 8,
      maxConnectionsPerSource: 2,
      idleTimeoutMs: 300_000,
      maxOutstandingRequests: 4,
      messageTimeoutMs: 5000,
    });
    expect(run(policy(POLL)).policy?.conduits.get('scada-to-control')?.flows[0]).not.toHaveProperty('limits');
  });

  it('refuses values out of range, at the value', () => {
    const text = policy(LIMITED.replace('idleTimeoutSeconds: 300', 'idleTimeoutSeconds: 0'));
    const p = expectOnly(
      text,
      'semantic.limit-range',
      ['conduits', 'scada-to-control', 'flows', 0, 'limits', 'idleTimeoutSeconds'],
      '0, maxOutstandingRequests',
    );
    expect(p.message).toBe('idleTimeoutSeconds 0 is out of range (1–604800 seconds (7 days))');
    const big = run(policy(LIMITED.replace('messageTimeoutSeconds: 5', 'messageTimeoutSeconds: 3601')));
    expect(big.errors.map((e) => e.code)).toEqual(['semantic.limit-range']);
  });

  it('refuses a per-source limit above the total', () => {
    const text = policy(LIMITED.replace('maxConnectionsPerSource: 2', 'maxConnectionsPerSource: 9'));
    expectOnly(
      text,
      'semantic.limit-range',
      ['conduits', 'scada-to-control', 'flows', 0, 'limits', 'maxConnectionsPerSource'],
      '9, idleTimeoutSeconds',
    );
  });

  it('refuses unknown keys, non-integers and limits on non-DPI flows', () => {
    const typo = run(policy(LIMITED.replace('maxConnections: 8', 'maxConnection: 8')));
    expect(typo.errors.map((e) => e.code)).toEqual(['schema']);
    const text = run(policy(LIMITED.replace('idleTimeoutSeconds: 300', 'idleTimeoutSeconds: 300s')));
    expect(text.errors.map((e) => e.code)).toEqual(['schema']);
    const tcp = policy(`  scada-to-control:
    from: scada
    to: control
    flows:
      - { name: web, protocol: tcp, to: [plc-1], port: 80, limits: { maxConnections: 3 } }
`);
    expectOnly(
      tcp,
      'semantic.limits-protocol',
      ['conduits', 'scada-to-control', 'flows', 0, 'limits'],
      'limits:',
    );
  });
});
