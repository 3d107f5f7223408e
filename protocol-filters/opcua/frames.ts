/**
 * Frame builders for tests and benchmarks: real OPC UA chunks made with node-opcua's own encoders
 * (node-opcua-types classes over a node-opcua-binary-stream BinaryStream), wrapped in hand-written Part 6
 * headers. Not used by the filter itself.
 */
import { BinaryStream } from 'node-opcua-binary-stream';
import { OpenSecureChannelRequest, OpenSecureChannelResponse, ReadResponse } from 'node-opcua-types';
import { securityPolicyUri } from './constants.ts';
import { requestTypeId } from './services.ts';
import type { OpcuaSecurityPolicy } from '../../policies/types.ts';

/** Anything node-opcua can encode with a known DefaultBinary encoding. */
export interface Encodable {
  encode(stream: BinaryStream): void;
  binaryStoreSize(): number;
  schema: { name: string };
}

/** Type id (four-byte NodeId) + encoded object: a MSG body. */
export function encodeBody(obj: Encodable, typeId?: number): Buffer {
  const id = typeId ?? requestTypeId(obj.schema.name) ?? encodingIdOf(obj);
  const size = obj.binaryStoreSize();
  const out = Buffer.alloc(4 + size);
  out.writeUInt8(0x01, 0);
  out.writeUInt8(0, 1);
  out.writeUInt16LE(id, 2);
  obj.encode(new BinaryStream(out.subarray(4)));
  return out;
}

function encodingIdOf(obj: Encodable): number {
  const ctor = (obj as unknown as { constructor: { encodingDefaultBinary?: { value: unknown } } })
    .constructor;
  const v = ctor.encodingDefaultBinary?.value;
  if (typeof v !== 'number') throw new Error(`no encoding id for ${obj.schema.name}`);
  return v;
}

function header(type: string, chunkType: string, size: number): Buffer {
  const b = Buffer.alloc(size);
  b.write(type, 0, 'latin1');
  b.write(chunkType, 3, 'latin1');
  b.writeUInt32LE(size, 4);
  return b;
}

export interface HelloOptions {
  receiveBufferSize?: number;
  sendBufferSize?: number;
  maxMessageSize?: number;
  maxChunkCount?: number;
  endpointUrl?: string | null;
}

export function hello(o: HelloOptions = {}): Buffer {
  const url = o.endpointUrl === undefined ? 'opc.tcp://plc:4840' : o.endpointUrl;
  const urlBytes = url === null ? null : Buffer.from(url, 'utf8');
  const b = header('HEL', 'F', 32 + (urlBytes?.length ?? 0));
  b.writeUInt32LE(0, 8);
  b.writeUInt32LE(o.receiveBufferSize ?? 65536, 12);
  b.writeUInt32LE(o.sendBufferSize ?? 65536, 16);
  b.writeUInt32LE(o.maxMessageSize ?? 0, 20);
  b.writeUInt32LE(o.maxChunkCount ?? 0, 24);
  b.writeInt32LE(urlBytes === null ? -1 : urlBytes.length, 28);
  urlBytes?.copy(b, 32);
  return b;
}

export function ack(o: Omit<HelloOptions, 'endpointUrl'> = {}): Buffer {
  const b = header('ACK', 'F', 28);
  b.writeUInt32LE(0, 8);
  b.writeUInt32LE(o.receiveBufferSize ?? 65536, 12);
  b.writeUInt32LE(o.sendBufferSize ?? 65536, 16);
  b.writeUInt32LE(o.maxMessageSize ?? 0, 20);
  b.writeUInt32LE(o.maxChunkCount ?? 0, 24);
  return b;
}

function byteString(v: Buffer | null): Buffer {
  const len = Buffer.alloc(4);
  len.writeInt32LE(v === null ? -1 : v.length, 0);
  return v === null ? len : Buffer.concat([len, v]);
}

export interface OpenOptions {
  policy?: OpcuaSecurityPolicy;
  /** Raw URI, overrides `policy`. */
  policyUri?: string;
  channelId?: number;
  certificate?: Buffer | null;
  receiverThumbprint?: Buffer | null;
  sequenceNumber?: number;
  requestId?: number;
  /** 0 Issue, 1 Renew. */
  requestType?: number;
  /** MessageSecurityMode of the request body (None only). */
  securityMode?: number;
  /** Body for non-None policies (stands for the asymmetric ciphertext). */
  encrypted?: Buffer;
  chunkType?: string;
}

/** A client OPN chunk. With policy None the body is a real OpenSecureChannelRequest. */
export function openRequest(o: OpenOptions = {}): Buffer {
  const policy = o.policy ?? 'None';
  const uri = Buffer.from(o.policyUri ?? securityPolicyUri(policy), 'utf8');
  const asym = Buffer.concat([
    byteString(uri),
    byteString(o.certificate ?? null),
    byteString(o.receiverThumbprint ?? null),
  ]);
  let rest: Buffer;
  if (policy === 'None' && o.encrypted === undefined) {
    const seq = Buffer.alloc(8);
    seq.writeUInt32LE(o.sequenceNumber ?? 1, 0);
    seq.writeUInt32LE(o.requestId ?? 1, 4);
    const req = new OpenSecureChannelRequest({
      clientProtocolVersion: 0,
      requestType: o.requestType ?? 0,
      securityMode: o.securityMode ?? 1,
      clientNonce: Buffer.alloc(0),
      requestedLifetime: 3_600_000,
    });
    rest = Buffer.concat([seq, encodeBody(req)]);
  } else {
    rest = o.encrypted ?? Buffer.alloc(256, 0xa5);
  }
  const size = 12 + asym.length + rest.length;
  const b = header('OPN', o.chunkType ?? 'F', size);
  b.writeUInt32LE(o.channelId ?? 0, 8);
  asym.copy(b, 12);
  rest.copy(b, 12 + asym.length);
  return b;
}

/** The server's OPN answer on a None channel, with a real OpenSecureChannelResponse. */
export function openResponse(o: {
  channelId: number;
  tokenId: number;
  sequenceNumber: number;
  requestId: number;
}): Buffer {
  const asym = Buffer.concat([
    byteString(Buffer.from(securityPolicyUri('None'))),
    byteString(null),
    byteString(null),
  ]);
  const seq = Buffer.alloc(8);
  seq.writeUInt32LE(o.sequenceNumber, 0);
  seq.writeUInt32LE(o.requestId, 4);
  const res = new OpenSecureChannelResponse({
    serverProtocolVersion: 0,
    securityToken: {
      channelId: o.channelId,
      tokenId: o.tokenId,
      createdAt: new Date(0),
      revisedLifetime: 3_600_000,
    },
    serverNonce: Buffer.alloc(0),
  });
  const rest = Buffer.concat([seq, encodeBody(res)]);
  const b = header('OPN', 'F', 12 + asym.length + rest.length);
  b.writeUInt32LE(o.channelId, 8);
  asym.copy(b, 12);
  rest.copy(b, 12 + asym.length);
  return b;
}

export interface MsgOptions {
  type?: 'MSG' | 'CLO';
  chunkType?: 'F' | 'C' | 'A';
  channelId?: number;
  tokenId?: number;
  sequenceNumber: number;
  requestId: number;
  /** Appended after the body (Sign mode). */
  signatureLength?: number;
}

/** One MSG/CLO chunk around `body`. */
export function msgChunk(body: Buffer, o: MsgOptions): Buffer {
  const sig = o.signatureLength ?? 0;
  const size = 24 + body.length + sig;
  const b = header(o.type ?? 'MSG', o.chunkType ?? 'F', size);
  b.writeUInt32LE(o.channelId ?? 7, 8);
  b.writeUInt32LE(o.tokenId ?? 1, 12);
  b.writeUInt32LE(o.sequenceNumber, 16);
  b.writeUInt32LE(o.requestId, 20);
  body.copy(b, 24);
  if (sig > 0) b.fill(0x5c, 24 + body.length);
  return b;
}

/** Splits `body` into chunks of at most `per` body bytes: C…C F, consecutive sequence numbers from `o`. */
export function msgChunks(body: Buffer, per: number, o: MsgOptions): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0, i = 0; off < body.length || i === 0; off += per, i++) {
    const part = body.subarray(off, off + per);
    const last = off + per >= body.length;
    out.push(msgChunk(part, { ...o, chunkType: last ? 'F' : 'C', sequenceNumber: o.sequenceNumber + i }));
  }
  return out;
}

/** A SignAndEncrypt-looking MSG chunk: the part after the token id is `blocks` AES blocks of pseudo-ciphertext. */
export function encryptedChunk(
  blocks: number,
  o: { chunkType?: 'F' | 'C' | 'A'; channelId?: number; tokenId?: number; seed?: number },
): Buffer {
  const size = 16 + blocks * 16;
  const b = header('MSG', o.chunkType ?? 'F', size);
  b.writeUInt32LE(o.channelId ?? 7, 8);
  b.writeUInt32LE(o.tokenId ?? 1, 12);
  let s = (o.seed ?? 12345) >>> 0 || 1;
  for (let i = 16; i < size; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    b[i] = s & 0xff;
  }
  return b;
}

/** A server ReadResponse chunk answering `requestId` (for server-direction tests). */
export function readResponse(o: MsgOptions & { requestHandle: number }): Buffer {
  const res = new ReadResponse({ responseHeader: { requestHandle: o.requestHandle }, results: [] });
  return msgChunk(encodeBody(res), o);
}
