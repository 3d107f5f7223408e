/**
 * Modbus function codes by name, and the rule for which codes a policy may name.
 *
 * Accepted codes: the public function codes of the Modbus Application Protocol Specification V1.1b3 (the
 * table below) plus the two ranges the specification reserves for user-defined functions, 65–72 and 100–110.
 * Everything else in 1..127 is either reserved or unassigned (e.g. 9, 10, 99): a policy naming such a code is
 * almost certainly a typo, so it is refused rather than silently allowed through the proxy. Codes ≥ 128 are
 * exception responses, never requests.
 */

/** Public function codes, by the names a policy uses for them. */
export const MODBUS_FUNCTIONS: ReadonlyMap<string, number> = new Map<string, number>([
  ['read-coils', 1],
  ['read-discrete-inputs', 2],
  ['read-holding-registers', 3],
  ['read-input-registers', 4],
  ['write-single-coil', 5],
  ['write-single-register', 6],
  ['read-exception-status', 7],
  ['diagnostics', 8],
  ['get-comm-event-counter', 11],
  ['get-comm-event-log', 12],
  ['write-multiple-coils', 15],
  ['write-multiple-registers', 16],
  ['report-server-id', 17],
  ['read-file-record', 20],
  ['write-file-record', 21],
  ['mask-write-register', 22],
  ['read-write-multiple-registers', 23],
  ['read-fifo-queue', 24],
  ['encapsulated-interface-transport', 43],
]);

const NAME_BY_CODE: ReadonlyMap<number, string> = new Map([...MODBUS_FUNCTIONS].map(([n, c]) => [c, n]));

/** Ranges the specification leaves to vendors (user-defined function codes). */
export const MODBUS_USER_DEFINED_RANGES: readonly (readonly [number, number])[] = [
  [65, 72],
  [100, 110],
];

/**
 * Modbus function codes that change PLC state: 5, 6, 15, 16 write coils/registers; 21 writes file records;
 * 22 masks a register; 23 reads and writes in one request (so it is a write too). The lint's notion of "write".
 */
export const MODBUS_WRITE_FUNCTIONS: ReadonlySet<number> = new Set([5, 6, 15, 16, 21, 22, 23]);

/**
 * Functions that write register or coil values: the only ones a `values` bound applies to, because only
 * their requests carry values the proxy can check. (write-file-record writes files, not values.)
 */
export const MODBUS_VALUE_WRITE_FUNCTIONS: ReadonlySet<number> = new Set([5, 6, 15, 16, 22, 23]);

export function isModbusFunctionCode(code: number): boolean {
  if (!Number.isInteger(code)) return false;
  if (NAME_BY_CODE.has(code)) return true;
  return MODBUS_USER_DEFINED_RANGES.some(([lo, hi]) => code >= lo && code <= hi);
}

/**
 * Resolves a policy entry (a name, a code, or a code written as a decimal string) to its code;
 * undefined when it names no accepted function.
 */
export function modbusFunctionCode(entry: string | number): number | undefined {
  if (typeof entry === 'number') return isModbusFunctionCode(entry) ? entry : undefined;
  const byName = MODBUS_FUNCTIONS.get(entry);
  if (byName !== undefined) return byName;
  if (/^[0-9]{1,3}$/.test(entry)) {
    const code = Number(entry);
    return isModbusFunctionCode(code) ? code : undefined;
  }
  return undefined;
}

/** Human name of a code for reports: the public name, else `user-defined-N` or `function-N`. */
export function modbusFunctionName(code: number): string {
  const name = NAME_BY_CODE.get(code);
  if (name !== undefined) return name;
  return isModbusFunctionCode(code) ? `user-defined-${code}` : `function-${code}`;
}
