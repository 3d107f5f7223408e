/**
 * JSON Schema (draft-07) of the raw policy document, version 1: its shape only. Everything that needs more
 * than one field to decide (zone references, overlaps, ranges, Modbus codes, NodeIds, …) is a semantic check
 * in validate.ts, with its own stable code.
 *
 * `additionalProperties: false` everywhere: a misspelt key (`prot:`) must be an error, never a field that
 * silently does nothing in a firewall. The `x-expect` annotation says in words what a value must be; the
 * validator turns schema errors into "<field> must be <x-expect>" instead of raw ajv text.
 */
import { IFNAME_RE, NAME_RE } from './types.ts';

export type JsonSchema = Record<string, unknown>;

/** Free text (descriptions, rationales) is bounded; it is shown in reports and never reaches nft. */
export const FREE_TEXT_MAX = 512;
/** Management ports kept reachable whatever the policy says: ssh and the web UI. `ports:` only adds to them. */
export const DEFAULT_MANAGEMENT_PORTS = [22, 8443];
export const DEFAULT_LOG_RATE = '10/second';

export const NAME_EXPECT = "a name: a lower-case letter, then at most 30 of a-z, 0-9 and '-'";

const NAME: JsonSchema = { type: 'string', pattern: NAME_RE.source, 'x-expect': NAME_EXPECT };
const IFNAME: JsonSchema = {
  type: 'string',
  pattern: IFNAME_RE.source,
  'x-expect': 'a Linux interface name (at most 15 characters: letters, digits, _ . -)',
};
const ADDRESS: JsonSchema = {
  type: 'string',
  minLength: 1,
  maxLength: 64,
  'x-expect': 'an IPv4 or IPv6 address or CIDR',
};
const ENDPOINT_REF: JsonSchema = {
  type: 'string',
  minLength: 1,
  maxLength: 64,
  'x-expect': 'an asset name or an IPv4/IPv6 address or CIDR',
};
const FREE_TEXT: JsonSchema = { type: 'string', maxLength: FREE_TEXT_MAX, 'x-expect': 'text' };
const INTEGER: JsonSchema = { type: 'integer', 'x-expect': 'a whole number' };
const RANGE_STRING: JsonSchema = { type: 'string', pattern: '^[0-9]{1,10}-[0-9]{1,10}$' };
const RANGE: JsonSchema = { anyOf: [INTEGER, RANGE_STRING], 'x-expect': "a number or a range 'a-b'" };
const RANGES: JsonSchema = {
  anyOf: [INTEGER, RANGE_STRING, { type: 'array', minItems: 1, items: RANGE }],
  'x-expect': "a number, a range 'a-b' or a list of those",
};
const STRING_OR_INT: JsonSchema = {
  anyOf: [{ type: 'string', maxLength: 64 }, INTEGER],
  'x-expect': 'a name or a number',
};

function obj(properties: Record<string, JsonSchema>, required: string[] = []): JsonSchema {
  return { type: 'object', additionalProperties: false, required, properties };
}

function list(items: JsonSchema, minItems = 0): JsonSchema {
  return { type: 'array', items, minItems };
}

/** A mapping from names (zones, assets, conduits) to entries. */
function named(entry: JsonSchema): JsonSchema {
  return { type: 'object', propertyNames: NAME, additionalProperties: entry };
}

const ZONE = obj(
  {
    securityLevel: { enum: [1, 2, 3, 4], 'x-expect': '1, 2, 3 or 4' },
    interfaces: list(IFNAME, 1),
    networks: list(ADDRESS, 1),
    description: FREE_TEXT,
  },
  ['securityLevel', 'interfaces', 'networks'],
);

const ASSET = obj({ zone: NAME, addresses: list(ADDRESS, 1), description: FREE_TEXT }, ['zone', 'addresses']);

const MODBUS = obj(
  {
    unitIds: list(INTEGER, 1),
    rules: list(
      obj({ functions: list(STRING_OR_INT, 1), addresses: RANGES, values: RANGE }, ['functions']),
      1,
    ),
  },
  ['rules'],
);

const SHORT_STRING: JsonSchema = { type: 'string', maxLength: 64 };

const OPCUA = obj({
  securityModes: list(SHORT_STRING, 1),
  securityPolicies: list(SHORT_STRING, 1),
  services: list(SHORT_STRING, 1),
  write: list({ type: 'string', minLength: 1, maxLength: 1024, 'x-expect': 'a NodeId pattern' }),
  call: list({ type: 'string', minLength: 1, maxLength: 1024, 'x-expect': 'a NodeId pattern' }),
  anonymous: { type: 'boolean', 'x-expect': 'true or false' },
  certificates: list({ type: 'string', maxLength: 64, 'x-expect': 'a SHA-1 thumbprint (40 hex digits)' }),
});

/**
 * Per-flow proxy limits (modbus/opcua flows only). Whole numbers with the unit in the key, so a value never
 * needs parsing; ranges are checked in validate.ts (FLOW_LIMIT_RANGES) with a readable message.
 */
const FLOW_LIMITS = obj({
  maxConnections: INTEGER,
  maxConnectionsPerSource: INTEGER,
  idleTimeoutSeconds: INTEGER,
  maxOutstandingRequests: INTEGER,
  messageTimeoutSeconds: INTEGER,
});

const FLOW = obj(
  {
    name: NAME,
    protocol: {
      enum: ['tcp', 'udp', 'icmp', 'modbus', 'opcua'],
      'x-expect': 'tcp, udp, icmp, modbus or opcua',
    },
    from: list(ENDPOINT_REF, 1),
    to: list(ENDPOINT_REF, 1),
    port: RANGES,
    icmpTypes: list(SHORT_STRING, 1),
    modbus: MODBUS,
    opcua: OPCUA,
    limits: FLOW_LIMITS,
  },
  ['name', 'protocol'],
);

const CONDUIT = obj(
  {
    from: NAME,
    to: NAME,
    mode: { enum: ['enforce', 'monitor'], 'x-expect': 'enforce or monitor' },
    description: FREE_TEXT,
    flows: list(FLOW),
  },
  ['from', 'to', 'flows'],
);

const WAIVER = obj(
  {
    rule: {
      type: 'string',
      pattern: '^[A-Za-z][A-Za-z0-9-]{0,63}$',
      'x-expect': 'the name of a lint rule, e.g. SL-write-from-lower',
    },
    conduit: NAME,
    rationale: {
      type: 'string',
      maxLength: FREE_TEXT_MAX,
      pattern: '\\S',
      'x-expect': 'a non-empty explanation of the compensating control',
    },
    expires: { type: 'string', pattern: '^[0-9]{4}-[0-9]{2}-[0-9]{2}$', 'x-expect': 'a date YYYY-MM-DD' },
  },
  ['rule', 'conduit', 'rationale', 'expires'],
);

export const POLICY_SCHEMA: JsonSchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  $id: 'https://sluice.invalid/schema/policy-v1.json',
  title: 'Sluice policy, version 1',
  ...obj(
    {
      version: { const: 1, 'x-expect': '1' },
      gateway: obj(
        {
          name: NAME,
          management: obj({ interface: IFNAME, allowFrom: list(ADDRESS, 1), ports: list(INTEGER, 1) }, [
            'interface',
            'allowFrom',
          ]),
        },
        ['name', 'management'],
      ),
      defaults: obj({
        logRate: {
          type: 'string',
          pattern: '^[1-9][0-9]{0,5}/(second|minute|hour)$',
          'x-expect': "a rate such as '10/second' (N/second, N/minute or N/hour)",
        },
      }),
      zones: named(ZONE),
      assets: named(ASSET),
      conduits: named(CONDUIT),
      waivers: list(WAIVER),
    },
    ['version', 'gateway', 'zones'],
  ),
};
