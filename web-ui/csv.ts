/**
 * CSV export of blocked events. Packet fields are attacker-controlled: every field is quoted when it holds a
 * separator, quote or line break, and a field that a spreadsheet would run as a formula (starting with
 * = + - @, tab or CR) gets a leading apostrophe (OWASP CSV injection guidance).
 */
import type { StoredEvent } from '../gateway/events.ts';

export const CSV_COLUMNS = [
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

export function csvRow(e: StoredEvent): string {
  const rec: Record<(typeof CSV_COLUMNS)[number], unknown> = {
    id: e.id,
    time: new Date(e.time).toISOString(),
    count: e.count,
    verdict: e.verdict,
    reason: e.reason,
    source: e.source,
    conduit: e.conduit,
    flow: e.flow,
    fromZone: e.fromZone,
    toZone: e.toZone,
    protocol: e.protocol,
    src: e.src,
    srcPort: e.srcPort,
    dst: e.dst,
    dstPort: e.dstPort,
    inIface: e.inIface,
    outIface: e.outIface,
    detail: e.detail,
  };
  return CSV_COLUMNS.map((c) => csvField(rec[c])).join(',') + '\r\n';
}

export function csvHeader(): string {
  return CSV_COLUMNS.join(',') + '\r\n';
}
