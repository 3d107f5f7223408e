/**
 * The plain relay: forwards everything both ways. It is what the daemon runs for a DPI flow until that
 * protocol's filter exists, so the redirect path, limits and fail-closed behaviour work from day one.
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
