import { describe, it, expect } from 'vitest';
import {
  SEQUENCE_WRAP_THRESHOLD,
  SequenceDirection,
  isNextSequenceNumber,
  nextSequenceNumber,
  withSequenceNumber,
} from './sequence.ts';

describe('sequence number rules (Part 6 §6.7.2.4)', () => {
  it('increments by one and wraps only past UInt32.MaxValue - 1024, to below 1024', () => {
    expect(nextSequenceNumber(5)).toBe(6);
    expect(nextSequenceNumber(SEQUENCE_WRAP_THRESHOLD)).toBe(SEQUENCE_WRAP_THRESHOLD + 1);
    expect(nextSequenceNumber(SEQUENCE_WRAP_THRESHOLD + 1)).toBe(1);
    expect(isNextSequenceNumber(5, 6)).toBe(true);
    expect(isNextSequenceNumber(5, 7)).toBe(false);
    expect(isNextSequenceNumber(5, 5)).toBe(false);
    expect(isNextSequenceNumber(0xffffffff, 0)).toBe(true);
    expect(isNextSequenceNumber(SEQUENCE_WRAP_THRESHOLD + 5, 3)).toBe(true);
    expect(isNextSequenceNumber(1000, 3)).toBe(false);
    expect(isNextSequenceNumber(SEQUENCE_WRAP_THRESHOLD + 5, 1024)).toBe(false);
  });
});

describe('SequenceDirection', () => {
  it('passes numbers through unchanged while nothing was dropped or injected', () => {
    const d = new SequenceDirection();
    for (let n = 50; n < 60; n++) {
      expect(d.arrive(n)).toBe(true);
      expect(d.emit(n)).toBe(n);
    }
    expect(d.renumbering).toBe(false);
  });

  it('detects a gap or a replay on arrival', () => {
    const d = new SequenceDirection();
    expect(d.arrive(10)).toBe(true);
    expect(d.arrive(12)).toBe(false);
    expect(d.arrive(10)).toBe(false);
    expect(d.arrive(11)).toBe(true);
  });

  it('closes the gap of a swallowed chunk (client → server)', () => {
    const d = new SequenceDirection();
    const emitted: number[] = [];
    for (const n of [1, 2, 3, 4, 5, 6]) {
      d.arrive(n);
      if (n === 3 || n === 4) continue; // a refused two-chunk request
      emitted.push(d.emit(n));
    }
    expect(emitted).toEqual([1, 2, 3, 4]);
  });

  it('makes room for an injected chunk (server → client)', () => {
    const d = new SequenceDirection();
    const emitted: number[] = [];
    for (const n of [100, 101]) emitted.push(d.emit(n));
    emitted.push(d.inject() ?? -1);
    for (const n of [102, 103]) emitted.push(d.emit(n));
    emitted.push(d.inject() ?? -1);
    emitted.push(d.emit(104));
    expect(emitted).toEqual([100, 101, 102, 103, 104, 105, 106]);
  });

  it('cannot inject before the receiver saw any number', () => {
    expect(new SequenceDirection().inject()).toBeNull();
  });

  it('keeps numbers contiguous across the wrap while renumbering', () => {
    const d = new SequenceDirection();
    const start = SEQUENCE_WRAP_THRESHOLD - 1;
    d.emit(start);
    d.inject();
    const out: number[] = [];
    for (const n of [start + 1, start + 2, 1, 2]) out.push(d.emit(n));
    for (let i = 1; i < out.length; i++)
      expect(isNextSequenceNumber(out[i - 1] ?? 0, out[i] ?? 0)).toBe(true);
  });
});

describe('withSequenceNumber', () => {
  it('returns the same buffer when unchanged and a patched copy otherwise', () => {
    const b = Buffer.alloc(24);
    b.writeUInt32LE(7, 16);
    expect(withSequenceNumber(b, 16, 7)).toBe(b);
    const c = withSequenceNumber(b, 16, 8);
    expect(c).not.toBe(b);
    expect(c.readUInt32LE(16)).toBe(8);
    expect(b.readUInt32LE(16)).toBe(7);
  });
});
