/**
 * Framing of OPC UA TCP (Part 6 §7.1, UA Connection Protocol) and the clear headers of UA Secure Conversation
 * chunks (Part 6 §6.7.2). Pure functions over Buffers; none of them throws (every read is bounds-checked
 * before it happens).
 *
 * Part 6 §7.1.2.2 message header: MessageType (3 ASCII bytes) · Reserved/IsFinal (1 byte) · MessageSize
 * (UInt32 LE, the whole message including this header). HEL/ACK/ERR/RHE carry 'F'; OPN/MSG/CLO chunks carry
 * F (final), C (intermediate) or A (abort) (Part 6 §6.7.2.2) and then a SecureChannelId (UInt32).
 */
import { parseSenderCertificate } from './certificate.ts';
import { SECURITY_POLICY_URIS } from './constants.ts';
import {
  invalid,
  MIN_BUFFER_SIZE,
  NEED_MORE,
  SYMMETRIC_BODY_OFFSET,
  type Acknowledge,
  type CertificateInfo,
  type Chunk,
  type ChunkType,
  type ErrorMessage,
  type Hello,
  type MessageType,
  type OpenHeader,
  type ParseResult,
  type ReverseHello,
  type SymmetricHeader,
} from './types.ts';

export const MESSAGE_HEADER_SIZE = 8;
/** Part 6 §7.1.2.3: EndpointUrl at most 4096 bytes; §7.1.2.5: Reason at most 4096 bytes. */
export const MAX_URL_LENGTH = 4096;
/** Largest HEL/ACK/ERR/RHE: header + fixed fields + two 4096-byte strings with their lengths. */
export const MAX_TRANSPORT_MESSAGE_SIZE = MESSAGE_HEADER_SIZE + 8 + 2 * MAX_URL_LENGTH;
/** Part 6 §6.7.2.3: SecurityPolicyUri at most 255 bytes. */
export const MAX_POLICY_URI_LENGTH = 255;

const HEL_FIXED = MESSAGE_HEADER_SIZE + 20;
const ACK_SIZE = MESSAGE_HEADER_SIZE + 20;

/** Smallest size of each message type: its header and the fixed fields, with null strings. */
const MIN_SIZE: Readonly<Record<MessageType, number>> = {
  HEL: HEL_FIXED + 4,
  ACK: ACK_SIZE,
  ERR: MESSAGE_HEADER_SIZE + 8,
  RHE: MESSAGE_HEADER_SIZE + 8,
  // Channel id, three null ByteStrings (asymmetric security header), sequence header.
  OPN: MESSAGE_HEADER_SIZE + 4 + 12 + 8,
  MSG: SYMMETRIC_BODY_OFFSET,
  CLO: SYMMETRIC_BODY_OFFSET,
};

function messageTypeAt(buf: Buffer): MessageType | null {
  const a = buf[0];
  const b = buf[1];
  const c = buf[2];
  // ASCII: H=0x48 E=0x45 L=0x4c A=0x41 C=0x43 K=0x4b R=0x52 O=0x4f P=0x50 N=0x4e M=0x4d S=0x53 G=0x47.
  if (a === 0x4d && b === 0x53 && c === 0x47) return 'MSG';
  if (a === 0x4f && b === 0x50 && c === 0x4e) return 'OPN';
  if (a === 0x43 && b === 0x4c && c === 0x4f) return 'CLO';
  if (a === 0x48 && b === 0x45 && c === 0x4c) return 'HEL';
  if (a === 0x41 && b === 0x43 && c === 0x4b) return 'ACK';
  if (a === 0x45 && b === 0x52 && c === 0x52) return 'ERR';
  if (a === 0x52 && b === 0x48 && c === 0x45) return 'RHE';
  return null;
}

function chunkTypeOf(byte: number | undefined): ChunkType | null {
  if (byte === 0x46) return 'F';
  if (byte === 0x43) return 'C';
  if (byte === 0x41) return 'A';
  return null;
}

function isTransport(t: MessageType): boolean {
  return t === 'HEL' || t === 'ACK' || t === 'ERR' || t === 'RHE';
}

/**
 * Frames one message/chunk at the start of `buf`. `maxChunkSize` bounds OPN/MSG/CLO (the negotiated buffer
 * size); transport messages are bounded by MAX_TRANSPORT_MESSAGE_SIZE. Rejects a bad type as soon as its 3
 * bytes are in, a bad IsFinal byte at 4 and a bad size at 8, so a peer cannot hold the connection open with a
 * header that can never become valid. OPN and CLO must be single chunks ('F'): the filter decides on the whole
 * OPN (policy, certificate) and a certificate chain fits the 8192-byte minimum buffer of every stack.
 */
export function parseChunk(buf: Buffer, maxChunkSize: number): ParseResult<Chunk> {
  const n = buf.length;
  if (n < 3) return NEED_MORE;
  const messageType = messageTypeAt(buf);
  if (messageType === null) return invalid('opcua.message-type', 'unknown message type');
  if (n < 4) return NEED_MORE;
  const chunkType = chunkTypeOf(buf[3]);
  if (chunkType === null) return invalid('opcua.chunk-type', `chunk type byte ${buf[3]} is not F, C or A`);
  if (chunkType !== 'F' && messageType !== 'MSG') {
    return invalid('opcua.chunk-type', `${messageType} must be a single final chunk`);
  }
  if (n < MESSAGE_HEADER_SIZE) return NEED_MORE;
  const size = buf.readUInt32LE(4);
  const max = isTransport(messageType) ? MAX_TRANSPORT_MESSAGE_SIZE : maxChunkSize;
  if (size > max) return invalid('opcua.chunk-too-large', `${messageType} of ${size} bytes exceeds ${max}`);
  if (size < MIN_SIZE[messageType]) {
    return invalid('opcua.chunk-too-small', `${messageType} of ${size} bytes is below its minimum`);
  }
  if (n < size) return NEED_MORE;
  const bytes = n === size ? buf : buf.subarray(0, size);
  return { kind: 'frame', frame: { messageType, chunkType, bytes }, consumed: size };
}

// ------------------------------------------------------------------------------ UA binary primitives

/** A bounded reader of UA binary primitives (Part 6 §5.2.2); every method returns null past the end. */
class Reader {
  readonly buf: Buffer;
  off: number;
  constructor(buf: Buffer, off: number) {
    this.buf = buf;
    this.off = off;
  }
  u32(): number | null {
    if (this.off + 4 > this.buf.length) return null;
    const v = this.buf.readUInt32LE(this.off);
    this.off += 4;
    return v;
  }
  /** ByteString/String body: Int32 length, -1 = null. Returns undefined on overrun or a bad length. */
  bytes(max: number): Buffer | null | undefined {
    if (this.off + 4 > this.buf.length) return undefined;
    const len = this.buf.readInt32LE(this.off);
    this.off += 4;
    if (len === -1) return null;
    if (len < 0 || len > max || this.off + len > this.buf.length) return undefined;
    const out = this.buf.subarray(this.off, this.off + len);
    this.off += len;
    return out;
  }
}

function readString(r: Reader, max: number, field: string): ParseResult<string | null> {
  const b = r.bytes(max);
  if (b === undefined) return invalid('opcua.string', `${field}: bad length or past the end`);
  return { kind: 'frame', frame: b === null ? null : b.toString('utf8'), consumed: 0 };
}

function trailing(r: Reader, what: string): ParseResult<never> | null {
  return r.off === r.buf.length ? null : invalid('opcua.trailing-bytes', `${what} has trailing bytes`);
}

// ----------------------------------------------------------------------------- UA Connection Protocol

/** Part 6 §7.1.2.3 Hello. `bytes` is one framed HEL. */
export function parseHello(bytes: Buffer): ParseResult<Hello> {
  const r = new Reader(bytes, MESSAGE_HEADER_SIZE);
  const protocolVersion = r.u32();
  const receiveBufferSize = r.u32();
  const sendBufferSize = r.u32();
  const maxMessageSize = r.u32();
  const maxChunkCount = r.u32();
  if (maxChunkCount === null || protocolVersion === null || receiveBufferSize === null) {
    return invalid('opcua.hello', 'HEL truncated');
  }
  if (sendBufferSize === null || maxMessageSize === null) return invalid('opcua.hello', 'HEL truncated');
  // Part 6 §7.1.2.3: both buffer sizes "shall be at least 8 192 bytes".
  if (receiveBufferSize < MIN_BUFFER_SIZE || sendBufferSize < MIN_BUFFER_SIZE) {
    return invalid('opcua.hello', 'HEL buffer size below 8192');
  }
  const url = readString(r, MAX_URL_LENGTH, 'EndpointUrl');
  if (url.kind !== 'frame') return url;
  const t = trailing(r, 'HEL');
  if (t !== null) return t;
  return {
    kind: 'frame',
    frame: {
      protocolVersion,
      receiveBufferSize,
      sendBufferSize,
      maxMessageSize,
      maxChunkCount,
      endpointUrl: url.frame,
    },
    consumed: bytes.length,
  };
}

/** Part 6 §7.1.2.4 Acknowledge. */
export function parseAcknowledge(bytes: Buffer): ParseResult<Acknowledge> {
  if (bytes.length !== ACK_SIZE) return invalid('opcua.acknowledge', `ACK of ${bytes.length} bytes`);
  const ack: Acknowledge = {
    protocolVersion: bytes.readUInt32LE(8),
    receiveBufferSize: bytes.readUInt32LE(12),
    sendBufferSize: bytes.readUInt32LE(16),
    maxMessageSize: bytes.readUInt32LE(20),
    maxChunkCount: bytes.readUInt32LE(24),
  };
  if (ack.receiveBufferSize < MIN_BUFFER_SIZE || ack.sendBufferSize < MIN_BUFFER_SIZE) {
    return invalid('opcua.acknowledge', 'ACK buffer size below 8192');
  }
  return { kind: 'frame', frame: ack, consumed: bytes.length };
}

/** Part 6 §7.1.2.5 Error. */
export function parseError(bytes: Buffer): ParseResult<ErrorMessage> {
  const r = new Reader(bytes, MESSAGE_HEADER_SIZE);
  const error = r.u32();
  if (error === null) return invalid('opcua.error', 'ERR truncated');
  const reason = readString(r, MAX_URL_LENGTH, 'Reason');
  if (reason.kind !== 'frame') return reason;
  const t = trailing(r, 'ERR');
  if (t !== null) return t;
  return { kind: 'frame', frame: { error, reason: reason.frame }, consumed: bytes.length };
}

/** Part 6 §7.1.2.6 ReverseHello. */
export function parseReverseHello(bytes: Buffer): ParseResult<ReverseHello> {
  const r = new Reader(bytes, MESSAGE_HEADER_SIZE);
  const serverUri = readString(r, MAX_URL_LENGTH, 'ServerUri');
  if (serverUri.kind !== 'frame') return serverUri;
  const endpointUrl = readString(r, MAX_URL_LENGTH, 'EndpointUrl');
  if (endpointUrl.kind !== 'frame') return endpointUrl;
  const t = trailing(r, 'RHE');
  if (t !== null) return t;
  return {
    kind: 'frame',
    frame: { serverUri: serverUri.frame, endpointUrl: endpointUrl.frame },
    consumed: bytes.length,
  };
}

function header(type: string, size: number): Buffer {
  const b = Buffer.alloc(size);
  b.write(type, 0, 'latin1');
  b.writeUInt8(0x46, 3);
  b.writeUInt32LE(size, 4);
  return b;
}

function stringLength(s: string | null): number {
  return s === null ? 0 : Buffer.byteLength(s, 'utf8');
}

function writeString(b: Buffer, off: number, s: string | null): number {
  if (s === null) {
    b.writeInt32LE(-1, off);
    return off + 4;
  }
  const n = b.write(s, off + 4, 'utf8');
  b.writeInt32LE(n, off);
  return off + 4 + n;
}

/** Truncates UTF-8 text to at most `max` bytes without splitting a character. */
export function truncateUtf8(s: string, max: number): string {
  if (Buffer.byteLength(s, 'utf8') <= max) return s;
  let out = Buffer.from(s, 'utf8').subarray(0, max).toString('utf8');
  // A cut inside a multi-byte character decodes to U+FFFD (3 bytes): drop it and recheck.
  while (Buffer.byteLength(out, 'utf8') > max || out.endsWith('\ufffd')) out = out.slice(0, -1);
  return out;
}

export function encodeHello(h: Hello): Buffer {
  const url = h.endpointUrl === null ? null : truncateUtf8(h.endpointUrl, MAX_URL_LENGTH);
  const b = header('HEL', HEL_FIXED + 4 + stringLength(url));
  b.writeUInt32LE(h.protocolVersion, 8);
  b.writeUInt32LE(h.receiveBufferSize, 12);
  b.writeUInt32LE(h.sendBufferSize, 16);
  b.writeUInt32LE(h.maxMessageSize, 20);
  b.writeUInt32LE(h.maxChunkCount, 24);
  writeString(b, 28, url);
  return b;
}

export function encodeAcknowledge(a: Acknowledge): Buffer {
  const b = header('ACK', ACK_SIZE);
  b.writeUInt32LE(a.protocolVersion, 8);
  b.writeUInt32LE(a.receiveBufferSize, 12);
  b.writeUInt32LE(a.sendBufferSize, 16);
  b.writeUInt32LE(a.maxMessageSize, 20);
  b.writeUInt32LE(a.maxChunkCount, 24);
  return b;
}

/**
 * Part 6 §7.1.2.5 Error message: Error (StatusCode) · Reason (String, ≤ 4096 bytes). The server sends it
 * "before it closes the socket"; the gateway does the same for channel-level refusals.
 */
export function buildErrorMessage(statusCode: number, reason: string): Buffer {
  const text = truncateUtf8(reason, MAX_URL_LENGTH);
  const b = header('ERR', MESSAGE_HEADER_SIZE + 8 + stringLength(text));
  b.writeUInt32LE(statusCode >>> 0, 8);
  writeString(b, 12, text);
  return b;
}

/** Limits a value where 0 means "no limit" to `max`. */
function capZeroUnlimited(v: number, max: number): number {
  return v === 0 || v > max ? max : v;
}

/**
 * HEL as forwarded to the server: the client's buffer sizes lowered to the gateway's chunk limit, so the
 * server never sends (nor expects to receive) chunks larger than the gateway frames. MaxMessageSize and
 * MaxChunkCount there bound responses, which the gateway does not reassemble: left as the client sent them.
 */
export function clampHello(h: Hello, maxChunkSize: number): Hello {
  return {
    ...h,
    receiveBufferSize: Math.min(h.receiveBufferSize, maxChunkSize),
    sendBufferSize: Math.min(h.sendBufferSize, maxChunkSize),
  };
}

/**
 * ACK as forwarded to the client: buffer sizes lowered to the chunk limit, and MaxMessageSize/MaxChunkCount
 * (which bound requests, Part 6 §7.1.2.4) to the gateway's reassembly limits, so a compliant client never
 * sends a request the gateway would have to cut.
 */
export function clampAcknowledge(
  a: Acknowledge,
  limits: { maxChunkSize: number; maxMessageSize: number; maxChunkCount: number },
): Acknowledge {
  return {
    ...a,
    receiveBufferSize: Math.min(a.receiveBufferSize, limits.maxChunkSize),
    sendBufferSize: Math.min(a.sendBufferSize, limits.maxChunkSize),
    maxMessageSize: capZeroUnlimited(a.maxMessageSize, limits.maxMessageSize),
    maxChunkCount: capZeroUnlimited(a.maxChunkCount, limits.maxChunkCount),
  };
}

// ------------------------------------------------------------------------- UA Secure Conversation

/**
 * Part 6 §6.7.2.3 asymmetric security header of an OPN chunk: SecureChannelId, then SecurityPolicyUri
 * (ByteString ≤ 255), SenderCertificate (ByteString, DER chain), ReceiverCertificateThumbprint (ByteString,
 * 20 bytes or null). These are always in clear; what follows (sequence header, body) is encrypted unless the
 * policy is None.
 */
export function parseOpenHeader(bytes: Buffer): ParseResult<OpenHeader> {
  const chunkType = chunkTypeOf(bytes[3]);
  if (bytes.length < MIN_SIZE.OPN || chunkType === null) return invalid('opcua.open', 'OPN truncated');
  const r = new Reader(bytes, MESSAGE_HEADER_SIZE);
  const channelId = r.u32() ?? 0;
  const uri = r.bytes(MAX_POLICY_URI_LENGTH);
  if (uri === undefined) return invalid('opcua.open-policy', 'OPN SecurityPolicyUri: bad length');
  if (uri === null || uri.length === 0) return invalid('opcua.open-policy', 'OPN without SecurityPolicyUri');
  const securityPolicyUri = uri.toString('utf8');
  const cert = r.bytes(bytes.length);
  if (cert === undefined) return invalid('opcua.open-certificate', 'OPN SenderCertificate: bad length');
  let senderCertificate: CertificateInfo | null = null;
  if (cert !== null && cert.length > 0) {
    const parsed = parseSenderCertificate(cert);
    if (parsed.kind !== 'frame') return parsed;
    senderCertificate = parsed.frame;
  }
  const thumb = r.bytes(bytes.length);
  if (thumb === undefined)
    return invalid('opcua.open-thumbprint', 'OPN ReceiverCertificateThumbprint: bad length');
  if (thumb !== null && thumb.length !== 0 && thumb.length !== 20) {
    return invalid('opcua.open-thumbprint', `receiver thumbprint of ${thumb.length} bytes, expected 20`);
  }
  if (r.off + 8 > bytes.length) return invalid('opcua.open', 'OPN ends inside its sequence header');
  return {
    kind: 'frame',
    frame: {
      chunkType,
      channelId,
      securityPolicyUri,
      securityPolicy: SECURITY_POLICY_URIS.get(securityPolicyUri) ?? null,
      senderCertificate,
      senderCertificateLength: cert === null ? 0 : cert.length,
      receiverThumbprint: thumb === null || thumb.length === 0 ? null : Buffer.from(thumb),
      sequenceOffset: r.off,
    },
    consumed: bytes.length,
  };
}

/**
 * Part 6 §6.7.2.2–§6.7.2.4 header of a MSG/CLO chunk (framed by parseChunk, so ≥ 24 bytes): SecureChannelId,
 * TokenId (symmetric security header), SequenceNumber, RequestId (sequence header; ciphertext under
 * SignAndEncrypt). The body starts at SYMMETRIC_BODY_OFFSET.
 */
export function parseSymmetricHeader(bytes: Buffer): ParseResult<SymmetricHeader> {
  const chunkType = chunkTypeOf(bytes[3]);
  if (bytes.length < SYMMETRIC_BODY_OFFSET || chunkType === null) {
    return invalid('opcua.chunk-too-small', 'MSG/CLO shorter than its headers');
  }
  return {
    kind: 'frame',
    frame: {
      chunkType,
      channelId: bytes.readUInt32LE(8),
      tokenId: bytes.readUInt32LE(12),
      sequenceNumber: bytes.readUInt32LE(16),
      requestId: bytes.readUInt32LE(20),
    },
    consumed: bytes.length,
  };
}
