/**
 * Stateful stream fuzz of the whole filter (ModbusInspector with its TransactionTracker), not just the pure
 * parsers: random client streams (valid, refused and mutated ADUs, split at random boundaries) interleaved
 * with device answers (in order, out of order, lost, duplicated, mutated, unsolicited) and clock ticks that
 * expire requests. Checks on every step: nothing throws; nothing follows a close; every byte sent to the
 * device is a whole request the policy allows; every byte sent to the client is either an answer the device
 * sent or a gateway exception to a request the client made; refusals keep request order; the outstanding
 * bound holds. Seeded (MODBUS_STREAM_FUZZ_SEED) so a failure is reproducible.
 */
import { describe, expect, it } from 'vitest';
import type { ModbusSpec } from '../../policies/types.ts';
import type { ClientVerdict, ServerVerdict } from '../core/inspector.ts';
import { mutateInto, prng, type MutatorOptions } from '../core/fuzz.ts';
import { planEntry } from '../core/test-helpers.ts';
import { decideRequest } from './decide.ts';
import { encodeAdu, u16 } from './frames.ts';
import { ModbusInspector } from './inspector.ts';
import { ModbusStreamDecoder } from './mbap.ts';
import { parseRequestAdu } from './pdu.ts';

const SEED = Number(process.env.MODBUS_STREAM_FUZZ_SEED ?? 0x5712ea) >>> 0;
const CONNECTIONS = 400;
const STEPS = 120;
const MAX_OUTSTANDING = 4;
const TIMEOUT_MS = 1000;

/** Unit 0 too: broadcast writes (forwarded without waiting for an answer, never answered when refused). */
const SPEC: ModbusSpec = {
  unitIds: [0, 1],
  rules: [
    { functions: [3, 4], addresses: [{ start: 0, end: 999 }] },
    { functions: [6], addresses: [{ start: 100, end: 109 }], values: { start: 0, end: 100 } },
  ],
};

/** Request PDUs: allowed, refused by policy, out of range (device-style exceptions); mutation adds faults. */
const PDUS: number[][] = [
  [3, ...u16(0), ...u16(2)],
  [4, ...u16(10), ...u16(1)],
  [6, ...u16(100), ...u16(5)],
  [6, ...u16(500), ...u16(5)],
  [6, ...u16(100), ...u16(500)],
  [1, ...u16(0), ...u16(8)],
  [3, ...u16(0), ...u16(0)],
  [3, ...u16(0xffff), ...u16(2)],
  [5, ...u16(1), 0x12, 0x34],
];

const MUTATOR: MutatorOptions = {
  boundaryBytes: [0, 1, 0x7f, 0x80, 0xff],
  boundaryWords: [0, 1, 125, 126, 0xffff],
  word: 'u16be',
  wordStart: (len, x) => 7 + ((x >>> 12) % Math.max(len - 8, 1)),
  maxAppend: 8,
};

/** A plausible device answer to a request ADU (echo for writes, registers for reads). */
function answerTo(req: Buffer): Buffer {
  const tx = req.readUInt16BE(0);
  const unit = req[6] ?? 0;
  const fn = req[7] ?? 0;
  if (fn === 3 || fn === 4) {
    const qty = req.readUInt16BE(10);
    return encodeAdu(tx, unit, [fn, qty * 2, ...Array<number>(qty * 2).fill(7)]);
  }
  return encodeAdu(tx, unit, [...req.subarray(7)]);
}

function frames(decoder: ModbusStreamDecoder, bytes: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (const item of decoder.push(bytes)) {
    if (item.kind !== 'frame') throw new Error(`gateway emitted a malformed stream: ${item.code}`);
    out.push(Buffer.from(item.frame.bytes));
  }
  return out;
}

describe('stream fuzz: ModbusInspector and TransactionTracker', () => {
  it(`${CONNECTIONS} random connections never break the filter's guarantees`, () => {
    const rnd = prng(SEED);
    const scratch = Buffer.alloc(600);
    const totals = { forwarded: 0, answered: 0, exceptions: 0, closed: 0, timeouts: 0, broadcasts: 0 };
    for (let conn = 0; conn < CONNECTIONS; conn++) {
      let now = 0;
      const mode = conn % 5 === 4 ? 'monitor' : 'enforce';
      const insp = new ModbusInspector({
        entry: planEntry(502, { modbus: SPEC, mode }),
        client: { address: '10.0.0.1', port: 40000 },
        limits: { maxOutstandingRequests: MAX_OUTSTANDING, requestTimeoutMs: TIMEOUT_MS },
        now: () => now,
      });
      const toDevice = new ModbusStreamDecoder();
      const toClient = new ModbusStreamDecoder();
      /** Requests the device received and has not answered yet (it may answer them in any order). */
      const atDevice: Buffer[] = [];
      /** Every byte the device sent (answers are checked to lie within it), and every client request id. */
      let deviceSent = Buffer.alloc(0);
      const clientTx = new Set<number>();
      let pendingClient = Buffer.alloc(0);
      let closed = false;
      let tx = 0;
      const where = (step: number): string => `seed ${SEED} connection ${conn} step ${step}`;

      const checkClientBound = (adus: Buffer[], step: number): void => {
        for (const a of adus) {
          const fn = a[7] ?? 0;
          if (deviceSent.includes(a)) totals.answered++;
          else if (a[6] === 0 && [5, 6, 15, 16].includes(fn & 0x7f))
            throw new Error(`${where(step)}: the gateway answered a broadcast: ${a.toString('hex')}`);
          else if (fn >= 0x80 && clientTx.has(a.readUInt16BE(0))) totals.exceptions++;
          else throw new Error(`${where(step)}: client got bytes nobody sent: ${a.toString('hex')}`);
        }
      };
      const apply = (v: (ClientVerdict | ServerVerdict)[], step: number): void => {
        v.forEach((x, k) => {
          if (closed) throw new Error(`${where(step)}: verdict after close`);
          if (x.action === 'close') {
            closed = true;
            totals.closed++;
            if (k !== v.length - 1) throw new Error(`${where(step)}: close is not the last verdict`);
          }
          if (x.action === 'log' && x.event.reason === 'modbus.request-timeout') totals.timeouts++;
        });
      };

      for (let step = 0; step < STEPS && !closed; step++) {
        const r = rnd();
        if ((r & 3) <= 1) {
          // Client: 1–3 ADUs, some mutated, delivered split at a random point.
          const parts: Buffer[] = [];
          for (let n = 1 + ((r >>> 2) % 3); n > 0; n--) {
            const pdu = PDUS[(rnd() >>> 3) % PDUS.length] ?? [];
            tx = (tx + 1) & 0xffff;
            clientTx.add(tx);
            const u = rnd() % 16;
            const adu = encodeAdu(tx, u === 0 ? 2 : u <= 2 ? 0 : 1, pdu);
            if (rnd() % 20 === 0) {
              const len = mutateInto(scratch, adu, rnd, MUTATOR);
              const bad = Buffer.from(scratch.subarray(0, len));
              // A mutation may hit the transaction id: the gateway answers whatever id the client sent.
              if (bad.length >= 2) clientTx.add(bad.readUInt16BE(0));
              parts.push(bad);
            } else parts.push(adu);
          }
          const bytes = Buffer.concat([pendingClient, ...parts]);
          const cut = rnd() % (bytes.length + 1);
          pendingClient = bytes.subarray(cut);
          const v = insp.onClientData(bytes.subarray(0, cut));
          apply(v, step);
          for (const x of v) {
            if (x.action === 'forward') {
              for (const adu of frames(toDevice, x.bytes)) {
                const p = parseRequestAdu({
                  transactionId: adu.readUInt16BE(0),
                  unitId: adu[6] ?? 0,
                  pdu: adu.subarray(7),
                  bytes: adu,
                });
                if (p.kind !== 'frame') throw new Error(`${where(step)}: forwarded an unparsable request`);
                if (mode === 'enforce' && decideRequest(p.frame, SPEC, mode).verdict !== 'allow') {
                  throw new Error(`${where(step)}: forwarded a refused request`);
                }
                atDevice.push(adu);
                totals.forwarded++;
                if (adu[6] === 0 && [5, 6, 15, 16].includes(adu[7] ?? 0)) totals.broadcasts++;
              }
            } else if (x.action === 'reply') checkClientBound(frames(toClient, x.bytes), step);
          }
        } else if ((r & 3) === 2) {
          // Device: answer a random pending request (or lose it, duplicate it, or send junk).
          const pick = atDevice.length === 0 ? -1 : (r >>> 2) % atDevice.length;
          const kind = (r >>> 12) % 10;
          let answer: Buffer;
          if (pick < 0 || kind === 0) {
            answer = encodeAdu((r >>> 8) & 0xffff, 1, [3, 2, 0, 0]); // likely unsolicited
          } else {
            const req = atDevice[pick] ?? Buffer.alloc(0);
            if (kind !== 1) atDevice.splice(pick, 1); // kind 1: answered twice later
            answer = answerTo(req);
            if (kind === 2) continue; // lost: never answered
            if (kind === 3) {
              const len = mutateInto(scratch, answer, rnd, MUTATOR);
              answer = Buffer.from(scratch.subarray(0, len));
            }
          }
          deviceSent = Buffer.concat([deviceSent, answer]);
          const v = insp.onServerData(answer);
          apply(v, step);
          for (const x of v) if (x.action === 'forward') checkClientBound(frames(toClient, x.bytes), step);
        } else {
          // Time passes; the proxy calls onTimer once the deadline is due.
          now += (r >>> 2) % 700;
          const due = insp.nextDeadline();
          if (due !== undefined && due < now - TIMEOUT_MS) {
            throw new Error(`${where(step)}: deadline ${due} lies before every request still tracked`);
          }
          if (due !== undefined && due <= now) {
            const v = insp.onTimer(now);
            apply(v, step);
            for (const x of v) if (x.action === 'forward') checkClientBound(frames(toClient, x.bytes), step);
            const next = insp.nextDeadline();
            if (next !== undefined && next <= now) throw new Error(`${where(step)}: expired request kept`);
          }
        }
      }
      if (closed) {
        expect(insp.onClientData(encodeAdu(1, 1, PDUS[0] ?? []))).toEqual([]);
        expect(insp.onServerData(encodeAdu(1, 1, [3, 2, 0, 0]))).toEqual([]);
        expect(insp.nextDeadline()).toBeUndefined();
      }
    }
    // The run must actually exercise every path, or it proves nothing.
    expect(totals.forwarded).toBeGreaterThan(400);
    expect(totals.answered).toBeGreaterThan(80);
    expect(totals.exceptions).toBeGreaterThan(400);
    expect(totals.closed).toBeGreaterThan(20);
    expect(totals.timeouts).toBeGreaterThan(15);
    expect(totals.broadcasts).toBeGreaterThan(20);
  });
});
