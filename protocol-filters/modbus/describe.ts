/**
 * Text for the blocked-traffic log. Only called when an event is logged, so building strings here is fine;
 * the decode/decide path never does.
 */
import { DIAGNOSTIC_SUBFUNCTIONS, FC, MEI, functionName } from './functions.ts';
import type { ModbusRequest, WrittenValues } from './types.ts';
import type { Range } from '../../policies/types.ts';

export interface RequestDescription {
  unit: number;
  function: number;
  functionName: string;
  /** e.g. "100-110", "read 0-9; write 100-101", "file 4 records 1-2", or "none". */
  addresses: string;
  /** Written values, e.g. "1", "10,20,30", "0-65535 (120 values)", "and=0x00f2 or=0x0025 → 0x0020-0x00f7". */
  values?: string;
  /** Sub-function or MEI type, when the function has one. */
  detail?: string;
}

/** Values listed one by one up to this many; beyond it, min-max and the count keep log lines short. */
const MAX_LISTED_VALUES = 16;

function span(r: Range): string {
  return r.start === r.end ? `${r.start}` : `${r.start}-${r.end}`;
}

function hex16(v: number): string {
  return `0x${v.toString(16).padStart(4, '0')}`;
}

function describeAddresses(req: ModbusRequest): string {
  if (req.files !== null) {
    return req.files
      .map((f) => `file ${f.file} records ${span({ start: f.record, end: f.record + f.count - 1 })}`)
      .join('; ');
  }
  if (req.read !== null && req.write !== null) return `read ${span(req.read)}; write ${span(req.write)}`;
  if (req.read !== null) return span(req.read);
  if (req.write !== null) return span(req.write);
  return 'none';
}

function describeValues(v: WrittenValues): string {
  if (v.encoding === 'mask' && v.data !== null && v.data.length >= 4) {
    const and = v.data.readUInt16BE(0);
    const or = v.data.readUInt16BE(2);
    return `and=${hex16(and)} or=${hex16(or)} → ${hex16(v.min)}-${hex16(v.max)}`;
  }
  if (v.count <= MAX_LISTED_VALUES && v.data !== null) {
    const list: number[] = [];
    if (v.encoding === 'bit') {
      // Write Single Coil carries 0xFF00/0x0000 rather than packed bits: its min is the value.
      if (v.count === 1) list.push(v.min);
      else for (let i = 0; i < v.count; i++) list.push(((v.data[i >> 3] ?? 0) >> (i & 7)) & 1);
    } else {
      for (let i = 0; i + 1 < v.data.length && list.length < v.count; i += 2)
        list.push(v.data.readUInt16BE(i));
    }
    return list.join(',');
  }
  if (v.min === v.max) return `${v.min} (${v.count} values)`;
  return `${v.min}-${v.max} (${v.count} values)`;
}

function describeDetail(req: ModbusRequest): string | undefined {
  if (req.subFunction === null) return undefined;
  if (req.function === FC.DIAGNOSTICS) {
    return `sub-function ${req.subFunction} (${DIAGNOSTIC_SUBFUNCTIONS[req.subFunction] ?? 'reserved'})`;
  }
  if (req.function === FC.ENCAPSULATED_INTERFACE_TRANSPORT) {
    const name =
      req.subFunction === MEI.READ_DEVICE_IDENTIFICATION
        ? 'Read Device Identification'
        : req.subFunction === MEI.CANOPEN_GENERAL_REFERENCE
          ? 'CANopen General Reference'
          : 'reserved';
    return `MEI type ${req.subFunction} (${name})`;
  }
  return `sub-function ${req.subFunction}`;
}

export function describeRequest(req: ModbusRequest): RequestDescription {
  const d: RequestDescription = {
    unit: req.unitId,
    function: req.function,
    functionName: functionName(req.function),
    addresses: describeAddresses(req),
  };
  if (req.values !== null) d.values = describeValues(req.values);
  const detail = describeDetail(req);
  if (detail !== undefined) d.detail = detail;
  return d;
}
