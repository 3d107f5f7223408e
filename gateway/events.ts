/**
 * The blocked-traffic event: one record per refused packet or request, whatever refused it (nftables via
 * NFLOG → ulogd2, or a protocol filter). Every producer converts to this shape before the log store sees it,
 * so the store, the CLI and the UI handle one type.
 */

/** `would-*` verdicts come from conduits in monitor mode: the traffic passed but would have been refused. */
export type BlockedVerdict = 'drop' | 'would-drop' | 'refuse' | 'would-refuse';
export const BLOCKED_VERDICTS: readonly BlockedVerdict[] = ['drop', 'would-drop', 'refuse', 'would-refuse'];

/** Who refused it: the packet filter (NFLOG) or one of the deep-inspection proxies. */
export type BlockedSource = 'nflog' | 'modbus' | 'opcua';
export const BLOCKED_SOURCES: readonly BlockedSource[] = ['nflog', 'modbus', 'opcua'];

/**
 * Transport protocol name. The well-known ones are spelled out; anything else is the IANA protocol number as
 * text (e.g. `'132'`), so an unusual packet is still logged rather than rejected.
 */
// `string & {}` keeps editor completion for the literals while still accepting any string.
export type BlockedProtocol = 'tcp' | 'udp' | 'icmp' | 'icmpv6' | (string & {});

/** Small, flat, JSON-serialisable context: Modbus unit/function/addresses, OPC UA service/nodeIds, ICMP type. */
export type EventDetailValue = string | number | boolean | null | readonly (string | number)[];
export type EventDetail = Readonly<Record<string, EventDetailValue>>;

export interface BlockedEvent {
  /** Milliseconds since the epoch; for an aggregated event, the first occurrence within its second. */
  time: number;
  fromZone?: string;
  toZone?: string;
  /** Absent when no conduit joins the zones (`reason: 'no-conduit'`). */
  conduit?: string;
  flow?: string;
  inIface?: string;
  outIface?: string;
  src: string;
  dst: string;
  srcPort?: number;
  dstPort?: number;
  protocol: BlockedProtocol;
  verdict: BlockedVerdict;
  /** Stable machine code: `no-flow`, `no-conduit`, `modbus.illegal-function`, `opcua.security-mode`, … */
  reason: string;
  source: BlockedSource;
  detail?: EventDetail;
  /** How many identical events (same everything but time, within one second) this record stands for. */
  count: number;
}

/** An event as stored: with the row id that, with `time`, orders and pages the log. */
export interface StoredEvent extends BlockedEvent {
  id: number;
}
