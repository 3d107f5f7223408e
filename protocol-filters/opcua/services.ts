/**
 * Service requests (Part 4 §5) as they appear in a MSG body (Part 6 §6.7.2: the body is an ExtensionObject
 * without its length — the NodeId of the type's DefaultBinary encoding, then the encoded structure, Part 6
 * §5.2.2.15 / §6.7.2.2). Decoding uses node-opcua's own generated classes (node-opcua-types) over a
 * node-opcua-binary-stream BinaryStream, so the filter reads exactly what a node-opcua server reads.
 *
 * Every request type of node-opcua-types is mapped to a service group (OPCUA_SERVICE_GROUPS):
 * - discovery: FindServers, FindServersOnNetwork, GetEndpoints, RegisterServer, RegisterServer2 (Part 4 §5.4)
 * - session: CreateSession, ActivateSession, CloseSession, Cancel (§5.6)
 * - node-management: AddNodes, AddReferences, DeleteNodes, DeleteReferences (§5.7)
 * - browse: Browse, BrowseNext, TranslateBrowsePathsToNodeIds, RegisterNodes, UnregisterNodes (View, §5.8)
 * - query: QueryFirst, QueryNext (§5.9)
 * - read: Read (§5.10.2); history: HistoryRead, HistoryUpdate (§5.10.3, §5.10.5); write: Write (§5.10.4)
 * - call: Call (§5.11)
 * - subscribe: the MonitoredItem (§5.12) and Subscription (§5.13) service sets, Publish and Republish included.
 * OpenSecureChannel and CloseSecureChannel travel in OPN/CLO, never in MSG: in a MSG they map to no group.
 *
 * Nothing here throws: node-opcua's decoders throw on bad input, so every call is wrapped, and the input is
 * bounded by the caller (a reassembled body ≤ maxMessageSize); node-opcua itself bounds array lengths by the
 * bytes left and nesting depth (BinaryStream.checkArrayLength, enterNestingLevel).
 */
import { BinaryStream } from 'node-opcua-binary-stream';
import { decodeExpandedNodeId } from 'node-opcua-basic-types';
import { NodeIdType, type ExpandedNodeId, type NodeId } from 'node-opcua-nodeid';
import {
  ActivateSessionRequest,
  AddNodesRequest,
  AddReferencesRequest,
  AnonymousIdentityToken,
  BrowseNextRequest,
  BrowseRequest,
  CallRequest,
  CancelRequest,
  CloseSessionRequest,
  CreateMonitoredItemsRequest,
  CreateSessionRequest,
  CreateSubscriptionRequest,
  DeleteMonitoredItemsRequest,
  DeleteNodesRequest,
  DeleteReferencesRequest,
  DeleteSubscriptionsRequest,
  FindServersOnNetworkRequest,
  FindServersRequest,
  GetEndpointsRequest,
  HistoryReadRequest,
  HistoryUpdateRequest,
  IssuedIdentityToken,
  ModifyMonitoredItemsRequest,
  ModifySubscriptionRequest,
  OpenSecureChannelRequest,
  PublishRequest,
  QueryFirstRequest,
  QueryNextRequest,
  ReadRequest,
  RegisterNodesRequest,
  RegisterServer2Request,
  RegisterServerRequest,
  RepublishRequest,
  RequestHeader,
  SetMonitoringModeRequest,
  SetPublishingModeRequest,
  SetTriggeringRequest,
  TransferSubscriptionsRequest,
  TranslateBrowsePathsToNodeIdsRequest,
  UnregisterNodesRequest,
  UserNameIdentityToken,
  WriteRequest,
  X509IdentityToken,
} from 'node-opcua-types';
import type { OpcuaServiceGroup } from '../../policies/types.ts';
import { invalid, type DecodedRequest, type IdentityKind, type ParseResult } from './types.ts';

/** What the table needs of a node-opcua request class. */
interface RequestClass {
  new (): { requestHeader: RequestHeader; decode(stream: BinaryStream): void };
  encodingDefaultBinary: ExpandedNodeId;
}

export interface RequestType {
  name: string;
  group: OpcuaServiceGroup | null;
  ctor: RequestClass;
}

const REQUEST_CLASSES: [string, RequestClass, OpcuaServiceGroup | null][] = [
  ['FindServersRequest', FindServersRequest, 'discovery'],
  ['FindServersOnNetworkRequest', FindServersOnNetworkRequest, 'discovery'],
  ['GetEndpointsRequest', GetEndpointsRequest, 'discovery'],
  ['RegisterServerRequest', RegisterServerRequest, 'discovery'],
  ['RegisterServer2Request', RegisterServer2Request, 'discovery'],
  ['CreateSessionRequest', CreateSessionRequest, 'session'],
  ['ActivateSessionRequest', ActivateSessionRequest, 'session'],
  ['CloseSessionRequest', CloseSessionRequest, 'session'],
  ['CancelRequest', CancelRequest, 'session'],
  ['AddNodesRequest', AddNodesRequest, 'node-management'],
  ['AddReferencesRequest', AddReferencesRequest, 'node-management'],
  ['DeleteNodesRequest', DeleteNodesRequest, 'node-management'],
  ['DeleteReferencesRequest', DeleteReferencesRequest, 'node-management'],
  ['BrowseRequest', BrowseRequest, 'browse'],
  ['BrowseNextRequest', BrowseNextRequest, 'browse'],
  ['TranslateBrowsePathsToNodeIdsRequest', TranslateBrowsePathsToNodeIdsRequest, 'browse'],
  ['RegisterNodesRequest', RegisterNodesRequest, 'browse'],
  ['UnregisterNodesRequest', UnregisterNodesRequest, 'browse'],
  ['QueryFirstRequest', QueryFirstRequest, 'query'],
  ['QueryNextRequest', QueryNextRequest, 'query'],
  ['ReadRequest', ReadRequest, 'read'],
  ['HistoryReadRequest', HistoryReadRequest, 'history'],
  ['WriteRequest', WriteRequest, 'write'],
  ['HistoryUpdateRequest', HistoryUpdateRequest, 'history'],
  ['CallRequest', CallRequest, 'call'],
  ['CreateMonitoredItemsRequest', CreateMonitoredItemsRequest, 'subscribe'],
  ['ModifyMonitoredItemsRequest', ModifyMonitoredItemsRequest, 'subscribe'],
  ['SetMonitoringModeRequest', SetMonitoringModeRequest, 'subscribe'],
  ['SetTriggeringRequest', SetTriggeringRequest, 'subscribe'],
  ['DeleteMonitoredItemsRequest', DeleteMonitoredItemsRequest, 'subscribe'],
  ['CreateSubscriptionRequest', CreateSubscriptionRequest, 'subscribe'],
  ['ModifySubscriptionRequest', ModifySubscriptionRequest, 'subscribe'],
  ['SetPublishingModeRequest', SetPublishingModeRequest, 'subscribe'],
  ['PublishRequest', PublishRequest, 'subscribe'],
  ['RepublishRequest', RepublishRequest, 'subscribe'],
  ['TransferSubscriptionsRequest', TransferSubscriptionsRequest, 'subscribe'],
  ['DeleteSubscriptionsRequest', DeleteSubscriptionsRequest, 'subscribe'],
  // Only valid in OPN (decoded there to check the requested SecurityMode); never allowed inside a MSG.
  ['OpenSecureChannelRequest', OpenSecureChannelRequest, null],
];

function encodingId(ctor: RequestClass): number {
  const v = ctor.encodingDefaultBinary.value;
  return typeof v === 'number' ? v : -1;
}

/** DefaultBinary encoding id (ns=0 numeric) → request type. */
export const REQUEST_TYPES: ReadonlyMap<number, RequestType> = new Map(
  REQUEST_CLASSES.map(([name, ctor, group]) => [encodingId(ctor), { name, group, ctor }]),
);

/** Encoding id of a request class, for building frames in tests and tools. */
export function requestTypeId(name: string): number | undefined {
  for (const [id, t] of REQUEST_TYPES) if (t.name === name) return id;
  return undefined;
}

/** Services a None channel admitted only for discovery may use (Part 4 §5.4, Part 12 §4.3). */
export const DISCOVERY_ONLY_SERVICES: ReadonlySet<string> = new Set([
  'GetEndpointsRequest',
  'FindServersRequest',
  'FindServersOnNetworkRequest',
]);

// --------------------------------------------------------------------------------------- NodeId text

/**
 * Text form of a NodeId (Part 6 §5.3.1.10): `ns=N;` omitted for namespace 0, then `i=`, `s=`, `g=` (GUID,
 * upper-case) or `b=` (base64). The same form the policy's `write`/`call` patterns use.
 */
export function nodeIdText(id: NodeId | null | undefined): string {
  if (id === null || id === undefined) return 'i=0';
  const uri = (id as Partial<ExpandedNodeId>).namespaceUri;
  const ns =
    typeof uri === 'string' && uri.length > 0
      ? `nsu=${uri};`
      : id.namespace === 0
        ? ''
        : `ns=${id.namespace};`;
  const v = id.value;
  switch (id.identifierType) {
    case NodeIdType.NUMERIC:
      return `${ns}i=${String(v)}`;
    case NodeIdType.STRING:
      return `${ns}s=${String(v)}`;
    case NodeIdType.GUID:
      return `${ns}g=${String(v).toUpperCase()}`;
    case NodeIdType.BYTESTRING:
      return `${ns}b=${Buffer.isBuffer(v) ? v.toString('base64') : ''}`;
    default:
      return `${ns}?=${String(v)}`;
  }
}

/**
 * Does a NodeId text match a policy pattern (validated by policies/validate.ts: optional `ns=N;`, a kind and an
 * identifier, optional trailing `*` for a prefix match)? `ns=0;` in a pattern means the same as no prefix;
 * GUIDs compare case-insensitively (they are hex). Everything else is an exact, case-sensitive text match.
 */
export function matchesNodeIdPattern(text: string, pattern: string): boolean {
  let p = pattern.startsWith('ns=0;') ? pattern.slice(5) : pattern;
  const star = p.endsWith('*');
  if (star) p = p.slice(0, -1);
  let t = text;
  if (/^(?:ns=\d+;)?g=/.test(p)) {
    p = p.toUpperCase().replace(/^NS=/, 'ns=').replace(/;G=/, ';g=').replace(/^G=/, 'g=');
    t = t.toUpperCase().replace(/^NS=/, 'ns=').replace(/;G=/, ';g=').replace(/^G=/, 'g=');
  }
  return star ? t.startsWith(p) : t === p;
}

// ----------------------------------------------------------------------------------- value summaries

const BUILTIN_TYPES = [
  'Null',
  'Boolean',
  'SByte',
  'Byte',
  'Int16',
  'UInt16',
  'Int32',
  'UInt32',
  'Int64',
  'UInt64',
  'Float',
  'Double',
  'String',
  'DateTime',
  'Guid',
  'ByteString',
  'XmlElement',
  'NodeId',
  'ExpandedNodeId',
  'StatusCode',
  'QualifiedName',
  'LocalizedText',
  'ExtensionObject',
  'DataValue',
  'Variant',
  'DiagnosticInfo',
];

const MAX_VALUE_TEXT = 64;

function clip(s: string): string {
  return s.length > MAX_VALUE_TEXT ? `${s.slice(0, MAX_VALUE_TEXT - 1)}…` : s;
}

function valueText(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (Buffer.isBuffer(v)) return `0x${v.subarray(0, 24).toString('hex')}${v.length > 24 ? '…' : ''}`;
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? 'Invalid Date' : v.toISOString();
  if (ArrayBuffer.isView(v) || Array.isArray(v)) {
    const n = ArrayBuffer.isView(v) ? (v as unknown as ArrayLike<unknown>).length : (v as unknown[]).length;
    return `[${n} values]`;
  }
  if (typeof v === 'object') return clip(String((v as { toString(): string }).toString()));
  return clip(String(v));
}

/** e.g. `Double 3.5`, `String "on"` truncated, `Int32[] [12 values]`. */
function variantSummary(dv: {
  value?: { dataType?: number; arrayType?: number; value?: unknown } | null;
}): string {
  const variant = dv.value;
  if (variant === null || variant === undefined) return 'null';
  const type = BUILTIN_TYPES[variant.dataType ?? 0] ?? `type${variant.dataType}`;
  const array = (variant.arrayType ?? 0) !== 0 ? '[]' : '';
  const v: unknown = variant.value;
  return `${type}${array} ${typeof v === 'string' ? JSON.stringify(clip(v)) : valueText(v)}`;
}

// --------------------------------------------------------------------------------------------- decode

function identityOf(token: unknown): IdentityKind {
  // Part 4 §5.6.3: a null user identity token is treated as anonymous.
  if (token === null || token === undefined) return 'anonymous';
  if (token instanceof AnonymousIdentityToken) return 'anonymous';
  if (token instanceof UserNameIdentityToken) return 'username';
  if (token instanceof X509IdentityToken) return 'x509';
  if (token instanceof IssuedIdentityToken) return 'issued';
  return 'unknown';
}

function emptyRequest(typeId: number, service: string, group: OpcuaServiceGroup | null): DecodedRequest {
  return {
    typeId,
    service,
    group,
    requestHandle: 0,
    nodeIds: [],
    writeNodeIds: [],
    writeValues: [],
    attributeIds: [],
    callMethodIds: [],
    callObjectIds: [],
    identity: null,
    openRequestType: null,
    openSecurityMode: null,
  };
}

/** Fills the request-specific fields of `out` from a decoded node-opcua object. */
function extract(name: string, obj: unknown, out: DecodedRequest): void {
  const ids = out.nodeIds;
  const push = (id: NodeId | null | undefined): void => {
    ids.push(nodeIdText(id));
  };
  switch (name) {
    case 'ReadRequest':
      for (const r of (obj as ReadRequest).nodesToRead ?? []) {
        push(r.nodeId);
        out.attributeIds.push(r.attributeId);
      }
      break;
    case 'WriteRequest':
      for (const w of (obj as WriteRequest).nodesToWrite ?? []) {
        const t = nodeIdText(w.nodeId);
        ids.push(t);
        out.writeNodeIds.push(t);
        out.attributeIds.push(w.attributeId);
        out.writeValues.push(variantSummary(w.value));
      }
      break;
    case 'CallRequest':
      for (const c of (obj as CallRequest).methodsToCall ?? []) {
        const o = nodeIdText(c.objectId);
        const m = nodeIdText(c.methodId);
        ids.push(o, m);
        out.callObjectIds.push(o);
        out.callMethodIds.push(m);
      }
      break;
    case 'ActivateSessionRequest':
      out.identity = identityOf((obj as ActivateSessionRequest).userIdentityToken);
      break;
    case 'BrowseRequest': {
      const b = obj as BrowseRequest;
      for (const d of b.nodesToBrowse ?? []) push(d.nodeId);
      break;
    }
    case 'TranslateBrowsePathsToNodeIdsRequest':
      for (const p of (obj as TranslateBrowsePathsToNodeIdsRequest).browsePaths ?? []) push(p.startingNode);
      break;
    case 'RegisterNodesRequest':
      for (const n of (obj as RegisterNodesRequest).nodesToRegister ?? []) push(n);
      break;
    case 'UnregisterNodesRequest':
      for (const n of (obj as UnregisterNodesRequest).nodesToUnregister ?? []) push(n);
      break;
    case 'CreateMonitoredItemsRequest':
      for (const i of (obj as CreateMonitoredItemsRequest).itemsToCreate ?? []) {
        push(i.itemToMonitor.nodeId);
        out.attributeIds.push(i.itemToMonitor.attributeId);
      }
      break;
    case 'HistoryReadRequest':
      for (const r of (obj as HistoryReadRequest).nodesToRead ?? []) push(r.nodeId);
      break;
    case 'HistoryUpdateRequest':
      for (const d of (obj as HistoryUpdateRequest).historyUpdateDetails ?? []) {
        // UpdateDataDetails, UpdateEventDetails, Delete*Details: all carry the NodeId they change.
        const n = (d as { nodeId?: NodeId } | null)?.nodeId;
        if (n !== undefined) push(n);
      }
      break;
    case 'AddNodesRequest':
      for (const a of (obj as AddNodesRequest).nodesToAdd ?? []) {
        push(a.parentNodeId);
        push(a.requestedNewNodeId);
      }
      break;
    case 'DeleteNodesRequest':
      for (const d of (obj as DeleteNodesRequest).nodesToDelete ?? []) push(d.nodeId);
      break;
    case 'AddReferencesRequest':
      for (const r of (obj as AddReferencesRequest).referencesToAdd ?? []) {
        push(r.sourceNodeId);
        push(r.targetNodeId);
      }
      break;
    case 'DeleteReferencesRequest':
      for (const r of (obj as DeleteReferencesRequest).referencesToDelete ?? []) {
        push(r.sourceNodeId);
        push(r.targetNodeId);
      }
      break;
    case 'QueryFirstRequest':
      for (const t of (obj as QueryFirstRequest).nodeTypes ?? []) push(t.typeDefinitionNode);
      break;
    case 'OpenSecureChannelRequest': {
      const o = obj as OpenSecureChannelRequest;
      out.openRequestType = o.requestType;
      out.openSecurityMode = o.securityMode;
      break;
    }
    default:
      break;
  }
}

function errorText(err: unknown): string {
  const s = err instanceof Error ? err.message : String(err);
  return s.length > 120 ? `${s.slice(0, 119)}…` : s;
}

/**
 * Decodes a request body (type id + encoded request). An unknown type id still yields a frame (group null,
 * refused as a service) as long as a RequestHeader follows it, so the refusal can carry its RequestHandle.
 * `allowTrailing` accepts bytes after the request (only for the security-mode heuristic); otherwise they make
 * the body invalid.
 */
export function decodeRequest(body: Buffer, allowTrailing = false): ParseResult<DecodedRequest> {
  // node-opcua reports oddities it tolerates while decoding, and both ways are a hostile client's lever:
  // - an ExtensionObject of an unknown ns=0 type or a size mismatch goes to node-opcua-debug's warning logger,
  //   which captures a stack trace per call: ~17 µs of gateway CPU per 9 request bytes (seconds per message);
  // - an unknown StatusCode value goes to console.warn, one uncapped line per value (log flooding).
  // So, for the duration of this synchronous decode, stack traces are off (the node-opcua-debug logger then
  // cannot locate its caller and throws) and console.warn throws: the decode fails fast and the request counts
  // as malformed — fail closed, the filter does not forward what it could only read with warnings. Every other
  // exception thrown on hostile input gets cheaper too. Both are restored before anything else can run.
  const stackTraceLimit = Error.stackTraceLimit;
  const warn = console.warn;
  Error.stackTraceLimit = 0;
  console.warn = refuseWarning;
  try {
    return decodeRequestUnguarded(body, allowTrailing);
  } finally {
    console.warn = warn;
    Error.stackTraceLimit = stackTraceLimit;
  }
}

function refuseWarning(...args: unknown[]): never {
  throw new Error(`node-opcua warning: ${String(args[0]).slice(0, 80)}`);
}

function decodeRequestUnguarded(body: Buffer, allowTrailing: boolean): ParseResult<DecodedRequest> {
  let stream: BinaryStream;
  let typeId: ExpandedNodeId;
  try {
    stream = new BinaryStream(body);
    typeId = decodeExpandedNodeId(stream);
  } catch (err) {
    return invalid('opcua.decode-type-id', `request type id: ${errorText(err)}`);
  }
  const numeric =
    typeId.identifierType === NodeIdType.NUMERIC &&
    typeId.namespace === 0 &&
    !typeId.namespaceUri &&
    !typeId.serverIndex &&
    typeof typeId.value === 'number';
  const type = numeric ? REQUEST_TYPES.get(typeId.value as number) : undefined;
  let out: DecodedRequest;
  try {
    if (type === undefined) {
      out = emptyRequest(numeric ? (typeId.value as number) : -1, nodeIdText(typeId), null);
      const header = new RequestHeader();
      header.decode(stream);
      out.requestHandle = header.requestHandle;
      // The rest is a structure the filter does not know: never allowed, nothing more to read.
      return { kind: 'frame', frame: out, consumed: body.length };
    }
    const obj = new type.ctor();
    obj.decode(stream);
    out = emptyRequest(typeId.value as number, type.name, type.group);
    out.requestHandle = obj.requestHeader.requestHandle;
    extract(type.name, obj, out);
  } catch (err) {
    return invalid('opcua.decode', `${type?.name ?? 'request'}: ${errorText(err)}`);
  }
  if (!allowTrailing && stream.length !== body.length) {
    return invalid(
      'opcua.trailing-bytes',
      `${type.name} leaves ${body.length - stream.length} bytes undecoded`,
    );
  }
  return { kind: 'frame', frame: out, consumed: body.length };
}

// ------------------------------------------------------------------------- security-mode heuristic

/** Result of reading a NodeId in place: bytes used, or 'short' (ran out of bytes), or 'bad'. */
type Step = number | 'short' | 'bad';

/** Length of an encoded NodeId at `off` (Part 6 §5.2.2.9) without decoding it; no ExpandedNodeId flags. */
function nodeIdLength(b: Buffer, off: number): Step {
  const enc = b[off];
  if (enc === undefined) return 'short';
  const need = (n: number): Step => (off + n > b.length ? 'short' : n);
  switch (enc) {
    case 0x00:
      return need(2);
    case 0x01:
      return need(4);
    case 0x02:
      return need(7);
    case 0x03:
    case 0x05: {
      if (off + 7 > b.length) return 'short';
      const len = b.readInt32LE(off + 3);
      if (len < -1) return 'bad';
      return need(7 + Math.max(len, 0));
    }
    case 0x04:
      return need(19);
    default:
      return 'bad';
  }
}

/**
 * Could `body` be the clear start of a request (a known request type id followed by a RequestHeader, Part 4
 * §7.32), or a prefix of one cut by the chunk boundary? Used to tell Sign from SignAndEncrypt on a channel
 * whose OPN did not say (see inspector.ts). The test is cheap (a few reads, no allocation) and strict enough
 * that ciphertext passes it with negligible probability: the type id alone (0x01 0x00 + one of ~40 ids) has
 * a chance of about 1e-8 per random body, and the RequestHeader's NodeId encoding and string length checks
 * divide that by well over 100.
 */
export function startsLikeRequest(body: Buffer): boolean {
  // A 4-byte type id is the shortest form that can name a request (all ids are > 255).
  if (body.length < 4) return true;
  let off: number;
  let id: number;
  if (body[0] === 0x01) {
    if (body[1] !== 0) return false;
    id = body.readUInt16LE(2);
    off = 4;
  } else if (body[0] === 0x02) {
    if (body.length < 7) return body.readUInt16LE(1) === 0;
    if (body.readUInt16LE(1) !== 0) return false;
    id = body.readUInt32LE(3);
    off = 7;
  } else {
    return false;
  }
  const type = REQUEST_TYPES.get(id);
  if (type === undefined || type.group === null) return false;
  // RequestHeader: authenticationToken NodeId · timestamp (8) · requestHandle (4) · returnDiagnostics (4) ·
  // auditEntryId String · timeoutHint (4) · additionalHeader ExtensionObject. Running out of bytes anywhere
  // means "prefix of a request": still a request.
  const token = nodeIdLength(body, off);
  if (token === 'bad') return false;
  if (token === 'short') return true;
  off += token + 16;
  if (off + 4 > body.length) return true;
  const audit = body.readInt32LE(off);
  if (audit < -1) return false;
  off += 4 + Math.max(audit, 0);
  if (audit > 0 && off > body.length) return audit <= 65535;
  off += 4;
  const ext = nodeIdLength(body, off);
  if (ext === 'bad') return false;
  if (ext === 'short') return true;
  off += ext;
  const encoding = body[off];
  return encoding === undefined || encoding <= 2;
}
