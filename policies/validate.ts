/**
 * Stage 2 "verify": raw policy data → checked, normalised `Policy` (types.ts), plus every problem at once.
 *
 * Order: JSON Schema (shape) → semantic checks and normalisation in one defensive pass (each check has a
 * stable `semantic.*` code) → the IEC 62443 lint (lint.ts) on the normalised policy. Semantic checks run even
 * when the schema failed, on whatever parts are well-formed, so one run reports everything; a semantic problem
 * at or below a path the schema already rejected is dropped as a duplicate. Nothing here throws on bad input.
 *
 * Why ajv: a standard JSON Schema validator whose `allErrors` mode reports every violation in one pass, and
 * whose errors carry the instance path and the failing schema node, which is what we need to translate them
 * into readable messages ("unknown field 'prot' (allowed: …)") at the right line:column.
 */
import { ICMP_TYPES_V4, ICMP_TYPES_V6 } from './icmp.ts';
import { Ajv } from 'ajv';
import type { ErrorObject, ValidateFunction } from 'ajv';
import {
  cidrContains,
  cidrOverlaps,
  findCidrOverlaps,
  isHostCidr,
  normaliseCidrSet,
  parseCidr,
} from './cidr.ts';
import { quote } from './format.ts';
import { lintPolicy } from './lint.ts';
import type { LoadResult, PolicyDocument } from './load.ts';
import { byPosition, loadPolicyFile, parsePolicyText } from './load.ts';
import { MODBUS_FUNCTIONS, MODBUS_VALUE_WRITE_FUNCTIONS, modbusFunctionCode } from './modbus-functions.ts';
import { mergeRanges } from './ranges.ts';
import { DEFAULT_LOG_RATE, DEFAULT_MANAGEMENT_PORTS, POLICY_SCHEMA } from './schema.ts';
import type { JsonSchema } from './schema.ts';
import { NAME_RE, OPCUA_SECURITY_POLICIES, OPCUA_SERVICE_GROUPS } from './types.ts';
import type {
  Asset,
  Cidr,
  Conduit,
  ConduitMode,
  DocPath,
  Endpoint,
  Flow,
  FlowLimits,
  FlowProtocol,
  LintFinding,
  LogRate,
  ModbusRule,
  ModbusSpec,
  OpcuaSecurityMode,
  OpcuaSecurityPolicy,
  OpcuaServiceGroup,
  OpcuaSpec,
  Policy,
  Problem,
  Range,
  SecurityLevel,
  Waiver,
  Zone,
} from './types.ts';

export interface ValidationResult {
  /** True when there is no error (warnings and waived lint findings allowed): the policy may be compiled. */
  ok: boolean;
  /** The normalised policy; present only when `ok`, so nothing compiles a policy that failed. */
  policy?: Policy;
  errors: Problem[];
  warnings: Problem[];
  /** Every lint finding (errors, warnings and waived ones), with positions. */
  lint: LintFinding[];
  /** The policy file's name as given (for reports); an addition to the contract, optional. */
  file?: string;
}

export interface ValidateOptions {
  /** "Today" for waiver expiry; defaults to the current time. */
  now?: Date;
}

// ---------------------------------------------------------------------------------------------- constants

const ICMP_TYPES = new Set([...ICMP_TYPES_V4, ...ICMP_TYPES_V6]);

export const OPCUA_SECURITY_MODES: readonly OpcuaSecurityMode[] = ['None', 'Sign', 'SignAndEncrypt'];

export const OPCUA_DEFAULTS: OpcuaSpec = {
  securityModes: ['SignAndEncrypt'],
  securityPolicies: ['Basic256Sha256', 'Aes256_Sha256_RsaPss'],
  services: ['discovery', 'session', 'read', 'browse', 'subscribe'],
  write: [],
  call: [],
  anonymous: false,
  certificates: [],
};

/**
 * Accepted ranges of the policy's `limits` keys (inclusive) and how each maps onto `FlowLimits`. The bounds
 * refuse values that are surely mistakes (0 = "never accept", a 30-day idle timeout) rather than tune anything.
 */
export const FLOW_LIMIT_RANGES: Readonly<
  Record<
    | 'maxConnections'
    | 'maxConnectionsPerSource'
    | 'idleTimeoutSeconds'
    | 'maxOutstandingRequests'
    | 'messageTimeoutSeconds',
    { min: number; max: number; key: keyof FlowLimits; scale: number; unit: string }
  >
> = {
  maxConnections: { min: 1, max: 65535, key: 'maxConnections', scale: 1, unit: 'connections' },
  maxConnectionsPerSource: {
    min: 1,
    max: 65535,
    key: 'maxConnectionsPerSource',
    scale: 1,
    unit: 'connections',
  },
  idleTimeoutSeconds: { min: 1, max: 604800, key: 'idleTimeoutMs', scale: 1000, unit: 'seconds (7 days)' },
  maxOutstandingRequests: { min: 1, max: 65535, key: 'maxOutstandingRequests', scale: 1, unit: 'requests' },
  messageTimeoutSeconds: {
    min: 1,
    max: 3600,
    key: 'messageTimeoutMs',
    scale: 1000,
    unit: 'seconds (1 hour)',
  },
};

export const DEFAULT_PORTS: Readonly<Record<'modbus' | 'opcua', number>> = { modbus: 502, opcua: 4840 };

/**
 * OPC UA NodeId pattern: optional `ns=N;`, then `s=` string, `i=` number, `g=` GUID or `b=` base64 (the
 * OPC UA text encoding, Part 6 §5.3.1.10), optionally ending in `*` (prefix match). No control characters and
 * no `*` inside the identifier, so a pattern means one thing.
 */
const NODEID_RE =
  // eslint-disable-next-line no-control-regex -- control characters are what the pattern refuses
  /^(?:ns=(?:0|[1-9][0-9]{0,4});)?(?:s=[^\u0000-\u001f\u007f*]*|i=[0-9]{0,10}|g=[0-9A-Fa-f-]{0,36}|b=[A-Za-z0-9+/]*={0,2})\*?$/;
const GUID_RE = /^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$/;

export function isNodeIdPattern(text: string): boolean {
  if (typeof text !== 'string' || !NODEID_RE.test(text)) return false;
  const star = text.endsWith('*');
  const body = star ? text.slice(0, -1) : text;
  const m = /^(?:ns=([0-9]+);)?([sigb])=(.*)$/s.exec(body);
  if (m === null) return false;
  const [, ns, kind, id] = m as unknown as [string, string | undefined, string, string];
  if (ns !== undefined && Number(ns) > 65535) return false;
  // Without `*` the identifier must be complete; with it, any prefix of a valid identifier will do.
  if (kind === 'i') return star ? true : id !== '' && Number(id) <= 0xffffffff;
  if (kind === 'g') return star ? true : GUID_RE.test(id);
  if (kind === 'b') return star ? true : id !== '' && id.length % 4 === 0;
  return star || id !== '';
}

// ------------------------------------------------------------------------------------------- raw helpers

type Raw = Record<string, unknown>;

function isObj(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
/** Own property only: a key like `constructor` must never reach Object.prototype. */
function get(o: unknown, key: string): unknown {
  return isObj(o) && Object.hasOwn(o, key) ? o[key] : undefined;
}
function has(o: unknown, key: string): boolean {
  return isObj(o) && Object.hasOwn(o, key);
}
function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}
function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}
function entries(v: unknown): [string, unknown][] {
  return isObj(v) ? Object.entries(v) : [];
}
function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v);
}

// ------------------------------------------------------------------------------------------- problem sink

class Sink {
  readonly problems: Problem[] = [];
  readonly doc: PolicyDocument;
  constructor(doc: PolicyDocument) {
    this.doc = doc;
  }
  /** Position of `path`, or of its nearest ancestor present in the source (for missing fields). */
  position(path: DocPath, at: 'value' | 'key' = 'value'): Problem['position'] {
    const first = at === 'key' && this.doc.locateKey ? this.doc.locateKey(path) : this.doc.locate(path);
    if (first) return first;
    for (let n = path.length - 1; n >= 0; n--) {
      const p = this.doc.locate(path.slice(0, n));
      if (p) return p;
    }
    return undefined;
  }
  add(
    code: string,
    path: DocPath,
    message: string,
    opts: { at?: 'value' | 'key'; warning?: boolean } = {},
  ): void {
    const p: Problem = {
      severity: opts.warning ? 'warning' : 'error',
      code,
      path,
      message,
      file: this.doc.file,
    };
    const pos = this.position(path, opts.at);
    if (pos) p.position = pos;
    this.problems.push(p);
  }
}

// ---------------------------------------------------------------------------------------------- schema

let compiled: ValidateFunction | undefined;

function schemaValidator(): ValidateFunction {
  if (compiled === undefined) {
    const ajv = new Ajv({ allErrors: true, verbose: true, strict: true, allowUnionTypes: true });
    // `x-expect` is our annotation: the words a message uses for what a value must be.
    ajv.addVocabulary(['x-expect']);
    compiled = ajv.compile(POLICY_SCHEMA);
  }
  return compiled;
}

/** JSON pointer → DocPath, turning segments that index arrays in `data` into numbers. */
function pointerToPath(pointer: string, data: unknown): DocPath {
  if (pointer === '') return [];
  const path: DocPath = [];
  let node: unknown = data;
  for (const raw of pointer.slice(1).split('/')) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(node)) {
      const i = Number(seg);
      path.push(i);
      node = node[i];
    } else {
      path.push(seg);
      node = get(node, seg);
    }
  }
  return path;
}

const TYPE_WORDS: Record<string, string> = {
  object: 'a mapping (key: value)',
  array: 'a list',
  string: 'text',
  integer: 'a whole number',
  number: 'a number',
  boolean: 'true or false',
  null: 'empty',
};

const KIND_OF_MAP: Record<string, string> = { zones: 'zone', assets: 'asset', conduits: 'conduit' };

/** The words for the field at `path` in a message: `securityLevel`, `functions[0]`, `zone 'control'`. */
function fieldName(path: DocPath): string {
  if (path.length === 0) return 'the policy';
  const last = path[path.length - 1];
  if (typeof last === 'number') {
    const parent = path.length > 1 ? path[path.length - 2] : undefined;
    return typeof parent === 'string' ? `${parent}[${last}]` : `entry ${last}`;
  }
  if (path.length === 2 && typeof path[0] === 'string' && KIND_OF_MAP[path[0]] !== undefined) {
    return `${KIND_OF_MAP[path[0]]} ${quote(last)}`;
  }
  return String(last);
}

function schemaOf(e: ErrorObject): JsonSchema {
  return isObj(e.parentSchema) ? e.parentSchema : {};
}

function expectOf(e: ErrorObject): string | undefined {
  return str(schemaOf(e)['x-expect']);
}

function listWords(items: readonly string[]): string {
  if (items.length <= 1) return items.join('');
  return `${items.slice(0, -1).join(', ')} or ${items[items.length - 1]}`;
}

/** Translates ajv's errors into readable problems; returns the paths the schema rejected. */
function schemaProblems(data: unknown, sink: Sink): DocPath[] {
  const validate = schemaValidator();
  if (validate(data)) return [];
  let errors = validate.errors ?? [];
  // An anyOf failure explains itself through its x-expect; the per-branch errors underneath are noise.
  const unions = errors.filter((e) => e.keyword === 'anyOf');
  errors = errors.filter(
    (e) =>
      !unions.some(
        (u) =>
          u !== e &&
          e.schemaPath.startsWith(`${u.schemaPath}/`) &&
          (e.instancePath === u.instancePath || e.instancePath.startsWith(`${u.instancePath}/`)),
      ),
  );
  const rejected: DocPath[] = [];
  const seen = new Set<string>();
  for (const e of errors) {
    // propertyNames reports the name's own failure (with `propertyName` set) and then itself: keep the latter.
    if ((e as ErrorObject & { propertyName?: string }).propertyName !== undefined) continue;
    const base = pointerToPath(e.instancePath, data);
    const field = fieldName(base);
    const expect = expectOf(e);
    let path = base;
    let message: string;
    let at: 'value' | 'key' = 'value';
    let rejectedPath = base;
    switch (e.keyword) {
      case 'additionalProperties': {
        const extra = String((e.params as { additionalProperty: string }).additionalProperty);
        const allowed = Object.keys(isObj(schemaOf(e).properties) ? (schemaOf(e).properties as Raw) : {});
        path = [...base, extra];
        rejectedPath = path;
        at = 'key';
        message = `unknown field ${quote(extra)} (allowed: ${allowed.join(', ')})`;
        break;
      }
      case 'required': {
        const missing = String((e.params as { missingProperty: string }).missingProperty);
        path = [...base, missing];
        rejectedPath = path;
        message = `missing required field ${quote(missing)}`;
        break;
      }
      case 'propertyNames': {
        const name = String((e.params as { propertyName: string }).propertyName);
        path = [...base, name];
        rejectedPath = path;
        at = 'key';
        const itemSchema = isObj(schemaOf(e).propertyNames) ? (schemaOf(e).propertyNames as JsonSchema) : {};
        message = `${quote(name)} is not a valid name: must be ${str(itemSchema['x-expect']) ?? 'a name'}`;
        break;
      }
      case 'type': {
        const want = String((e.params as { type: string }).type);
        message = `${field} must be ${expect ?? TYPE_WORDS[want] ?? want}`;
        break;
      }
      case 'enum': {
        const allowed = (e.params as { allowedValues: unknown[] }).allowedValues.map(String);
        message = `${field} must be ${expect ?? listWords(allowed)}`;
        break;
      }
      case 'minItems': {
        const limit = Number((e.params as { limit: number }).limit);
        message = limit <= 1 ? `${field} must not be empty` : `${field} needs at least ${limit} entries`;
        break;
      }
      case 'minLength':
        message = `${field} must not be empty`;
        break;
      case 'maxLength': {
        const limit = Number((e.params as { limit: number }).limit);
        message = `${field} is too long (at most ${limit} characters)`;
        break;
      }
      default:
        // const, pattern, anyOf and the rest: every such schema node carries x-expect.
        message =
          expect !== undefined ? `${field} must be ${expect}` : `${field} is not valid (${e.message ?? ''})`;
    }
    const key = `${JSON.stringify(path)}\u0000${message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    sink.add('schema', path, message, { at });
    rejected.push(rejectedPath);
  }
  return rejected;
}

function isUnder(path: DocPath, prefix: DocPath): boolean {
  return prefix.length <= path.length && prefix.every((seg, i) => seg === path[i]);
}

// --------------------------------------------------------------------------------------- semantic pieces

function parseCidrAt(sink: Sink, value: unknown, path: DocPath, what: string): Cidr | undefined {
  const text = str(value);
  if (text === undefined) return undefined;
  const parsed = parseCidr(text);
  if (parsed === undefined) {
    sink.add('semantic.invalid-cidr', path, `${quote(text)} is not an IPv4 or IPv6 ${what}`);
    return undefined;
  }
  if (parsed.hostBitsSet) {
    sink.add(
      'semantic.cidr-host-bits',
      path,
      `${quote(text)} has host bits set below its /${parsed.cidr.prefix} prefix; read as ${parsed.cidr.text}`,
      { warning: true },
    );
  }
  return parsed.cidr;
}

interface RangeCheck {
  code: string;
  what: string;
  min: number;
  max: number;
}
const PORT_RANGE: RangeCheck = { code: 'semantic.port-range', what: 'port', min: 0, max: 65535 };
const ADDRESS_RANGE: RangeCheck = {
  code: 'semantic.address-range',
  what: 'Modbus address',
  min: 0,
  max: 65535,
};
const VALUE_RANGE: RangeCheck = { code: 'semantic.value-range', what: 'Modbus value', min: 0, max: 65535 };

/** One number or `a-b` string → Range, checking bounds and order. */
function parseRange(sink: Sink, value: unknown, path: DocPath, check: RangeCheck): Range | undefined {
  let start: number;
  let end: number;
  if (isInt(value)) {
    start = end = value;
  } else {
    const m = typeof value === 'string' ? /^([0-9]{1,10})-([0-9]{1,10})$/.exec(value) : null;
    if (m === null) return undefined; // the schema reported the shape
    start = Number(m[1]);
    end = Number(m[2]);
  }
  for (const n of [start, end]) {
    if (n < check.min || n > check.max) {
      sink.add(check.code, path, `${check.what} ${n} is out of range (${check.min}–${check.max})`);
      return undefined;
    }
  }
  if (start > end) {
    sink.add(check.code, path, `${check.what} range ${start}-${end} is reversed (start must be ≤ end)`);
    return undefined;
  }
  return { start, end };
}

/** A number, `a-b`, or a list of those → merged, sorted ranges; empty when nothing valid is there. */
function parseRanges(sink: Sink, value: unknown, path: DocPath, check: RangeCheck): Range[] {
  const items: [unknown, DocPath][] = Array.isArray(value)
    ? value.map((v, i) => [v, [...path, i]] as [unknown, DocPath])
    : [[value, path]];
  const out: Range[] = [];
  for (const [v, p] of items) {
    const r = parseRange(sink, v, p, check);
    if (r) out.push(r);
  }
  return mergeRanges(out);
}

function uniqueStrings<T extends string>(list: readonly T[]): T[] {
  return [...new Set(list)];
}

/** `YYYY-MM-DD` naming a real calendar day. */
export function isIsoDate(text: string): boolean {
  const m = /^([0-9]{4})-([0-9]{2})-([0-9]{2})$/.exec(text);
  if (m === null) return false;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const date = new Date(Date.UTC(y, mo - 1, d));
  return date.getUTCFullYear() === y && date.getUTCMonth() === mo - 1 && date.getUTCDate() === d;
}

/**
 * True when `c` lies outside the (known) zone's networks. A zone with a network that did not parse is never
 * judged: "outside the zone" would be a consequence of that error, not a finding of its own.
 */
function isOutsideZone(c: Cidr, zone: Zone | undefined, unsureZones: ReadonlySet<string>): zone is Zone {
  return zone !== undefined && !unsureZones.has(zone.name) && !zone.networks.some((n) => cidrContains(n, c));
}

function networksText(zone: Zone): string {
  return zone.networks.map((n) => n.text).join(', ') || 'no networks';
}

// ---------------------------------------------------------------------------------------- the main pass

function buildPolicy(data: unknown, sink: Sink): Policy {
  // --- gateway
  const gw = get(data, 'gateway');
  const mgmt = get(gw, 'management');
  const mgmtPath: DocPath = ['gateway', 'management'];
  const mgmtInterface = str(get(mgmt, 'interface')) ?? '';
  const allowFrom: Cidr[] = [];
  arr(get(mgmt, 'allowFrom')).forEach((v, i) => {
    const c = parseCidrAt(sink, v, [...mgmtPath, 'allowFrom', i], 'address or network');
    if (c) allowFrom.push(c);
  });
  // The policy may only add ports: ssh and the UI stay reachable whatever it says (anti-lockout), so a
  // `ports: [80]` cannot lock the operator out of the box that enforces it.
  let mgmtPorts = [...DEFAULT_MANAGEMENT_PORTS];
  if (has(mgmt, 'ports')) {
    arr(get(mgmt, 'ports')).forEach((v, i) => {
      if (!isInt(v)) return;
      if (v < 1 || v > 65535) {
        sink.add(PORT_RANGE.code, [...mgmtPath, 'ports', i], `port ${v} is out of range (1–65535)`);
      } else mgmtPorts.push(v);
    });
    mgmtPorts = [...new Set(mgmtPorts)].sort((a, b) => a - b);
  }

  // --- defaults
  const logRateText = str(get(get(data, 'defaults'), 'logRate')) ?? DEFAULT_LOG_RATE;
  const lr = /^([0-9]+)\/(second|minute|hour)$/.exec(logRateText);
  const logRate: LogRate = lr
    ? { count: Number(lr[1]), unit: lr[2] as LogRate['unit'] }
    : { count: 10, unit: 'second' };

  // --- zones
  const zones = new Map<string, Zone>();
  const ifaceOwner = new Map<string, string>();
  const networkOwners: { cidr: Cidr; owner: string; path: DocPath }[] = [];
  /** Zones with a network that did not parse: "outside the zone" would be a consequence, not a finding. */
  const unsureZones = new Set<string>();
  for (const [name, z] of entries(get(data, 'zones'))) {
    if (!NAME_RE.test(name)) continue; // the schema reported it
    const zPath: DocPath = ['zones', name];
    const level = get(z, 'securityLevel');
    const interfaces: string[] = [];
    arr(get(z, 'interfaces')).forEach((v, i) => {
      const ifname = str(v);
      if (ifname === undefined) return;
      const p: DocPath = [...zPath, 'interfaces', i];
      if (ifname === mgmtInterface) {
        sink.add(
          'semantic.management-interface',
          p,
          `interface ${quote(ifname)} is the management interface; it cannot also belong to a zone`,
        );
      }
      const owner = ifaceOwner.get(ifname);
      if (owner !== undefined && owner !== name) {
        sink.add(
          'semantic.interface-conflict',
          p,
          `interface ${quote(ifname)} is already in zone ${quote(owner)} (an interface belongs to one zone)`,
        );
      } else ifaceOwner.set(ifname, name);
      if (!interfaces.includes(ifname)) interfaces.push(ifname);
    });
    const networks: Cidr[] = [];
    arr(get(z, 'networks')).forEach((v, i) => {
      const p: DocPath = [...zPath, 'networks', i];
      const c = parseCidrAt(sink, v, p, 'network');
      if (!c) unsureZones.add(name);
      else {
        networks.push(c);
        networkOwners.push({ cidr: c, owner: name, path: p });
      }
    });
    const zone: Zone = {
      name,
      securityLevel: (isInt(level) && level >= 1 && level <= 4 ? level : 1) as SecurityLevel,
      interfaces,
      networks: normaliseCidrSet(networks),
    };
    const description = str(get(z, 'description'));
    if (description !== undefined) zone.description = description;
    zones.set(name, zone);
  }
  for (const o of findCidrOverlaps(networkOwners)) {
    sink.add(
      'semantic.zone-overlap',
      o.inner.path,
      `network ${o.inner.cidr.text} of zone ${quote(o.inner.owner)} overlaps ${o.outer.cidr.text} of zone ${quote(o.outer.owner)}`,
    );
  }

  // --- assets
  const assets = new Map<string, Asset>();
  for (const [name, a] of entries(get(data, 'assets'))) {
    if (!NAME_RE.test(name)) continue;
    const aPath: DocPath = ['assets', name];
    const zoneName = str(get(a, 'zone'));
    const zone = zoneName === undefined ? undefined : zones.get(zoneName);
    if (zoneName !== undefined && zone === undefined && NAME_RE.test(zoneName)) {
      sink.add('semantic.unknown-zone', [...aPath, 'zone'], `unknown zone ${quote(zoneName)}`);
    }
    const addresses: Cidr[] = [];
    arr(get(a, 'addresses')).forEach((v, i) => {
      const p: DocPath = [...aPath, 'addresses', i];
      const c = parseCidrAt(sink, v, p, 'address');
      if (!c) return;
      addresses.push(c);
      if (isOutsideZone(c, zone, unsureZones)) {
        sink.add(
          'semantic.asset-outside-zone',
          p,
          `address ${c.text} of asset ${quote(name)} is outside zone ${quote(zone.name)} (${networksText(zone)})`,
        );
      }
    });
    const asset: Asset = { name, zone: zoneName ?? '', addresses: normaliseCidrSet(addresses) };
    const description = str(get(a, 'description'));
    if (description !== undefined) asset.description = description;
    assets.set(name, asset);
  }

  // --- conduits
  const conduits = new Map<string, Conduit>();
  const pairs = new Map<string, string>();
  const dpi: DpiFlow[] = [];
  for (const [name, c] of entries(get(data, 'conduits'))) {
    if (!NAME_RE.test(name)) continue;
    const cPath: DocPath = ['conduits', name];
    const zoneRef = (side: 'from' | 'to'): Zone | undefined => {
      const zn = str(get(c, side));
      if (zn === undefined || !NAME_RE.test(zn)) return undefined;
      const z = zones.get(zn);
      if (z === undefined) sink.add('semantic.unknown-zone', [...cPath, side], `unknown zone ${quote(zn)}`);
      return z;
    };
    const fromZone = zoneRef('from');
    const toZone = zoneRef('to');
    if (fromZone !== undefined && toZone !== undefined) {
      if (fromZone === toZone) {
        sink.add(
          'semantic.conduit-self',
          [...cPath, 'to'],
          `conduit ${quote(name)} goes from zone ${quote(fromZone.name)} to itself; a conduit joins two different zones`,
        );
      } else {
        const pairKey = `${fromZone.name}\u0000${toZone.name}`;
        const first = pairs.get(pairKey);
        if (first !== undefined) {
          sink.add(
            'semantic.conduit-duplicate',
            cPath,
            `conduit ${quote(first)} already goes from zone ${quote(fromZone.name)} to ${quote(toZone.name)}; ` +
              'put these flows in that conduit (one conduit per ordered zone pair)',
            { at: 'key' },
          );
        } else pairs.set(pairKey, name);
      }
    }
    const mode = str(get(c, 'mode'));
    const conduit: Conduit = {
      name,
      from: fromZone?.name ?? str(get(c, 'from')) ?? '',
      to: toZone?.name ?? str(get(c, 'to')) ?? '',
      mode: (mode === 'monitor' ? 'monitor' : 'enforce') as ConduitMode,
      flows: [],
    };
    const description = str(get(c, 'description'));
    if (description !== undefined) conduit.description = description;
    const flowNames = new Set<string>();
    arr(get(c, 'flows')).forEach((f, i) => {
      const flow = buildFlow(sink, f, [...cPath, 'flows', i], {
        conduit: name,
        fromZone,
        toZone,
        assets,
        zones,
        unsureZones,
        dpi,
      });
      if (flow === undefined) return;
      if (flowNames.has(flow.name)) {
        sink.add(
          'semantic.duplicate-flow',
          [...cPath, 'flows', i, 'name'],
          `conduit ${quote(name)} already has a flow named ${quote(flow.name)}`,
        );
      }
      flowNames.add(flow.name);
      conduit.flows.push(flow);
    });
    conduits.set(name, conduit);
  }
  checkDpiConflicts(sink, dpi);

  // --- waivers
  const waivers: Waiver[] = [];
  arr(get(data, 'waivers')).forEach((w, i) => {
    const wPath: DocPath = ['waivers', i];
    const conduit = str(get(w, 'conduit'));
    if (conduit !== undefined && NAME_RE.test(conduit) && !conduits.has(conduit)) {
      sink.add(
        'semantic.waiver-conduit',
        [...wPath, 'conduit'],
        `waiver names unknown conduit ${quote(conduit)}`,
      );
    }
    const expires = str(get(w, 'expires'));
    if (expires !== undefined && /^[0-9]{4}-[0-9]{2}-[0-9]{2}$/.test(expires) && !isIsoDate(expires)) {
      sink.add('semantic.waiver-expires', [...wPath, 'expires'], `${quote(expires)} is not a calendar date`);
    }
    waivers.push({
      rule: str(get(w, 'rule')) ?? '',
      conduit: conduit ?? '',
      rationale: str(get(w, 'rationale')) ?? '',
      expires: expires ?? '',
    });
  });

  return {
    version: 1,
    gateway: {
      name: str(get(gw, 'name')) ?? '',
      management: { interface: mgmtInterface, allowFrom: normaliseCidrSet(allowFrom), ports: mgmtPorts },
    },
    defaults: { logRate },
    zones,
    assets,
    conduits,
    waivers,
  };
}

interface DpiFlow {
  conduit: string;
  flow: string;
  path: DocPath;
  port: number;
  from: Cidr[];
  to: Cidr[];
}

interface FlowContext {
  conduit: string;
  fromZone: Zone | undefined;
  toZone: Zone | undefined;
  assets: Map<string, Asset>;
  zones: Map<string, Zone>;
  unsureZones: Set<string>;
  dpi: DpiFlow[];
}

/** Resolves one side of a flow; `perRef` gets each reference's addresses (for the DPI host check). */
function buildEndpoint(
  sink: Sink,
  value: unknown,
  path: DocPath,
  side: 'from' | 'to',
  ctx: FlowContext,
  perRef?: (refPath: DocPath, ref: string, addresses: Cidr[]) => void,
): Endpoint {
  const zone = side === 'from' ? ctx.fromZone : ctx.toZone;
  if (value === undefined) return { refs: [], addresses: zone ? zone.networks : [] };
  const refs: string[] = [];
  const all: Cidr[] = [];
  arr(value).forEach((v, i) => {
    const ref = str(v);
    if (ref === undefined) return;
    const p: DocPath = [...path, i];
    refs.push(ref);
    let addresses: Cidr[];
    if (/[.:]/.test(ref)) {
      const c = parseCidrAt(sink, ref, p, 'address or CIDR');
      if (!c) return;
      if (isOutsideZone(c, zone, ctx.unsureZones)) {
        sink.add(
          'semantic.endpoint-outside-zone',
          p,
          `${c.text} is not inside the conduit's ${side}-zone ${quote(zone.name)} (${networksText(zone)})`,
        );
        return;
      }
      addresses = [c];
    } else if (NAME_RE.test(ref)) {
      const asset = ctx.assets.get(ref);
      if (asset === undefined) {
        sink.add('semantic.unknown-asset', p, `unknown asset ${quote(ref)}`);
        return;
      }
      // An asset of an unknown zone was reported at the asset; repeating it here would add nothing.
      if (zone !== undefined && asset.zone !== zone.name && ctx.zones.has(asset.zone)) {
        sink.add(
          'semantic.endpoint-outside-zone',
          p,
          `asset ${quote(ref)} is in zone ${quote(asset.zone)}, not in the conduit's ${side}-zone ${quote(zone.name)}`,
        );
        return;
      }
      addresses = asset.addresses;
    } else {
      sink.add('semantic.invalid-endpoint', p, `${quote(ref)} is neither an asset name nor an address`);
      return;
    }
    perRef?.(p, ref, addresses);
    all.push(...addresses);
  });
  return { refs, addresses: normaliseCidrSet(all) };
}

function buildFlow(sink: Sink, f: unknown, path: DocPath, ctx: FlowContext): Flow | undefined {
  const name = str(get(f, 'name'));
  const protocolText = str(get(f, 'protocol'));
  const protocols: readonly FlowProtocol[] = ['tcp', 'udp', 'icmp', 'modbus', 'opcua'];
  const protocol = protocols.find((p) => p === protocolText);
  const isDpi = protocol === 'modbus' || protocol === 'opcua';

  const from = buildEndpoint(sink, get(f, 'from'), [...path, 'from'], 'from', ctx);
  const to = buildEndpoint(sink, get(f, 'to'), [...path, 'to'], 'to', ctx, (p, ref, addrs) => {
    if (!isDpi) return;
    const wide = addrs.find((a) => !isHostCidr(a));
    if (wide !== undefined) {
      const what = NAME_RE.test(ref)
        ? `asset ${quote(ref)} has network ${wide.text}`
        : `${wide.text} is a network`;
      sink.add(
        'semantic.dpi-host-destination',
        p,
        `${protocol} flows need host destinations (the proxy must know its upstream): ${what}; ` +
          'name single addresses (/32 or /128)',
      );
    }
  });
  if (isDpi && !has(f, 'to')) {
    sink.add(
      'semantic.dpi-host-destination',
      [...path, 'to'],
      `${protocol} flows need explicit host destinations in 'to' (the proxy must know its upstream); ` +
        'the default, the whole zone, is not allowed',
    );
  }

  // --- ports
  let ports: Range[] = [];
  if (has(f, 'port')) {
    if (protocol === 'icmp') {
      sink.add('semantic.icmp-port', [...path, 'port'], 'icmp flows have no ports; remove port', {
        at: 'key',
      });
    } else {
      const raw = get(f, 'port');
      ports = parseRanges(sink, raw, [...path, 'port'], PORT_RANGE);
      // Judged on what was written, so a second port is refused even when its own range was invalid.
      const single = isInt(raw) || (Array.isArray(raw) && raw.length === 1 && isInt(raw[0]));
      if (isDpi && !single && (isInt(raw) || typeof raw === 'string' || Array.isArray(raw))) {
        sink.add(
          'semantic.dpi-port',
          [...path, 'port'],
          `a ${protocol} flow takes one port (the proxy forwards to one upstream port); use one flow per port`,
        );
      }
    }
  } else if (isDpi) {
    const p = DEFAULT_PORTS[protocol];
    ports = [{ start: p, end: p }];
  }

  // --- icmp types
  const icmpTypes: string[] = [];
  if (has(f, 'icmpTypes')) {
    if (protocol !== undefined && protocol !== 'icmp') {
      sink.add(
        'semantic.icmp-types-protocol',
        [...path, 'icmpTypes'],
        `icmpTypes only apply to icmp flows, not ${protocol}`,
        {
          at: 'key',
        },
      );
    } else {
      arr(get(f, 'icmpTypes')).forEach((v, i) => {
        const t = str(v);
        if (t === undefined) return;
        if (!ICMP_TYPES.has(t)) {
          sink.add(
            'semantic.icmp-type',
            [...path, 'icmpTypes', i],
            `${quote(t)} is not an ICMP type name (e.g. echo-request, echo-reply, destination-unreachable, time-exceeded)`,
          );
        } else if (!icmpTypes.includes(t)) icmpTypes.push(t);
      });
    }
  }

  // --- protocol sections
  for (const section of ['modbus', 'opcua'] as const) {
    if (has(f, section) && protocol !== undefined && protocol !== section) {
      sink.add(
        'semantic.protocol-section',
        [...path, section],
        `${section === 'opcua' ? 'an' : 'a'} ${section} section only applies to ${section} flows; this flow's protocol is ${protocol}`,
        { at: 'key' },
      );
    }
  }
  let modbus: ModbusSpec | undefined;
  let opcua: OpcuaSpec | undefined;
  if (protocol === 'modbus') {
    if (!has(f, 'modbus')) {
      sink.add(
        'semantic.modbus-missing',
        [...path, 'modbus'],
        'a modbus flow needs a modbus section with rules saying which functions may pass',
      );
    }
    modbus = buildModbus(sink, get(f, 'modbus'), [...path, 'modbus']);
  }
  if (protocol === 'opcua') opcua = buildOpcua(sink, get(f, 'opcua'), [...path, 'opcua']);

  // --- proxy limits
  let limits: FlowLimits | undefined;
  if (has(f, 'limits')) {
    if (protocol !== undefined && !isDpi) {
      sink.add(
        'semantic.limits-protocol',
        [...path, 'limits'],
        `limits only apply to modbus and opcua flows (they bound the filtering proxy), not ${protocol}`,
        { at: 'key' },
      );
    } else limits = buildLimits(sink, get(f, 'limits'), [...path, 'limits']);
  }

  if (name === undefined || !NAME_RE.test(name) || protocol === undefined) return undefined;
  const flow: Flow = { name, protocol, from, to, ports, icmpTypes };
  if (modbus) flow.modbus = modbus;
  if (opcua) flow.opcua = opcua;
  if (limits !== undefined && Object.keys(limits).length > 0) flow.limits = limits;
  const port = ports[0];
  if (isDpi && port !== undefined) {
    ctx.dpi.push({
      conduit: ctx.conduit,
      flow: name,
      path,
      port: port.start,
      from: from.addresses,
      to: to.addresses,
    });
  }
  return flow;
}

function buildLimits(sink: Sink, l: unknown, path: DocPath): FlowLimits {
  const limits: FlowLimits = {};
  for (const [field, r] of Object.entries(FLOW_LIMIT_RANGES)) {
    const v = get(l, field);
    if (!isInt(v)) continue; // absent, or a schema error already reported
    if (v < r.min || v > r.max) {
      sink.add(
        'semantic.limit-range',
        [...path, field],
        `${field} ${v} is out of range (${r.min}–${r.max} ${r.unit})`,
      );
    } else limits[r.key] = v * r.scale;
  }
  const total = limits.maxConnections;
  const perSource = limits.maxConnectionsPerSource;
  if (total !== undefined && perSource !== undefined && perSource > total) {
    sink.add(
      'semantic.limit-range',
      [...path, 'maxConnectionsPerSource'],
      `maxConnectionsPerSource ${perSource} is more than maxConnections ${total}; one source could never reach it`,
    );
  }
  return limits;
}

function buildModbus(sink: Sink, m: unknown, path: DocPath): ModbusSpec {
  let unitIds: number[] | null = null;
  if (has(m, 'unitIds')) {
    const ids = new Set<number>();
    arr(get(m, 'unitIds')).forEach((v, i) => {
      if (!isInt(v)) return;
      if (v < 0 || v > 255) {
        sink.add('semantic.unit-id', [...path, 'unitIds', i], `unit id ${v} is out of range (0–255)`);
      } else ids.add(v);
    });
    unitIds = [...ids].sort((a, b) => a - b);
  }
  const rules: ModbusRule[] = [];
  arr(get(m, 'rules')).forEach((r, j) => {
    const rPath: DocPath = [...path, 'rules', j];
    const codes = new Set<number>();
    arr(get(r, 'functions')).forEach((v, i) => {
      if (typeof v !== 'string' && !isInt(v)) return;
      const code = modbusFunctionCode(v);
      if (code !== undefined) {
        codes.add(code);
        return;
      }
      const p: DocPath = [...rPath, 'functions', i];
      if (isInt(v) || /^[0-9]+$/.test(String(v))) {
        sink.add('semantic.modbus-function', p, `${String(v)} is not a Modbus function code`);
      } else {
        sink.add(
          'semantic.modbus-function',
          p,
          `${quote(v)} is not a Modbus function name (known: ${[...MODBUS_FUNCTIONS.keys()].join(', ')})`,
        );
      }
    });
    const functions = [...codes].sort((a, b) => a - b);
    const rule: ModbusRule = {
      functions,
      addresses: has(r, 'addresses')
        ? parseRanges(sink, get(r, 'addresses'), [...rPath, 'addresses'], ADDRESS_RANGE)
        : null,
    };
    if (has(r, 'values')) {
      const nonWrite = functions.filter((fc) => !MODBUS_VALUE_WRITE_FUNCTIONS.has(fc));
      if (nonWrite.length > 0) {
        sink.add(
          'semantic.values-not-write',
          [...rPath, 'values'],
          `values bounds apply only to rules whose functions all write values (5, 6, 15, 16, 22, 23); ` +
            `this rule also has ${nonWrite.join(', ')}`,
          { at: 'key' },
        );
      }
      const values = parseRange(sink, get(r, 'values'), [...rPath, 'values'], VALUE_RANGE);
      if (values) rule.values = values;
    }
    rules.push(rule);
  });
  return { unitIds, rules };
}

function enumList<T extends string>(
  sink: Sink,
  value: unknown,
  path: DocPath,
  allowed: readonly T[],
  code: string,
  what: string,
  fallback: readonly T[],
): T[] {
  if (value === undefined) return [...fallback];
  const out: T[] = [];
  arr(value).forEach((v, i) => {
    const s = str(v);
    if (s === undefined) return;
    const hit = allowed.find((a) => a === s);
    if (hit === undefined) {
      sink.add(code, [...path, i], `${quote(s)} is not an OPC UA ${what} (allowed: ${allowed.join(', ')})`);
    } else out.push(hit);
  });
  return uniqueStrings(out);
}

function buildOpcua(sink: Sink, o: unknown, path: DocPath): OpcuaSpec {
  const d = OPCUA_DEFAULTS;
  const patterns = (key: 'write' | 'call'): string[] => {
    const out: string[] = [];
    arr(get(o, key)).forEach((v, i) => {
      const s = str(v);
      if (s === undefined) return;
      if (!isNodeIdPattern(s)) {
        sink.add(
          'semantic.opcua-nodeid',
          [...path, key, i],
          `${quote(s)} is not a NodeId pattern (ns=N;s=…, ns=N;i=N, ns=N;g=GUID or ns=N;b=base64, optionally ending in *)`,
        );
      } else out.push(s);
    });
    return uniqueStrings(out);
  };
  const certificates: string[] = [];
  arr(get(o, 'certificates')).forEach((v, i) => {
    const s = str(v);
    if (s === undefined) return;
    const hex = s.replace(/:/g, '').toUpperCase();
    if (!/^[0-9A-F]{40}$/.test(hex)) {
      sink.add(
        'semantic.opcua-certificate',
        [...path, 'certificates', i],
        `${quote(s)} is not a SHA-1 thumbprint (40 hex digits, colons allowed)`,
      );
    } else if (!certificates.includes(hex)) certificates.push(hex);
  });
  const spec: OpcuaSpec = {
    securityModes: enumList<OpcuaSecurityMode>(
      sink,
      get(o, 'securityModes'),
      [...path, 'securityModes'],
      OPCUA_SECURITY_MODES,
      'semantic.opcua-security-mode',
      'security mode',
      d.securityModes,
    ),
    securityPolicies: enumList<OpcuaSecurityPolicy>(
      sink,
      get(o, 'securityPolicies'),
      [...path, 'securityPolicies'],
      OPCUA_SECURITY_POLICIES,
      'semantic.opcua-security-policy',
      'security policy',
      d.securityPolicies,
    ),
    services: enumList<OpcuaServiceGroup>(
      sink,
      get(o, 'services'),
      [...path, 'services'],
      OPCUA_SERVICE_GROUPS,
      'semantic.opcua-service',
      'service group',
      d.services,
    ),
    write: patterns('write'),
    call: patterns('call'),
    anonymous: get(o, 'anonymous') === true,
    certificates,
  };
  // Patterns for a service the flow does not allow do nothing; say so rather than let it look permitted.
  for (const key of ['write', 'call'] as const) {
    if (spec[key].length > 0 && !spec.services.includes(key)) {
      sink.add(
        'semantic.opcua-unused-patterns',
        [...path, key],
        `${key} patterns have no effect: service '${key}' is not in services`,
        { at: 'key', warning: true },
      );
    }
  }
  return spec;
}

/**
 * Two DPI flows to the same destination address and port with overlapping sources cannot both be honoured:
 * the redirect would hand a connection to one proxy listener, silently ignoring the other flow's rules.
 */
function checkDpiConflicts(sink: Sink, flows: DpiFlow[]): void {
  const byDest = new Map<string, DpiFlow[]>();
  const reported = new Set<string>();
  for (const f of flows) {
    for (const dst of f.to) {
      if (!isHostCidr(dst)) continue; // reported as dpi-host-destination
      const key = `${dst.text}|${f.port}`;
      const earlier = byDest.get(key) ?? [];
      for (const e of earlier) {
        const pairKey = `${e.conduit}/${e.flow}\u0000${f.conduit}/${f.flow}`;
        if (reported.has(pairKey)) continue;
        if (!e.from.some((a) => f.from.some((b) => cidrOverlaps(a, b)))) continue;
        reported.add(pairKey);
        sink.add(
          'semantic.dpi-conflict',
          [...f.path, 'to'],
          `flow ${quote(e.flow)} of conduit ${quote(e.conduit)} already inspects connections to ${dst.address} port ${f.port} ` +
            'from overlapping sources; merge the flows or make their sources disjoint',
        );
      }
      earlier.push(f);
      byDest.set(key, earlier);
    }
  }
}

// ------------------------------------------------------------------------------------------- entry points

/** Validates a parsed document: schema, semantic checks, normalisation, then the IEC 62443 lint. */
export function validatePolicy(doc: PolicyDocument, opts: ValidateOptions = {}): ValidationResult {
  const sink = new Sink(doc);
  const rejected = schemaProblems(doc.data, sink);
  const schemaCount = sink.problems.length;
  const policy = buildPolicy(doc.data, sink);
  // Drop semantic findings inside parts the schema already rejected: one cause, one message.
  const problems = sink.problems.filter(
    (p, i) => i < schemaCount || !rejected.some((r) => isUnder(p.path, r)),
  );
  // Source order reads best; the sort is stable, so problems at one place keep the order they were found in.
  problems.sort(byPosition);
  const errors = problems.filter((p) => p.severity === 'error');
  const warnings = problems.filter((p) => p.severity === 'warning');
  if (errors.length > 0) return { ok: false, errors, warnings, lint: [], file: doc.file };

  const lint = lintPolicy(policy, opts.now ?? new Date()).map((f) => {
    const withPos: LintFinding = { ...f };
    const pos = sink.position(f.path);
    if (pos) withPos.position = pos;
    return withPos;
  });
  for (const f of lint) {
    if (f.waiver !== undefined) continue; // an accepted risk, reported in the lint section
    const p: Problem = {
      severity: f.severity,
      code: `lint.${f.rule}`,
      path: f.path,
      message: `${f.message} [${f.cites}]`,
      file: doc.file,
    };
    if (f.position) p.position = f.position;
    (f.severity === 'error' ? errors : warnings).push(p);
  }
  const ok = errors.length === 0;
  return ok
    ? { ok, policy, errors, warnings, lint, file: doc.file }
    : { ok, errors, warnings, lint, file: doc.file };
}

function validateLoaded(loaded: LoadResult, file: string, opts: ValidateOptions): ValidationResult {
  if (!loaded.ok) return { ok: false, errors: loaded.problems, warnings: [], lint: [], file };
  return validatePolicy(loaded.doc, opts);
}

export function validatePolicyText(text: string, file: string, opts: ValidateOptions = {}): ValidationResult {
  return validateLoaded(parsePolicyText(text, file), file, opts);
}

export async function validatePolicyFile(
  path: string,
  opts: ValidateOptions = {},
): Promise<ValidationResult> {
  return validateLoaded(await loadPolicyFile(path), path, opts);
}
