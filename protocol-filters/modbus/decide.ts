/**
 * The pure allow/refuse decision for one parsed request against a flow's validated Modbus rules.
 *
 * A request passes only when its unit id is allowed and ONE rule of the flow lists its function, covers every
 * address it touches (read and write ranges alike: 23 needs both in the same rule) and, when that rule bounds
 * values, sees every written value (WrittenValues.min..max, see types.ts for coils and masks) inside them.
 *
 * Exception codes, as a device would answer (MB §7):
 * - 01 Illegal Function: no rule lists the function (also unknown/user-defined codes no rule lists, and
 *   function 43 with an MEI type other than 14, see below).
 * - 02 Illegal Data Address: rules list the function but none covers all its addresses. Requests whose data
 *   cannot be placed in the 0..65535 address space (`opaque`: file records of 20/21, user-defined or unknown
 *   functions) are covered only by a rule without address ranges.
 * - 03 Illegal Data Value: some rule lists the function and covers the addresses, but its value bounds
 *   exclude a written value.
 * - 0A Gateway Path Unavailable: the unit id is not allowed on this flow. The issue leaves this open. A unit
 *   id selects a device behind a gateway (TCP §3.1.3, "Unit Identifier"), and Sluice is that gateway: the policy gives the client
 *   no path to that unit, which is exactly what 0A says ("the gateway was unable to allocate an internal
 *   communication path", MB §7). 0B would claim the device was tried and stayed silent, which is false and makes
 *   masters retry; 01–03 would claim the unit exists and rejected the request, misleading operators and
 *   telling a scanner which unit ids are real.
 *
 * Function 43 (Encapsulated Interface Transport) is allowed only as MEI 14, Read Device Identification (a
 * read-only service). MEI 13 (CANopen General Reference) reads and writes arbitrary CANopen objects and
 * reserved MEI types are undefined; a rule's function list cannot say which MEI it meant, so they always get
 * 01 — a policy-model limitation to lift by adding MEI types to ModbusRule if ever needed.
 * Diagnostics (8) is allowed as a whole when a rule lists it, every sub-function included (restart, listen-only).
 */
import { FC, MEI, EXCEPTION } from './functions.ts';
import type { ModbusRequest } from './types.ts';
import type { ConduitMode, ModbusRule, ModbusSpec, Range } from '../../policies/types.ts';

export type RefusalCode = 0x01 | 0x02 | 0x03 | 0x0a;

export type Decision =
  | { verdict: 'allow' }
  /** enforce mode: answer the exception, never forward. */
  | { verdict: 'refuse'; exceptionCode: RefusalCode; reason: string }
  /** monitor mode: forward anyway, log what enforce would have done. */
  | { verdict: 'would-refuse'; exceptionCode: RefusalCode; reason: string };

/** The allow path, the hot one, returns this shared object: no allocation. */
const ALLOW: Decision = Object.freeze({ verdict: 'allow' });

export const REASONS = {
  unit: 'unit id not allowed on this flow',
  function: 'function not allowed on this flow',
  mei: 'function 43 is allowed only as MEI 14 (Read Device Identification)',
  address: 'address outside the allowed ranges',
  opaque: 'request reaches data outside the address ranges (file records or unknown function)',
  value: 'written value out of bounds',
} as const;

function refuse(mode: ConduitMode, exceptionCode: RefusalCode, reason: string): Decision {
  return { verdict: mode === 'monitor' ? 'would-refuse' : 'refuse', exceptionCode, reason };
}

/** Is every address of `want` in the union of `ranges` (ranges may be unsorted, overlapping or adjacent)? */
export function covered(ranges: readonly Range[], want: Range): boolean {
  let next = want.start;
  // Each pass moves `next` past one range holding it; at most ranges.length passes, no allocation.
  for (let pass = 0; pass <= ranges.length; pass++) {
    let advanced = false;
    for (const r of ranges) {
      if (r.start <= next && next <= r.end) {
        if (r.end >= want.end) return true;
        next = r.end + 1;
        advanced = true;
      }
    }
    if (!advanced) return false;
  }
  return false;
}

function coversAddresses(rule: ModbusRule, req: ModbusRequest): boolean {
  const ranges = rule.addresses;
  if (ranges === null) return true;
  if (req.opaque) return false;
  if (req.read !== null && !covered(ranges, req.read)) return false;
  if (req.write !== null && !covered(ranges, req.write)) return false;
  return true;
}

function valuesInBounds(rule: ModbusRule, req: ModbusRequest): boolean {
  const bounds = rule.values;
  const values = req.values;
  if (bounds === undefined || values === null) return true;
  return values.min >= bounds.start && values.max <= bounds.end;
}

export function decideRequest(req: ModbusRequest, spec: ModbusSpec, mode: ConduitMode): Decision {
  if (spec.unitIds !== null && !spec.unitIds.includes(req.unitId)) {
    return refuse(mode, EXCEPTION.GATEWAY_PATH_UNAVAILABLE, REASONS.unit);
  }
  if (
    req.function === FC.ENCAPSULATED_INTERFACE_TRANSPORT &&
    req.subFunction !== MEI.READ_DEVICE_IDENTIFICATION
  ) {
    const listed43 = spec.rules.some((r) => r.functions.includes(FC.ENCAPSULATED_INTERFACE_TRANSPORT));
    return refuse(mode, EXCEPTION.ILLEGAL_FUNCTION, listed43 ? REASONS.mei : REASONS.function);
  }
  let listed = false;
  let addressOk = false;
  for (const rule of spec.rules) {
    if (!rule.functions.includes(req.function)) continue;
    listed = true;
    if (!coversAddresses(rule, req)) continue;
    addressOk = true;
    if (valuesInBounds(rule, req)) return ALLOW;
  }
  if (!listed) return refuse(mode, EXCEPTION.ILLEGAL_FUNCTION, REASONS.function);
  if (!addressOk) {
    return refuse(mode, EXCEPTION.ILLEGAL_DATA_ADDRESS, req.opaque ? REASONS.opaque : REASONS.address);
  }
  return refuse(mode, EXCEPTION.ILLEGAL_DATA_VALUE, REASONS.value);
}
