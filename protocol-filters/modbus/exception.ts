/**
 * Exception ADUs the gateway sends in place of a refused request.
 * MB §7: exception response PDU = function code | 0x80, exception code (1 byte).
 * TCP §3.1.3: the MBAP header copies the request's transaction id and unit id; protocol id 0; length 3
 * (unit id + 2-byte PDU).
 */

export const EXCEPTION_ADU_LENGTH = 9;

function checkByte(name: string, v: number, min: number, max: number): void {
  // Programmer errors, not input: the arguments come from a parsed request and the decision.
  if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${name} ${v} outside ${min}..${max}`);
}

export function buildException(transactionId: number, unitId: number, fn: number, code: number): Buffer {
  checkByte('transaction id', transactionId, 0, 0xffff);
  checkByte('unit id', unitId, 0, 0xff);
  checkByte('function', fn, 1, 0x7f);
  checkByte('exception code', code, 1, 0xff);
  const b = Buffer.allocUnsafe(EXCEPTION_ADU_LENGTH);
  b.writeUInt16BE(transactionId, 0);
  b.writeUInt16BE(0, 2);
  b.writeUInt16BE(3, 4);
  b[6] = unitId;
  b[7] = fn | 0x80;
  b[8] = code;
  return b;
}
