/**
 * Request PDU parsing, function by function, per the Modbus Application Protocol Specification V1.1b3
 * ("MB §x"). The parser checks structure only (lengths, counts, ranges the spec fixes); what is *allowed* is
 * the decision's job (decide.ts). Every read is preceded by a length check, so no input can make it throw.
 */
import { FC, MEI } from './functions.ts';
import { invalid, parseMbap } from './mbap.ts';
import type { Adu, FileRecordRef, ModbusRequest, ParseResult, WrittenValues } from './types.ts';
import type { Range } from '../../policies/types.ts';

/** MB §6.1/§6.2: 1..2000 coils or discrete inputs per read. */
export const MAX_READ_BITS = 2000;
/** MB §6.3/§6.4/§6.17: 1..125 registers per read. */
export const MAX_READ_REGISTERS = 125;
/** MB §6.11: 1..1968 coils per write. */
export const MAX_WRITE_COILS = 1968;
/** MB §6.12: 1..123 registers per write. */
export const MAX_WRITE_REGISTERS = 123;
/** MB §6.17: 1..121 registers written by Read/Write Multiple Registers. */
export const MAX_READ_WRITE_REGISTERS = 121;
/** MB §4.1: a PDU is at most 253 bytes (also bounds the response a request asks for). */
export const MAX_PDU_LENGTH = 253;
/** MB §6.14/§6.15: file record numbers are 0x0000..0x270F; reference type is always 6. */
const MAX_RECORD_NUMBER = 0x270f;
const FILE_REFERENCE_TYPE = 6;

type RequestResult = ParseResult<ModbusRequest>;

function request(
  adu: Adu,
  fn: number,
  read: Range | null,
  write: Range | null,
  values: WrittenValues | null,
): RequestResult {
  return frame(adu, fn, null, read, write, null, values, false, true);
}

function frame(
  adu: Adu,
  fn: number,
  subFunction: number | null,
  read: Range | null,
  write: Range | null,
  files: FileRecordRef[] | null,
  values: WrittenValues | null,
  opaque: boolean,
  known: boolean,
): RequestResult {
  return {
    kind: 'frame',
    frame: {
      transactionId: adu.transactionId,
      unitId: adu.unitId,
      function: fn,
      subFunction,
      read,
      write,
      files,
      values,
      opaque,
      known,
      pdu: adu.pdu,
      adu: adu.bytes,
    },
    consumed: adu.bytes.length,
  };
}

function badLength(fn: number, got: number, want: string): RequestResult {
  return invalid('pdu.length', `function ${fn}: PDU of ${got} bytes, expected ${want}`);
}

/**
 * Address + quantity: quantity in 1..max and the range ending at or below 65535 (MB §4.4: addresses are
 * 0..65535; a range running past it cannot exist).
 */
function range(fn: number, start: number, quantity: number, max: number): Range | RequestResult {
  if (quantity < 1 || quantity > max) {
    return invalid('pdu.quantity', `function ${fn}: quantity ${quantity} outside 1..${max}`);
  }
  if (start + quantity > 0x10000) {
    return invalid(
      'pdu.address-overflow',
      `function ${fn}: address ${start} + quantity ${quantity} runs past 65535`,
    );
  }
  return { start, end: start + quantity - 1 };
}

function isRange(r: Range | RequestResult): r is Range {
  return !('kind' in r);
}

/** Min/max over `count` packed coil bits (MB §6.11: LSB of the first byte is the first coil). */
function bitValues(data: Buffer, count: number): WrittenValues {
  let ones = 0;
  for (let i = 0; i < count; i++) {
    if (((data[i >> 3] ?? 0) >> (i & 7)) & 1) ones++;
  }
  return { encoding: 'bit', count, min: ones === count ? 1 : 0, max: ones > 0 ? 1 : 0, data };
}

/** Min/max over `count` big-endian registers (MB §4.2). */
function wordValues(data: Buffer, count: number): WrittenValues {
  let min = 0xffff;
  let max = 0;
  for (let i = 0; i < count; i++) {
    const v = data.readUInt16BE(i * 2);
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { encoding: 'word', count, min, max, data };
}

/** Parses the PDU of a framed request ADU. */
export function parseRequestAdu(adu: Adu): RequestResult {
  const pdu = adu.pdu;
  const n = pdu.length;
  // MBAP framing guarantees n >= 1 (length >= 2); checked again so this function stands alone.
  if (n < 1) return invalid('pdu.length', 'empty PDU');
  const fn = pdu[0] ?? 0;
  if (fn === 0) return invalid('pdu.function-zero', 'function code 0 is not valid (MB §5.1)');
  if (fn >= 0x80) {
    // MB §7: function | 0x80 marks exception responses; a request can never carry it.
    return invalid('pdu.function-exception-bit', `function code ${fn} ≥ 128 in a request`);
  }
  switch (fn) {
    case FC.READ_COILS: // MB §6.1
    case FC.READ_DISCRETE_INPUTS: // MB §6.2
    case FC.READ_HOLDING_REGISTERS: // MB §6.3
    case FC.READ_INPUT_REGISTERS: {
      // MB §6.4
      if (n !== 5) return badLength(fn, n, '5');
      const max = fn <= FC.READ_DISCRETE_INPUTS ? MAX_READ_BITS : MAX_READ_REGISTERS;
      const r = range(fn, pdu.readUInt16BE(1), pdu.readUInt16BE(3), max);
      return isRange(r) ? request(adu, fn, r, null, null) : r;
    }
    case FC.WRITE_SINGLE_COIL: {
      // MB §6.5: the output value is 0xFF00 (ON) or 0x0000 (OFF); anything else is illegal.
      if (n !== 5) return badLength(fn, n, '5');
      const address = pdu.readUInt16BE(1);
      const value = pdu.readUInt16BE(3);
      if (value !== 0x0000 && value !== 0xff00) {
        return invalid(
          'pdu.coil-value',
          `function 5: coil value 0x${value.toString(16)}, expected 0 or 0xff00`,
        );
      }
      const bit = value === 0 ? 0 : 1;
      return request(
        adu,
        fn,
        null,
        { start: address, end: address },
        {
          encoding: 'bit',
          count: 1,
          min: bit,
          max: bit,
          data: pdu.subarray(3, 5),
        },
      );
    }
    case FC.WRITE_SINGLE_REGISTER: {
      // MB §6.6
      if (n !== 5) return badLength(fn, n, '5');
      const address = pdu.readUInt16BE(1);
      return request(adu, fn, null, { start: address, end: address }, wordValues(pdu.subarray(3, 5), 1));
    }
    case FC.READ_EXCEPTION_STATUS: // MB §6.7
    case FC.GET_COMM_EVENT_COUNTER: // MB §6.9
    case FC.GET_COMM_EVENT_LOG: // MB §6.10
    case FC.REPORT_SERVER_ID: // MB §6.13
      // Function code only: no data field.
      if (n !== 1) return badLength(fn, n, '1');
      return request(adu, fn, null, null, null);
    case FC.DIAGNOSTICS:
      return parseDiagnostics(adu, pdu);
    case FC.WRITE_MULTIPLE_COILS: {
      // MB §6.11: address, quantity 1..1968, byte count N = ceil(quantity / 8), N bytes of packed coils.
      if (n < 6) return badLength(fn, n, '≥ 6');
      const r = range(fn, pdu.readUInt16BE(1), pdu.readUInt16BE(3), MAX_WRITE_COILS);
      if (!isRange(r)) return r;
      const count = r.end - r.start + 1;
      const byteCount = pdu[5] ?? 0;
      if (byteCount !== (count + 7) >> 3) {
        return invalid('pdu.byte-count', `function 15: byte count ${byteCount} for ${count} coils`);
      }
      if (n !== 6 + byteCount) return badLength(fn, n, `${6 + byteCount} (byte count ${byteCount})`);
      return request(adu, fn, null, r, bitValues(pdu.subarray(6), count));
    }
    case FC.WRITE_MULTIPLE_REGISTERS: {
      // MB §6.12: address, quantity 1..123, byte count N = 2 × quantity, N bytes of registers.
      if (n < 6) return badLength(fn, n, '≥ 6');
      const r = range(fn, pdu.readUInt16BE(1), pdu.readUInt16BE(3), MAX_WRITE_REGISTERS);
      if (!isRange(r)) return r;
      const count = r.end - r.start + 1;
      const byteCount = pdu[5] ?? 0;
      if (byteCount !== count * 2) {
        return invalid('pdu.byte-count', `function 16: byte count ${byteCount} for ${count} registers`);
      }
      if (n !== 6 + byteCount) return badLength(fn, n, `${6 + byteCount} (byte count ${byteCount})`);
      return request(adu, fn, null, r, wordValues(pdu.subarray(6), count));
    }
    case FC.READ_FILE_RECORD:
      return parseReadFileRecord(adu, pdu);
    case FC.WRITE_FILE_RECORD:
      return parseWriteFileRecord(adu, pdu);
    case FC.MASK_WRITE_REGISTER: {
      // MB §6.16: address, AND mask, OR mask. Result = (current AND and) OR (or AND NOT and): bits where the
      // and-mask is 1 keep the register's (unknown) value, the others take the or-mask's, hence these bounds.
      if (n !== 7) return badLength(fn, n, '7');
      const address = pdu.readUInt16BE(1);
      const and = pdu.readUInt16BE(3);
      const or = pdu.readUInt16BE(5);
      const min = or & ~and & 0xffff;
      return request(
        adu,
        fn,
        null,
        { start: address, end: address },
        {
          encoding: 'mask',
          count: 1,
          min,
          max: min | and,
          data: pdu.subarray(3, 7),
        },
      );
    }
    case FC.READ_WRITE_MULTIPLE_REGISTERS: {
      // MB §6.17: read address, read quantity 1..125, write address, write quantity 1..121,
      // write byte count = 2 × write quantity, then the registers. The write happens before the read.
      if (n < 10) return badLength(fn, n, '≥ 10');
      const read = range(fn, pdu.readUInt16BE(1), pdu.readUInt16BE(3), MAX_READ_REGISTERS);
      if (!isRange(read)) return read;
      const write = range(fn, pdu.readUInt16BE(5), pdu.readUInt16BE(7), MAX_READ_WRITE_REGISTERS);
      if (!isRange(write)) return write;
      const count = write.end - write.start + 1;
      const byteCount = pdu[9] ?? 0;
      if (byteCount !== count * 2) {
        return invalid('pdu.byte-count', `function 23: byte count ${byteCount} for ${count} registers`);
      }
      if (n !== 10 + byteCount) return badLength(fn, n, `${10 + byteCount} (byte count ${byteCount})`);
      return request(adu, fn, read, write, wordValues(pdu.subarray(10), count));
    }
    case FC.READ_FIFO_QUEUE: {
      // MB §6.18: FIFO pointer address only; the device returns up to 31 queued registers from it.
      if (n !== 3) return badLength(fn, n, '3');
      const address = pdu.readUInt16BE(1);
      return request(adu, fn, { start: address, end: address }, null, null);
    }
    case FC.ENCAPSULATED_INTERFACE_TRANSPORT:
      return parseEncapsulated(adu, pdu);
    default:
      // MB §5.1: other codes are reserved or user-defined (65–72, 100–110). Still a frame, so the decision
      // can answer exception 01 like a device would and keep the connection; its data is opaque.
      return frame(adu, fn, null, null, null, null, null, true, false);
  }
}

/**
 * MB §6.8: sub-function (2 bytes) + data. §6.8.1: sub-function 0 (Return Query Data) echoes N × 2 bytes of
 * any data; every other sub-function carries exactly 2 bytes: 0x0000, except 01 (Restart Communications:
 * 0x0000 or 0xFF00) and 03 (Change ASCII Input Delimiter: char, 0x00). Reserved sub-functions keep the
 * 2-byte shape and are left for the device to refuse.
 */
function parseDiagnostics(adu: Adu, pdu: Buffer): RequestResult {
  const n = pdu.length;
  if (n < 3) return badLength(FC.DIAGNOSTICS, n, '≥ 3');
  const sub = pdu.readUInt16BE(1);
  const dataLength = n - 3;
  if (sub === 0) {
    if (dataLength % 2 !== 0) return badLength(FC.DIAGNOSTICS, n, 'odd data: N × 2 bytes');
  } else {
    if (dataLength !== 2) return badLength(FC.DIAGNOSTICS, n, '5');
    const data = pdu.readUInt16BE(3);
    const ok =
      sub === 0x01
        ? data === 0x0000 || data === 0xff00
        : sub === 0x03
          ? (data & 0xff) === 0
          : sub > 0x14 || sub === 0x13 || (sub >= 0x05 && sub <= 0x09) || data === 0;
    if (!ok) {
      return invalid('pdu.diagnostic-data', `function 8 sub-function ${sub}: data 0x${data.toString(16)}`);
    }
  }
  return frame(adu, FC.DIAGNOSTICS, sub, null, null, null, null, false, true);
}

/**
 * MB §6.14: byte count 0x07..0xF5, then 7-byte sub-requests: reference type 6, file number 1..0xFFFF, record
 * number 0..0x270F, record length. The response (function, length, and per sub-request length, type and
 * 2 × record length bytes) must fit in a 253-byte PDU.
 */
function parseReadFileRecord(adu: Adu, pdu: Buffer): RequestResult {
  const fn = FC.READ_FILE_RECORD;
  const n = pdu.length;
  if (n < 2) return badLength(fn, n, '≥ 2');
  const byteCount = pdu[1] ?? 0;
  if (byteCount < 0x07 || byteCount > 0xf5 || byteCount % 7 !== 0) {
    return invalid('pdu.byte-count', `function 20: byte count ${byteCount}, expected 7..245 in steps of 7`);
  }
  if (n !== 2 + byteCount) return badLength(fn, n, `${2 + byteCount} (byte count ${byteCount})`);
  const files: FileRecordRef[] = [];
  let responseLength = 2;
  for (let off = 2; off < n; off += 7) {
    const sub = fileSubRequest(pdu, off);
    if ('kind' in sub) return sub;
    if (sub.count < 1) return invalid('pdu.quantity', 'function 20: record length 0');
    responseLength += 2 + sub.count * 2;
    if (responseLength > MAX_PDU_LENGTH) {
      return invalid(
        'pdu.response-too-long',
        'function 20: the requested records exceed a 253-byte response',
      );
    }
    files.push(sub);
  }
  return frame(adu, fn, null, null, null, files, null, true, true);
}

/**
 * MB §6.15: request data length 0x09..0xFB, then sub-requests: reference type 6, file number, record number,
 * record length N, N registers of data. The sub-requests must exactly fill the data length.
 */
function parseWriteFileRecord(adu: Adu, pdu: Buffer): RequestResult {
  const fn = FC.WRITE_FILE_RECORD;
  const n = pdu.length;
  if (n < 2) return badLength(fn, n, '≥ 2');
  const byteCount = pdu[1] ?? 0;
  if (byteCount < 0x09 || byteCount > 0xfb) {
    return invalid('pdu.byte-count', `function 21: request data length ${byteCount} outside 9..251`);
  }
  if (n !== 2 + byteCount) return badLength(fn, n, `${2 + byteCount} (byte count ${byteCount})`);
  const files: FileRecordRef[] = [];
  let min = 0xffff;
  let max = 0;
  let count = 0;
  let off = 2;
  while (off < n) {
    if (off + 7 > n) return invalid('pdu.byte-count', 'function 21: truncated sub-request header');
    const sub = fileSubRequest(pdu, off);
    if ('kind' in sub) return sub;
    if (sub.count < 1) return invalid('pdu.quantity', 'function 21: record length 0');
    off += 7;
    const end = off + sub.count * 2;
    if (end > n) return invalid('pdu.byte-count', 'function 21: record data runs past the data length');
    for (; off < end; off += 2) {
      const v = pdu.readUInt16BE(off);
      if (v < min) min = v;
      if (v > max) max = v;
    }
    count += sub.count;
    files.push(sub);
  }
  return frame(
    adu,
    fn,
    null,
    null,
    null,
    files,
    { encoding: 'word', count, min, max, data: null },
    true,
    true,
  );
}

function fileSubRequest(pdu: Buffer, off: number): FileRecordRef | RequestResult {
  const fn = pdu[0] ?? 0;
  const type = pdu[off] ?? 0;
  if (type !== FILE_REFERENCE_TYPE) {
    return invalid('pdu.file-reference-type', `function ${fn}: reference type ${type}, expected 6`);
  }
  const file = pdu.readUInt16BE(off + 1);
  const record = pdu.readUInt16BE(off + 3);
  if (file === 0) return invalid('pdu.file-number', `function ${fn}: file number 0`);
  if (record > MAX_RECORD_NUMBER) {
    return invalid('pdu.record-number', `function ${fn}: record number ${record} > 9999`);
  }
  return { file, record, count: pdu.readUInt16BE(off + 5) };
}

/**
 * MB §6.19: MEI type selects the encapsulated service. §6.21 (MEI 14, Read Device Identification): read
 * device id code 1..4 and an object id, nothing else. §6.20 (MEI 13, CANopen General Reference) carries
 * CANopen PDUs that can read and write any object: known, but opaque. Other MEI types are reserved: opaque.
 */
function parseEncapsulated(adu: Adu, pdu: Buffer): RequestResult {
  const fn = FC.ENCAPSULATED_INTERFACE_TRANSPORT;
  const n = pdu.length;
  if (n < 2) return badLength(fn, n, '≥ 2');
  const mei = pdu[1] ?? 0;
  if (mei === MEI.READ_DEVICE_IDENTIFICATION) {
    if (n !== 4) return badLength(fn, n, '4');
    const code = pdu[2] ?? 0;
    if (code < 1 || code > 4) {
      return invalid('pdu.device-id-code', `function 43/14: read device id code ${code}, expected 1..4`);
    }
    return frame(adu, fn, mei, null, null, null, null, false, true);
  }
  return frame(adu, fn, mei, null, null, null, null, true, mei === MEI.CANOPEN_GENERAL_REFERENCE);
}

/** Frames and parses one request ADU at the start of `buf` (MBAP, then PDU). */
export function parseRequest(buf: Buffer): RequestResult {
  const r = parseMbap(buf);
  return r.kind === 'frame' ? parseRequestAdu(r.frame) : r;
}
