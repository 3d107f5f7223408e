/**
 * Event details for the blocked-traffic log: service, NodeIds, security policy/mode, certificate subject,
 * reason. Only called when an event is logged, so building strings here is fine.
 */
import type { FilterEvent } from '../core/inspector.ts';
import { STATUS_NAMES } from './constants.ts';
import type { RefusalVerdict } from './decide.ts';
import type { ChannelSecurity, DecodedRequest } from './types.ts';

/** NodeIds listed per event; the count says how many there were. */
const MAX_LOGGED_NODE_IDS = 32;

export interface OpcuaEventDetail extends Record<string, unknown> {
  securityPolicy: string | null;
  securityMode: string;
  certificateSubject: string | null;
  certificateThumbprint: string | null;
  message?: string;
  status?: string;
  service?: string;
  serviceGroup?: string | null;
  requestHandle?: number;
  requestId?: number;
  nodeIds?: string[];
  nodeIdCount?: number;
  refusedNodeIds?: string[];
  values?: string[];
  identity?: string;
}

export function channelDetail(ch: ChannelSecurity): OpcuaEventDetail {
  return {
    securityPolicy: ch.securityPolicy ?? ch.securityPolicyUri,
    securityMode: ch.securityMode,
    certificateSubject: ch.certificate?.subject ?? null,
    certificateThumbprint: ch.certificate?.thumbprint ?? null,
  };
}

export function requestDetail(
  req: DecodedRequest,
  requestId: number | null,
  ch: ChannelSecurity,
): OpcuaEventDetail {
  const d = channelDetail(ch);
  d.service = req.service.replace(/Request$/, '');
  d.serviceGroup = req.group;
  d.requestHandle = req.requestHandle;
  if (requestId !== null) d.requestId = requestId;
  if (req.nodeIds.length > 0) {
    d.nodeIds = req.nodeIds.slice(0, MAX_LOGGED_NODE_IDS);
    d.nodeIdCount = req.nodeIds.length;
  }
  if (req.writeValues.length > 0) d.values = req.writeValues.slice(0, MAX_LOGGED_NODE_IDS);
  if (req.identity !== null) d.identity = req.identity;
  return d;
}

/** The FilterEvent for a refusal (or would-refuse) with its detail. */
export function refusalEvent(decision: RefusalVerdict, detail: OpcuaEventDetail): FilterEvent {
  detail.message = decision.message;
  detail.status = STATUS_NAMES.get(decision.statusCode) ?? `0x${decision.statusCode.toString(16)}`;
  if (decision.nodeIds !== undefined) detail.refusedNodeIds = decision.nodeIds.slice(0, MAX_LOGGED_NODE_IDS);
  return {
    reason: decision.reason,
    verdict: decision.verdict === 'would-refuse' ? 'would-refuse' : 'refuse',
    detail,
  };
}
