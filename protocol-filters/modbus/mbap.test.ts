import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { encodeAdu, u16 } from './frames.ts';
import { MAX_ADU_LENGTH, ModbusStreamDecoder, parseMbap, type StreamItem } from './mbap.ts';

const read = (tx: number): Buffer => encodeAdu(tx, 1, [3, ...u16(tx), ...u16(2)]);
/** A 260-byte ADU, the largest possible (length field 254): diagnostics echoing 250 bytes. */
const largest = (tx: number): Buffer => encodeAdu(tx, 1, [8, ...u16(0), ...Array<number>(250).fill(7)]);

function frames(items: StreamItem[]): Buffer[] {
  return items.map((i) => {
    if (i.kind !== 'frame') throw new Error(`unexpected ${JSON.stringify(i)}`);
    return i.frame.bytes;
  });
}

describe('parseMbap (TCP §3.1.3)', () => {
  it('frames a header + PDU and reports the bytes consumed', () => {
    const buf = Buffer.concat([read(7), Buffer.from([0xaa])]);
    const r = parseMbap(buf);
    expect(r).toMatchObject({ kind: 'frame', consumed: 12, frame: { transactionId: 7, unitId: 1 } });
    if (r.kind === 'frame') expect(r.frame.pdu).toEqual(Buffer.from([3, 0, 7, 0, 2]));
  });

  it.each([
    ['empty input', Buffer.alloc(0)],
    ['3 bytes', Buffer.from([0, 1, 0])],
    ['5 bytes with protocol id 0', Buffer.from([0, 1, 0, 0, 0])],
    ['header only', Buffer.from([0, 1, 0, 0, 0, 6, 1])],
    ['one byte short of the ADU', read(1).subarray(0, 11)],
  ])('needs more: %s', (_name, buf) => {
    expect(parseMbap(buf).kind).toBe('need-more');
  });

  it.each([
    ['protocol id 1, seen after 4 bytes', Buffer.from([0, 1, 0, 1]), 'mbap.protocol-id'],
    [
      'protocol id 0xFFFF in a whole frame',
      encodeAdu(1, 1, [3, 0, 0, 0, 1], { protocolId: 0xffff }),
      'mbap.protocol-id',
    ],
    ['length 0', Buffer.from([0, 1, 0, 0, 0, 0]), 'mbap.length'],
    ['length 1: unit id without function', Buffer.from([0, 1, 0, 0, 0, 1, 1]), 'mbap.length'],
    ['length 255: PDU over 253 bytes', Buffer.from([0, 1, 0, 0, 0, 255]), 'mbap.length'],
    ['length 0xFFFF', Buffer.from([0, 1, 0, 0, 0xff, 0xff]), 'mbap.length'],
  ])('invalid: %s', (_name, buf, code) => {
    expect(parseMbap(buf)).toMatchObject({ kind: 'invalid', code });
  });

  it('accepts the smallest (8 bytes) and the largest (260 bytes) ADU', () => {
    expect(parseMbap(encodeAdu(1, 1, [7]))).toMatchObject({ kind: 'frame', consumed: 8 });
    expect(largest(1).length).toBe(MAX_ADU_LENGTH);
    expect(parseMbap(largest(1))).toMatchObject({ kind: 'frame', consumed: 260 });
  });
});

describe('ModbusStreamDecoder: reassembly (TCP §4.4)', () => {
  const stream = Buffer.concat([read(1), largest(2), encodeAdu(3, 9, [7]), read(4)]);

  it('byte by byte yields each ADU once, in order, and never holds more than one ADU', () => {
    const d = new ModbusStreamDecoder();
    const got: Buffer[] = [];
    for (let i = 0; i < stream.length; i++) {
      got.push(...frames(d.push(stream.subarray(i, i + 1))));
      expect(d.buffered).toBeLessThan(MAX_ADU_LENGTH);
    }
    expect(got).toEqual([read(1), largest(2), encodeAdu(3, 9, [7]), read(4)]);
    expect(d.buffered).toBe(0);
  });

  it('three ADUs in one write come out as three frames viewing the chunk', () => {
    const chunk = Buffer.concat([read(1), read(2), read(3)]);
    const d = new ModbusStreamDecoder();
    const items = d.push(chunk);
    expect(frames(items)).toEqual([read(1), read(2), read(3)]);
    for (const f of items) if (f.kind === 'frame') expect(f.frame.bytes.buffer).toBe(chunk.buffer);
    expect(d.buffered).toBe(0);
  });

  it('an ADU split across chunks is copied out, so reusing the chunk buffers cannot change it', () => {
    const adu = read(5);
    const a = Buffer.from(adu.subarray(0, 4));
    const b = Buffer.from(adu.subarray(4));
    const d = new ModbusStreamDecoder();
    expect(d.push(a)).toEqual([]);
    expect(d.buffered).toBe(4);
    const [item] = d.push(b);
    a.fill(0);
    b.fill(0);
    if (item?.kind !== 'frame') throw new Error('expected a frame');
    expect(item.frame.bytes).toEqual(adu);
    expect(item.frame.pdu).toEqual(adu.subarray(7));
  });

  it('a tail and a head of two ADUs in one chunk', () => {
    const d = new ModbusStreamDecoder();
    expect(d.push(stream.subarray(0, 5))).toEqual([]);
    expect(frames(d.push(stream.subarray(5, 20)))).toEqual([read(1)]);
    expect(d.buffered).toBe(20 - 12);
  });

  it('any split of the stream yields the same ADUs (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: stream.length }), { maxLength: 20 }), (cuts) => {
        const points = [...new Set(cuts)].sort((x, y) => x - y);
        const d = new ModbusStreamDecoder();
        const got: Buffer[] = [];
        let prev = 0;
        for (const p of [...points, stream.length]) {
          got.push(...frames(d.push(stream.subarray(prev, p))));
          prev = p;
        }
        expect(Buffer.concat(got)).toEqual(stream);
        expect(got).toHaveLength(4);
      }),
      { numRuns: 500 },
    );
  });

  it('an invalid header after good frames: the good ones come out, then the decoder stays failed', () => {
    const bad = Buffer.from([0, 9, 0, 1, 0, 6, 1, 3]); // protocol id 1
    const d = new ModbusStreamDecoder();
    const items = d.push(Buffer.concat([read(1), bad, read(2)]));
    expect(items.map((i) => i.kind)).toEqual(['frame', 'invalid']);
    expect(items[1]).toMatchObject({ code: 'mbap.protocol-id' });
    expect(d.push(read(3))).toEqual([items[1]]);
    expect(d.failed).toMatchObject({ code: 'mbap.protocol-id' });
  });

  it('an impossible length arriving byte by byte fails as soon as the length field is in', () => {
    const d = new ModbusStreamDecoder();
    const bad = Buffer.from([0, 1, 0, 0, 1, 0]); // length 256
    for (let i = 0; i < 5; i++) expect(d.push(bad.subarray(i, i + 1))).toEqual([]);
    expect(d.push(bad.subarray(5, 6))).toMatchObject([{ kind: 'invalid', code: 'mbap.length' }]);
  });

  it('a bad protocol id in a partial header fails on the 4th byte', () => {
    const d = new ModbusStreamDecoder();
    expect(d.push(Buffer.from([0, 1, 0]))).toEqual([]);
    expect(d.push(Buffer.from([2]))).toMatchObject([{ kind: 'invalid', code: 'mbap.protocol-id' }]);
  });

  it('the held bytes never exceed one ADU whatever the input (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 600 }), { maxLength: 10 }), (chunks) => {
        const d = new ModbusStreamDecoder();
        for (const c of chunks) {
          for (const item of d.push(Buffer.from(c))) {
            if (item.kind === 'frame') expect(item.frame.bytes.length).toBeLessThanOrEqual(MAX_ADU_LENGTH);
          }
          expect(d.buffered).toBeLessThan(MAX_ADU_LENGTH);
        }
      }),
      { numRuns: 1000 },
    );
  });
});
