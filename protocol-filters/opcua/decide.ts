/**
 * The pure allow/refuse decisions of the OPC UA filter, against a flow's validated OpcuaSpec.
 *
 * Channel level (at OPN, Part 6 §6.7.4; the mode of a non-None channel at its first MSG):
 * - the SecurityPolicyUri must name an allowed policy (`opcua.security-policy`, Bad_SecurityPolicyRejected);
 * - the mode must be allowed (`opcua.security-mode`, Bad_SecurityModeRejected); policy None means mode None;
 * - when `certificates` is set, the sender certificate's thumbprint must be listed (`opcua.certificate`,
 *   Bad_CertificateUntrusted). A None channel proves no certificate (nothing is signed), so with an allow-list
 *   it counts as "no listed certificate".
 * - Exception: a None channel that fails these checks is still admitted, for discovery only, when `discovery`
 *   is among the services — clients open one to call GetEndpoints before their secure channel (Part 4
 *   §5.4.4, node-opcua does). On it, only GetEndpoints/FindServers/FindServersOnNetwork pass; any other
 *   request is refused with the channel's reason.
 *
 * Service level (None and Sign, where the request is readable):
 * - the request's group must be in `services` (`opcua.service`; unknown request types have no group);
 * - Write: every written NodeId must match a `write` pattern (`opcua.write-node`);
 * - Call: every method NodeId must match a `call` pattern (`opcua.call-method`);
 * - ActivateSession with an anonymous identity (or one the filter cannot classify: fail closed) is refused
 *   unless `anonymous` is true (`opcua.anonymous`, Bad_IdentityTokenRejected).
 * Service-level refusals carry Bad_UserAccessDenied: the client is authenticated, it just may not do this.
 *
 * Monitor mode turns every refusal into `would-refuse` (forward and log).
 */
import type { ConduitMode, OpcuaSecurityMode, OpcuaSpec } from '../../policies/types.ts';
import { STATUS } from './constants.ts';
import { DISCOVERY_ONLY_SERVICES, matchesNodeIdPattern } from './services.ts';
import type { CertificateInfo, DecodedRequest, OpenHeader } from './types.ts';

export type OpcuaRefusalReason =
  | 'opcua.security-policy'
  | 'opcua.security-mode'
  | 'opcua.certificate'
  | 'opcua.anonymous'
  | 'opcua.service'
  | 'opcua.write-node'
  | 'opcua.call-method';

export interface Refusal {
  reason: OpcuaRefusalReason;
  /** Human text for the log and the ERR Reason. */
  message: string;
  /** StatusCode for the ERR message or ServiceFault. */
  statusCode: number;
  /** The NodeIds that caused it (Write/Call), if any. */
  nodeIds?: string[];
}

/** A refusing decision (enforce or monitor), as events and refusal builders take it. */
export type RefusalVerdict = Refusal & { verdict: 'refuse' | 'would-refuse' };

export type Decision =
  | { verdict: 'allow' }
  /** enforce mode: refuse. */
  | ({ verdict: 'refuse' } & Refusal)
  /** monitor mode: forward anyway, log what enforce would have done. */
  | ({ verdict: 'would-refuse' } & Refusal);

export type ChannelDecision =
  | { verdict: 'allow'; discoveryOnly: null }
  /** A None channel admitted for discovery only; `discoveryOnly` is what refuses anything else on it. */
  | { verdict: 'allow'; discoveryOnly: Refusal }
  | ({ verdict: 'refuse' } & Refusal)
  | ({ verdict: 'would-refuse' } & Refusal);

const ALLOW: Decision = Object.freeze({ verdict: 'allow' });

function verdictOf(mode: ConduitMode, r: Refusal): Decision {
  return { verdict: mode === 'monitor' ? 'would-refuse' : 'refuse', ...r };
}

function policyRefusal(uri: string): Refusal {
  return {
    reason: 'opcua.security-policy',
    message: `security policy ${uri} not allowed on this flow`,
    statusCode: STATUS.BadSecurityPolicyRejected,
  };
}

function modeRefusal(m: OpcuaSecurityMode): Refusal {
  return {
    reason: 'opcua.security-mode',
    message: `security mode ${m} not allowed on this flow`,
    statusCode: STATUS.BadSecurityModeRejected,
  };
}

function certificateRefusal(cert: CertificateInfo | null, none: boolean): Refusal {
  const what =
    cert === null
      ? 'no client certificate'
      : none
        ? 'an unsigned (SecurityPolicy None) channel cannot prove a certificate'
        : `client certificate ${cert.thumbprint} not in the allow-list`;
  return { reason: 'opcua.certificate', message: what, statusCode: STATUS.BadCertificateUntrusted };
}

/** The refusal naming every NodeId that no allow-list pattern matches (Write/Call), or null when all match. */
function unlistedNodes(
  ids: readonly string[],
  patterns: readonly string[],
  reason: 'opcua.write-node' | 'opcua.call-method',
  verb: string,
): Refusal | null {
  const bad = ids.filter((id) => !patterns.some((p) => matchesNodeIdPattern(id, p)));
  if (bad.length === 0) return null;
  return {
    reason,
    message: `${verb} ${bad.slice(0, 4).join(', ')}${bad.length > 4 ? ', …' : ''} not allowed`,
    statusCode: STATUS.BadUserAccessDenied,
    nodeIds: bad,
  };
}

/** The channel-level decision on a client's OPN (issue or renew). */
export function decideChannel(open: OpenHeader, spec: OpcuaSpec, mode: ConduitMode): ChannelDecision {
  const policy = open.securityPolicy;
  const none = policy === 'None';
  let refusal: Refusal | null = null;
  if (policy === null || !spec.securityPolicies.includes(policy))
    refusal = policyRefusal(open.securityPolicyUri);
  else if (none && !spec.securityModes.includes('None')) refusal = modeRefusal('None');
  else if (spec.certificates.length > 0) {
    const cert = open.senderCertificate;
    if (none || cert === null || !spec.certificates.includes(cert.thumbprint)) {
      refusal = certificateRefusal(cert, none);
    }
  }
  if (refusal === null) return { verdict: 'allow', discoveryOnly: null };
  if (none && spec.services.includes('discovery')) return { verdict: 'allow', discoveryOnly: refusal };
  return { verdict: mode === 'monitor' ? 'would-refuse' : 'refuse', ...refusal };
}

/** The mode of a non-None channel, once its first MSG told Sign from SignAndEncrypt. */
export function decideSecurityMode(m: OpcuaSecurityMode, spec: OpcuaSpec, mode: ConduitMode): Decision {
  return spec.securityModes.includes(m) ? ALLOW : verdictOf(mode, modeRefusal(m));
}

/**
 * The service-level decision on one readable request. `discoveryOnly` is the channel's refusal when the
 * channel was admitted for discovery only, else null.
 */
export function decideRequest(
  req: DecodedRequest,
  spec: OpcuaSpec,
  mode: ConduitMode,
  discoveryOnly: Refusal | null = null,
): Decision {
  if (discoveryOnly !== null) {
    return DISCOVERY_ONLY_SERVICES.has(req.service) ? ALLOW : verdictOf(mode, discoveryOnly);
  }
  if (req.group === null || !spec.services.includes(req.group)) {
    return verdictOf(mode, {
      reason: 'opcua.service',
      message:
        req.group === null
          ? `${req.service} is not a service the filter knows`
          : `${req.service} (${req.group}) not allowed on this flow`,
      statusCode: STATUS.BadUserAccessDenied,
    });
  }
  if (req.group === 'write') {
    const r = unlistedNodes(req.writeNodeIds, spec.write, 'opcua.write-node', 'write to');
    if (r !== null) return verdictOf(mode, r);
  }
  if (req.group === 'call') {
    const r = unlistedNodes(req.callMethodIds, spec.call, 'opcua.call-method', 'call of');
    if (r !== null) return verdictOf(mode, r);
  }
  if (
    req.identity !== null &&
    !spec.anonymous &&
    (req.identity === 'anonymous' || req.identity === 'unknown')
  ) {
    return verdictOf(mode, {
      reason: 'opcua.anonymous',
      message:
        req.identity === 'anonymous'
          ? 'anonymous session not allowed on this flow'
          : 'unrecognised identity token treated as anonymous',
      statusCode: STATUS.BadIdentityTokenRejected,
    });
  }
  return ALLOW;
}
