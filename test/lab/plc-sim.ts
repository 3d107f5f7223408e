/**
 * A simulated PLC for the lab: a modbus-serial TCP server with 2,000 holding and input registers and 2,000 coils.
 * Every request it receives is printed as one JSON line on stdout, so tests can prove what reached the
 * device (and, above all, what did not).
 *
 *   node test/lab/plc-sim.ts [--host 0.0.0.0] [--port 502] [--unit 1]
 */
import { parseArgs } from 'node:util';
import { ModbusServerTCP } from './modbus-serial.ts';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '0.0.0.0' },
    port: { type: 'string', default: '502' },
    unit: { type: 'string', default: '1' },
    quiet: { type: 'boolean', default: false },
  },
});
const port = Number(values.port);
const unit = Number(values.unit);
const SIZE = 2000;
const holding = new Uint16Array(SIZE);
const input = new Uint16Array(SIZE);
const coils = new Uint8Array(SIZE);
// A slowly changing "process": input registers follow a sine so a dashboard shows live values.
const started = Date.now();
function tick(): void {
  const t = (Date.now() - started) / 1000;
  for (let i = 0; i < SIZE; i++) input[i] = Math.round(1000 + 500 * Math.sin(t / 10 + i / 50));
}
tick();
setInterval(tick, 1000).unref();

function emit(event: Record<string, unknown>): void {
  if (!values.quiet) process.stdout.write(JSON.stringify({ time: Date.now(), ...event }) + '\n');
}

function check(addr: number, length = 1): void {
  // Outside the simulated memory: modbus-serial turns a thrown error into exception 02.
  if (addr < 0 || addr + length > SIZE)
    throw Object.assign(new Error('illegal address'), { modbusErrorCode: 2 });
}

const vector = {
  getCoil: (addr: number) => {
    check(addr);
    emit({ op: 'read-coil', addr });
    return coils[addr] === 1;
  },
  getDiscreteInput: (addr: number) => {
    check(addr);
    emit({ op: 'read-discrete-input', addr });
    return (addr & 1) === 1;
  },
  // modbus-serial calls the single-register getters for a quantity of 1 and the Multiple ones otherwise;
  // without them a one-register read is never answered.
  getInputRegister: (addr: number) => {
    check(addr);
    emit({ op: 'read-input-registers', addr, length: 1 });
    return input[addr] ?? 0;
  },
  getHoldingRegister: (addr: number) => {
    check(addr);
    emit({ op: 'read-holding-registers', addr, length: 1 });
    return holding[addr] ?? 0;
  },
  getMultipleInputRegisters: (addr: number, length: number) => {
    check(addr, length);
    emit({ op: 'read-input-registers', addr, length });
    return Array.from(input.subarray(addr, addr + length));
  },
  getMultipleHoldingRegisters: (addr: number, length: number) => {
    check(addr, length);
    emit({ op: 'read-holding-registers', addr, length });
    return Array.from(holding.subarray(addr, addr + length));
  },
  setRegister: (addr: number, value: number) => {
    check(addr);
    emit({ op: 'write-register', addr, value });
    holding[addr] = value;
  },
  setCoil: (addr: number, value: boolean) => {
    check(addr);
    emit({ op: 'write-coil', addr, value });
    coils[addr] = value ? 1 : 0;
  },
};

const server = new ModbusServerTCP(vector, { host: values.host, port, unitID: unit });
server.on('initialized', () => emit({ op: 'listening', host: values.host, port, unit }));
server.on('serverError', (err: Error | null) => {
  emit({ op: 'server-error', message: err?.message });
  process.exitCode = 1;
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
