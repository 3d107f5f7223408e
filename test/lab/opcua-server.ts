/**
 * A node-opcua server for the lab (the OPC UA "PLC"), run inside a zone host namespace:
 *
 *   node test/lab/opcua-server.ts --pki DIR [--port 4840] [--host ADDRESS] [--quiet]
 *
 * Address space under ns=2 (a namespace registered here, so the ids do not depend on the server's own ns=1):
 * - `ns=2;s=Line1.Setpoint`, `ns=2;s=Line1.Setpoint2`, `ns=2;s=Line1.Other` — writable Double variables;
 * - `ns=2;s=Line1.Counter` — read-only UInt32 that increments every 100 ms (subscriptions see it change);
 * - methods `ns=2;s=Line1.Reset` and `ns=2;s=Line1.Purge` on the object `ns=2;s=Line1`.
 * Security: policies None, Basic256Sha256 and Aes256_Sha256_RsaPss, modes None, Sign and SignAndEncrypt;
 * anonymous and username (`operator` / `secret`) identities. Unknown client certificates are trusted
 * automatically (a test PKI in a temporary folder).
 *
 * stdout: one JSON line per Write or Call the server actually executes (`{"op":"write","nodeId":…,"value":…}`,
 * `{"op":"call","method":…}`) — the proof of what reached the device — plus `{"op":"listening",…}` once ready
 * and `{"op":"session",…}` per activated session. `--quiet` keeps only the listening line (benchmarks).
 */
import { parseArgs } from 'node:util';
import {
  DataType,
  MessageSecurityMode,
  OPCUACertificateManager,
  OPCUAServer,
  SecurityPolicy,
  StatusCodes,
  Variant,
  type ISessionContext,
  type UAVariable,
} from 'node-opcua';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '4840' },
    host: { type: 'string' },
    pki: { type: 'string' },
    quiet: { type: 'boolean', default: false },
  },
});
if (values.pki === undefined) {
  process.stderr.write('usage: opcua-server.ts --pki DIR [--port N] [--host ADDRESS] [--quiet]\n');
  process.exit(2);
}
const quiet = values.quiet;

function line(obj: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ time: Date.now(), ...obj }) + '\n');
}

const LAB_USER = { userName: 'operator', password: 'secret' } as const;

const serverCertificateManager = new OPCUACertificateManager({
  rootFolder: values.pki,
  automaticallyAcceptUnknownCertificate: true,
});
await serverCertificateManager.initialize();

const server = new OPCUAServer({
  port: Number(values.port),
  // The advertised endpoint URL names the address clients dial, so their endpoint matching needs no tricks.
  ...(values.host === undefined ? {} : { hostname: values.host, alternateHostname: [values.host] }),
  serverCertificateManager,
  securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256, SecurityPolicy.Aes256_Sha256_RsaPss],
  securityModes: [MessageSecurityMode.None, MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt],
  allowAnonymous: true,
  userManager: {
    isValidUser: (userName: string, password: string): boolean =>
      userName === LAB_USER.userName && password === LAB_USER.password,
  },
  // Benchmarks open hundreds of sessions; the defaults (10 sessions) would cap them.
  serverCapabilities: { maxSessions: 2000 },
  maxConnectionsPerEndpoint: 2000,
  buildInfo: { productName: 'sluice-lab-opcua-server' },
});
await server.initialize();

const addressSpace = server.engine.addressSpace;
if (addressSpace === null) throw new Error('no address space');
const ns = addressSpace.registerNamespace('urn:sluice:lab:line1');
const nsIndex = ns.index;

const line1 = ns.addObject({
  organizedBy: addressSpace.rootFolder.objects,
  browseName: 'Line1',
  nodeId: 's=Line1',
});

function sessionOf(context: ISessionContext | null | undefined): string | null {
  const s = context?.session as { sessionName?: string } | undefined;
  return s?.sessionName ?? null;
}

function writable(name: string, initial: number): UAVariable {
  let current = initial;
  const nodeId = `ns=${nsIndex};s=Line1.${name}`;
  const v = ns.addVariable({
    componentOf: line1,
    browseName: name,
    nodeId: `s=Line1.${name}`,
    dataType: 'Double',
    accessLevel: 'CurrentRead | CurrentWrite',
    userAccessLevel: 'CurrentRead | CurrentWrite',
    minimumSamplingInterval: 100,
  });
  v.bindVariable(
    {
      get: () => new Variant({ dataType: DataType.Double, value: current }),
      set: (variant: Variant) => {
        current = Number(variant.value);
        if (!quiet) line({ op: 'write', nodeId, value: current });
        return StatusCodes.Good;
      },
    },
    true,
  );
  return v;
}
writable('Setpoint', 10);
writable('Setpoint2', 20);
writable('Other', 30);

let counter = 0;
const counterVar = ns.addVariable({
  componentOf: line1,
  browseName: 'Counter',
  nodeId: 's=Line1.Counter',
  dataType: 'UInt32',
  minimumSamplingInterval: 100,
});
counterVar.bindVariable({ get: () => new Variant({ dataType: DataType.UInt32, value: counter }) }, true);
const tick = setInterval(() => {
  counter = (counter + 1) >>> 0;
  counterVar.touchValue();
}, 100);

function method(name: string): void {
  const m = ns.addMethod(line1, {
    browseName: name,
    nodeId: `s=Line1.${name}`,
    inputArguments: [],
    outputArguments: [{ name: 'done', dataType: DataType.Boolean }],
  });
  const methodId = `ns=${nsIndex};s=Line1.${name}`;
  m.bindMethod((_inputs, context, callback) => {
    if (!quiet) line({ op: 'call', method: methodId, session: sessionOf(context) });
    callback(null, {
      statusCode: StatusCodes.Good,
      outputArguments: [new Variant({ dataType: DataType.Boolean, value: true })],
    });
  });
}
method('Reset');
method('Purge');

server.on('session_activated', (session) => {
  if (quiet) return;
  const token = session.userIdentityToken as { userName?: string } | undefined;
  line({
    op: 'session',
    name: session.sessionName ?? null,
    user: token?.userName ?? null,
    identity: token?.constructor.name ?? null,
  });
});

await server.start();
line({
  op: 'listening',
  port: Number(values.port),
  endpoints: server.endpoints.flatMap((e) => e.endpointDescriptions().map((d) => d.endpointUrl)).slice(0, 1),
  namespace: nsIndex,
});

let stopping = false;
const stop = (): void => {
  if (stopping) return;
  stopping = true;
  clearInterval(tick);
  // Bounded: a client that never closes must not hold the lab's teardown.
  setTimeout(() => process.exit(0), 2000).unref();
  void server.shutdown(0).finally(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
