/**
 * Encoders for building Modbus TCP frames: used by the tests here and handy for the proxy's end-to-end tests
 * (malformed frames included, so nothing here validates).
 */

/** Big-endian 16-bit value as two bytes (MB §4.2). */
export function u16(v: number): number[] {
  return [(v >> 8) & 0xff, v & 0xff];
}

/** MBAP header (TCP §3.1.3) + PDU. `length` overrides the length field (default: 1 + PDU length). */
export function encodeAdu(
  transactionId: number,
  unitId: number,
  pdu: readonly number[] | Buffer,
  options: { protocolId?: number; length?: number } = {},
): Buffer {
  const body = Buffer.from(pdu);
  const head = Buffer.from([
    ...u16(transactionId),
    ...u16(options.protocolId ?? 0),
    ...u16(options.length ?? body.length + 1),
    unitId & 0xff,
  ]);
  return Buffer.concat([head, body]);
}
