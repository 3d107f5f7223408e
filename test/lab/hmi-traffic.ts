/**
 * HMI traffic generator for the lab: polls a PLC the way an HMI does (allowed reads, bounded setpoint
 * writes) and, every few cycles, tries things the demo policy forbids (a write outside the allowed range,
 * a connection to a port no conduit allows). Each attempt's outcome is printed as one JSON line.
 *
 *   node test/lab/hmi-traffic.ts --plc 10.73.3.20 [--port 502] [--unit 1] [--interval 1000] [--forbidden-port 22]
 */
import { parseArgs } from 'node:util';
import net from 'node:net';
import { ModbusClient } from './modbus-serial.ts';

const { values } = parseArgs({
  options: {
    plc: { type: 'string' },
    port: { type: 'string', default: '502' },
    unit: { type: 'string', default: '1' },
    interval: { type: 'string', default: '1000' },
    'forbidden-port': { type: 'string', default: '22' },
    'read-addr': { type: 'string', default: '0' },
    'write-addr': { type: 'string', default: '100' },
    'forbidden-write-addr': { type: 'string', default: '900' },
  },
});
if (values.plc === undefined) {
  process.stderr.write('hmi-traffic: --plc ADDRESS is required\n');
  process.exit(2);
}
const plc = values.plc;
const port = Number(values.port);
const intervalMs = Number(values.interval);

function emit(event: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ time: Date.now(), ...event }) + '\n');
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function tryForbiddenConnect(): Promise<void> {
  const forbiddenPort = Number(values['forbidden-port']);
  await new Promise<void>((resolve) => {
    const s = net.createConnection({ host: plc, port: forbiddenPort, timeout: 1000 });
    const done = (outcome: string) => {
      s.destroy();
      emit({ op: 'connect', port: forbiddenPort, outcome });
      resolve();
    };
    s.on('connect', () => done('connected'));
    s.on('timeout', () => done('timeout'));
    s.on('error', (e) => done(errText(e)));
  });
}

let client: ModbusClient | undefined;
async function connected(): Promise<ModbusClient> {
  if (client?.isOpen === true) return client;
  const c = new ModbusClient();
  c.setTimeout(2000);
  await c.connectTCP(plc, { port });
  c.setID(Number(values.unit));
  client = c;
  return c;
}

let cycle = 0;
async function step(): Promise<void> {
  cycle++;
  try {
    const c = await connected();
    const r = await c.readHoldingRegisters(Number(values['read-addr']), 10);
    emit({ op: 'read', outcome: 'ok', values: r.data.slice(0, 3) });
    await c.writeRegister(Number(values['write-addr']), cycle % 1000);
    emit({ op: 'write', outcome: 'ok' });
    if (cycle % 3 === 0) {
      await c
        .writeRegister(Number(values['forbidden-write-addr']), 1)
        .then(() => emit({ op: 'forbidden-write', outcome: 'accepted' }))
        .catch((e: unknown) => emit({ op: 'forbidden-write', outcome: errText(e) }));
    }
  } catch (e) {
    emit({ op: 'modbus', outcome: errText(e) });
    client?.close(() => undefined);
    client = undefined;
  }
  if (cycle % 5 === 0) await tryForbiddenConnect();
}

let stopping = false;
async function loop(): Promise<void> {
  while (!stopping) {
    await step();
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
const stop = () => {
  stopping = true;
  client?.close(() => undefined);
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
void loop();
