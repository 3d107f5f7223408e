/**
 * Public surface of the pure Modbus TCP filter: framing, parsing, decision, refusal, log text.
 *
 * How the proxy is meant to use it, per connection:
 * - client → gateway: `ModbusStreamDecoder.push(chunk)`; per frame `parseRequestAdu`; `invalid` (from either)
 *   → close this connection and log. Else `decideRequest(req, spec, mode)`:
 *   allow / would-refuse → `tracker.submit(req, null)` and write `req.adu` to the device;
 *   refuse → `tracker.submit(req, buildException(req.transactionId, req.unitId, req.function, code))`,
 *   log `describeRequest(req)`; either way write `release` (in order) to the client. `full` → the
 *   outstanding-requests limit is hit.
 * - device → gateway: a second decoder; per frame `tracker.pending(txid, unit)`: undefined → drop, log
 *   'unsolicited'; else `parseResponseAdu(adu, req)`: invalid → close; frame → `tracker.respond(txid, unit)`,
 *   write the answer, then its `release`, to the client.
 * Frames the decoder returns may view the pushed chunk: keep them only as long as that chunk is not reused.
 */
export type {
  Adu,
  FileRecordRef,
  Invalid,
  ModbusRequest,
  ModbusResponse,
  ParseResult,
  WrittenValues,
} from './types.ts';
export {
  MAX_ADU_LENGTH,
  MAX_MBAP_LENGTH,
  MIN_MBAP_LENGTH,
  ModbusStreamDecoder,
  parseMbap,
  type StreamItem,
} from './mbap.ts';
export { parseRequest, parseRequestAdu } from './pdu.ts';
export {
  TransactionTracker,
  expectsResponse,
  parseResponse,
  parseResponseAdu,
  type ResponseMatch,
  type SubmitResult,
} from './response.ts';
export { covered, decideRequest, REASONS, type Decision, type RefusalCode } from './decide.ts';
export { buildException, EXCEPTION_ADU_LENGTH } from './exception.ts';
export { describeRequest, type RequestDescription } from './describe.ts';
export { DIAGNOSTIC_SUBFUNCTIONS, EXCEPTION, FC, MEI, exceptionName, functionName } from './functions.ts';
