/**
 * The IEC 62443 policy lint: named rules over a validated `Policy` (pure: data in, findings out).
 *
 * The rules are *derived from* IEC 62443-3-3 system requirements (SR) and 3-2 zone/conduit requirements (ZCR);
 * Sluice does not claim certification. Errors fail validation unless a waiver (rule + conduit, rationale,
 * expiry) documents the accepted risk — the brownfield way 62443 expects: where a countermeasure cannot be
 * applied yet, say why and until when.
 */
import { MODBUS_WRITE_FUNCTIONS, modbusFunctionName } from './modbus-functions.ts';
import type { Conduit, DocPath, Flow, LintFinding, Policy, Waiver, Zone } from './types.ts';

export type LintSeverity = 'error' | 'warning';

export interface LintRule {
  id: string;
  /** The highest severity the rule reports (`any-port` is an error only at SL-T ≥ 2). */
  severity: LintSeverity;
  /** The IEC 62443 requirement(s) the rule derives from. */
  cites: string;
  summary: string;
  /** Whether a waiver may name this rule; the waiver-* rules police waivers themselves and cannot be waived. */
  waivable: boolean;
}

const CITES = {
  writeFromLower: '62443-3-3 SR 2.1, SR 5.2',
  unauthenticated: '62443-3-3 SR 1.1, SR 1.2, SR 5.2',
  skip: '62443-3-2 ZCR 3; 62443-3-3 SR 5.1',
  anyPort: '62443-3-3 SR 5.2 RE1',
  waiver: '62443-3-2 ZCR 3 (documented countermeasures)',
} as const;

export const LINT_RULES: ReadonlyArray<LintRule> = [
  {
    id: 'SL-write-from-lower',
    severity: 'error',
    cites: CITES.writeFromLower,
    summary:
      'A conduit from a zone of lower SL-T allows Modbus writes or OPC UA Write/Call into a zone of SL-T ≥ 3; ' +
      'writes from a less trusted zone need a documented reason (waiver).',
    waivable: true,
  },
  {
    id: 'SL-unauthenticated-into-high',
    severity: 'error',
    cites: CITES.unauthenticated,
    summary:
      'An OPC UA flow into a zone of SL-T ≥ 3 allows security mode None (flows limited to discovery excepted).',
    waivable: true,
  },
  {
    id: 'SL-skip',
    severity: 'warning',
    cites: CITES.skip,
    summary:
      'A conduit spans two or more SL steps (e.g. SL1 → SL3); route it through an intermediate zone (DMZ).',
    waivable: true,
  },
  {
    id: 'any-port',
    severity: 'error',
    cites: CITES.anyPort,
    summary:
      'A tcp/udp flow has no port restriction: an error into a zone of SL-T ≥ 2, a warning below (deny by default, allow by exception).',
    waivable: true,
  },
  {
    id: 'waiver-expired',
    severity: 'error',
    cites: CITES.waiver,
    summary: 'A waiver expired (its expires date is before today, UTC); it no longer waives anything.',
    waivable: false,
  },
  {
    id: 'waiver-unknown-rule',
    severity: 'error',
    cites: CITES.waiver,
    summary: 'A waiver names a rule that is not a waivable lint rule.',
    waivable: false,
  },
  {
    id: 'waiver-unused',
    severity: 'warning',
    cites: CITES.waiver,
    summary:
      'A waiver matches no lint finding (stale, misspelt conduit, or already covered by another waiver).',
    waivable: false,
  },
];

const RULE_BY_ID: ReadonlyMap<string, LintRule> = new Map(LINT_RULES.map((r) => [r.id, r]));

/** A finding before waivers are applied, with the sort key that makes the output order deterministic. */
interface Draft {
  finding: LintFinding;
  conduitIndex: number;
  /** -1 for conduit-level findings, so they precede the conduit's flow findings. */
  flowIndex: number;
}

function cmp(a: string, b: string): number {
  // Code-point order, not localeCompare: the output must not depend on the machine's locale.
  return a < b ? -1 : a > b ? 1 : 0;
}

function finding(
  rule: string,
  severity: LintSeverity,
  path: DocPath,
  message: string,
  extra: { conduit?: string; flow?: string },
): LintFinding {
  const def = RULE_BY_ID.get(rule);
  if (def === undefined) throw new Error(`internal: lint rule ${rule} is not in LINT_RULES`);
  const f: LintFinding = { rule, severity, path, message, cites: def.cites };
  if (extra.conduit !== undefined) f.conduit = extra.conduit;
  if (extra.flow !== undefined) f.flow = extra.flow;
  return f;
}

function zoneLabel(z: Zone): string {
  return `${z.name} (SL-T ${z.securityLevel})`;
}

/**
 * SL-write-from-lower — derived from 62443-3-3 SR 2.1 (authorisation enforcement) and SR 5.2 (zone boundary
 * protection): state-changing commands from a less trusted zone into an SL-T ≥ 3 zone are exactly what the
 * higher SL-T must resist, so they need a documented reason.
 */
function writeFromLower(
  conduit: Conduit,
  from: Zone,
  to: Zone,
  flow: Flow,
  flowPath: DocPath,
): LintFinding | undefined {
  if (!(from.securityLevel < to.securityLevel && to.securityLevel >= 3)) return undefined;
  const lead = `conduit ${conduit.name} lets zone ${zoneLabel(from)} write into zone ${zoneLabel(to)}`;
  const tail = 'document the reason with a waiver or remove the writes';
  if (flow.protocol === 'modbus' && flow.modbus !== undefined) {
    const writes = new Set<number>();
    let firstRule = -1;
    flow.modbus.rules.forEach((rule, j) => {
      for (const fc of rule.functions) {
        if (MODBUS_WRITE_FUNCTIONS.has(fc)) {
          writes.add(fc);
          if (firstRule < 0) firstRule = j;
        }
      }
    });
    if (writes.size === 0) return undefined;
    const list = [...writes]
      .sort((a, b) => a - b)
      .map((fc) => `${fc} (${modbusFunctionName(fc)})`)
      .join(', ');
    return finding(
      'SL-write-from-lower',
      'error',
      [...flowPath, 'modbus', 'rules', firstRule, 'functions'],
      `${lead}: flow ${flow.name} allows Modbus write functions ${list}; ${tail}`,
      { conduit: conduit.name, flow: flow.name },
    );
  }
  if (flow.protocol === 'opcua' && flow.opcua !== undefined) {
    const writes = flow.opcua.services.filter((s) => s === 'write' || s === 'call');
    if (writes.length === 0) return undefined;
    return finding(
      'SL-write-from-lower',
      'error',
      [...flowPath, 'opcua', 'services'],
      `${lead}: flow ${flow.name} allows OPC UA services ${writes.join(', ')}; ${tail}`,
      { conduit: conduit.name, flow: flow.name },
    );
  }
  return undefined;
}

/**
 * SL-unauthenticated-into-high — derived from 62443-3-3 SR 1.1/SR 1.2 (identification and authentication of
 * users and devices) and SR 5.2: a SecurityMode None channel carries no signature, so nothing authenticates the
 * peer's messages. Discovery (GetEndpoints/FindServers) must work on None by OPC UA's design, hence the exception.
 * Plain Modbus is also unauthenticated, but the issue names only OPC UA None for this rule; Modbus into high
 * zones is governed by SL-write-from-lower.
 */
function unauthenticatedIntoHigh(
  conduit: Conduit,
  to: Zone,
  flow: Flow,
  flowPath: DocPath,
): LintFinding | undefined {
  if (to.securityLevel < 3 || flow.protocol !== 'opcua' || flow.opcua === undefined) return undefined;
  if (!flow.opcua.securityModes.includes('None')) return undefined;
  if (flow.opcua.services.every((s) => s === 'discovery')) return undefined;
  return finding(
    'SL-unauthenticated-into-high',
    'error',
    [...flowPath, 'opcua', 'securityModes'],
    `conduit ${conduit.name}: flow ${flow.name} allows OPC UA security mode None into zone ${zoneLabel(to)} ` +
      `for services ${flow.opcua.services.join(', ')}; allow only Sign or SignAndEncrypt (None is acceptable for discovery alone)`,
    { conduit: conduit.name, flow: flow.name },
  );
}

/**
 * SL-skip — derived from 62443-3-2 ZCR 3 (zone and conduit partitioning) and 62443-3-3 SR 5.1 (network
 * segmentation): one conduit bridging two or more SL steps suggests a missing intermediate zone (a DMZ).
 * Either direction counts: a high zone initiating into a much lower one is as much a shortcut.
 */
function slSkip(conduit: Conduit, from: Zone, to: Zone, conduitPath: DocPath): LintFinding | undefined {
  if (Math.abs(from.securityLevel - to.securityLevel) < 2) return undefined;
  return finding(
    'SL-skip',
    'warning',
    conduitPath,
    `conduit ${conduit.name} spans ${Math.abs(from.securityLevel - to.securityLevel)} SL steps ` +
      `(${zoneLabel(from)} → ${zoneLabel(to)}); route it through an intermediate zone (DMZ)`,
    { conduit: conduit.name },
  );
}

/**
 * A port set this wide is "any port" in effect: `0-65535`, `1-65535` or `1024-65535` (all but the well-known
 * ports) would otherwise slip past the rule that only looked for a missing `port`.
 */
export const ANY_PORT_THRESHOLD = 65535 - 1023;

/** Number of distinct ports 1..65535 the ranges cover (overlaps counted once). */
function portsCovered(ranges: readonly { start: number; end: number }[]): number {
  const sorted = [...ranges].sort((a, b) => a.start - b.start);
  let count = 0;
  let next = 1; // first port not yet counted
  for (const r of sorted) {
    const start = Math.max(r.start, next);
    const end = Math.min(r.end, 65535);
    if (end >= start) {
      count += end - start + 1;
      next = end + 1;
    }
  }
  return count;
}

/**
 * any-port — derived from 62443-3-3 SR 5.2 RE1 (deny by default, allow by exception), required from SL 2 on:
 * hence an error into SL-T ≥ 2 and a warning below.
 */
function anyPort(conduit: Conduit, to: Zone, flow: Flow, flowPath: DocPath): LintFinding | undefined {
  if (flow.protocol !== 'tcp' && flow.protocol !== 'udp') return undefined;
  const covered = flow.ports.length === 0 ? 65535 : portsCovered(flow.ports);
  if (covered < ANY_PORT_THRESHOLD) return undefined;
  const severity: LintSeverity = to.securityLevel >= 2 ? 'error' : 'warning';
  // Without a `port` key (that absence is the finding) the flow itself is the most precise place to point at.
  const written = flow.ports.length > 0;
  return finding(
    'any-port',
    severity,
    written ? [...flowPath, 'port'] : flowPath,
    `conduit ${conduit.name}: ${flow.protocol} flow ${flow.name} into zone ${zoneLabel(to)} allows ` +
      (written ? `${covered} of 65535 ports, in effect any port` : 'any port') +
      '; list the ports the flow needs',
    { conduit: conduit.name, flow: flow.name },
  );
}

function conduitFindings(policy: Policy): Draft[] {
  const drafts: Draft[] = [];
  let conduitIndex = 0;
  for (const [key, conduit] of policy.conduits) {
    const from = policy.zones.get(conduit.from);
    const to = policy.zones.get(conduit.to);
    // A validated policy always resolves both zones; if a caller lints an unvalidated one, the SL rules
    // have nothing to compare, and the validator reports the unknown zone itself.
    if (from !== undefined && to !== undefined) {
      const conduitPath: DocPath = ['conduits', key];
      const skip = slSkip(conduit, from, to, conduitPath);
      if (skip) drafts.push({ finding: skip, conduitIndex, flowIndex: -1 });
      conduit.flows.forEach((flow, i) => {
        const flowPath: DocPath = ['conduits', key, 'flows', i];
        for (const f of [
          writeFromLower(conduit, from, to, flow, flowPath),
          unauthenticatedIntoHigh(conduit, to, flow, flowPath),
          anyPort(conduit, to, flow, flowPath),
        ]) {
          if (f) drafts.push({ finding: f, conduitIndex, flowIndex: i });
        }
      });
    }
    conduitIndex++;
  }
  drafts.sort(
    (a, b) =>
      a.conduitIndex - b.conduitIndex || a.flowIndex - b.flowIndex || cmp(a.finding.rule, b.finding.rule),
  );
  return drafts;
}

/** Today's date in UTC as `YYYY-MM-DD`, so that expiry does not depend on the gateway's time zone. */
function utcDate(now: Date): string {
  return now.toISOString().slice(0, 10);
}

/**
 * Runs every lint rule over a validated policy. Findings come in a deterministic order: conduit findings by the
 * conduits' map order, then flow index (conduit-level findings first), then rule id; waiver findings follow in
 * the waivers' order.
 *
 * A valid waiver (known waivable rule, not expired) whose rule and conduit match a finding sets that finding's
 * `waiver`: the finding keeps its severity and the validator reports it as an accepted risk instead of an error.
 * Waivers also apply to warnings (e.g. SL-skip), documenting why they are accepted.
 */
export function lintPolicy(policy: Policy, now: Date): LintFinding[] {
  const drafts = conduitFindings(policy);
  const today = utcDate(now);
  const waiverFindings: LintFinding[] = [];

  policy.waivers.forEach((waiver: Waiver, i) => {
    const rule = RULE_BY_ID.get(waiver.rule);
    if (rule === undefined || !rule.waivable) {
      const known = LINT_RULES.filter((r) => r.waivable)
        .map((r) => r.id)
        .join(', ');
      waiverFindings.push(
        finding(
          'waiver-unknown-rule',
          'error',
          ['waivers', i, 'rule'],
          `waiver ${i} names rule ${waiver.rule}, which is not a waivable lint rule (known: ${known})`,
          { conduit: waiver.conduit },
        ),
      );
      return;
    }
    // ISO dates compare correctly as strings; a waiver expiring today still holds for the whole (UTC) day.
    if (waiver.expires < today) {
      waiverFindings.push(
        finding(
          'waiver-expired',
          'error',
          ['waivers', i, 'expires'],
          `waiver ${i} for ${waiver.rule} on conduit ${waiver.conduit} expired on ${waiver.expires} (today is ${today}); ` +
            `review the accepted risk and renew the waiver or fix the policy`,
          { conduit: waiver.conduit },
        ),
      );
      return;
    }
    let used = false;
    let coveredBy = -1;
    for (const d of drafts) {
      if (d.finding.rule !== waiver.rule || d.finding.conduit !== waiver.conduit) continue;
      if (d.finding.waiver === undefined) {
        d.finding.waiver = waiver;
        used = true;
      } else if (coveredBy < 0) {
        coveredBy = policy.waivers.indexOf(d.finding.waiver);
      }
    }
    if (!used) {
      const why =
        coveredBy >= 0
          ? `its findings are already waived by waiver ${coveredBy}`
          : policy.conduits.has(waiver.conduit)
            ? `conduit ${waiver.conduit} has no ${waiver.rule} finding`
            : `there is no conduit ${waiver.conduit}`;
      waiverFindings.push(
        finding(
          'waiver-unused',
          'warning',
          ['waivers', i],
          `waiver ${i} for ${waiver.rule} on conduit ${waiver.conduit} matches no finding: ${why}; remove it`,
          { conduit: waiver.conduit },
        ),
      );
    }
  });

  return [...drafts.map((d) => d.finding), ...waiverFindings];
}
