/**
 * The demo's OPC UA traffic from the SCADA server: every cycle, one SignAndEncrypt Basic256Sha256 session as
 * user `operator` reads the line's counter for a while (allowed by the water plant's `scada-to-control/ua`
 * flow), then one SecurityMode None session tries the same (refused by the filter at OPN: the flow allows
 * only SignAndEncrypt). One JSON line per session outcome on stdout.
 *
 *   node test/lab/opcua-hmi.ts --server 10.40.0.30 --pki DIR [--interval 10000]
 */
import { parseArgs } from 'node:util';
import { OPCUACertificateManager } from 'node-opcua';
import { runSession, type OpcuaSessionScript } from './opcua-client.ts';

const { values } = parseArgs({
  options: {
    server: { type: 'string' },
    pki: { type: 'string' },
    interval: { type: 'string', default: '10000' },
  },
});
if (values.server === undefined || values.pki === undefined) {
  process.stderr.write('usage: opcua-hmi.ts --server ADDRESS --pki DIR [--interval MS]\n');
  process.exit(2);
}
const endpoint = `opc.tcp://${values.server}:4840`;
const pki = new OPCUACertificateManager({
  rootFolder: values.pki,
  automaticallyAcceptUnknownCertificate: true,
});
await pki.initialize();
const intervalMs = Number(values.interval);
const readLoop = { op: 'read-loop', nodeId: 'ns=2;s=Line1.Counter', ms: 5000, everyMs: 500 } as const;
const secure: OpcuaSessionScript = {
  endpoint,
  securityMode: 'SignAndEncrypt',
  securityPolicy: 'Basic256Sha256',
  user: { userName: 'operator', password: 'secret' },
  steps: [readLoop],
};
const insecure: OpcuaSessionScript = {
  endpoint,
  securityMode: 'None',
  securityPolicy: 'None',
  steps: [readLoop],
};

let stopping = false;
const stop = () => {
  stopping = true;
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

for (let cycle = 1; !stopping; cycle++) {
  for (const [name, script] of [
    ['sign-and-encrypt', secure],
    ['none', insecure],
  ] as const) {
    const r = await runSession(pki, script);
    process.stdout.write(
      JSON.stringify({
        time: Date.now(),
        cycle,
        session: name,
        connected: r.connected,
        ok: r.session,
        error: r.error,
        results: r.results,
      }) + '\n',
    );
  }
  await new Promise((res) => setTimeout(res, intervalMs));
}
