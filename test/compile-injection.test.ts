// Property: no policy text can inject nftables statements. Hostile strings (`"`, newline, `;`, `{`, `}`, `#`,
// a 129-byte UTF-8 string, whole nft statements) are put into every string field and every key of a valid
// policy document (serialised with the yaml library, so each lands exactly in its field). Each input is
// either rejected by validation with errors, or compiles to a ruleset that `nft -c` accepts (in a namespace
// of our own, prefix slcC-inj) and whose normalised statements are all statements of the unmutated policy.
import { execa } from 'execa';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gate, needsFile, needsRoot, NFT_BINARY } from './lab/gate.ts';
import { stringify } from 'yaml';
import { Nft } from '../gateway/nft.ts';
import { compilePolicy } from '../policies/compile.ts';
import { validatePolicyText } from '../policies/validate.ts';

const NOW = new Date('2026-06-01T00:00:00Z');
const NS = 'slcC-inj';

const nftGate = gate('test/compile-injection.test.ts', [needsRoot(), needsFile(NFT_BINARY, 'nft')]);

/** The policy of issue 2, plus a tcp/udp flow, descriptions and a waiver: every kind of string field. */
const BASE: Record<string, unknown> = {
  version: 1,
  gateway: {
    name: 'line1-gw',
    management: { interface: 'mgmt0', allowFrom: ['192.168.100.0/24'], ports: [22, 8443] },
  },
  defaults: { logRate: '10/second' },
  zones: {
    enterprise: {
      securityLevel: 1,
      interfaces: ['eth1'],
      networks: ['10.1.0.0/16'],
      description: 'Corporate IT',
    },
    control: { securityLevel: 3, interfaces: ['eth2'], networks: ['10.2.0.0/24', 'fd00:2::/64'] },
  },
  assets: {
    'hmi-1': { zone: 'enterprise', addresses: ['10.1.0.10'], description: 'Operator station' },
    'plc-1': { zone: 'control', addresses: ['10.2.0.20', 'fd00:2::20'] },
  },
  conduits: {
    'hmi-to-plc': {
      from: 'enterprise',
      to: 'control',
      mode: 'enforce',
      description: 'HMI polling',
      flows: [
        {
          name: 'poll',
          protocol: 'modbus',
          from: ['hmi-1'],
          to: ['plc-1'],
          port: 502,
          modbus: {
            unitIds: [1],
            rules: [
              { functions: ['read-holding-registers', 'read-input-registers'], addresses: '0-999' },
              {
                functions: ['write-single-register', 'write-multiple-registers'],
                addresses: '100-110',
                values: '0-5000',
              },
            ],
          },
        },
        {
          name: 'ua',
          protocol: 'opcua',
          from: ['hmi-1'],
          to: ['plc-1'],
          opcua: {
            securityModes: ['SignAndEncrypt'],
            securityPolicies: ['Basic256Sha256', 'Aes256_Sha256_RsaPss'],
            services: ['discovery', 'session', 'read', 'browse', 'subscribe', 'write', 'call'],
            write: ['ns=2;s=Line1.Setpoint*'],
            call: ['ns=2;s=Line1.Reset'],
            anonymous: false,
            certificates: [],
          },
        },
        { name: 'ping', protocol: 'icmp', icmpTypes: ['echo-request'] },
        { name: 'web', protocol: 'tcp', from: ['hmi-1'], to: ['10.2.0.20'], port: '8000-8080' },
        { name: 'syslog', protocol: 'udp', from: ['10.1.0.0/24'], to: ['plc-1'], port: 514 },
      ],
    },
  },
  waivers: [
    {
      rule: 'SL-write-from-lower',
      conduit: 'hmi-to-plc',
      rationale: 'Setpoint writes are bounded by the PLC interlocks; reviewed by the OT security lead.',
      expires: '2027-06-30',
    },
  ],
};

type Path = (string | number)[];
interface Target {
  path: Path;
  /** `value`: replace/extend a string value; `key`: rename an object key. */
  kind: 'value' | 'key';
}

function targets(node: unknown, path: Path = []): Target[] {
  const out: Target[] = [];
  if (typeof node === 'string') out.push({ path, kind: 'value' });
  else if (Array.isArray(node)) node.forEach((v, i) => out.push(...targets(v, [...path, i])));
  else if (node !== null && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      out.push({ path: [...path, k], kind: 'key' });
      out.push(...targets(v, [...path, k]));
    }
  }
  return out;
}

type Mode = 'replace' | 'append' | 'prepend';

function mutate(doc: unknown, t: Target, hostile: string, mode: Mode): unknown {
  type Node = Record<string | number, unknown>;
  const copy = structuredClone(doc) as Node;
  const parents: Node[] = [copy];
  for (const seg of t.path.slice(0, -1)) parents.push((parents[parents.length - 1] as Node)[seg] as Node);
  const parent = parents[parents.length - 1] as Node;
  const last = t.path[t.path.length - 1] as string | number;
  const apply = (s: string): string =>
    mode === 'replace' ? hostile : mode === 'append' ? s + hostile : hostile + s;
  if (t.kind === 'value') {
    parent[last] = apply(String(parent[last]));
    return copy;
  }
  // A renamed key keeps its position: rebuild the object and hang it where the old one was.
  const renamed = Object.fromEntries(Object.entries(parent).map(([k, v]) => [k === last ? apply(k) : k, v]));
  if (t.path.length === 1) return renamed;
  (parents[parents.length - 2] as Node)[t.path[t.path.length - 2] as string | number] = renamed;
  return copy;
}

/**
 * A ruleset's statements with names abstracted: identifiers, quoted strings and numbers become placeholders.
 * A mutated policy may rename things, but every statement *shape* must be one the base policy has.
 */
function statementShapes(ruleset: string): Set<string> {
  return new Set(
    ruleset
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'))
      .map((l) =>
        l
          .replace(/"[^"]*"/g, '"S"')
          .replace(/\b[a-z]{1,4}_[a-z0-9_-]+/g, 'ID')
          .replace(/[0-9a-f:.]*[0-9][0-9a-f:./]*/g, 'N'),
      ),
  );
}

function newShapes(base: Set<string>, ruleset: string): string[] {
  return [...statementShapes(ruleset)].filter((s) => !base.has(s));
}

const SPECIALS = ['"', '\n', ';', '{', '}', '#', '\\', "'", ' ', '\r', '\t', '@', '$', '\u0000'];
const PAYLOADS = [
  '" ; flush ruleset ; "',
  '\n}\ntable ip evil { chain x { type filter hook forward priority -500; policy accept; } }\n#',
  'eth1" . "eth2" : accept, "x',
  'x } accept #',
  '10.1.0.0/16 } accept',
  'é'.repeat(64) + 'a', // 129 bytes of UTF-8
  'a'.repeat(129),
];
const hostileArb = fc.oneof(
  fc.constantFrom(...PAYLOADS),
  fc
    .tuple(fc.string({ maxLength: 6 }), fc.constantFrom(...SPECIALS), fc.string({ maxLength: 6 }))
    .map(([a, b, c]) => a + b + c),
);

interface Outcome {
  rejected: number;
  compiled: number;
  rulesets: Set<string>;
}

function run(base: Set<string>, t: Target, hostile: string, mode: Mode, out: Outcome): void {
  const text = stringify(mutate(BASE, t, hostile, mode));
  const v = validatePolicyText(text, 'inj.yaml', { now: NOW });
  if (!v.ok || v.policy === undefined) {
    expect(v.errors.length, `${t.path.join('.')} ${JSON.stringify(hostile)}`).toBeGreaterThan(0);
    for (const e of v.errors) expect(e.message.length).toBeGreaterThan(0);
    out.rejected++;
    return;
  }
  const { ruleset } = compilePolicy(v.policy);
  expect(newShapes(base, ruleset), `${t.path.join('.')} (${t.kind}) ${JSON.stringify(hostile)}`).toEqual([]);
  out.compiled++;
  out.rulesets.add(ruleset);
}

describe('policy text cannot inject nftables statements', () => {
  const baseResult = validatePolicyText(stringify(BASE), 'base.yaml', { now: NOW });
  const basePolicy = baseResult.policy;
  const all = targets(BASE);
  const outcome: Outcome = { rejected: 0, compiled: 0, rulesets: new Set() };
  let baseRuleset = '';

  beforeAll(async () => {
    if (!nftGate.run) return;
    await execa('ip', ['netns', 'delete', NS], { reject: false });
    await execa('ip', ['netns', 'add', NS]);
  });
  afterAll(async () => {
    if (nftGate.run) await execa('ip', ['netns', 'delete', NS], { reject: false });
  });

  it('starts from a valid policy', () => {
    expect(baseResult.errors).toEqual([]);
    expect(basePolicy).toBeDefined();
    baseRuleset = compilePolicy(basePolicy ?? (undefined as never)).ruleset;
    expect(all.length).toBeGreaterThan(50);
  });

  it('detects an injected statement (the checker itself works)', () => {
    const shapes = statementShapes(baseRuleset);
    expect(newShapes(shapes, baseRuleset)).toEqual([]);
    expect(
      newShapes(shapes, baseRuleset.replace('\n}\n', '\n\tchain x {\n\t\tip saddr 1.2.3.4 accept\n\t}\n}\n')),
    ).toEqual(['chain x {', 'ip saddr N accept']);
    expect(newShapes(shapes, `${baseRuleset}flush ruleset\n`)).toEqual(['flush ruleset']);
  });

  it('every string field and key, with a statement-shaped payload', () => {
    const shapes = statementShapes(baseRuleset);
    for (const t of all) {
      for (const mode of ['replace', 'append'] as const) run(shapes, t, PAYLOADS[1] as string, mode, outcome);
    }
    // Free text (descriptions, rationale) and NodeId patterns may hold anything and still compile.
    expect(outcome.compiled).toBeGreaterThan(0);
    expect(outcome.rejected).toBeGreaterThan(0);
  });

  it('random hostile strings in random fields (property)', () => {
    const shapes = statementShapes(baseRuleset);
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: all.length - 1 }),
        hostileArb,
        fc.constantFrom<Mode>('replace', 'append', 'prepend'),
        (i, hostile, mode) => {
          run(shapes, all[i] as Target, hostile, mode, outcome);
        },
      ),
      { numRuns: 200 },
    );
  });

  nftGate.it('nft -c accepts every ruleset that compiled', async () => {
    const nft = new Nft({ netns: NS });
    outcome.rulesets.add(baseRuleset);
    for (const r of outcome.rulesets) await nft.check(r);
    console.log(
      `compile-injection: ${outcome.rejected} inputs rejected, ${outcome.compiled} compiled ` +
        `(${outcome.rulesets.size} distinct rulesets, all accepted by nft -c)`,
    );
    expect(outcome.rulesets.size).toBeGreaterThan(0);
  });
});
