import { describe, it, expect } from 'vitest';
import { buildException } from './exception.ts';
import { encodeAdu, u16 } from './frames.ts';
import { parseRequest } from './pdu.ts';
import { TransactionTracker, expectsResponse, parseResponse } from './response.ts';
import type { ModbusRequest } from './types.ts';

function req(pdu: number[], transactionId = 1, unitId = 1): ModbusRequest {
  const r = parseRequest(encodeAdu(transactionId, unitId, pdu));
  if (r.kind !== 'frame') throw new Error(`test frame does not parse: ${JSON.stringify(r)}`);
  return r.frame;
}

const readHolding = [3, ...u16(100), ...u16(2)];
const readCoils = [1, ...u16(0), ...u16(10)];
const writeCoils = [15, ...u16(19), ...u16(10), 2, 0xcd, 0x01];
const readFile = [20, 14, 6, ...u16(4), ...u16(1), ...u16(2), 6, ...u16(3), ...u16(9), ...u16(2)];
const writeFile = [
  21,
  13,
  6,
  ...u16(4),
  ...u16(7),
  ...u16(3),
  ...u16(0x06af),
  ...u16(0x04be),
  ...u16(0x100d),
];

/** [name, request PDU, response PDU] — consistent pairs (MB §6.x "Response" tables). */
const CONSISTENT: [string, number[], number[]][] = [
  ['read holding registers: byte count 2 × quantity', readHolding, [3, 4, 0, 1, 0, 2]],
  ['read coils: byte count ceil(quantity / 8)', readCoils, [1, 2, 0xff, 0x03]],
  ['read discrete inputs', [2, ...u16(0), ...u16(8)], [2, 1, 0x55]],
  ['read input registers', [4, ...u16(0), ...u16(1)], [4, 2, 0, 9]],
  ['write single coil: echo', [5, ...u16(7), 0xff, 0], [5, ...u16(7), 0xff, 0]],
  ['write single register: echo', [6, ...u16(1), ...u16(3)], [6, ...u16(1), ...u16(3)]],
  ['read exception status', [7], [7, 0x6d]],
  ['diagnostics return query data: echo', [8, ...u16(0), 0xa5, 0x37], [8, ...u16(0), 0xa5, 0x37]],
  ['get comm event counter', [11], [11, 0xff, 0xff, 0x01, 0x08]],
  ['get comm event log', [12], [12, 8, 0, 0, 1, 8, 1, 0x21, 0x20, 0x00]],
  ['write multiple coils: address + quantity', writeCoils, [15, ...u16(19), ...u16(10)]],
  [
    'write multiple registers: address + quantity',
    [16, ...u16(1), ...u16(1), 2, 0, 1],
    [16, ...u16(1), ...u16(1)],
  ],
  ['report server id', [17], [17, 3, 0x42, 0xff, 0x01]],
  [
    'read file record',
    readFile,
    [20, 12, 5, 6, ...u16(0x0dfe), ...u16(0x0020), 5, 6, ...u16(0x33cd), ...u16(0x0040)],
  ],
  ['write file record: echo', writeFile, writeFile],
  [
    'mask write register: echo',
    [22, ...u16(4), ...u16(0xf2), ...u16(0x25)],
    [22, ...u16(4), ...u16(0xf2), ...u16(0x25)],
  ],
  [
    'read/write multiple registers: the read registers',
    [23, ...u16(3), ...u16(2), ...u16(14), ...u16(1), 2, 0, 1],
    [23, 4, 0, 0xfe, 0x0a, 0xcd],
  ],
  ['read FIFO queue', [24, ...u16(0x04de)], [24, ...u16(6), ...u16(2), ...u16(0x1b8), ...u16(0x1284)]],
  ['read FIFO queue, empty', [24, ...u16(0x04de)], [24, ...u16(2), ...u16(0)]],
  [
    'read device identification',
    [43, 14, 1, 0],
    [43, 14, 1, 0x01, 0, 0, 2, 0, 3, 0x41, 0x42, 0x43, 1, 1, 0x58],
  ],
  ['user-defined function: not checked', [65, 1], [65, 9, 9, 9]],
];

/** [name, request PDU, response PDU, code] — responses that do not answer their request. */
const INCONSISTENT: [string, number[], number[], string][] = [
  ['read holding registers: byte count 2 for 2 registers', readHolding, [3, 2, 0, 1], 'response.byte-count'],
  ['read holding registers: byte count 4 but 2 bytes', readHolding, [3, 4, 0, 1], 'response.length'],
  ['read holding registers: trailing byte', readHolding, [3, 4, 0, 1, 0, 2, 0], 'response.length'],
  ['read coils: byte count 1 for 10 coils', readCoils, [1, 1, 0xff], 'response.byte-count'],
  ['answer with another function', readHolding, [4, 4, 0, 1, 0, 2], 'response.function-mismatch'],
  ['exception for another function', readHolding, [0x84, 2], 'response.function-mismatch'],
  ['exception response with extra byte', readHolding, [0x83, 2, 0], 'response.length'],
  ['exception code 0', readHolding, [0x83, 0], 'response.exception-code'],
  ['write single coil: other address', [5, ...u16(7), 0xff, 0], [5, ...u16(8), 0xff, 0], 'response.echo'],
  ['write multiple coils: other quantity', writeCoils, [15, ...u16(19), ...u16(11)], 'response.echo'],
  ['write multiple coils: echo too long', writeCoils, [15, ...u16(19), ...u16(10), 0], 'response.length'],
  ['mask write: other address', [22, ...u16(4), 0, 0, 0, 0], [22, ...u16(5), 0, 0, 0, 0], 'response.echo'],
  ['diagnostics: other sub-function', [8, ...u16(2), 0, 0], [8, ...u16(3), 0, 0], 'response.echo'],
  ['diagnostics: echo of other length', [8, ...u16(0), 1, 2], [8, ...u16(0), 1, 2, 3, 4], 'response.length'],
  ['get comm event log: byte count 5', [12], [12, 5, 0, 0, 0, 0, 0], 'response.byte-count'],
  ['read exception status: no data', [7], [7], 'response.length'],
  [
    'read file record: wrong sub-response length',
    readFile,
    [20, 10, 3, 6, 0, 0, 5, 6, 0, 0, 0, 0],
    'response.byte-count',
  ],
  ['write file record: not an echo', writeFile, [...writeFile.slice(0, -1), 0], 'response.echo'],
  [
    'read FIFO queue: 32 entries',
    [24, ...u16(1)],
    [24, ...u16(66), ...u16(32), ...Array<number>(64).fill(0)],
    'response.byte-count',
  ],
  [
    'read device identification: more-follows 0x01',
    [43, 14, 1, 0],
    [43, 14, 1, 1, 1, 0, 0],
    'response.device-id',
  ],
  [
    'read device identification: object overruns the PDU',
    [43, 14, 1, 0],
    [43, 14, 1, 1, 0, 0, 1, 0, 9, 0x41],
    'response.device-id',
  ],
  ['read device identification: other MEI type', [43, 14, 1, 0], [43, 13, 1, 1, 0, 0, 0], 'response.echo'],
];

describe('parseResponse: consistent with the request', () => {
  it.each(CONSISTENT)('%s', (_name, reqPdu, resPdu) => {
    const r = parseResponse(encodeAdu(1, 1, resPdu), req(reqPdu));
    expect(r).toMatchObject({
      kind: 'frame',
      frame: { function: reqPdu[0], exception: null, transactionId: 1 },
    });
  });

  it('an exception response carries its code (MB §7)', () => {
    const r = parseResponse(buildException(1, 1, 3, 2), req(readHolding));
    expect(r).toMatchObject({ kind: 'frame', frame: { function: 3, exception: 2 } });
  });
});

describe('parseResponse: inconsistent with the request, named after the fault', () => {
  it.each(INCONSISTENT)('%s → %s', (_name, reqPdu, resPdu, code) => {
    expect(parseResponse(encodeAdu(1, 1, resPdu), req(reqPdu))).toMatchObject({ kind: 'invalid', code });
  });

  it('a response from another unit id', () => {
    expect(parseResponse(encodeAdu(1, 2, [3, 4, 0, 1, 0, 2]), req(readHolding))).toMatchObject({
      code: 'response.unit-mismatch',
    });
  });

  it('a response with another transaction id', () => {
    expect(parseResponse(encodeAdu(9, 1, [3, 4, 0, 1, 0, 2]), req(readHolding))).toMatchObject({
      code: 'response.transaction-mismatch',
    });
  });

  it('a malformed MBAP header', () => {
    expect(parseResponse(encodeAdu(1, 1, [3, 0], { protocolId: 5 }), req(readHolding))).toMatchObject({
      code: 'mbap.protocol-id',
    });
  });
});

describe('TransactionTracker', () => {
  it('pairs a response with its request by transaction id', () => {
    const t = new TransactionTracker(4);
    const a = req(readHolding, 7);
    expect(t.submit(a, null)).toEqual({ kind: 'ok', release: [] });
    expect(t.pending(7, 1)).toBe(a);
    const m = t.respond(7, 1);
    expect(m).toEqual({ kind: 'paired', request: a, release: [] });
    expect(t.size).toBe(0);
  });

  it('an unknown transaction id is unsolicited: drop', () => {
    const t = new TransactionTracker(4);
    expect(t.respond(9, 1)).toEqual({ kind: 'unsolicited', verdict: 'drop', reason: 'unsolicited' });
    t.submit(req(readHolding, 1), null);
    t.respond(1, 1);
    // A second answer to the same request is unsolicited too.
    expect(t.respond(1, 1)).toMatchObject({ kind: 'unsolicited' });
  });

  it('a refusal waits behind earlier requests still at the device; device answers are never held', () => {
    const t = new TransactionTracker(8);
    const refusal = buildException(2, 1, 6, 2);
    t.submit(req(readHolding, 1), null);
    expect(t.submit(req([6, ...u16(0), ...u16(1)], 2), refusal)).toEqual({ kind: 'ok', release: [] });
    t.submit(req(readHolding, 3), null);
    // The device answers 3 first: it goes out at once (the caller forwards it); the refusal still waits for 1.
    expect(t.respond(3, 1)).toMatchObject({ kind: 'paired', release: [] });
    expect(t.respond(1, 1)).toMatchObject({ kind: 'paired', release: [refusal] });
    expect(t.size).toBe(0);
  });

  it('a lost answer does not freeze later ones, and its timeout frees the slot and the refusals behind it', () => {
    const t = new TransactionTracker(4, 1000);
    const refusal = buildException(2, 1, 6, 2);
    const lost = req(readHolding, 1);
    t.submit(lost, null, 0);
    t.submit(req([6, ...u16(0), ...u16(1)], 2), refusal, 10);
    t.submit(req(readHolding, 3), null, 20);
    // Request 3 is answered although 1 never is: paired at once, nothing held with it.
    expect(t.respond(3, 1)).toMatchObject({ kind: 'paired', release: [] });
    expect(t.nextDeadline()).toBe(1000);
    expect(t.expire(999)).toEqual({ expired: [], release: [] });
    expect(t.expire(1000)).toEqual({ expired: [lost], release: [refusal] });
    expect(t.size).toBe(0);
    expect(t.nextDeadline()).toBeUndefined();
    // The late answer is unsolicited now.
    expect(t.respond(1, 1)).toMatchObject({ kind: 'unsolicited' });
  });

  it('a refusal with nothing outstanding goes out at once', () => {
    const t = new TransactionTracker(1);
    const refusal = buildException(5, 1, 1, 1);
    expect(t.submit(req(readCoils, 5), refusal)).toEqual({ kind: 'ok', release: [refusal] });
    expect(t.size).toBe(0);
  });

  it('holds at most maxOutstanding requests', () => {
    const t = new TransactionTracker(2);
    expect(t.submit(req(readHolding, 1), null).kind).toBe('ok');
    expect(t.submit(req(readHolding, 2), null).kind).toBe('ok');
    expect(t.submit(req(readHolding, 3), null)).toEqual({ kind: 'full' });
    expect(t.submit(req(readHolding, 3), buildException(3, 1, 3, 1))).toEqual({ kind: 'full' });
    t.respond(1, 1);
    expect(t.submit(req(readHolding, 3), null).kind).toBe('ok');
  });

  it('a transaction id reused while in flight is paired oldest first', () => {
    const t = new TransactionTracker(4);
    const first = req(readHolding, 0);
    const second = req(readCoils, 0);
    t.submit(first, null);
    t.submit(second, null);
    expect(t.respond(0, 1)).toMatchObject({ request: first });
    expect(t.respond(0, 1)).toMatchObject({ request: second });
  });

  it('Force Listen Only Mode gets no response (MB §6.8.1 04), so it is not tracked', () => {
    const t = new TransactionTracker(4);
    const listenOnly = req([8, ...u16(4), 0, 0], 3);
    expect(expectsResponse(listenOnly)).toBe(false);
    expect(expectsResponse(req([8, ...u16(1), 0, 0]))).toBe(true);
    expect(t.submit(listenOnly, null)).toEqual({ kind: 'ok', release: [] });
    expect(t.size).toBe(0);
  });

  it('rejects a nonsensical bound', () => {
    expect(() => new TransactionTracker(0)).toThrow(RangeError);
  });
});
