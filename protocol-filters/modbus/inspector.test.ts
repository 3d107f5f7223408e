import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { ModbusSpec, ProxyPlanEntry } from '../../policies/types.ts';
import type { InspectorContext, ProxyEvent } from '../core/inspector.ts';
import { FlowProxy, type ProxyLimits } from '../core/proxy.ts';
import { planEntry, sleep, startUpstream, until, within, type Upstream } from '../core/test-helpers.ts';
import { encodeAdu, u16 } from './frames.ts';
import { ModbusInspector, modbusInspectorFactory } from './inspector.ts';
import { ModbusStreamDecoder } from './mbap.ts';

/**
 * The policy of every test: unit 1 only; reads of holding/input registers 0-999; writes of single/multiple
 * registers only at 100-109 and only values 0-100.
 */
const SPEC: ModbusSpec = {
  unitIds: [1],
  rules: [
    { functions: [3, 4], addresses: [{ start: 0, end: 999 }] },
    { functions: [6, 16], addresses: [{ start: 100, end: 109 }], values: { start: 0, end: 100 } },
  ],
};

const readHolding = (tx: number, addr: number, qty: number, unit = 1): Buffer =>
  encodeAdu(tx, unit, [3, ...u16(addr), ...u16(qty)]);
const writeRegister = (tx: number, addr: number, value: number, unit = 1): Buffer =>
  encodeAdu(tx, unit, [6, ...u16(addr), ...u16(value)]);
const writeCoil = (tx: number, addr: number): Buffer => encodeAdu(tx, 1, [5, ...u16(addr), 0xff, 0x00]);

// ---- a fake device -------------------------------------------------------------------------------------

interface FakeDevice {
  upstream: Upstream;
  /** Every request ADU the device received, across connections, in arrival order. */
  requests: Buffer[];
  /** The device's side of each accepted connection, for injecting unsolicited frames. */
  sockets: net.Socket[];
}

/**
 * A minimal Modbus device on a raw socket: answers 3/4 with register i = address + i, echoes 6, answers
 * 16 with address + quantity. Address 999 answers after 150 ms (a slow request); address 998 never answers.
 * `badUnit` answers with unit id 9 whatever was asked (an inconsistent device).
 */
async function startDevice(opts: { badUnit?: boolean } = {}): Promise<FakeDevice> {
  const requests: Buffer[] = [];
  const sockets: net.Socket[] = [];
  const upstream = await startUpstream((socket) => {
    sockets.push(socket);
    const decoder = new ModbusStreamDecoder();
    socket.on('data', (chunk: Buffer) => {
      for (const item of decoder.push(chunk)) {
        if (item.kind !== 'frame') {
          socket.destroy();
          return;
        }
        const adu = item.frame;
        requests.push(Buffer.from(adu.bytes));
        const fn = adu.pdu[0] ?? 0;
        const addr = adu.pdu.readUInt16BE(1);
        const unit = opts.badUnit ? 9 : adu.unitId;
        let pdu: number[];
        if (fn === 3 || fn === 4) {
          const qty = adu.pdu.readUInt16BE(3);
          pdu = [fn, qty * 2];
          for (let i = 0; i < qty; i++) pdu.push(...u16(addr + i));
        } else if (fn === 6 || fn === 5) {
          pdu = [...adu.pdu];
        } else if (fn === 16) {
          pdu = [...adu.pdu.subarray(0, 5)];
        } else {
          pdu = [fn | 0x80, 1];
        }
        if (addr === 998) continue;
        const answer = encodeAdu(adu.transactionId, unit, pdu);
        if (addr === 999) setTimeout(() => socket.write(answer), 150);
        else socket.write(answer);
      }
    });
  });
  return { upstream, requests, sockets };
}

// ---- a raw Modbus client ---------------------------------------------------------------------------------

interface RawClient {
  socket: net.Socket;
  /** Answer ADUs received, in arrival order. */
  answers: Buffer[];
  closed: Promise<void>;
  isClosed(): boolean;
  send(...adus: Buffer[]): void;
  /** Waits until `n` answers have arrived. */
  waitAnswers(n: number, ms?: number): Promise<Buffer[]>;
}

async function rawClient(port: number): Promise<RawClient> {
  const socket = net.connect({ host: '127.0.0.1', port });
  const answers: Buffer[] = [];
  const decoder = new ModbusStreamDecoder();
  let isClosed = false;
  socket.on('data', (chunk: Buffer) => {
    for (const item of decoder.push(chunk))
      if (item.kind === 'frame') answers.push(Buffer.from(item.frame.bytes));
  });
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) =>
    socket.on('close', () => {
      isClosed = true;
      resolve();
    }),
  );
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return {
    socket,
    answers,
    closed,
    isClosed: () => isClosed,
    send: (...adus) => socket.write(Buffer.concat(adus)),
    waitAnswers: async (n, ms = 3000) => {
      await until(() => answers.length >= n, ms);
      return answers;
    },
  };
}

/** [transaction id, unit id, function byte, first data byte] of an answer. */
function head(adu: Buffer | undefined): [number, number, number, number] {
  if (adu === undefined) throw new Error('no answer');
  return [adu.readUInt16BE(0), adu[6] ?? -1, adu[7] ?? -1, adu[8] ?? -1];
}

// ---- fixtures -------------------------------------------------------------------------------------------

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Setup {
  device: FakeDevice;
  proxy: FlowProxy;
  events: ProxyEvent[];
  client(): Promise<RawClient>;
}

async function setup(
  over: Partial<ProxyPlanEntry> = {},
  limits: Partial<ProxyLimits> = {},
  deviceOpts: { badUnit?: boolean } = {},
): Promise<Setup> {
  const device = await startDevice(deviceOpts);
  cleanups.push(() => device.upstream.close());
  const events: ProxyEvent[] = [];
  const proxy = new FlowProxy(
    planEntry(device.upstream.port, { modbus: SPEC, ...over }),
    modbusInspectorFactory,
    {
      host: '127.0.0.1',
      limits,
      onEvent: (e) => events.push(e),
    },
  );
  await proxy.start();
  cleanups.push(() => proxy.stop());
  return {
    device,
    proxy,
    events,
    client: async () => {
      const c = await rawClient(proxy.port);
      cleanups.push(() => void c.socket.destroy());
      return c;
    },
  };
}

// ---- through a FlowProxy over loopback --------------------------------------------------------------------

describe('ModbusInspector in a FlowProxy', () => {
  it('lets an allowed read through and returns the device data', async () => {
    const { device, client, events } = await setup();
    const c = await client();
    c.send(readHolding(7, 10, 3));
    const [answer] = await c.waitAnswers(1);
    expect(answer?.toString('hex')).toBe(
      encodeAdu(7, 1, [3, 6, ...u16(10), ...u16(11), ...u16(12)]).toString('hex'),
    );
    expect(device.requests.map((b) => b.toString('hex'))).toEqual([readHolding(7, 10, 3).toString('hex')]);
    expect(events).toEqual([]);
  });

  it('answers refused requests with exceptions 01/02/03/0A, never forwards them, and stays usable', async () => {
    const { device, client, events } = await setup();
    const c = await client();
    c.send(writeCoil(0x1201, 5)); // function 5 not listed → 01
    c.send(writeRegister(0x1202, 500, 1)); // outside 100-109 → 02
    c.send(writeRegister(0x1203, 100, 101)); // value above 100 → 03
    c.send(readHolding(0x1204, 0, 1, 2)); // unit 2 → 0A
    c.send(readHolding(0x1205, 1000, 1)); // read past 999 → 02
    const answers = await c.waitAnswers(5);
    expect(answers.map(head)).toEqual([
      [0x1201, 1, 0x85, 0x01],
      [0x1202, 1, 0x86, 0x02],
      [0x1203, 1, 0x86, 0x03],
      [0x1204, 2, 0x83, 0x0a],
      [0x1205, 1, 0x83, 0x02],
    ]);
    // Still usable: an allowed write and read go through afterwards.
    c.send(writeRegister(0x1206, 105, 42), readHolding(0x1207, 105, 1));
    await c.waitAnswers(7);
    expect(head(c.answers[5])).toEqual([0x1206, 1, 6, 0]);
    expect(head(c.answers[6])).toEqual([0x1207, 1, 3, 2]);
    // The device saw only the two allowed requests.
    expect(device.requests.map((b) => b.readUInt16BE(0))).toEqual([0x1206, 0x1207]);
    expect(events.map((e) => [e.reason, e.verdict])).toEqual([
      ['modbus.illegal-function', 'refuse'],
      ['modbus.illegal-data-address', 'refuse'],
      ['modbus.illegal-data-value', 'refuse'],
      ['modbus.unit-not-allowed', 'refuse'],
      ['modbus.illegal-data-address', 'refuse'],
    ]);
    // The blocked-traffic fields: conduit, flow, src, dst from the proxy; unit, function, range, value here.
    const value = events[2];
    expect(value).toMatchObject({
      conduit: 'hmi-to-plc',
      flow: 'poll',
      src: '127.0.0.1',
      dst: '127.0.0.1',
      dstPort: device.upstream.port,
      detail: {
        transactionId: 0x1203,
        unit: 1,
        function: 6,
        addresses: '100',
        values: '101',
        exception: 3,
        why: 'written value out of bounds',
      },
    });
  });

  it('keeps a refusal behind an outstanding slow request in request order', async () => {
    const { device, client, events } = await setup();
    const c = await client();
    // One segment: a slow read (device answers after 150 ms), then a forbidden write.
    c.send(readHolding(1, 999, 1), writeRegister(2, 500, 1));
    // The refusal is logged at once, but not sent ahead of the device's answer.
    await until(() => events.length === 1);
    await sleep(50);
    expect(c.answers).toEqual([]);
    const answers = await c.waitAnswers(2);
    expect(answers.map(head)).toEqual([
      [1, 1, 3, 2],
      [2, 1, 0x86, 0x02],
    ]);
    expect(device.requests.map((b) => b.readUInt16BE(0))).toEqual([1]);
  });

  it('closes only the connection that sent a malformed frame', async () => {
    const { device, client, events, proxy } = await setup();
    const good = await client();
    const bad = await client();
    const badFc16 = await client();
    good.send(readHolding(1, 0, 1));
    await good.waitAnswers(1);
    bad.send(encodeAdu(9, 1, [3, ...u16(0), ...u16(1)], { protocolId: 1 }));
    // Write Multiple Registers: 2 registers announced, byte count 3 (must be 4).
    badFc16.send(encodeAdu(10, 1, [16, ...u16(100), ...u16(2), 3, 0, 1, 0]));
    await within(Promise.all([bad.closed, badFc16.closed]));
    good.send(readHolding(2, 0, 1));
    await good.waitAnswers(2);
    expect(good.isClosed()).toBe(false);
    expect(device.requests.map((b) => b.readUInt16BE(0))).toEqual([1, 2]);
    const malformed = events.filter((e) => e.reason === 'modbus.malformed');
    expect(malformed.map((e) => (e.detail as { code: string }).code).sort()).toEqual([
      'mbap.protocol-id',
      'pdu.byte-count',
    ]);
    expect(malformed.every((e) => e.verdict === 'drop')).toBe(true);
    expect(proxy.stats.cut).toBe(2);
  });

  it('in monitor mode forwards a forbidden write and logs would-refuse', async () => {
    const { device, client, events } = await setup({ mode: 'monitor' });
    const c = await client();
    c.send(writeRegister(3, 500, 7));
    const [answer] = await c.waitAnswers(1);
    // The device's echo, not a gateway exception.
    expect(head(answer)).toEqual([3, 1, 6, 0x01]);
    expect(device.requests.map((b) => b.toString('hex'))).toEqual([writeRegister(3, 500, 7).toString('hex')]);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      reason: 'modbus.illegal-data-address',
      verdict: 'would-refuse',
      mode: 'monitor',
      detail: { unit: 1, function: 6, addresses: '500', values: '7', exception: 2 },
    });
  });

  it('answers out-of-range requests like a device (exception 03/02), never forwards them, stays usable', async () => {
    const { device, client, events } = await setup({ mode: 'monitor' });
    const c = await client();
    c.send(
      encodeAdu(1, 1, [3, ...u16(0), ...u16(0)]), // quantity 0 (MB §6.3: 1..125) → 03
      encodeAdu(2, 1, [3, ...u16(0xffff), ...u16(2)]), // 65535 + 2 runs past the address space → 02
      encodeAdu(3, 1, [5, ...u16(100), 0x12, 0x34]), // coil value neither 0 nor 0xFF00 (MB §6.5) → 03
      encodeAdu(4, 1, [8, ...u16(1), 0x12, 0x34]), // diagnostics 01: data must be 0 or 0xFF00 → 03
      readHolding(5, 0, 1),
    );
    const answers = await c.waitAnswers(5);
    expect(answers.map(head)).toEqual([
      [1, 1, 0x83, 0x03],
      [2, 1, 0x83, 0x02],
      [3, 1, 0x85, 0x03],
      [4, 1, 0x88, 0x03],
      [5, 1, 3, 2],
    ]);
    expect(c.isClosed()).toBe(false);
    expect(device.requests.map((b) => b.readUInt16BE(0))).toEqual([5]);
    expect(events.map((e) => [e.reason, e.verdict])).toEqual([
      ['modbus.illegal-data-value', 'refuse'],
      ['modbus.illegal-data-address', 'refuse'],
      ['modbus.illegal-data-value', 'refuse'],
      ['modbus.illegal-data-value', 'refuse'],
    ]);
  });

  it('a lost device answer does not freeze the connection; its timeout releases the refusal behind it', async () => {
    const { client, events } = await setup({}, { requestTimeoutMs: 300 });
    const c = await client();
    // Address 998 is never answered; the write to 500 is refused behind it; the read of 0 is answered.
    c.send(readHolding(1, 998, 1), writeRegister(2, 500, 1), readHolding(3, 0, 1));
    const first = await c.waitAnswers(1, 250);
    expect(first.map(head)).toEqual([[3, 1, 3, 2]]);
    const all = await c.waitAnswers(2, 2000);
    expect(all.map(head)).toEqual([
      [3, 1, 3, 2],
      [2, 1, 0x86, 0x02],
    ]);
    expect(events.map((e) => e.reason)).toEqual(['modbus.illegal-data-address', 'modbus.request-timeout']);
    // The slot is free again: the connection goes on.
    c.send(readHolding(4, 1, 1));
    expect((await c.waitAnswers(3)).map(head)[2]).toEqual([4, 1, 3, 2]);
  });

  it('times out a lost answer a full timeout after its own request, also when an earlier deadline was armed', async () => {
    // The proxy keeps a deadline timer armed while later requests move the deadline on; the early firing
    // must find nothing due, re-arm, and still expire the lost request, not before its own timeout.
    const { client, events } = await setup({}, { requestTimeoutMs: 300 });
    const c = await client();
    c.send(readHolding(1, 0, 1));
    expect((await c.waitAnswers(1)).map(head)).toEqual([[1, 1, 3, 2]]);
    await new Promise((r) => setTimeout(r, 150));
    const sentAt = performance.now();
    c.send(readHolding(2, 998, 1), writeRegister(3, 500, 1));
    const all = await c.waitAnswers(2, 2000);
    const waited = performance.now() - sentAt;
    expect(all.map(head)[1]).toEqual([3, 1, 0x86, 0x02]);
    expect(waited).toBeGreaterThanOrEqual(290);
    expect(events.map((e) => e.reason)).toEqual(['modbus.illegal-data-address', 'modbus.request-timeout']);
  });

  it('still closes a malformed frame in monitor mode', async () => {
    const { device, client, events } = await setup({ mode: 'monitor' });
    const c = await client();
    // Byte count 4 for one register (MB §6.12: 2 × quantity): the frame is inconsistent.
    c.send(encodeAdu(1, 1, [16, ...u16(100), ...u16(1), 4, 0, 1, 0, 2]));
    await within(c.closed);
    expect(device.requests).toEqual([]);
    expect(events.map((e) => e.reason)).toEqual(['modbus.malformed']);
  });

  it('drops an unsolicited device answer and keeps the connection', async () => {
    const { device, client, events } = await setup();
    const c = await client();
    c.send(readHolding(1, 0, 1));
    await c.waitAnswers(1);
    const deviceSide = device.sockets[0];
    if (deviceSide === undefined) throw new Error('no device connection');
    deviceSide.write(encodeAdu(77, 1, [3, 2, 0, 42]));
    await until(() => events.length === 1);
    expect(events[0]).toMatchObject({
      reason: 'modbus.unsolicited',
      verdict: 'drop',
      detail: { transactionId: 77 },
    });
    c.send(readHolding(2, 0, 1));
    await c.waitAnswers(2);
    // Nothing of transaction 77 reached the client.
    expect(c.answers.map((a) => a.readUInt16BE(0))).toEqual([1, 2]);
  });

  it('closes the connection when a device answer does not fit its request', async () => {
    const { client, events } = await setup({}, {}, { badUnit: true });
    const c = await client();
    c.send(readHolding(1, 0, 1));
    await within(c.closed);
    expect(c.answers).toEqual([]);
    expect(events).toMatchObject([
      { reason: 'modbus.bad-response', verdict: 'drop', detail: { code: 'response.unit-mismatch' } },
    ]);
  });

  it('closes a connection that pipelines more than maxOutstandingRequests', async () => {
    const { client, events } = await setup({}, { maxOutstandingRequests: 2 });
    const c = await client();
    // Address 998 is never answered.
    c.send(readHolding(1, 998, 1), readHolding(2, 998, 1), readHolding(3, 998, 1));
    await within(c.closed);
    expect(events.map((e) => e.reason)).toEqual(['too-many-outstanding-requests']);
  });
});

// ---- the inspector alone ---------------------------------------------------------------------------------

function context(over: Partial<ProxyPlanEntry> = {}): InspectorContext {
  return {
    entry: planEntry(502, { modbus: SPEC, ...over }),
    client: { address: '10.0.0.1', port: 40000 },
    limits: { maxOutstandingRequests: 4 },
  };
}

/** An inspector whose clock the test moves (`clock.now`), with a request timeout. */
function timed(spec: ModbusSpec, requestTimeoutMs: number, clock: { now: number }): ModbusInspector {
  return new ModbusInspector({
    ...context({ modbus: spec }),
    limits: { maxOutstandingRequests: 4, requestTimeoutMs },
    now: () => clock.now,
  });
}

describe('ModbusInspector (pure)', () => {
  it('reassembles a request sent byte by byte and reports the partial message meanwhile', () => {
    const insp = new ModbusInspector(context());
    const req = readHolding(5, 0, 2);
    for (let i = 0; i < req.length - 1; i++) {
      expect(insp.onClientData(req.subarray(i, i + 1))).toEqual([]);
      expect(insp.hasPartialMessage()).toBe(true);
    }
    const out = insp.onClientData(req.subarray(req.length - 1));
    expect(out).toEqual([{ action: 'forward', bytes: req }]);
    expect(insp.hasPartialMessage()).toBe(false);
  });

  it('forwards three pipelined ADUs of one segment as one write and pairs their answers', () => {
    const insp = new ModbusInspector(context());
    const three = Buffer.concat([readHolding(1, 0, 1), readHolding(2, 1, 1), readHolding(3, 2, 1)]);
    expect(insp.onClientData(three)).toEqual([{ action: 'forward', bytes: three }]);
    const a2 = encodeAdu(2, 1, [3, 2, 0, 1]);
    const a1 = encodeAdu(1, 1, [3, 2, 0, 0]);
    const a3 = encodeAdu(3, 1, [3, 2, 0, 2]);
    // The device answers 2 first: it goes to the client at once (device answers are never held).
    expect(insp.onServerData(a2)).toEqual([{ action: 'forward', bytes: a2 }]);
    expect(insp.onServerData(Buffer.concat([a1, a3]))).toEqual([
      { action: 'forward', bytes: Buffer.concat([a1, a3]) },
    ]);
  });

  it('gives up on an unanswered request at its deadline and releases the refusal queued behind it', () => {
    const clock = { now: 1000 };
    const insp = timed(SPEC, 500, clock);
    insp.onClientData(readHolding(1, 0, 1));
    expect(insp.onClientData(writeRegister(2, 500, 1))).toMatchObject([{ action: 'log' }]);
    expect(insp.nextDeadline()).toBe(1500);
    clock.now = 1499;
    expect(insp.onTimer(clock.now)).toEqual([]);
    clock.now = 1500;
    const out = insp.onTimer(clock.now);
    expect(out).toMatchObject([
      { action: 'log', event: { reason: 'modbus.request-timeout', detail: { transactionId: 1 } } },
      { action: 'forward' },
    ]);
    expect(head((out[1] as { bytes: Buffer }).bytes)).toEqual([2, 1, 0x86, 0x02]);
    expect(insp.nextDeadline()).toBeUndefined();
    // The late answer is unsolicited: dropped.
    expect(insp.onServerData(encodeAdu(1, 1, [3, 2, 0, 0]))).toMatchObject([
      { action: 'drop', event: { reason: 'modbus.unsolicited' } },
    ]);
  });

  describe('broadcast writes (unit 0)', () => {
    /** Unit 0 allowed too: a serial-line gateway behind the conduit, whose masters broadcast setpoints. */
    const BROADCAST_SPEC: ModbusSpec = { ...SPEC, unitIds: [0, 1] };

    it('hold no refusal, and go without a timeout event when no answer comes', () => {
      const clock = { now: 1000 };
      const insp = timed(BROADCAST_SPEC, 500, clock);
      const broadcast = writeRegister(1, 100, 7, 0);
      expect(insp.onClientData(broadcast)).toEqual([{ action: 'forward', bytes: broadcast }]);
      // The master does not wait for an answer to a broadcast: its next (refused) request is answered at once.
      const out = insp.onClientData(writeRegister(2, 500, 1));
      expect(out).toMatchObject([{ action: 'reply', event: { reason: 'modbus.illegal-data-address' } }]);
      expect(head((out[0] as { bytes: Buffer }).bytes)).toEqual([2, 1, 0x86, 0x02]);
      expect(insp.nextDeadline()).toBe(1500);
      clock.now = 1500;
      expect(insp.onTimer(clock.now)).toEqual([]);
      expect(insp.nextDeadline()).toBeUndefined();
    });

    it('are paired when the device does answer them (a TCP device addressed as unit 0)', () => {
      const insp = new ModbusInspector(context({ modbus: BROADCAST_SPEC }));
      const broadcast = writeRegister(7, 100, 7, 0);
      expect(insp.onClientData(broadcast)).toEqual([{ action: 'forward', bytes: broadcast }]);
      expect(insp.onServerData(broadcast)).toEqual([{ action: 'forward', bytes: broadcast }]);
      // Answered once: a second copy is unsolicited.
      expect(insp.onServerData(broadcast)).toMatchObject([
        { action: 'drop', event: { reason: 'modbus.unsolicited' } },
      ]);
    });

    it('pair a reused transaction id with the poll that waits for it, not with an earlier broadcast', () => {
      const insp = new ModbusInspector(context({ modbus: BROADCAST_SPEC }));
      insp.onClientData(writeRegister(0, 100, 7, 0));
      insp.onClientData(readHolding(0, 0, 1));
      const answer = encodeAdu(0, 1, [3, 2, 0, 0]);
      expect(insp.onServerData(answer)).toEqual([{ action: 'forward', bytes: answer }]);
    });

    it('hold an outstanding slot only briefly, so a master broadcasting often is not cut', () => {
      const clock = { now: 0 };
      const insp = timed(BROADCAST_SPEC, 10_000, clock);
      // Four broadcasts a second (the limit) for 4 s: each is forgotten a second after it was sent.
      for (let i = 0; i < 16; i++) {
        clock.now = i * 250;
        insp.onTimer(clock.now);
        const b = writeRegister(i, 100, 7, 0);
        expect(insp.onClientData(b)).toEqual([{ action: 'forward', bytes: b }]);
      }
      // A flood (the limit within one second) is cut like any other.
      const flood = Buffer.concat([0, 1, 2, 3, 4].map((i) => writeRegister(100 + i, 100, 7, 0)));
      expect(insp.onClientData(flood).at(-1)).toMatchObject({
        action: 'close',
        event: { reason: 'too-many-outstanding-requests' },
      });
    });

    it('pair by unit: a TCP device answering the broadcast first, with the poll on the same transaction id', () => {
      const insp = new ModbusInspector(context({ modbus: BROADCAST_SPEC }));
      const broadcast = writeRegister(0, 100, 7, 0);
      insp.onClientData(broadcast);
      insp.onClientData(readHolding(0, 0, 1));
      expect(insp.onServerData(broadcast)).toEqual([{ action: 'forward', bytes: broadcast }]);
      const answer = encodeAdu(0, 1, [3, 2, 0, 0]);
      expect(insp.onServerData(answer)).toEqual([{ action: 'forward', bytes: answer }]);
    });

    it('never pair a broadcast with an answer for another unit: a duplicate answer is unsolicited', () => {
      const insp = new ModbusInspector(context({ modbus: BROADCAST_SPEC }));
      insp.onClientData(readHolding(0, 0, 1));
      const answer = encodeAdu(0, 1, [3, 2, 0, 0]);
      expect(insp.onServerData(answer)).toEqual([{ action: 'forward', bytes: answer }]);
      insp.onClientData(writeRegister(0, 100, 7, 0));
      expect(insp.onServerData(answer)).toMatchObject([
        { action: 'drop', event: { reason: 'modbus.unsolicited' } },
      ]);
    });

    it('a refused broadcast is logged and not answered, not even with an exception', () => {
      const insp = new ModbusInspector(context({ modbus: BROADCAST_SPEC }));
      expect(insp.onClientData(writeRegister(3, 500, 7, 0))).toMatchObject([
        {
          action: 'log',
          event: {
            reason: 'modbus.illegal-data-address',
            verdict: 'refuse',
            detail: { unit: 0, why: expect.stringContaining('broadcast: not answered') },
          },
        },
      ]);
      // Unit 0 not allowed at all: still no answer.
      const strict = new ModbusInspector(context());
      expect(strict.onClientData(writeRegister(4, 100, 7, 0))).toMatchObject([
        { action: 'log', event: { reason: 'modbus.unit-not-allowed' } },
      ]);
    });

    it('a read from unit 0 still waits for its answer (only writes can be broadcast)', () => {
      const clock = { now: 0 };
      const insp = timed(BROADCAST_SPEC, 500, clock);
      insp.onClientData(readHolding(1, 0, 1, 0));
      expect(insp.onClientData(writeRegister(2, 500, 1))).toMatchObject([{ action: 'log' }]);
      clock.now = 500;
      expect(insp.onTimer(clock.now)).toMatchObject([
        { action: 'log', event: { reason: 'modbus.request-timeout' } },
        { action: 'forward' },
      ]);
    });
  });

  it('counts completed client messages (for the slow-sender deadline)', () => {
    const insp = new ModbusInspector(context());
    const two = Buffer.concat([readHolding(1, 0, 1), readHolding(2, 0, 1)]);
    insp.onClientData(two.subarray(0, 15));
    expect(insp.completedMessages()).toBe(1);
    expect(insp.hasPartialMessage()).toBe(true);
    insp.onClientData(two.subarray(15));
    expect(insp.completedMessages()).toBe(2);
  });

  it('forwards the allowed requests of a segment before closing on a malformed one', () => {
    const insp = new ModbusInspector(context());
    const ok = readHolding(1, 0, 1);
    const out = insp.onClientData(Buffer.concat([ok, encodeAdu(2, 1, [3], { length: 300 })]));
    expect(out).toMatchObject([
      { action: 'forward', bytes: ok },
      { action: 'close', event: { reason: 'modbus.malformed', detail: { code: 'mbap.length' } } },
    ]);
    // Closed: later bytes are ignored.
    expect(insp.onClientData(readHolding(3, 0, 1))).toEqual([]);
  });

  it('refuses a plan entry without a modbus spec (fail closed at accept)', () => {
    const ctx = context();
    delete ctx.entry.modbus;
    expect(() => modbusInspectorFactory.create(ctx)).toThrow(/no modbus spec/);
  });

  it('closes on a malformed device frame', () => {
    const insp = new ModbusInspector(context());
    insp.onClientData(readHolding(1, 0, 1));
    expect(insp.onServerData(encodeAdu(1, 1, [3, 2, 0, 0], { protocolId: 5 }))).toMatchObject([
      { action: 'close', event: { reason: 'modbus.malformed-response', verdict: 'drop' } },
    ]);
  });
});
