/**
 * Shared result and frame types of the Modbus TCP filter. Everything here is data: the parsers build these
 * values, the decision reads them, the proxy forwards `adu` bytes untouched when a request is allowed.
 */
import type { Range } from '../../policies/types.ts';

// One definition for both filters (core/parse.ts); re-exported so this folder's imports stay local.
export type { Invalid, ParseResult } from '../core/parse.ts';

/** One Modbus TCP application data unit (MBAP header + PDU), as framed by the MBAP length field. */
export interface Adu {
  transactionId: number;
  unitId: number;
  /** Function code and data: a view into `bytes` (never a copy). */
  pdu: Buffer;
  /** The whole ADU, header included: what the proxy forwards when the request is allowed. */
  bytes: Buffer;
}

/**
 * Values a request writes, summarised so the decision needs no array: every value lies in `min..max`.
 * - `bit`: coils (5, 15); each value is 0 or 1 (5's 0xFF00 is reported as 1).
 * - `word`: registers (6, 16, 23) and file record data (21); each value is 0..65535.
 * - `mask`: 22 Mask Write Register. The written value depends on the register's current content
 *   (`(current AND and) OR (or AND NOT and)`); `min`/`max` are the lowest and highest value the write can
 *   produce whatever the register held (`or & ~and` and `(or & ~and) | and`), so a bound check on them holds
 *   for every outcome.
 */
export interface WrittenValues {
  encoding: 'bit' | 'word' | 'mask';
  /** Number of values written (1 for 5, 6 and 22). */
  count: number;
  min: number;
  max: number;
  /**
   * The raw value bytes (a view into the PDU) when they are contiguous: 15 (packed bits), 16/23 (registers),
   * 5/6 (the value field); for 22 the and-mask then the or-mask. Null for 21 (data interleaved with headers).
   */
  data: Buffer | null;
}

/** One sub-request of Read/Write File Record (20/21): `count` records from `record` in file `file`. */
export interface FileRecordRef {
  file: number;
  record: number;
  count: number;
}

/** A parsed, structurally valid request. Every field is always present (null when unused). */
export interface ModbusRequest {
  transactionId: number;
  unitId: number;
  /** Function code 1..127. */
  function: number;
  /** Diagnostics (8) sub-function, Encapsulated Interface Transport (43) MEI type; otherwise null. */
  subFunction: number | null;
  /** The data-table range it reads (inclusive), or null. */
  read: Range | null;
  /** The data-table range it writes (inclusive), or null. */
  write: Range | null;
  /** File records touched by 20/21 (file number × record number, another address space), else null. */
  files: FileRecordRef[] | null;
  values: WrittenValues | null;
  /**
   * True when the request may reach data the parser cannot place in the 0..65535 address space: unknown or
   * user-defined functions, file records, CANopen and reserved MEI types. A rule with address ranges never
   * covers such a request.
   */
  opaque: boolean;
  /** False for function codes (or MEI types) this parser does not know; their data is not checked. */
  known: boolean;
  pdu: Buffer;
  adu: Buffer;
}

/** A parsed response from the device, already checked against the request it answers. */
export interface ModbusResponse {
  transactionId: number;
  unitId: number;
  /** Function code of the request (without the exception bit). */
  function: number;
  /** Exception code when the device answered with an exception (function | 0x80), else null. */
  exception: number | null;
  pdu: Buffer;
  adu: Buffer;
}
