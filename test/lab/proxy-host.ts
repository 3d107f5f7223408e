/**
 * Runs the DPI proxies of a compiled proxy plan in this process — a stand-in for the daemon's proxy side in
 * the lab (Node cannot enter a network namespace in-process, so tests start it with
 * `ip netns exec <gw> node test/lab/proxy-host.ts PLAN.json`).
 *
 * stdout carries one JSON object per line: `{"ready":[…entry health…]}` once every proxy listens (or
 * `{"failed":[…]}`), then `{"event":{…ProxyEvent…}}` per filter event (unless --quiet). SIGTERM/SIGINT stop
 * the proxies and exit 0. `--limits '{"maxConnections":2000}'` overrides proxy limits (the benchmark needs
 * more connections than the defaults allow).
 *
 *   node test/lab/proxy-host.ts PLAN.json [--limits JSON] [--quiet] [--relay-flow NAME …] [--omit-flow NAME …]
 *
 * Entries of a flow named by `--relay-flow` run the plain relay instead of their protocol's filter: the
 * benchmark uses one to separate the proxy's own cost from the filter's. Entries of a flow named by
 * `--omit-flow` are not started at all, leaving their listen port to another program (bench/modbus.ts runs
 * its reference relay there).
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { ProxyPlan } from '../../policies/types.ts';
import type { ProxyEvent } from '../../protocol-filters/core/inspector.ts';
import type { ProxyLimits } from '../../protocol-filters/core/proxy.ts';
import { relayInspectorFactory } from '../../protocol-filters/core/relay.ts';
import { ProxySupervisor } from '../../protocol-filters/core/supervisor.ts';
import { modbusInspectorFactory } from '../../protocol-filters/modbus/inspector.ts';
import { loadOpcuaInspectorFactory } from '../../protocol-filters/index.ts';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    limits: { type: 'string' },
    quiet: { type: 'boolean', default: false },
    'relay-flow': { type: 'string', multiple: true, default: [] },
    'omit-flow': { type: 'string', multiple: true, default: [] },
  },
});

function line(obj: unknown): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const planFile = positionals[0];
if (planFile === undefined) {
  process.stderr.write(
    'usage: proxy-host.ts PLAN.json [--limits JSON] [--quiet] [--relay-flow NAME …] [--omit-flow NAME …]\n',
  );
  process.exit(2);
}
const omitted = new Set(values['omit-flow']);
const read = JSON.parse(await readFile(planFile, 'utf8')) as ProxyPlan;
const plan: ProxyPlan = { ...read, entries: read.entries.filter((e) => !omitted.has(e.flow)) };
const limits = values.limits === undefined ? {} : (JSON.parse(values.limits) as Partial<ProxyLimits>);

const relayFlows = new Set(values['relay-flow']);
const options = {
  limits,
  ...(values.quiet ? {} : { onEvent: (event: ProxyEvent) => line({ event }) }),
  // Restart quickly in the lab; the daemon's defaults are for plants.
  minBackoffMs: 100,
  maxBackoffMs: 1000,
};
// Factories are chosen per protocol, so relayed entries get a supervisor of their own.
const filtered = new ProxySupervisor(options);
const relayed = new ProxySupervisor(options);
const results = await Promise.all([
  filtered.applyPlan(
    { version: 1, entries: plan.entries.filter((e) => !relayFlows.has(e.flow)) },
    {
      modbus: modbusInspectorFactory,
      // Like the daemon: the OPC UA filter (and node-opcua's decoders) only when the plan has opcua entries.
      opcua: plan.entries.some((e) => e.protocol === 'opcua')
        ? await loadOpcuaInspectorFactory()
        : relayInspectorFactory,
    },
  ),
  relayed.applyPlan(
    { version: 1, entries: plan.entries.filter((e) => relayFlows.has(e.flow)) },
    { modbus: relayInspectorFactory, opcua: relayInspectorFactory },
  ),
]);
const health = [...filtered.health(), ...relayed.health()];
if (results.some((r) => r.failed.length > 0)) line({ failed: results.flatMap((r) => r.failed), health });
else line({ ready: health.map((h) => ({ key: h.key, flow: h.flow, port: h.listenPort, state: h.state })) });

let stopping = false;
const stop = (): void => {
  if (stopping) return;
  stopping = true;
  void Promise.all([filtered.stop(), relayed.stop()]).finally(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
