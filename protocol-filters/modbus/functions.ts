/**
 * Function codes, sub-functions and exception codes of the Modbus Application Protocol Specification V1.1b3
 * (cited as "MB §x"). Names are precomputed at load so that naming a function never builds a string on the
 * hot path.
 */
import { MODBUS_USER_DEFINED_RANGES } from '../../policies/modbus-functions.ts';

export const FC = {
  READ_COILS: 0x01, // MB §6.1
  READ_DISCRETE_INPUTS: 0x02, // MB §6.2
  READ_HOLDING_REGISTERS: 0x03, // MB §6.3
  READ_INPUT_REGISTERS: 0x04, // MB §6.4
  WRITE_SINGLE_COIL: 0x05, // MB §6.5
  WRITE_SINGLE_REGISTER: 0x06, // MB §6.6
  READ_EXCEPTION_STATUS: 0x07, // MB §6.7 (serial line only)
  DIAGNOSTICS: 0x08, // MB §6.8
  GET_COMM_EVENT_COUNTER: 0x0b, // MB §6.9 (serial line only)
  GET_COMM_EVENT_LOG: 0x0c, // MB §6.10 (serial line only)
  WRITE_MULTIPLE_COILS: 0x0f, // MB §6.11
  WRITE_MULTIPLE_REGISTERS: 0x10, // MB §6.12
  REPORT_SERVER_ID: 0x11, // MB §6.13 (serial line only)
  READ_FILE_RECORD: 0x14, // MB §6.14
  WRITE_FILE_RECORD: 0x15, // MB §6.15
  MASK_WRITE_REGISTER: 0x16, // MB §6.16
  READ_WRITE_MULTIPLE_REGISTERS: 0x17, // MB §6.17
  READ_FIFO_QUEUE: 0x18, // MB §6.18
  ENCAPSULATED_INTERFACE_TRANSPORT: 0x2b, // MB §6.19
} as const;

/** MEI types of function 43 (MB §6.19). */
export const MEI = {
  CANOPEN_GENERAL_REFERENCE: 0x0d, // MB §6.20
  READ_DEVICE_IDENTIFICATION: 0x0e, // MB §6.21
} as const;

const FUNCTION_NAMES: Record<number, string> = {
  0x01: 'Read Coils',
  0x02: 'Read Discrete Inputs',
  0x03: 'Read Holding Registers',
  0x04: 'Read Input Registers',
  0x05: 'Write Single Coil',
  0x06: 'Write Single Register',
  0x07: 'Read Exception Status',
  0x08: 'Diagnostics',
  0x0b: 'Get Comm Event Counter',
  0x0c: 'Get Comm Event Log',
  0x0f: 'Write Multiple Coils',
  0x10: 'Write Multiple Registers',
  0x11: 'Report Server ID',
  0x14: 'Read File Record',
  0x15: 'Write File Record',
  0x16: 'Mask Write Register',
  0x17: 'Read/Write Multiple Registers',
  0x18: 'Read FIFO Queue',
  0x2b: 'Encapsulated Interface Transport',
};

/** MB §5.1 user-defined codes (the ranges the policy validator accepts too); other unassigned codes are reserved. */
function isUserDefined(fn: number): boolean {
  return MODBUS_USER_DEFINED_RANGES.some(([lo, hi]) => fn >= lo && fn <= hi);
}

const NAME_TABLE: readonly string[] = Array.from({ length: 256 }, (_, fn) => {
  if (fn === 0) return 'invalid function 0';
  if (fn >= 0x80) return `exception response 0x${fn.toString(16)}`;
  return (
    FUNCTION_NAMES[fn] ?? (isUserDefined(fn) ? `user-defined function ${fn}` : `unassigned function ${fn}`)
  );
});

export function functionName(fn: number): string {
  return NAME_TABLE[fn & 0xff] ?? 'invalid function';
}

/** Diagnostics sub-functions (MB §6.8.1); the rest are reserved. */
export const DIAGNOSTIC_SUBFUNCTIONS: Readonly<Record<number, string>> = {
  0x00: 'Return Query Data',
  0x01: 'Restart Communications Option',
  0x02: 'Return Diagnostic Register',
  0x03: 'Change ASCII Input Delimiter',
  0x04: 'Force Listen Only Mode',
  0x0a: 'Clear Counters and Diagnostic Register',
  0x0b: 'Return Bus Message Count',
  0x0c: 'Return Bus Communication Error Count',
  0x0d: 'Return Bus Exception Error Count',
  0x0e: 'Return Server Message Count',
  0x0f: 'Return Server No Response Count',
  0x10: 'Return Server NAK Count',
  0x11: 'Return Server Busy Count',
  0x12: 'Return Bus Character Overrun Count',
  0x14: 'Clear Overrun Counter and Flag',
};

/** Exception codes (MB §7). */
export const EXCEPTION = {
  ILLEGAL_FUNCTION: 0x01,
  ILLEGAL_DATA_ADDRESS: 0x02,
  ILLEGAL_DATA_VALUE: 0x03,
  SERVER_DEVICE_FAILURE: 0x04,
  ACKNOWLEDGE: 0x05,
  SERVER_DEVICE_BUSY: 0x06,
  MEMORY_PARITY_ERROR: 0x08,
  GATEWAY_PATH_UNAVAILABLE: 0x0a,
  GATEWAY_TARGET_FAILED_TO_RESPOND: 0x0b,
} as const;

const EXCEPTION_NAMES: Readonly<Record<number, string>> = {
  0x01: 'Illegal Function',
  0x02: 'Illegal Data Address',
  0x03: 'Illegal Data Value',
  0x04: 'Server Device Failure',
  0x05: 'Acknowledge',
  0x06: 'Server Device Busy',
  0x08: 'Memory Parity Error',
  0x0a: 'Gateway Path Unavailable',
  0x0b: 'Gateway Target Device Failed to Respond',
};

export function exceptionName(code: number): string {
  return EXCEPTION_NAMES[code] ?? 'Unknown Exception';
}
