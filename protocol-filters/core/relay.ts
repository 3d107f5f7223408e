/**
 * The plain relay: forwards everything both ways, with no protocol knowledge. Tests and benchmarks use it to
 * exercise the redirect path, limits and fail-closed behaviour (and as a baseline) without a filter in the way.
 * It never holds a partial message, so the slow-sender cut does not apply to it (the idle timeout does).
 */
import type { ConnectionInspector, InspectorFactory } from './inspector.ts';

export class RelayInspector implements ConnectionInspector {
  onClientData(chunk: Buffer): [{ action: 'forward'; bytes: Buffer }] {
    return [{ action: 'forward', bytes: chunk }];
  }

  onServerData(chunk: Buffer): [{ action: 'forward'; bytes: Buffer }] {
    return [{ action: 'forward', bytes: chunk }];
  }

  hasPartialMessage(): boolean {
    return false;
  }
}

export const relayInspectorFactory: InspectorFactory = {
  create: () => new RelayInspector(),
};
