/**
 * CSV export of blocked events. Packet fields are attacker-controlled: every field is quoted when it holds a
 * separator, quote or line break, and a field that a spreadsheet would run as a formula (starting with
 * = + - @, tab or CR) gets a leading apostrophe (OWASP CSV injection guidance).
 */
import type { StoredEvent } from '../gateway/events.ts';

const CSV_COLUMNS = [
  'id',
  'time',
  'count',
  'verdict',
  'reason',
  'source',
  'conduit',
  'flow',
  'fromZone',
  'toZone',
  'protocol',
  'src',
  'srcPort',
  'dst',
  'dstPort',
  'inIface',
  'outIface',
  'detail',
] as const;

export function csvField(value: unknown): string {
  let s =
    value === undefined || value === null ? '' : typeof value === 'string' ? value : JSON.stringify(value);
  if (/^[=+\-@\t\r]/.test(s)) s = "'" + s;
  return /[",\r\n]/.test(s) || s.startsWith("'") ? `"${s.replace(/"/g, '""')}"` : s;
}

/** One line per event; the time as ISO 8601, which spreadsheets and people both read. */
export function csvRow(e: StoredEvent): string {
  return (
    CSV_COLUMNS.map((c) => csvField(c === 'time' ? new Date(e.time).toISOString() : e[c])).join(',') + '\r\n'
  );
}

export function csvHeader(): string {
  return CSV_COLUMNS.join(',') + '\r\n';
}
