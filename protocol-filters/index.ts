import type { InspectorFactory } from './core/inspector.ts';
/**
 * Public surface of the protocol filters: the shared proxy core (one copy for every protocol) and the
 * inspectors that plug into it. The daemon imports from here only.
 */
export type {
  ClientVerdict,
  ConnectionInspector,
  FilterEvent,
  InspectorContext,
  InspectorFactory,
  InspectorLimits,
  ProxyEvent,
  ServerVerdict,
} from './core/inspector.ts';
export { ResponseOrderer, type AnswerResult } from './core/ordering.ts';
export { RelayInspector, relayInspectorFactory } from './core/relay.ts';
export {
  DEFAULT_PROXY_LIMITS,
  FlowProxy,
  normaliseAddress,
  sourceList,
  type FlowProxyHealth,
  type FlowProxyOptions,
  type FlowProxyState,
  type FlowProxyStats,
  type ProxyLimits,
  type ProxyLogger,
} from './core/proxy.ts';
export {
  ProxySupervisor,
  entryKey,
  type ApplyResult,
  type EntryHealth,
  type EntryState,
  type InspectorFactories,
  type SupervisorOptions,
} from './core/supervisor.ts';
export { modbusInspectorFactory } from './modbus/inspector.ts';

/**
 * The OPC UA filter brings node-opcua's type decoders (tens of MB of heap); a gateway without OPC UA flows
 * should not pay for them, so the daemon loads the factory the first time a plan needs it. The module cache
 * returns the same factory object every time, which keeps unchanged proxies running across applies.
 */
export async function loadOpcuaInspectorFactory(): Promise<InspectorFactory> {
  return (await import('./opcua/inspector.ts')).opcuaInspectorFactory;
}
