/**
 * Shared result and frame types of the OPC UA filter. Everything here is data: the parsers build these values,
 * the decision reads them, the inspector forwards chunk bytes untouched when a request is allowed.
 *
 * Specification references are to OPC 10000-6 (Part 6, Mappings) and OPC 10000-4 (Part 4, Services), v1.05.
 */
import type { OpcuaSecurityMode, OpcuaSecurityPolicy, OpcuaServiceGroup } from '../../policies/types.ts';

// One definition for both filters (core/parse.ts); re-exported so this folder's imports stay local.
export { NEED_MORE, invalid, type Invalid, type ParseResult } from '../core/parse.ts';

/** UA Connection Protocol messages (Part 6 §7.1.2) and UA Secure Conversation messages (Part 6 §6.7.2.2). */
export type TransportMessageType = 'HEL' | 'ACK' | 'ERR' | 'RHE';
export type SecureMessageType = 'OPN' | 'MSG' | 'CLO';
export type MessageType = TransportMessageType | SecureMessageType;
/** Part 6 §6.7.2.2 IsFinal: C = intermediate, F = final, A = abort. Transport messages always carry F. */
export type ChunkType = 'F' | 'C' | 'A';

/** One framed chunk: the 8-byte message header said `size`, and `bytes` holds exactly that many bytes. */
export interface Chunk {
  messageType: MessageType;
  chunkType: ChunkType;
  /** The whole chunk, header included (a view of the pushed buffer when it lay wholly inside it). */
  bytes: Buffer;
}

/** Part 6 §7.1.2.3 Hello. */
export interface Hello {
  protocolVersion: number;
  receiveBufferSize: number;
  sendBufferSize: number;
  /** 0 = no limit. */
  maxMessageSize: number;
  /** 0 = no limit. */
  maxChunkCount: number;
  endpointUrl: string | null;
}

/** Part 6 §7.1.2.4 Acknowledge. */
export interface Acknowledge {
  protocolVersion: number;
  receiveBufferSize: number;
  sendBufferSize: number;
  maxMessageSize: number;
  maxChunkCount: number;
}

/** Part 6 §7.1.2.5 Error. */
export interface ErrorMessage {
  error: number;
  reason: string | null;
}

/** Part 6 §7.1.2.6 ReverseHello. */
export interface ReverseHello {
  serverUri: string | null;
  endpointUrl: string | null;
}

/** The sender certificate of an OPN (Part 6 §6.7.2.3), first certificate of the chain. */
export interface CertificateInfo {
  /** SHA-1 of the DER of the sender's own certificate, upper-case hex (40 digits). */
  thumbprint: string;
  /** The subject as node:crypto prints it (`CN=…\nO=…`), or null if the DER did not parse as X.509. */
  subject: string | null;
  /** The subject's common name, or null. */
  commonName: string | null;
  /** DER bytes of the sender's certificate (a copy). */
  der: Buffer;
}

/** Part 6 §6.7.2.3 asymmetric security header of an OPN chunk, plus where the sequence header starts. */
export interface OpenHeader {
  chunkType: ChunkType;
  channelId: number;
  securityPolicyUri: string;
  /** Short name when the URI is one of the known policies, else null. */
  securityPolicy: OpcuaSecurityPolicy | null;
  senderCertificate: CertificateInfo | null;
  /** Raw SenderCertificate field length (0 when null): the chain may hold more than the sender's. */
  senderCertificateLength: number;
  receiverThumbprint: Buffer | null;
  /** Offset of the sequence header (Part 6 §6.7.2.4) in the chunk: readable only for SecurityPolicy None. */
  sequenceOffset: number;
}

/** Part 6 §6.7.2.2–§6.7.2.4 header of a MSG/CLO chunk: symmetric security header then sequence header. */
export interface SymmetricHeader {
  chunkType: ChunkType;
  channelId: number;
  tokenId: number;
  /** Ciphertext (meaningless) when the channel encrypts. */
  sequenceNumber: number;
  requestId: number;
}

/** Offsets shared by MSG and CLO chunks (Part 6 §6.7.2.2–§6.7.2.4). */
export const SYMMETRIC_SEQUENCE_OFFSET = 16;
export const SYMMETRIC_BODY_OFFSET = 24;

/** Identity token kinds of ActivateSession (Part 4 §7.41). */
export type IdentityKind = 'anonymous' | 'username' | 'x509' | 'issued' | 'unknown';

/** A decoded service request: what the decision and the log need, nothing more. */
export interface DecodedRequest {
  /** Numeric id of the request's DefaultBinary encoding node (ns=0), e.g. 631 for ReadRequest. */
  typeId: number;
  /** Request type name, e.g. `ReadRequest`; `ns=…` text of the type id when it is not a known request. */
  service: string;
  /** Service group the request belongs to; null for an unknown request type (never allowed). */
  group: OpcuaServiceGroup | null;
  requestHandle: number;
  /** NodeIds the request names (read, written, browsed, monitored, object/method ids…), in text form. */
  nodeIds: string[];
  /** WriteRequest: the written NodeIds (text form). */
  writeNodeIds: string[];
  /** WriteRequest: short value summaries, parallel to `writeNodeIds`. */
  writeValues: string[];
  /** ReadRequest / WriteRequest: attribute ids, parallel to the read or written NodeIds. */
  attributeIds: number[];
  /** CallRequest: method NodeIds (text form), parallel to `callObjectIds`. */
  callMethodIds: string[];
  callObjectIds: string[];
  /** ActivateSessionRequest: the identity token type. */
  identity: IdentityKind | null;
  /** OpenSecureChannelRequest: 0 Issue / 1 Renew and the MessageSecurityMode enum (1 None, 2 Sign, 3 SAE). */
  openRequestType: number | null;
  openSecurityMode: number | null;
}

/** Security state of a secure channel as the inspector tracks it. */
export interface ChannelSecurity {
  securityPolicy: OpcuaSecurityPolicy | null;
  securityPolicyUri: string;
  /** `unknown` until the first client MSG of a non-None channel tells Sign from SignAndEncrypt. */
  securityMode: OpcuaSecurityMode | 'unknown';
  certificate: CertificateInfo | null;
}

/**
 * The filter's own hard limits. HEL/ACK buffer sizes are lowered to `maxChunkSize`, and ACK's MaxMessageSize
 * and MaxChunkCount to these values, so a compliant peer never hits them; a non-compliant one is cut.
 */
export interface OpcuaLimits {
  /** Largest chunk either side may send (≥ 8192, the minimum every UA stack must accept, Part 6 §7.1.2.3). */
  maxChunkSize: number;
  /** Largest request body (sum of chunk bodies) the gateway reassembles. */
  maxMessageSize: number;
  /** Most chunks in one request. */
  maxChunkCount: number;
  /** An incomplete multi-chunk request must complete within this long of its first chunk. */
  messageTimeoutMs: number;
  /** Requests being reassembled at once (chunks of different request ids may interleave in mode None). */
  maxPartialMessages: number;
}

export const DEFAULT_OPCUA_LIMITS: Readonly<OpcuaLimits> = Object.freeze({
  maxChunkSize: 65_536,
  // OT requests are small (a Write of a few values, a Read of some hundred nodes: tens of KB). Decoding costs
  // ~60 ns per byte of hostile-but-valid content (measured: 3.5 MB WriteRequest of 150k values in 208 ms), so
  // this bounds how long one request can hold the event loop (~60 ms). Raise it per deployment if needed.
  maxMessageSize: 1024 * 1024,
  maxChunkCount: 256,
  messageTimeoutMs: 10_000,
  maxPartialMessages: 4,
});

/** Part 6 §7.1.2.3: every stack must accept chunks of at least this size. */
export const MIN_BUFFER_SIZE = 8192;
