/**
 * Public surface of the OPC UA filter: framing (Part 6 §7.1, §6.7), reassembly, request decoding, the pure
 * decisions, refusal builders, sequence rewriting, log details, and the per-connection inspector that composes
 * them for the shared proxy core. The daemon needs only `opcuaInspectorFactory` (or
 * `createOpcuaInspectorFactory` with limits); the rest is exported for tests, tools and the benchmark.
 */
export type {
  Acknowledge,
  CertificateInfo,
  ChannelSecurity,
  Chunk,
  ChunkType,
  DecodedRequest,
  ErrorMessage,
  Hello,
  IdentityKind,
  Invalid,
  MessageType,
  OpcuaLimits,
  OpenHeader,
  ParseResult,
  ReverseHello,
  SymmetricHeader,
} from './types.ts';
export {
  DEFAULT_OPCUA_LIMITS,
  MIN_BUFFER_SIZE,
  SYMMETRIC_BODY_OFFSET,
  SYMMETRIC_SEQUENCE_OFFSET,
} from './types.ts';
export {
  SECURITY_POLICY_URIS,
  STATUS,
  STATUS_NAMES,
  SYMMETRIC_SIGNATURE_LENGTH,
  securityPolicyUri,
} from './constants.ts';
export { firstDerLength, parseSenderCertificate } from './certificate.ts';
export {
  MAX_TRANSPORT_MESSAGE_SIZE,
  MESSAGE_HEADER_SIZE,
  buildErrorMessage,
  clampAcknowledge,
  clampHello,
  encodeAcknowledge,
  encodeHello,
  parseAcknowledge,
  parseChunk,
  parseError,
  parseHello,
  parseOpenHeader,
  parseReverseHello,
  parseSymmetricHeader,
} from './transport.ts';
export { OpcuaChunkDecoder, type StreamItem } from './stream.ts';
export {
  BudgetAccount,
  DEFAULT_REASSEMBLY_BUDGET_BYTES,
  MEMORY_BUDGET_CODE,
  ReassemblyBudget,
  sharedReassemblyBudget,
} from './budget.ts';
export {
  MessageAssembler,
  type AbortedMessage,
  type AssembledMessage,
  type AssemblyLimits,
  type AssemblyResult,
} from './reassembly.ts';
export {
  DISCOVERY_ONLY_SERVICES,
  REQUEST_TYPES,
  decodeRequest,
  matchesNodeIdPattern,
  nodeIdText,
  requestTypeId,
  startsLikeRequest,
  type RequestType,
} from './services.ts';
export {
  decideChannel,
  decideRequest,
  decideSecurityMode,
  type ChannelDecision,
  type Decision,
  type OpcuaRefusalReason,
  type Refusal,
  type RefusalVerdict,
} from './decide.ts';
export { buildServiceFault, type ServiceFaultParams } from './refusal.ts';
export {
  SequenceDirection,
  SequenceRewriter,
  isNextSequenceNumber,
  nextSequenceNumber,
  withSequenceNumber,
} from './sequence.ts';
export { channelDetail, refusalEvent, requestDetail, type OpcuaEventDetail } from './describe.ts';
export {
  OpcuaInspector,
  couldBeCiphertext,
  createOpcuaInspectorFactory,
  opcuaInspectorFactory,
  type OpcuaInspectorOptions,
} from './inspector.ts';
