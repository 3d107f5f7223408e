/**
 * The validated, normalised policy model: the contract between the stages
 * load (policies/load.ts) → verify (policies/validate.ts, policies/lint.ts) → generate (policies/compile.ts).
 *
 * Everything here is already checked: names match NAME_RE, CIDRs are canonical, ranges are ordered,
 * defaults are filled in. The compiler trusts these values and never sees free text
 * (descriptions, rationales), which is what keeps policy text out of the nft script.
 */

/** Names of zones, assets, conduits and flows: `[a-z][a-z0-9-]{0,30}`. */
export const NAME_RE = /^[a-z][a-z0-9-]{0,30}$/;
/** Linux interface names: at most 15 bytes (IFNAMSIZ - 1); we allow the safe subset only. */
export const IFNAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;

export type SecurityLevel = 1 | 2 | 3 | 4;
export type FlowProtocol = 'tcp' | 'udp' | 'icmp' | 'modbus' | 'opcua';
export type ConduitMode = 'enforce' | 'monitor';
export type IpFamily = 4 | 6;

/** Inclusive range of integers (ports, register addresses, values). */
export interface Range {
  start: number;
  end: number;
}

/** A canonical CIDR: network address with host bits zero, e.g. `10.1.0.0/16`, `10.1.0.10/32`, `fd00::/64`. */
export interface Cidr {
  family: IpFamily;
  /** Canonical text, always with a prefix length. */
  text: string;
  /** Network address text without prefix. */
  address: string;
  prefix: number;
}

export interface LogRate {
  count: number;
  unit: 'second' | 'minute' | 'hour';
}

export interface Management {
  interface: string;
  allowFrom: Cidr[];
  /** TCP ports kept reachable from `allowFrom` whatever the policy says (anti-lockout): UI and ssh. */
  ports: number[];
}

export interface Zone {
  name: string;
  securityLevel: SecurityLevel;
  interfaces: string[];
  networks: Cidr[];
  description?: string;
}

export interface Asset {
  name: string;
  zone: string;
  addresses: Cidr[];
  description?: string;
}

/** One side of a flow: the assets/CIDRs written in the policy, resolved to addresses. */
export interface Endpoint {
  /** What the policy said (asset names or CIDR text); empty when it defaulted to the whole zone. */
  refs: string[];
  /** Resolved, de-duplicated, sorted addresses. */
  addresses: Cidr[];
}

export interface ModbusRule {
  /** Function codes 1..127, sorted, unique. */
  functions: number[];
  /** Allowed addresses (0..65535); `null` when the rule does not restrict addresses. */
  addresses: Range[] | null;
  /** Bounds on written values; only present on rules whose functions all write. */
  values?: Range;
}

export interface ModbusSpec {
  /** Allowed unit ids (0..255); `null` = any unit id. */
  unitIds: number[] | null;
  rules: ModbusRule[];
}

export type OpcuaSecurityMode = 'None' | 'Sign' | 'SignAndEncrypt';
export const OPCUA_SECURITY_POLICIES = [
  'None',
  'Basic128Rsa15',
  'Basic256',
  'Basic256Sha256',
  'Aes128_Sha256_RsaOaep',
  'Aes256_Sha256_RsaPss',
] as const;
export type OpcuaSecurityPolicy = (typeof OPCUA_SECURITY_POLICIES)[number];
export const OPCUA_SERVICE_GROUPS = [
  'discovery',
  'session',
  'read',
  'browse',
  'subscribe',
  'write',
  'call',
  'history',
  'node-management',
  'query',
] as const;
export type OpcuaServiceGroup = (typeof OPCUA_SERVICE_GROUPS)[number];

export interface OpcuaSpec {
  securityModes: OpcuaSecurityMode[];
  securityPolicies: OpcuaSecurityPolicy[];
  services: OpcuaServiceGroup[];
  /** NodeId patterns (a trailing `*` matches any suffix) allowed for Write. */
  write: string[];
  /** Method NodeId patterns allowed for Call. */
  call: string[];
  anonymous: boolean;
  /** Upper-case hex SHA-1 thumbprints; empty = any certificate. */
  certificates: string[];
}

/**
 * Per-flow resource limits for a DPI (modbus/opcua) proxy, in the units the proxies use (ms). Absent fields
 * mean "the proxy's default". The policy writes seconds (`idleTimeoutSeconds`); validate.ts converts.
 */
export interface FlowLimits {
  /** Concurrent client connections through this flow's proxy. */
  maxConnections?: number;
  /** Concurrent client connections from one source address. */
  maxConnectionsPerSource?: number;
  /** Close a connection after this long without traffic in either direction. */
  idleTimeoutMs?: number;
  /** Requests a client may have in flight (sent, not yet answered) on one connection. */
  maxOutstandingRequests?: number;
  /** Close a connection when a request gets no answer (or a message is not completed) within this. */
  messageTimeoutMs?: number;
}

export interface Flow {
  name: string;
  protocol: FlowProtocol;
  from: Endpoint;
  to: Endpoint;
  /** Destination ports; empty = any port (tcp/udp only; icmp has none; modbus/opcua always one default). */
  ports: Range[];
  /** ICMP type names (nft names, e.g. `echo-request`); empty = any (icmp only). */
  icmpTypes: string[];
  modbus?: ModbusSpec;
  opcua?: OpcuaSpec;
  /** DPI flows only; absent when the policy sets no limits. */
  limits?: FlowLimits;
}

export interface Conduit {
  name: string;
  from: string;
  to: string;
  mode: ConduitMode;
  description?: string;
  flows: Flow[];
}

export interface Waiver {
  rule: string;
  conduit: string;
  rationale: string;
  /** ISO date `YYYY-MM-DD`. */
  expires: string;
}

export interface Policy {
  version: 1;
  gateway: { name: string; management: Management };
  defaults: { logRate: LogRate };
  /** Maps keep the file's order; the compiler sorts by name for determinism. */
  zones: Map<string, Zone>;
  assets: Map<string, Asset>;
  conduits: Map<string, Conduit>;
  waivers: Waiver[];
}

/** A path into the policy document, e.g. ['conduits', 'hmi-to-plc', 'flows', 0, 'port']. */
export type PathSegment = string | number;
export type DocPath = PathSegment[];

export interface SourcePosition {
  line: number;
  column: number;
}

export interface Problem {
  severity: 'error' | 'warning';
  /** Stable machine code: `schema`, `semantic.unknown-zone`, `lint.SL-skip`, … */
  code: string;
  path: DocPath;
  message: string;
  file?: string;
  position?: SourcePosition;
}

export interface LintFinding {
  rule: string;
  severity: 'error' | 'warning';
  conduit?: string;
  flow?: string;
  path: DocPath;
  message: string;
  /** The IEC 62443 requirement(s) the rule derives from, e.g. `62443-3-3 SR 5.2`. */
  cites: string;
  /** Set when a valid waiver turned an error into an accepted risk. */
  waiver?: Waiver;
  position?: SourcePosition;
}

/** Proxy plan: one entry per DPI (modbus/opcua) flow and destination address. */
export interface ProxyPlanEntry {
  conduit: string;
  flow: string;
  protocol: 'modbus' | 'opcua';
  mode: ConduitMode;
  /** Local TCP port the nft redirect sends this flow's connections to. */
  listenPort: number;
  upstream: { address: string; port: number; family: IpFamily };
  /** Source CIDRs allowed for this flow (the proxy re-checks them). */
  sources: string[];
  modbus?: ModbusSpec;
  opcua?: OpcuaSpec;
  /** The flow's `limits`, in ms; absent when the policy sets none (the proxy uses its defaults). */
  limits?: FlowLimits;
}

export interface ProxyPlan {
  version: 1;
  entries: ProxyPlanEntry[];
}

export interface CompileOptions {
  /** NFLOG group ulogd2 listens on. */
  nflogGroup: number;
  /** First local port for DPI listeners; each (conduit, flow, upstream) hashes to a stable port in [base, base + 8192). */
  proxyPortBase: number;
}

export const DEFAULT_COMPILE_OPTIONS: CompileOptions = { nflogGroup: 100, proxyPortBase: 20000 };

export interface CompileResult {
  /** One `table inet sluice`, replaced whole: the script deletes and recreates it in one transaction. */
  ruleset: string;
  plan: ProxyPlan;
}
