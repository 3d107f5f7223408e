/**
 * The parse result shared by every protocol filter's parsers (modbus/, opcua/), so framing code and tests
 * speak one shape. Pure data.
 */

/**
 * What every parser returns. Parsers never throw: `need-more` asks for more bytes, `invalid` carries a stable
 * machine `code` (for tests and logs) and a human `reason`; `consumed` is how many input bytes the frame used.
 */
export type ParseResult<T> =
  | { kind: 'need-more' }
  | { kind: 'frame'; frame: T; consumed: number }
  | { kind: 'invalid'; reason: string; code: string };

export type Invalid = Extract<ParseResult<never>, { kind: 'invalid' }>;

/** Shared, immutable: asking for more bytes allocates nothing. */
export const NEED_MORE: { kind: 'need-more' } = Object.freeze({ kind: 'need-more' });

export function invalid(code: string, reason: string): Invalid {
  return { kind: 'invalid', code, reason };
}
