/**
 * proposeAllowRule: from a blocked event and the running policy text, the smallest policy change that would
 * have allowed it — a new flow in the conduit between the two zones (or a new conduit when there is none), or
 * a new Modbus rule/unit id on the flow whose filter refused the request. Pure: text in, text out. The YAML is
 * edited through the `yaml` Document API so comments and layout of the rest of the file survive.
 *
 * The result is a proposal for a person to review in the editor, never applied by itself: it may well fail the
 * IEC 62443 lint (e.g. a write from a lower zone), and the editor shows that.
 */
import { parseDocument, isMap, isSeq, type Document, YAMLMap, YAMLSeq } from 'yaml';
import { validatePolicyText } from '../policies/validate.ts';
import { parseCidr, cidrContains } from '../policies/cidr.ts';
import { NAME_RE, type Policy } from '../policies/types.ts';
import { SluiceError } from '../policies/errors.ts';

export interface ProposalEvent {
  conduit?: string | undefined;
  flow?: string | undefined;
  fromZone?: string | undefined;
  toZone?: string | undefined;
  src: string;
  dst: string;
  dstPort?: number | undefined;
  protocol: string;
  source: string;
  reason: string;
  detail?: Readonly<Record<string, unknown>> | undefined;
}

export interface Proposal {
  text: string;
  /** One sentence for the person reviewing it. */
  summary: string;
  conduit: string;
  flow: string;
}

export class ProposalError extends SluiceError {}

function hostCidr(addr: string) {
  const parsed = parseCidr(addr.includes('/') ? addr : addr + (addr.includes(':') ? '/128' : '/32'));
  if (parsed === undefined) throw new ProposalError('propose.bad-address', `'${addr}' is not an IP address`);
  return parsed.cidr;
}

/** An asset name when one asset is exactly this address (reads better and follows renumbering), else the IP. */
function endpointRef(policy: Policy, addr: string): string {
  const host = hostCidr(addr);
  for (const a of policy.assets.values()) if (a.addresses.some((c) => c.text === host.text)) return a.name;
  return host.address;
}

function zoneOf(policy: Policy, addr: string): string | undefined {
  const host = hostCidr(addr);
  for (const z of policy.zones.values()) if (z.networks.some((n) => cidrContains(n, host))) return z.name;
  return undefined;
}

function uniqueName(base: string, taken: Set<string>): string {
  const clean = base.slice(0, 31).replace(/-+$/, '');
  if (!taken.has(clean)) return clean;
  for (let i = 2; ; i++) {
    const candidate = `${clean.slice(0, 28)}-${i}`;
    if (!taken.has(candidate)) return candidate;
  }
}

/**
 * Appends a block item to a block collection by splicing text, so the rest of the file keeps its exact
 * formatting and comments (re-serialising the document would restyle it). Falls back to re-serialising when
 * the collection is written in flow style.
 */
function appendBlock(text: string, node: unknown, lines: (indent: string) => string[]): string | undefined {
  const n = node as { range?: [number, number, number]; flow?: boolean } | null;
  if (n === null || n.range === undefined || n.flow === true) return undefined;
  const [start, valueEnd] = n.range;
  const lineStart = text.lastIndexOf('\n', start - 1) + 1;
  const indent = text.slice(lineStart, start);
  if (!/^ *$/.test(indent)) return undefined;
  const body = lines(indent).join('\n');
  return text[valueEnd - 1] === '\n'
    ? text.slice(0, valueEnd) + body + '\n' + text.slice(valueEnd)
    : text.slice(0, valueEnd) + '\n' + body + text.slice(valueEnd);
}

function flowSeq(doc: Document, conduit: string): YAMLSeq {
  const flows = doc.getIn(['conduits', conduit, 'flows'], true);
  if (isSeq(flows)) return flows;
  const seq = new YAMLSeq();
  doc.setIn(['conduits', conduit, 'flows'], seq);
  return seq;
}

function flowIndex(doc: Document, conduit: string, flow: string): number {
  const flows = doc.getIn(['conduits', conduit, 'flows'], true);
  if (!isSeq(flows)) return -1;
  return flows.items.findIndex((f) => isMap(f) && f.get('name') === flow);
}

function proposeModbus(doc: Document, text: string, policy: Policy, ev: ProposalEvent): Proposal | undefined {
  if (ev.conduit === undefined || ev.flow === undefined) return undefined;
  const idx = flowIndex(doc, ev.conduit, ev.flow);
  const spec = policy.conduits.get(ev.conduit)?.flows.find((f) => f.name === ev.flow)?.modbus;
  if (idx < 0 || spec === undefined) return undefined;
  const detail = ev.detail ?? {};
  const base = ['conduits', ev.conduit, 'flows', idx, 'modbus'];
  if (ev.reason === 'modbus.unit-not-allowed' && typeof detail['unit'] === 'number') {
    const units = doc.getIn([...base, 'unitIds'], true);
    if (isSeq(units)) units.add(doc.createNode(detail['unit']));
    return {
      text: doc.toString({ flowCollectionPadding: false }),
      summary: `allow Modbus unit id ${detail['unit']} on ${ev.conduit}/${ev.flow}`,
      conduit: ev.conduit,
      flow: ev.flow,
    };
  }
  const fn = detail['function'];
  if (typeof fn !== 'number' || !Number.isInteger(fn) || fn < 1 || fn > 127) return undefined;
  const rule: Record<string, unknown> = { functions: [fn] };
  const addresses = detail['addresses'];
  // The policy schema takes a single address as a number and a span as 'a-b'.
  if (typeof addresses === 'string' && /^\d{1,5}$/.test(addresses)) rule['addresses'] = Number(addresses);
  else if (typeof addresses === 'string' && /^\d{1,5}-\d{1,5}$/.test(addresses))
    rule['addresses'] = addresses;
  const node = doc.createNode(rule) as YAMLMap;
  const fns = node.get('functions', true);
  if (isSeq(fns)) fns.flow = true;
  const rules = doc.getIn([...base, 'rules'], true);
  const spliced = isSeq(rules)
    ? appendBlock(text, rules, (ind) => [
        `${ind}- functions: [${fn}]`,
        ...(rule['addresses'] === undefined ? [] : [`${ind}  addresses: ${String(rule['addresses'])}`]),
      ])
    : undefined;
  if (isSeq(rules)) rules.add(node);
  else doc.setIn([...base, 'rules'], doc.createNode([rule]));
  const what = typeof addresses === 'string' ? ` at ${addresses}` : '';
  return {
    text: spliced ?? doc.toString({ flowCollectionPadding: false }),
    summary: `allow Modbus function ${fn}${what} on ${ev.conduit}/${ev.flow}`,
    conduit: ev.conduit,
    flow: ev.flow,
  };
}

export function proposeAllowRule(policyText: string, ev: ProposalEvent): Proposal {
  const result = validatePolicyText(policyText, 'running');
  if (result.policy === undefined)
    throw new ProposalError('propose.invalid-policy', 'the running policy does not validate; fix it first');
  const policy = result.policy;
  const doc = parseDocument(policyText);

  if (ev.source === 'modbus') {
    const p = proposeModbus(doc, policyText, policy, ev);
    if (p !== undefined) return p;
  }

  const protocol = ev.source === 'modbus' ? 'modbus' : ev.source === 'opcua' ? 'opcua' : ev.protocol;
  if (!['tcp', 'udp', 'icmp', 'modbus', 'opcua'].includes(protocol))
    throw new ProposalError('propose.protocol', `no allow rule can be written for protocol '${ev.protocol}'`);
  const fromZone = ev.fromZone ?? zoneOf(policy, ev.src);
  const toZone = ev.toZone ?? zoneOf(policy, ev.dst);
  if (
    fromZone === undefined ||
    toZone === undefined ||
    !policy.zones.has(fromZone) ||
    !policy.zones.has(toZone)
  )
    throw new ProposalError(
      'propose.no-zone',
      `${ev.src} → ${ev.dst} is not between two zones of the policy`,
    );
  if (fromZone === toZone)
    throw new ProposalError('propose.same-zone', 'traffic inside one zone does not cross the gateway');

  const flow: Record<string, unknown> = {
    name: '',
    protocol,
    from: [endpointRef(policy, ev.src)],
    to: [endpointRef(policy, ev.dst)],
  };
  if ((protocol === 'tcp' || protocol === 'udp') && ev.dstPort !== undefined) flow['port'] = ev.dstPort;

  let conduit = [...policy.conduits.values()].find((c) => c.from === fromZone && c.to === toZone)?.name;
  let created = false;
  if (conduit === undefined) {
    conduit = uniqueName(`${fromZone}-to-${toZone}`, new Set(policy.conduits.keys()));
    if (!NAME_RE.test(conduit)) conduit = uniqueName('proposed', new Set(policy.conduits.keys()));
    created = true;
  }
  const taken = new Set(policy.conduits.get(conduit)?.flows.map((f) => f.name) ?? []);
  const portPart = flow['port'] === undefined ? '' : `-${String(flow['port'])}`;
  flow['name'] = uniqueName(`allow-${protocol}${portPart}`, taken);

  const node = doc.createNode(flow) as YAMLMap;
  for (const k of ['from', 'to']) {
    const seq = node.get(k, true);
    if (isSeq(seq)) seq.flow = true;
  }
  const flowLines = (ind: string) => [
    `${ind}- name: ${String(flow['name'])}`,
    `${ind}  protocol: ${protocol}`,
    `${ind}  from: [${String((flow['from'] as string[])[0])}]`,
    `${ind}  to: [${String((flow['to'] as string[])[0])}]`,
    ...(flow['port'] === undefined ? [] : [`${ind}  port: ${String(flow['port'])}`]),
  ];
  const conduits = doc.get('conduits', true);
  const existing = doc.getIn(['conduits', conduit, 'flows'], true);
  const spliced = created
    ? isMap(conduits)
      ? appendBlock(policyText, conduits, (ind) => [
          `${ind}${conduit}:`,
          `${ind}  from: ${fromZone}`,
          `${ind}  to: ${toZone}`,
          `${ind}  mode: enforce`,
          `${ind}  description: Proposed from a blocked event; review before applying`,
          `${ind}  flows:`,
          ...flowLines(`${ind}    `),
        ])
      : undefined
    : isSeq(existing)
      ? appendBlock(policyText, existing, flowLines)
      : undefined;
  if (created) {
    const c = doc.createNode({
      from: fromZone,
      to: toZone,
      mode: 'enforce',
      description: 'Proposed from a blocked event; review before applying',
      flows: [],
    }) as YAMLMap;
    c.set('flows', new YAMLSeq());
    if (!isMap(doc.get('conduits', true))) doc.set('conduits', new YAMLMap());
    doc.setIn(['conduits', conduit], c);
  }
  flowSeq(doc, conduit).add(node);
  const port = flow['port'] === undefined ? '' : ` port ${String(flow['port'])}`;
  return {
    text: spliced ?? doc.toString({ flowCollectionPadding: false }),
    summary: `${created ? 'new conduit' : 'conduit'} ${conduit}: allow ${protocol}${port} from ${String(
      (flow['from'] as string[])[0],
    )} to ${String((flow['to'] as string[])[0])} (flow ${String(flow['name'])})`,
    conduit,
    flow: String(flow['name']),
  };
}
