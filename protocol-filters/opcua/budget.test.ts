import { describe, it, expect } from 'vitest';
import { ReadRequest } from 'node-opcua-types';
import type { ClientVerdict, ConnectionInspector, InspectorFactory } from '../core/inspector.ts';
import type { ProxyPlanEntry } from '../../policies/types.ts';
import { planEntry } from '../core/test-helpers.ts';
import { BudgetAccount, ReassemblyBudget, sharedReassemblyBudget } from './budget.ts';
import { ack, encodeBody, hello, msgChunk, msgChunks, openRequest, openResponse } from './frames.ts';
import { OpcuaInspector, createOpcuaInspectorFactory, type OpcuaInspectorOptions } from './inspector.ts';
import { MessageAssembler } from './reassembly.ts';
import { OpcuaChunkDecoder } from './stream.ts';

const ENTRY: ProxyPlanEntry = planEntry(4840, {
  protocol: 'opcua',
  opcua: {
    securityModes: ['None'],
    securityPolicies: ['None'],
    services: ['discovery', 'session', 'read'],
    write: [],
    call: [],
    anonymous: true,
    certificates: [],
  },
});

function connect(f: InspectorFactory, port = 50000): OpcuaInspector {
  const i = f.create({
    entry: ENTRY,
    client: { address: '10.0.0.1', port },
    limits: { maxOutstandingRequests: 16 },
  });
  if (!(i instanceof OpcuaInspector)) throw new Error('not an OpcuaInspector');
  return i;
}

/** HEL/ACK then a None OPN exchange: the next client MSG has sequence number 2. */
function open(i: ConnectionInspector): void {
  i.onClientData(hello());
  i.onServerData(ack());
  i.onClientData(openRequest({ sequenceNumber: 1, requestId: 1 }));
  i.onServerData(openResponse({ channelId: 7, tokenId: 1, sequenceNumber: 1, requestId: 1 }));
}

/** A ReadRequest body of a few KB, split into 1000-byte chunk bodies (C, C, C…, F). */
function readChunks(handle: number, requestId = 2): Buffer[] {
  const body = encodeBody(
    new ReadRequest({
      requestHeader: { requestHandle: handle },
      nodesToRead: Array.from({ length: 120 }, (_, n) => ({ nodeId: `ns=2;s=Tag${n}`, attributeId: 13 })),
    }),
  );
  return msgChunks(body, 1000, { sequenceNumber: 2, requestId });
}

function forwardedBytes(v: ClientVerdict[]): Buffer {
  return Buffer.concat(v.flatMap((x) => (x.action === 'forward' ? [x.bytes] : [])));
}

function at(list: Buffer[], n: number): Buffer {
  const b = list.at(n);
  if (b === undefined) throw new Error(`no chunk ${n}`);
  return b;
}

describe('ReassemblyBudget / BudgetAccount', () => {
  it('charges up to the limit and releases only what an account charged', () => {
    const b = new ReassemblyBudget(100);
    const a1 = new BudgetAccount(b);
    const a2 = new BudgetAccount(b);
    expect(a1.tryCharge(60)).toBe(true);
    expect(a2.tryCharge(41)).toBe(false);
    expect(b.used).toBe(60);
    expect(a2.tryCharge(40)).toBe(true);
    expect(b.used).toBe(100);
    // An over-release by one connection cannot free another connection's bytes.
    a2.release(1000);
    expect(b.used).toBe(60);
    a1.releaseAll();
    a1.releaseAll();
    expect(b.used).toBe(0);
    expect(() => new ReassemblyBudget(-1)).toThrow(RangeError);
  });
});

describe('MessageAssembler with a budget', () => {
  const limits = { maxMessageSize: 10_000, maxChunkCount: 8, messageTimeoutMs: 100, maxPartialMessages: 4 };
  const c = (chunkType: 'C' | 'F' | 'A', requestId: number, body = 100): Buffer =>
    msgChunk(Buffer.alloc(body, 1), { chunkType, requestId, sequenceNumber: 1 });
  const add = (a: MessageAssembler, x: Buffer, now = 0): ReturnType<MessageAssembler['add']> =>
    a.add(x.toString('latin1', 3, 4) as 'F' | 'C' | 'A', x.readUInt32LE(20), x, 24, x.length, now);

  it('charges kept chunks and releases them on complete, abort, expiry and clear', () => {
    const b = new ReassemblyBudget(10_000);
    const a = new MessageAssembler(limits, new BudgetAccount(b));
    expect(add(a, c('F', 1)).kind).toBe('message');
    expect(b.used).toBe(0); // a single-chunk message is a view: nothing held
    expect(add(a, c('C', 2)).kind).toBe('partial');
    expect(b.used).toBe(124);
    expect(add(a, c('C', 3)).kind).toBe('partial');
    expect(b.used).toBe(248);
    expect(add(a, c('F', 2)).kind).toBe('message');
    expect(b.used).toBe(124);
    expect(add(a, c('A', 3)).kind).toBe('aborted');
    expect(b.used).toBe(0);
    expect(add(a, c('C', 4), 0).kind).toBe('partial');
    expect(b.used).toBe(124);
    expect(a.expire(1000)).toMatchObject({ code: 'opcua.reassembly-timeout' });
    expect(b.used).toBe(0);
    expect(add(a, c('C', 5)).kind).toBe('partial');
    a.clear();
    expect(b.used).toBe(0);
  });

  it('fails with opcua.memory-budget when a kept chunk does not fit, releasing what it held', () => {
    const b = new ReassemblyBudget(300);
    const other = new BudgetAccount(b);
    expect(other.tryCharge(100)).toBe(true);
    const a = new MessageAssembler(limits, new BudgetAccount(b));
    expect(add(a, c('C', 2)).kind).toBe('partial');
    expect(b.used).toBe(224);
    expect(add(a, c('C', 2))).toMatchObject({ kind: 'invalid', code: 'opcua.memory-budget' });
    expect(b.used).toBe(100);
  });
});

describe('OpcuaChunkDecoder with a budget', () => {
  it('charges a partial chunk before allocating it and releases it when the chunk completes or is cleared', () => {
    const b = new ReassemblyBudget(10_000);
    const d = new OpcuaChunkDecoder(8192, new BudgetAccount(b));
    const x = msgChunk(Buffer.alloc(1000, 1), { requestId: 1, sequenceNumber: 1 });
    expect(d.push(x.subarray(0, 4))).toEqual([]);
    expect(b.used).toBe(0); // header not complete: only the fixed 8-byte header buffer
    expect(d.push(x.subarray(4, 500))).toEqual([]);
    expect(b.used).toBe(x.length);
    expect(d.push(x.subarray(500))).toHaveLength(1);
    expect(b.used).toBe(0);
    expect(d.push(x.subarray(0, 100))).toEqual([]);
    expect(b.used).toBe(x.length);
    d.clear();
    expect(b.used).toBe(0);
  });

  it('fails for good with opcua.memory-budget when the partial chunk does not fit', () => {
    const b = new ReassemblyBudget(500);
    const d = new OpcuaChunkDecoder(8192, new BudgetAccount(b));
    const x = msgChunk(Buffer.alloc(1000, 1), { requestId: 1, sequenceNumber: 1 });
    expect(d.push(x.subarray(0, 100))).toMatchObject([{ kind: 'invalid', code: 'opcua.memory-budget' }]);
    expect(d.failed).toMatchObject({ code: 'opcua.memory-budget' });
    expect(b.used).toBe(0);
    // Whole chunks inside one push are views of it and need no budget, but the decoder stays failed.
    expect(d.push(x)).toMatchObject([{ kind: 'invalid' }]);
  });
});

describe('OpcuaInspector: reassembly budget shared across connections', () => {
  it('is the process-wide budget by default', () => {
    const i = connect(createOpcuaInspectorFactory());
    open(i);
    const before = sharedReassemblyBudget.used;
    i.onClientData(at(readChunks(1), 0));
    expect(i.reassemblyBytes).toBeGreaterThan(0);
    expect(sharedReassemblyBudget.used).toBe(before + i.reassemblyBytes);
    i.onClose();
    expect(sharedReassemblyBudget.used).toBe(before);
  });

  it('charges and releases on complete, abort, expiry and close: many connections leave it at 0', () => {
    const budget = new ReassemblyBudget(64 * 1024 * 1024);
    let now = 0;
    const options: OpcuaInspectorOptions = { reassemblyBudget: budget, now: () => now };
    const f = createOpcuaInspectorFactory(options);
    const chunks = readChunks(1);
    expect(chunks.length).toBeGreaterThan(3);
    const first = at(chunks, 0);
    const conns = Array.from({ length: 200 }, (_, n) => {
      const i = connect(f, 40000 + n);
      open(i);
      return i;
    });
    // Every connection holds one kept C chunk and half of the next one (in its decoder).
    for (const i of conns) {
      expect(i.onClientData(first)).toEqual([]);
      expect(i.onClientData(at(chunks, 1).subarray(0, 300))).toEqual([]);
      expect(i.reassemblyBytes).toBe(first.length + at(chunks, 1).length);
    }
    expect(budget.used).toBe(200 * (first.length + at(chunks, 1).length));

    conns.forEach((i, n) => {
      const kind = n % 4;
      if (kind === 0) {
        // Complete: the rest of the message goes through, forwarded whole.
        const v = i.onClientData(Buffer.concat([at(chunks, 1).subarray(300), ...chunks.slice(2)]));
        expect(v.some((x) => x.action === 'close')).toBe(false);
        expect(forwardedBytes(v)).toEqual(Buffer.concat(chunks));
        expect(i.reassemblyBytes).toBe(0);
      } else if (kind === 1) {
        // Abort (Part 6 §6.7.3): finish the second C chunk, then A.
        i.onClientData(at(chunks, 1).subarray(300));
        const abort = msgChunk(Buffer.alloc(8), { sequenceNumber: 4, requestId: 2, chunkType: 'A' });
        expect(i.onClientData(abort).some((x) => x.action === 'close')).toBe(false);
        expect(i.reassemblyBytes).toBe(0);
      } else if (kind === 2) {
        // Expiry: the next data after the timeout closes the connection and frees its bytes.
        now = 20_000;
        expect(i.onClientData(Buffer.alloc(1)).at(-1)).toMatchObject({
          action: 'close',
          event: { reason: 'opcua.reassembly-timeout' },
        });
        now = 0;
        expect(i.reassemblyBytes).toBe(0);
      }
      // kind 3: the connection just goes away holding its bytes.
      i.onClose();
      expect(i.reassemblyBytes).toBe(0);
    });
    expect(budget.used).toBe(0);
  });

  it('closes the connection whose chunk would exceed the budget; others within it keep working', () => {
    const chunks = readChunks(1);
    const intermediate = chunks.slice(0, -1);
    const held = intermediate.reduce((n, x) => n + x.length, 0);
    // Room for A's whole request plus less than one more chunk.
    const budget = new ReassemblyBudget(held + 500);
    const f = createOpcuaInspectorFactory({ reassemblyBudget: budget });
    const a = connect(f, 50001);
    const b = connect(f, 50002);
    open(a);
    open(b);
    // A holds all its intermediate chunks.
    for (const x of intermediate) expect(a.onClientData(x)).toEqual([]);
    expect(budget.used).toBe(held);
    // B's first intermediate chunk does not fit: B (the one asking) is closed, A is untouched.
    expect(b.onClientData(at(chunks, 0))).toEqual([
      {
        action: 'close',
        event: expect.objectContaining({ reason: 'opcua.memory-budget', verdict: 'drop' }),
      },
    ]);
    expect(b.reassemblyBytes).toBe(0);
    expect(budget.used).toBe(held);
    // A partial chunk in B's decoder would not fit either (server side alike): closed the same way.
    const c = connect(f, 50003);
    open(c);
    expect(c.onClientData(at(chunks, 0).subarray(0, 100))).toMatchObject([
      { action: 'close', event: { reason: 'opcua.memory-budget', verdict: 'drop' } },
    ]);
    // A finishes its request, which is forwarded whole, and frees the budget.
    const v = a.onClientData(at(chunks, -1));
    expect(forwardedBytes(v)).toEqual(Buffer.concat(chunks));
    expect(budget.used).toBe(0);
    // Another connection fills the budget again; a single-chunk request needs none (it is a view of the
    // received bytes), so A's next small request still goes through.
    const d = connect(f, 50004);
    open(d);
    for (const x of intermediate) expect(d.onClientData(x)).toEqual([]);
    expect(budget.used).toBe(held);
    const small = msgChunk(
      encodeBody(
        new ReadRequest({
          requestHeader: { requestHandle: 5 },
          nodesToRead: [{ nodeId: 'ns=2;s=T', attributeId: 13 }],
        }),
      ),
      { sequenceNumber: 2 + chunks.length, requestId: 3 },
    );
    expect(forwardedBytes(a.onClientData(small))).toEqual(small);
    for (const i of [a, b, c, d]) i.onClose();
    expect(budget.used).toBe(0);
  });

  it('a byte count makes one budget shared by all inspectors of that factory', () => {
    const f = createOpcuaInspectorFactory({ reassemblyBudget: 1500 });
    const chunks = readChunks(1);
    const a = connect(f, 50011);
    const b = connect(f, 50012);
    open(a);
    open(b);
    expect(a.onClientData(at(chunks, 0))).toEqual([]);
    expect(b.onClientData(at(chunks, 0)).at(-1)).toMatchObject({
      action: 'close',
      event: { reason: 'opcua.memory-budget' },
    });
    // Another factory has a budget of its own.
    const other = connect(createOpcuaInspectorFactory({ reassemblyBudget: 1500 }), 50013);
    open(other);
    expect(other.onClientData(at(chunks, 0))).toEqual([]);
    for (const i of [a, b, other]) i.onClose();
  });
});
