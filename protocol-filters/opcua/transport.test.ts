import { describe, it, expect } from 'vitest';
import { ack, hello, msgChunk, openRequest } from './frames.ts';
import { OpcuaChunkDecoder } from './stream.ts';
import {
  MAX_TRANSPORT_MESSAGE_SIZE,
  buildErrorMessage,
  clampAcknowledge,
  clampHello,
  encodeAcknowledge,
  encodeHello,
  parseAcknowledge,
  parseChunk,
  parseError,
  parseHello,
  parseOpenHeader,
  parseReverseHello,
  parseSymmetricHeader,
  truncateUtf8,
} from './transport.ts';
import type { ParseResult } from './types.ts';

const MAX = 65536;

function raw(type: string, chunkType: string, size: number, total = size): Buffer {
  const b = Buffer.alloc(total);
  b.write(type, 0, 'latin1');
  b.write(chunkType, 3, 'latin1');
  b.writeUInt32LE(size, 4);
  return b;
}

function codeOf<T>(r: ParseResult<T>): string {
  return r.kind === 'invalid' ? r.code : r.kind;
}

describe('parseChunk: header fault table (Part 6 §7.1.2.2, §6.7.2.2)', () => {
  const rows: [string, Buffer, string][] = [
    ['empty input', Buffer.alloc(0), 'need-more'],
    ['two bytes of a valid type', Buffer.from('MS'), 'need-more'],
    ['unknown message type', Buffer.from('XYZF'), 'opcua.message-type'],
    ['lower-case message type', Buffer.from('msgF'), 'opcua.message-type'],
    ['chunk type byte not F/C/A', Buffer.from('MSGX'), 'opcua.chunk-type'],
    ['HEL as intermediate chunk', Buffer.from('HELC'), 'opcua.chunk-type'],
    ['ACK as abort chunk', Buffer.from('ACKA'), 'opcua.chunk-type'],
    ['OPN split into chunks', Buffer.from('OPNC'), 'opcua.chunk-type'],
    ['CLO abort chunk', Buffer.from('CLOA'), 'opcua.chunk-type'],
    ['header without size', Buffer.from('MSGF\x01\x00'), 'need-more'],
    ['MSG larger than the negotiated size', raw('MSG', 'F', MAX + 1, 8), 'opcua.chunk-too-large'],
    ['MSG size 0xFFFFFFFF', raw('MSG', 'F', 0xffffffff, 8), 'opcua.chunk-too-large'],
    [
      'HEL larger than any transport message',
      raw('HEL', 'F', MAX_TRANSPORT_MESSAGE_SIZE + 1, 8),
      'opcua.chunk-too-large',
    ],
    ['MSG shorter than its headers', raw('MSG', 'F', 23), 'opcua.chunk-too-small'],
    ['MSG of 8 bytes', raw('MSG', 'F', 8), 'opcua.chunk-too-small'],
    ['HEL shorter than its fields', raw('HEL', 'F', 31), 'opcua.chunk-too-small'],
    ['ACK shorter than its fields', raw('ACK', 'F', 27), 'opcua.chunk-too-small'],
    ['ERR shorter than its fields', raw('ERR', 'F', 15), 'opcua.chunk-too-small'],
    ['OPN shorter than its headers', raw('OPN', 'F', 31), 'opcua.chunk-too-small'],
    ['size 0', raw('CLO', 'F', 0, 8), 'opcua.chunk-too-small'],
    ['truncated chunk', raw('MSG', 'F', 100, 60), 'need-more'],
    ['MSG final', raw('MSG', 'F', 24), 'frame'],
    ['MSG intermediate', raw('MSG', 'C', 24), 'frame'],
    ['MSG abort', raw('MSG', 'A', 24), 'frame'],
    ['MSG exactly at the negotiated size', raw('MSG', 'F', MAX), 'frame'],
  ];
  for (const [name, buf, want] of rows) {
    it(name, () => {
      expect(codeOf(parseChunk(buf, MAX))).toBe(want);
    });
  }

  it('frames only the first chunk and reports what it consumed', () => {
    const two = Buffer.concat([raw('MSG', 'F', 30), raw('CLO', 'F', 24)]);
    const r = parseChunk(two, MAX);
    expect(r).toMatchObject({ kind: 'frame', consumed: 30, frame: { messageType: 'MSG', chunkType: 'F' } });
  });
});

describe('HEL / ACK / ERR / RHE (Part 6 §7.1.2.3–§7.1.2.6)', () => {
  it('parses a Hello and round-trips it', () => {
    const r = parseHello(hello({ receiveBufferSize: 70000, sendBufferSize: 9000, maxChunkCount: 5 }));
    expect(r).toMatchObject({
      kind: 'frame',
      frame: {
        receiveBufferSize: 70000,
        sendBufferSize: 9000,
        maxChunkCount: 5,
        endpointUrl: 'opc.tcp://plc:4840',
      },
    });
    if (r.kind !== 'frame') return;
    expect(
      encodeHello(r.frame).equals(
        hello({ receiveBufferSize: 70000, sendBufferSize: 9000, maxChunkCount: 5 }),
      ),
    ).toBe(true);
  });

  const helloFaults: [string, Buffer, string][] = [
    ['receive buffer below 8192', hello({ receiveBufferSize: 8191 }), 'opcua.hello'],
    ['send buffer below 8192', hello({ sendBufferSize: 100 }), 'opcua.hello'],
    [
      'url length past the end',
      (() => {
        const b = hello();
        b.writeInt32LE(999, 28);
        return b;
      })(),
      'opcua.string',
    ],
    [
      'url length -2',
      (() => {
        const b = hello();
        b.writeInt32LE(-2, 28);
        return b;
      })(),
      'opcua.string',
    ],
    ['url longer than 4096 bytes', hello({ endpointUrl: 'x'.repeat(4097) }), 'opcua.string'],
    [
      'trailing bytes',
      Buffer.concat([hello({ endpointUrl: null }), Buffer.alloc(1)]),
      'opcua.trailing-bytes',
    ],
  ];
  for (const [name, buf, want] of helloFaults) {
    it(`HEL: ${name}`, () => {
      buf.writeUInt32LE(buf.length, 4);
      expect(codeOf(parseHello(buf))).toBe(want);
    });
  }

  it('accepts a null endpoint url', () => {
    expect(parseHello(hello({ endpointUrl: null }))).toMatchObject({
      kind: 'frame',
      frame: { endpointUrl: null },
    });
  });

  it('parses an Acknowledge and rejects bad sizes', () => {
    expect(parseAcknowledge(ack({ maxMessageSize: 5 }))).toMatchObject({
      kind: 'frame',
      frame: { maxMessageSize: 5 },
    });
    expect(codeOf(parseAcknowledge(ack({ receiveBufferSize: 10 })))).toBe('opcua.acknowledge');
    expect(codeOf(parseAcknowledge(Buffer.concat([ack(), Buffer.alloc(2)])))).toBe('opcua.acknowledge');
  });

  it('clamps HEL and ACK to the gateway limits (0 = unlimited becomes the limit)', () => {
    const h = parseHello(hello({ receiveBufferSize: 1 << 20, sendBufferSize: 1 << 20 }));
    if (h.kind !== 'frame') throw new Error('hello');
    expect(clampHello(h.frame, 65536)).toMatchObject({ receiveBufferSize: 65536, sendBufferSize: 65536 });
    const a = parseAcknowledge(
      ack({ receiveBufferSize: 1 << 20, sendBufferSize: 8192, maxMessageSize: 0, maxChunkCount: 9 }),
    );
    if (a.kind !== 'frame') throw new Error('ack');
    const c = clampAcknowledge(a.frame, { maxChunkSize: 65536, maxMessageSize: 1000000, maxChunkCount: 100 });
    expect(c).toMatchObject({
      receiveBufferSize: 65536,
      sendBufferSize: 8192,
      maxMessageSize: 1000000,
      maxChunkCount: 9,
    });
    expect(parseAcknowledge(encodeAcknowledge(c))).toMatchObject({ kind: 'frame', frame: c });
  });

  it('builds an ERR that parses back, with the reason truncated to 4096 bytes', () => {
    const e = buildErrorMessage(0x80550000, 'policy refused');
    expect(e.subarray(0, 4).toString('latin1')).toBe('ERRF');
    expect(e.readUInt32LE(4)).toBe(e.length);
    expect(parseError(e)).toMatchObject({
      kind: 'frame',
      frame: { error: 0x80550000, reason: 'policy refused' },
    });
    const long = buildErrorMessage(1, 'é'.repeat(5000));
    const r = parseError(long);
    expect(r.kind).toBe('frame');
    if (r.kind === 'frame') expect(Buffer.byteLength(r.frame.reason ?? '')).toBeLessThanOrEqual(4096);
    expect(truncateUtf8('aé', 2)).toBe('a');
  });

  it('parses a ReverseHello and rejects a truncated one', () => {
    const b = Buffer.alloc(8 + 4 + 3 + 4);
    b.write('RHEF', 0, 'latin1');
    b.writeUInt32LE(b.length, 4);
    b.writeInt32LE(3, 8);
    b.write('urn', 12);
    b.writeInt32LE(-1, 15);
    expect(parseReverseHello(b)).toMatchObject({
      kind: 'frame',
      frame: { serverUri: 'urn', endpointUrl: null },
    });
    expect(codeOf(parseReverseHello(b.subarray(0, 17)))).toBe('opcua.string');
  });
});

describe('OPN asymmetric header and MSG symmetric header (Part 6 §6.7.2.3–§6.7.2.4)', () => {
  it('reads the policy of a None OPN and where its sequence header starts', () => {
    const r = parseOpenHeader(openRequest({ channelId: 0, sequenceNumber: 51 }));
    expect(r).toMatchObject({
      kind: 'frame',
      frame: { securityPolicy: 'None', senderCertificate: null, channelId: 0 },
    });
    if (r.kind !== 'frame') return;
    expect(openRequest({ sequenceNumber: 51 }).readUInt32LE(r.frame.sequenceOffset)).toBe(51);
  });

  it('keeps an unknown policy URI as text with a null short name', () => {
    const r = parseOpenHeader(openRequest({ policyUri: 'http://example.com/MyPolicy' }));
    expect(r).toMatchObject({
      kind: 'frame',
      frame: { securityPolicy: null, securityPolicyUri: 'http://example.com/MyPolicy' },
    });
  });

  const faults: [string, Buffer, string][] = [
    ['policy URI longer than 255 bytes', openRequest({ policyUri: 'u'.repeat(256) }), 'opcua.open-policy'],
    ['empty policy URI', openRequest({ policyUri: '' }), 'opcua.open-policy'],
    [
      'certificate not DER',
      openRequest({ policy: 'Basic256Sha256', certificate: Buffer.from('not a cert') }),
      'opcua.certificate-der',
    ],
    [
      'receiver thumbprint of 19 bytes',
      openRequest({ policy: 'Basic256Sha256', receiverThumbprint: Buffer.alloc(19) }),
      'opcua.open-thumbprint',
    ],
    [
      'ends before the sequence header',
      openRequest({ policy: 'Basic256Sha256', encrypted: Buffer.alloc(4) }),
      'opcua.open',
    ],
  ];
  for (const [name, buf, want] of faults) {
    it(`OPN: ${name}`, () => {
      expect(codeOf(parseOpenHeader(buf))).toBe(want);
    });
  }

  it('rejects a certificate length past the chunk', () => {
    const b = openRequest({ policy: 'Basic256Sha256' });
    const uriLen = b.readInt32LE(12);
    b.writeInt32LE(100000, 16 + uriLen);
    expect(codeOf(parseOpenHeader(b))).toBe('opcua.open-certificate');
  });

  it('reads channel, token, sequence number and request id of a MSG', () => {
    const c = msgChunk(Buffer.alloc(4), {
      channelId: 9,
      tokenId: 3,
      sequenceNumber: 77,
      requestId: 12,
      chunkType: 'C',
    });
    expect(parseSymmetricHeader(c)).toMatchObject({
      kind: 'frame',
      frame: { chunkType: 'C', channelId: 9, tokenId: 3, sequenceNumber: 77, requestId: 12 },
    });
  });
});

describe('OpcuaChunkDecoder: incremental framing, bounded buffers', () => {
  const chunks = [hello(), msgChunk(Buffer.alloc(100, 1), { sequenceNumber: 1, requestId: 1 }), ack()];
  const stream = Buffer.concat(chunks);

  it('frames every split of a stream identically', () => {
    for (let cut = 0; cut <= stream.length; cut += 7) {
      const d = new OpcuaChunkDecoder(MAX);
      const items = [...d.push(stream.subarray(0, cut)), ...d.push(stream.subarray(cut))];
      expect(items.map((i) => (i.kind === 'frame' ? i.frame.bytes : null))).toEqual(chunks);
      expect(d.buffered).toBe(0);
    }
  });

  it('frames a stream fed one byte at a time and never holds more than one chunk', () => {
    const d = new OpcuaChunkDecoder(MAX);
    const got: Buffer[] = [];
    for (let i = 0; i < stream.length; i++) {
      for (const item of d.push(stream.subarray(i, i + 1)))
        if (item.kind === 'frame') got.push(item.frame.bytes);
      expect(d.buffered).toBeLessThanOrEqual(Math.max(...chunks.map((c) => c.length)));
    }
    expect(got).toEqual(chunks);
  });

  it('rejects an oversize header before buffering its body and stays failed', () => {
    const d = new OpcuaChunkDecoder(8192);
    const items = d.push(raw('MSG', 'F', 8193, 8));
    expect(items).toEqual([expect.objectContaining({ kind: 'invalid', code: 'opcua.chunk-too-large' })]);
    expect(d.buffered).toBe(0);
    expect(d.push(hello())).toEqual([expect.objectContaining({ code: 'opcua.chunk-too-large' })]);
  });

  it('rejects a bad type byte as soon as it arrives across pushes', () => {
    const d = new OpcuaChunkDecoder(MAX);
    expect(d.push(Buffer.from('MS'))).toEqual([]);
    expect(d.push(Buffer.from('X'))).toEqual([expect.objectContaining({ code: 'opcua.message-type' })]);
  });

  it('applies a lowered chunk limit to later chunks', () => {
    const d = new OpcuaChunkDecoder(MAX);
    d.maxChunkSize = 8192;
    expect(d.push(raw('MSG', 'F', 9000, 8))[0]).toMatchObject({
      kind: 'invalid',
      code: 'opcua.chunk-too-large',
    });
  });

  it('copies a chunk reassembled from pushes (the input buffers may be reused)', () => {
    const d = new OpcuaChunkDecoder(MAX);
    const c = msgChunk(Buffer.alloc(40, 7), { sequenceNumber: 1, requestId: 1 });
    const a = Buffer.from(c.subarray(0, 30));
    expect(d.push(a)).toEqual([]);
    a.fill(0);
    const items = d.push(Buffer.from(c.subarray(30)));
    expect(items[0]).toMatchObject({ kind: 'frame' });
    if (items[0]?.kind === 'frame') expect(items[0].frame.bytes.equals(c)).toBe(true);
  });
});
