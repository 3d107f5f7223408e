/**
 * Refusal messages the gateway sends in the server's place. Pure builders: data in, bytes out.
 *
 * - Channel-level refusals, and any refusal on a signed channel: an ERR message (Part 6 §7.1.2.5, built in
 *   transport.ts), after which the connection is closed. ERR belongs to the UA Connection Protocol and is never
 *   signed, so the gateway may send it on any channel.
 * - Service-level refusals on a None channel: a ServiceFault (Part 4 §7.35) answering the refused request, in
 *   a MSG chunk (Part 6 §6.7.2) with the channel id and token id the request used, its RequestId and its
 *   RequestHandle. The sequence number is stamped by SequenceRewriter when the chunk is emitted.
 */
import { SERVICE_FAULT_ENCODING_ID } from './constants.ts';
import { SYMMETRIC_BODY_OFFSET, SYMMETRIC_SEQUENCE_OFFSET } from './types.ts';

export { buildErrorMessage } from './transport.ts';

export interface ServiceFaultParams {
  channelId: number;
  tokenId: number;
  /** Placeholder until SequenceRewriter stamps the real one. */
  sequenceNumber?: number;
  requestId: number;
  requestHandle: number;
  statusCode: number;
  /** ResponseHeader.timestamp (Part 4 §7.33); the caller passes its clock so the builder stays pure. */
  timestamp: Date;
}

/** Part 6 §5.2.2.5 DateTime: 100 ns ticks since 1601-01-01 UTC; 0 when out of range. */
function dateTimeTicks(d: Date): bigint {
  const ms = d.getTime();
  if (!Number.isFinite(ms)) return 0n;
  const ticks = (BigInt(Math.trunc(ms)) + 11_644_473_600_000n) * 10_000n;
  return ticks < 0n || ticks > 0x7fffffffffffffffn ? 0n : ticks;
}

/** Encoded size of the ServiceFault body after its type id (a ResponseHeader with empty optional parts). */
export const SERVICE_FAULT_BODY_SIZE = 8 + 4 + 4 + 1 + 4 + 3;

/**
 * A MSG/F chunk carrying a ServiceFault: header (12) · TokenId (4) · SequenceNumber · RequestId · type id
 * ns=0;i=397 (four-byte NodeId form, Part 6 §5.2.2.9) · ResponseHeader (Part 4 §7.33): timestamp,
 * requestHandle, serviceResult, serviceDiagnostics (null DiagnosticInfo: mask 0), stringTable (empty array),
 * additionalHeader (null ExtensionObject: NodeId ns=0;i=0, encoding 0). Encoded by hand — it is 24 fixed
 * bytes — so the refusal path allocates one buffer and cannot fail; the tests decode it with node-opcua.
 */
export function buildServiceFault(p: ServiceFaultParams): Buffer {
  const size = SYMMETRIC_BODY_OFFSET + 4 + SERVICE_FAULT_BODY_SIZE;
  const out = Buffer.alloc(size);
  out.write('MSGF', 0, 'latin1');
  out.writeUInt32LE(size, 4);
  out.writeUInt32LE(p.channelId >>> 0, 8);
  out.writeUInt32LE(p.tokenId >>> 0, 12);
  out.writeUInt32LE((p.sequenceNumber ?? 0) >>> 0, SYMMETRIC_SEQUENCE_OFFSET);
  out.writeUInt32LE(p.requestId >>> 0, 20);
  let off = SYMMETRIC_BODY_OFFSET;
  out.writeUInt8(0x01, off);
  out.writeUInt8(0, off + 1);
  out.writeUInt16LE(SERVICE_FAULT_ENCODING_ID, off + 2);
  off += 4;
  out.writeBigInt64LE(dateTimeTicks(p.timestamp), off);
  out.writeUInt32LE(p.requestHandle >>> 0, off + 8);
  out.writeUInt32LE(p.statusCode >>> 0, off + 12);
  // off + 16: DiagnosticInfo mask 0 (null); stringTable length 0; NodeId 0x00 0x00; encoding 0x00 — zeros.
  return out;
}
