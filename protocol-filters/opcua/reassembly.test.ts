import { describe, it, expect } from 'vitest';
import { msgChunk } from './frames.ts';
import { MessageAssembler, type AssemblyLimits } from './reassembly.ts';

const LIMITS: AssemblyLimits = {
  maxMessageSize: 1000,
  maxChunkCount: 4,
  messageTimeoutMs: 5000,
  maxPartialMessages: 2,
};

function chunk(body: number, requestId: number, chunkType: 'F' | 'C' | 'A', seq = 1): Buffer {
  return msgChunk(Buffer.alloc(body, requestId & 0xff), { chunkType, requestId, sequenceNumber: seq });
}

function add(a: MessageAssembler, c: Buffer, now = 0): ReturnType<MessageAssembler['add']> {
  return a.add(c.toString('latin1', 3, 4) as 'F' | 'C' | 'A', c.readUInt32LE(20), c, 24, c.length, now);
}

describe('MessageAssembler (Part 6 §6.7.2.2, §6.7.3)', () => {
  it('returns a single final chunk as a view, without holding anything', () => {
    const a = new MessageAssembler(LIMITS);
    const c = chunk(10, 1, 'F');
    const r = add(a, c);
    expect(r).toMatchObject({ kind: 'message', requestId: 1, chunks: [c] });
    if (r.kind === 'message') expect(r.body.buffer).toBe(c.buffer);
    expect(a.pending).toBe(false);
    expect(a.bufferedBytes).toBe(0);
  });

  it('reassembles C…C F of one request id into one body', () => {
    const a = new MessageAssembler(LIMITS);
    expect(add(a, chunk(3, 5, 'C'))).toEqual({ kind: 'partial' });
    expect(add(a, chunk(3, 5, 'C'))).toEqual({ kind: 'partial' });
    expect(a.pending).toBe(true);
    const r = add(a, chunk(2, 5, 'F'));
    expect(r).toMatchObject({ kind: 'message', requestId: 5 });
    if (r.kind === 'message') {
      expect(r.chunks).toHaveLength(3);
      expect([...r.body]).toEqual([5, 5, 5, 5, 5, 5, 5, 5]);
    }
    expect(a.pending).toBe(false);
    expect(a.bufferedBytes).toBe(0);
  });

  it('keeps interleaved requests apart by request id', () => {
    const a = new MessageAssembler(LIMITS);
    add(a, chunk(2, 1, 'C'));
    add(a, chunk(2, 2, 'C'));
    const two = add(a, chunk(1, 2, 'F'));
    const one = add(a, chunk(1, 1, 'F'));
    expect(two.kind === 'message' && [...two.body]).toEqual([2, 2, 2]);
    expect(one.kind === 'message' && [...one.body]).toEqual([1, 1, 1]);
  });

  it('copies held chunks, so reusing the input buffer does not corrupt them', () => {
    const a = new MessageAssembler(LIMITS);
    const c = chunk(4, 3, 'C');
    add(a, c);
    c.fill(0, 24);
    const r = add(a, chunk(1, 3, 'F'));
    expect(r.kind === 'message' && [...r.body]).toEqual([3, 3, 3, 3, 3]);
  });

  it('abort discards the partial message and returns its chunks plus the A chunk', () => {
    const a = new MessageAssembler(LIMITS);
    add(a, chunk(3, 4, 'C'));
    const abort = chunk(8, 4, 'A');
    const r = add(a, abort);
    expect(r).toMatchObject({ kind: 'aborted', requestId: 4 });
    if (r.kind === 'aborted') expect(r.chunks).toHaveLength(2);
    expect(a.pending).toBe(false);
    expect(a.bufferedBytes).toBe(0);
    // A later final chunk of the same id is a new, single-chunk message: nothing of the aborted one is left.
    const next = add(a, chunk(1, 4, 'F'));
    expect(next.kind === 'message' && next.body.length).toBe(1);
  });

  it('an abort for a request with nothing held is just the A chunk', () => {
    expect(add(new MessageAssembler(LIMITS), chunk(0, 9, 'A'))).toMatchObject({
      kind: 'aborted',
      chunks: [expect.any(Buffer)],
    });
  });

  it('accepts exactly max chunks and cuts the intermediate chunk that leaves no room for the final one', () => {
    const a = new MessageAssembler(LIMITS);
    for (let i = 0; i < 3; i++) expect(add(a, chunk(1, 1, 'C')).kind).toBe('partial');
    expect(add(a, chunk(1, 1, 'F'))).toMatchObject({ kind: 'message', chunks: expect.any(Array) });
    for (let i = 0; i < 3; i++) expect(add(a, chunk(1, 2, 'C')).kind).toBe('partial');
    expect(add(a, chunk(1, 2, 'C'))).toMatchObject({ kind: 'invalid', code: 'opcua.too-many-chunks' });
    expect(a.pending).toBe(false);
  });

  it('cuts a message over the max size, in one chunk or across chunks', () => {
    expect(add(new MessageAssembler(LIMITS), chunk(1001, 1, 'F'))).toMatchObject({
      code: 'opcua.message-too-large',
    });
    const a = new MessageAssembler(LIMITS);
    add(a, chunk(600, 1, 'C'));
    expect(add(a, chunk(401, 1, 'F'))).toMatchObject({ code: 'opcua.message-too-large' });
    expect(a.bufferedBytes).toBe(0);
  });

  it('bounds all partial messages together by one budget', () => {
    const a = new MessageAssembler(LIMITS);
    add(a, chunk(600, 1, 'C'));
    expect(add(a, chunk(600, 2, 'C'))).toMatchObject({ code: 'opcua.reassembly-budget' });
  });

  it('bounds the number of partial messages', () => {
    const a = new MessageAssembler(LIMITS);
    add(a, chunk(1, 1, 'C'));
    add(a, chunk(1, 2, 'C'));
    expect(add(a, chunk(1, 3, 'C'))).toMatchObject({ code: 'opcua.too-many-partial-messages' });
  });

  it('times out an incomplete sequence, on add and on expire', () => {
    const a = new MessageAssembler(LIMITS);
    add(a, chunk(1, 1, 'C'), 1000);
    expect(a.expire(5999)).toBeNull();
    expect(a.expire(6000)).toMatchObject({ code: 'opcua.reassembly-timeout' });
    expect(a.pending).toBe(false);
    const b = new MessageAssembler(LIMITS);
    add(b, chunk(1, 1, 'C'), 0);
    expect(add(b, chunk(1, 1, 'F'), 5000)).toMatchObject({ code: 'opcua.reassembly-timeout' });
  });

  it('rejects body bounds outside the chunk', () => {
    const a = new MessageAssembler(LIMITS);
    const c = chunk(2, 1, 'F');
    expect(a.add('F', 1, c, 24, c.length + 1, 0)).toMatchObject({ code: 'opcua.chunk-body' });
    expect(a.add('F', 1, c, 30, 24, 0)).toMatchObject({ code: 'opcua.chunk-body' });
  });

  it('CVE-2022-21208: endless intermediate chunks are cut with memory bounded by the limits', () => {
    const limits: AssemblyLimits = {
      maxMessageSize: 1 << 20,
      maxChunkCount: 64,
      messageTimeoutMs: 1e9,
      maxPartialMessages: 4,
    };
    const a = new MessageAssembler(limits);
    const c = chunk(8000, 1, 'C');
    let peak = 0;
    let cut = -1;
    for (let i = 0; i < 100_000 && cut < 0; i++) {
      const r = add(a, c);
      peak = Math.max(peak, a.bufferedBytes);
      if (r.kind === 'invalid') cut = i;
    }
    expect(cut).toBeGreaterThan(0);
    expect(cut).toBe(63);
    expect(peak).toBeLessThanOrEqual(limits.maxMessageSize + limits.maxChunkCount * 64);
    expect(a.bufferedBytes).toBe(0);
  });
});
