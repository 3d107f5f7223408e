/**
 * A node-opcua client for the lab, run inside a zone host namespace. It plays a list of sessions given as
 * JSON (argument 1) and prints one JSON line with the outcome of each, so a test pays node-opcua's start-up
 * cost once per case instead of once per session:
 *
 *   node test/lab/opcua-client.ts '{"pki":"DIR","sessions":[{"endpoint":"opc.tcp://10.0.0.1:4840",…}]}'
 *
 * A session: security mode/policy, optional username identity, optional fast token renewal, and steps
 * (read, write, browse, call, subscribe, sleep). A failure to connect or to create the session ends that
 * session with `connected: false` / `session: false` and the error; a failing step records its error and the
 * session goes on, so "refused, then the next Read still works" is observable. The client trusts any server
 * certificate (test PKI in a temporary folder).
 */
import {
  AttributeIds,
  DataType,
  MessageSecurityMode,
  OPCUACertificateManager,
  OPCUAClient,
  SecurityPolicy,
  TimestampsToReturn,
  type ClientSession,
  type UserIdentityInfo,
  UserTokenType,
} from 'node-opcua';

export type OpcuaStep =
  | { op: 'read'; nodeId: string }
  | { op: 'write'; nodeId: string; value: number }
  | { op: 'browse'; nodeId: string }
  | { op: 'call'; objectId: string; methodId: string }
  /** Monitors `nodeId` until `changes` data changes arrived or `timeoutMs` passed. */
  | { op: 'subscribe'; nodeId: string; changes: number; timeoutMs: number }
  /** Reads `nodeId` every `everyMs` for `ms` (to span token renewals); result counts good and bad reads. */
  | { op: 'read-loop'; nodeId: string; ms: number; everyMs: number }
  | { op: 'sleep'; ms: number };

export interface OpcuaSessionScript {
  endpoint: string;
  securityMode: 'None' | 'Sign' | 'SignAndEncrypt';
  securityPolicy: 'None' | 'Basic256Sha256' | 'Aes256_Sha256_RsaPss';
  user?: { userName: string; password: string };
  /** Requested secure token lifetime (the server's floor is 2500 ms) and renewal interval, both in ms. */
  tokenLifetimeMs?: number;
  tokenRenewalMs?: number;
  steps: OpcuaStep[];
}

export interface OpcuaStepResult {
  op: string;
  ok: boolean;
  /** Status code name of the operation (e.g. Good, BadUserAccessDenied). */
  status?: string;
  value?: unknown;
  count?: number;
  good?: number;
  bad?: number;
  error?: string;
}

export interface OpcuaSessionResult {
  connected: boolean;
  session: boolean;
  error?: string;
  results: OpcuaStepResult[];
  tokenRenewals: number;
  /** The client saw its secure channel break (connection_lost) at some point. */
  connectionLost: boolean;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

async function step(session: ClientSession, s: OpcuaStep): Promise<OpcuaStepResult> {
  try {
    switch (s.op) {
      case 'read': {
        const dv = await session.read({ nodeId: s.nodeId, attributeId: AttributeIds.Value });
        return {
          op: s.op,
          ok: dv.statusCode.isGood(),
          status: dv.statusCode.name,
          value: dv.value.value as unknown,
        };
      }
      case 'write': {
        const sc = await session.write({
          nodeId: s.nodeId,
          attributeId: AttributeIds.Value,
          value: { value: { dataType: DataType.Double, value: s.value } },
        });
        return { op: s.op, ok: sc.isGood(), status: sc.name };
      }
      case 'browse': {
        const r = await session.browse(s.nodeId);
        return {
          op: s.op,
          ok: r.statusCode.isGood(),
          status: r.statusCode.name,
          value: (r.references ?? []).map((ref) => ref.browseName.toString()),
        };
      }
      case 'call': {
        const r = await session.call({ objectId: s.objectId, methodId: s.methodId, inputArguments: [] });
        return { op: s.op, ok: r.statusCode.isGood(), status: r.statusCode.name };
      }
      case 'subscribe': {
        const sub = await session.createSubscription2({
          requestedPublishingInterval: 100,
          requestedLifetimeCount: 100,
          requestedMaxKeepAliveCount: 10,
          maxNotificationsPerPublish: 100,
          publishingEnabled: true,
          priority: 1,
        });
        let count = 0;
        const item = await sub.monitor(
          { nodeId: s.nodeId, attributeId: AttributeIds.Value },
          { samplingInterval: 100, discardOldest: true, queueSize: 10 },
          TimestampsToReturn.Both,
        );
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, s.timeoutMs);
          item.on('changed', () => {
            count++;
            if (count >= s.changes) {
              clearTimeout(t);
              resolve();
            }
          });
        });
        await sub.terminate();
        return { op: s.op, ok: count >= s.changes, count };
      }
      case 'read-loop': {
        let good = 0;
        let bad = 0;
        let lastError: string | undefined;
        const end = Date.now() + s.ms;
        while (Date.now() < end) {
          try {
            const dv = await session.read({ nodeId: s.nodeId, attributeId: AttributeIds.Value });
            if (dv.statusCode.isGood()) good++;
            else bad++;
          } catch (e) {
            bad++;
            lastError = message(e);
          }
          await new Promise((r) => setTimeout(r, s.everyMs));
        }
        return {
          op: s.op,
          ok: bad === 0 && good > 0,
          good,
          bad,
          ...(lastError === undefined ? {} : { error: lastError }),
        };
      }
      case 'sleep':
        await new Promise((r) => setTimeout(r, s.ms));
        return { op: s.op, ok: true };
    }
  } catch (e) {
    const status = /Bad[A-Za-z]+/.exec(message(e))?.[0];
    return {
      op: s.op,
      ok: false,
      error: message(e).slice(0, 300),
      ...(status === undefined ? {} : { status }),
    };
  }
}

export async function runSession(
  pki: OPCUACertificateManager,
  script: OpcuaSessionScript,
): Promise<OpcuaSessionResult> {
  const client = OPCUAClient.create({
    applicationName: 'sluice-lab-client',
    clientCertificateManager: pki,
    securityMode: MessageSecurityMode[script.securityMode],
    securityPolicy: SecurityPolicy[script.securityPolicy],
    endpointMustExist: false,
    // A refused connection must fail now, not after node-opcua's reconnection back-off.
    connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
    requestedSessionTimeout: 30_000,
    ...(script.tokenLifetimeMs === undefined ? {} : { defaultSecureTokenLifetime: script.tokenLifetimeMs }),
    ...(script.tokenRenewalMs === undefined ? {} : { tokenRenewalInterval: script.tokenRenewalMs }),
  });
  const out: OpcuaSessionResult = {
    connected: false,
    session: false,
    results: [],
    tokenRenewals: 0,
    connectionLost: false,
  };
  client.on('security_token_renewed', () => out.tokenRenewals++);
  client.on('connection_lost', () => {
    out.connectionLost = true;
  });
  const guard = setTimeout(() => void client.disconnect().catch(() => undefined), 60_000);
  try {
    await client.connect(script.endpoint);
    out.connected = true;
    const identity: UserIdentityInfo =
      script.user === undefined
        ? { type: UserTokenType.Anonymous }
        : { type: UserTokenType.UserName, userName: script.user.userName, password: script.user.password };
    let session: ClientSession;
    try {
      session = await client.createSession(identity);
    } catch (e) {
      out.error = message(e).slice(0, 300);
      return out;
    }
    out.session = true;
    for (const s of script.steps) out.results.push(await step(session, s));
    await session.close().catch(() => undefined);
  } catch (e) {
    out.error = message(e).slice(0, 300);
  } finally {
    clearTimeout(guard);
    await client.disconnect().catch(() => undefined);
  }
  return out;
}

const isMain = process.argv[1] !== undefined && import.meta.filename === process.argv[1];
if (isMain) {
  const arg = process.argv[2];
  if (arg === undefined) {
    process.stderr.write(`usage: opcua-client.ts '{"pki":DIR,"sessions":[…]}'\n`);
    process.exit(2);
  }
  const { pki, sessions } = JSON.parse(arg) as { pki: string; sessions: OpcuaSessionScript[] };
  const manager = new OPCUACertificateManager({
    rootFolder: pki,
    automaticallyAcceptUnknownCertificate: true,
  });
  await manager.initialize();
  for (const s of sessions) {
    process.stdout.write(JSON.stringify(await runSession(manager, s)) + '\n');
  }
  // node-opcua keeps timers (certificate watchers) alive; the answer is out, so leave.
  process.exit(0);
}
