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
export { opcuaInspectorFactory } from './opcua/inspector.ts';
