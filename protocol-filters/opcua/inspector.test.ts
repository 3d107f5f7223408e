import { describe, it, expect, beforeAll } from 'vitest';
import { createHash } from 'node:crypto';
import { BinaryStream } from 'node-opcua-binary-stream';
import { decodeExpandedNodeId } from 'node-opcua-basic-types';
import {
  ActivateSessionRequest,
  AnonymousIdentityToken,
  CallRequest,
  CreateSessionRequest,
  GetEndpointsRequest,
  ReadRequest,
  ServiceFault,
  UserNameIdentityToken,
  WriteRequest,
} from 'node-opcua-types';
import type { ClientVerdict, FilterEvent, ServerVerdict } from '../core/inspector.ts';
import { planEntry } from '../core/test-helpers.ts';
import type { ConduitMode, OpcuaSpec } from '../../policies/types.ts';
import { STATUS } from './constants.ts';
import {
  ack,
  encodeBody,
  encryptedChunk,
  hello,
  msgChunk,
  msgChunks,
  openRequest,
  openResponse,
  readResponse,
} from './frames.ts';
import { OpcuaInspector, type OpcuaInspectorOptions } from './inspector.ts';
import { OpcuaChunkDecoder } from './stream.ts';
import { makeSelfSignedCertificate } from './test-certificate.ts';
import { parseAcknowledge, parseError, parseHello } from './transport.ts';

let cert: Buffer = Buffer.alloc(0);
let thumb = '';
beforeAll(() => {
  cert = makeSelfSignedCertificate('hmi-1');
  thumb = createHash('sha1').update(cert).digest('hex').toUpperCase();
});

function spec(over: Partial<OpcuaSpec> = {}): OpcuaSpec {
  return {
    securityModes: ['None'],
    securityPolicies: ['None'],
    services: ['discovery', 'session', 'read', 'browse', 'subscribe', 'write'],
    write: ['ns=2;s=Setpoints.*'],
    call: [],
    anonymous: true,
    certificates: [],
    ...over,
  };
}

function inspector(
  s: OpcuaSpec,
  mode: ConduitMode = 'enforce',
  options: OpcuaInspectorOptions = {},
  maxOutstandingRequests = 16,
): OpcuaInspector {
  const entry = planEntry(4840, { protocol: 'opcua', mode, opcua: s });
  return new OpcuaInspector(
    { entry, client: { address: '10.0.0.1', port: 50000 }, limits: { maxOutstandingRequests } },
    options,
  );
}

/** Bytes forwarded/replied, split back into chunks. */
function chunksOf(bytes: Buffer[]): Buffer[] {
  const d = new OpcuaChunkDecoder(1 << 20);
  const out: Buffer[] = [];
  for (const b of bytes) for (const i of d.push(b)) if (i.kind === 'frame') out.push(i.frame.bytes);
  return out;
}

function forwarded(v: (ClientVerdict | ServerVerdict)[]): Buffer[] {
  return chunksOf(v.flatMap((x) => (x.action === 'forward' ? [x.bytes] : [])));
}

function replied(v: ClientVerdict[]): Buffer[] {
  return chunksOf(v.flatMap((x) => (x.action === 'reply' ? [x.bytes] : [])));
}

function events(v: (ClientVerdict | ServerVerdict)[]): FilterEvent[] {
  return v.flatMap((x) => ('event' in x && x.event !== undefined ? [x.event] : []));
}

function seqOf(chunk: Buffer | undefined): number {
  if (chunk === undefined) throw new Error('no chunk');
  return chunk.readUInt32LE(16);
}

function faultOf(chunk: Buffer | undefined): {
  handle: number;
  status: number;
  requestId: number;
  tokenId: number;
} {
  if (chunk === undefined) throw new Error('no chunk');
  const s = new BinaryStream(chunk.subarray(24));
  expect(decodeExpandedNodeId(s).value).toBe(397);
  const f = new ServiceFault();
  f.decode(s);
  return {
    handle: f.responseHeader.requestHandle,
    status: f.responseHeader.serviceResult.value,
    requestId: chunk.readUInt32LE(20),
    tokenId: chunk.readUInt32LE(12),
  };
}

const read = (handle: number): Buffer =>
  encodeBody(
    new ReadRequest({
      requestHeader: { requestHandle: handle },
      nodesToRead: [{ nodeId: 'ns=2;s=T', attributeId: 13 }],
    }),
  );
const write = (handle: number, nodeId: string): Buffer =>
  encodeBody(
    new WriteRequest({
      requestHeader: { requestHandle: handle },
      nodesToWrite: [{ nodeId, attributeId: 13, value: { value: { dataType: 'Double', value: 1 } } }],
    }),
  );

/** Drives HEL/ACK and a None OPN exchange; returns the inspector ready for MSGs (client seq 1, server seq 1 used). */
function openNone(
  s: OpcuaSpec = spec(),
  mode: ConduitMode = 'enforce',
  options: OpcuaInspectorOptions = {},
  max = 16,
): OpcuaInspector {
  const i = inspector(s, mode, options, max);
  expect(forwarded(i.onClientData(hello()))).toHaveLength(1);
  expect(forwarded(i.onServerData(ack()))).toHaveLength(1);
  expect(forwarded(i.onClientData(openRequest({ sequenceNumber: 1, requestId: 1 })))).toHaveLength(1);
  expect(
    forwarded(i.onServerData(openResponse({ channelId: 7, tokenId: 1, sequenceNumber: 1, requestId: 1 }))),
  ).toHaveLength(1);
  return i;
}

describe('OpcuaInspector: handshake', () => {
  it('lowers HEL and ACK buffer sizes and message limits to the gateway limits', () => {
    const i = inspector(spec(), 'enforce', {
      limits: { maxChunkSize: 16384, maxMessageSize: 100000, maxChunkCount: 8 },
    });
    const h = forwarded(i.onClientData(hello({ receiveBufferSize: 1 << 20, sendBufferSize: 1 << 20 })));
    expect(parseHello(h[0] ?? Buffer.alloc(0))).toMatchObject({
      frame: { receiveBufferSize: 16384, sendBufferSize: 16384 },
    });
    const a = forwarded(i.onServerData(ack({ receiveBufferSize: 1 << 20, sendBufferSize: 1 << 20 })));
    expect(parseAcknowledge(a[0] ?? Buffer.alloc(0))).toMatchObject({
      frame: { receiveBufferSize: 16384, sendBufferSize: 16384, maxMessageSize: 100000, maxChunkCount: 8 },
    });
    // A client chunk over the negotiated size is cut at its header.
    const big = Buffer.alloc(8);
    big.write('MSGF', 0, 'latin1');
    big.writeUInt32LE(16385, 4);
    expect(i.onClientData(big)).toEqual([
      { action: 'close', event: expect.objectContaining({ reason: 'opcua.chunk-too-large' }) },
    ]);
  });

  it('accepts an OPN pipelined before the ACK, and only one ACK', () => {
    const i = inspector(spec());
    expect(forwarded(i.onClientData(Buffer.concat([hello(), openRequest()])))).toHaveLength(2);
    expect(forwarded(i.onServerData(ack()))).toHaveLength(1);
    expect(i.onServerData(ack()).at(-1)).toMatchObject({
      action: 'close',
      event: { reason: 'opcua.unexpected-message' },
    });
  });

  const faults: [string, Buffer[], string][] = [
    ['garbage instead of HEL', [Buffer.from('GET / HTTP/1.1\r\n')], 'opcua.message-type'],
    [
      'MSG before OPN',
      [hello(), msgChunk(read(1), { sequenceNumber: 1, requestId: 1 })],
      'opcua.unexpected-message',
    ],
    ['OPN before HEL', [openRequest()], 'opcua.unexpected-message'],
    ['second HEL', [hello(), hello()], 'opcua.unexpected-message'],
    [
      'ReverseHello from the client',
      [Buffer.from('RHEF\x10\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff', 'latin1')],
      'opcua.reverse-hello',
    ],
    ['ACK from the client', [ack()], 'opcua.unexpected-message'],
    ['None OPN asking for SignAndEncrypt', [hello(), openRequest({ securityMode: 3 })], 'opcua.open-mode'],
  ];
  for (const [name, chunks, reason] of faults) {
    it(`closes on ${name}`, () => {
      const i = inspector(spec());
      const all = chunks.flatMap((c) => i.onClientData(c));
      expect(all.at(-1)).toEqual({
        action: 'close',
        event: expect.objectContaining({ reason, verdict: 'drop' }),
      });
      expect(i.onClientData(hello())).toEqual([]);
    });
  }
});

describe('OpcuaInspector: channel-level refusals (ERR + close)', () => {
  it('refuses a None channel when None is not allowed and discovery is not a service', () => {
    const i = inspector(
      spec({ securityModes: ['SignAndEncrypt'], securityPolicies: ['Basic256Sha256'], services: ['read'] }),
    );
    i.onClientData(hello());
    i.onServerData(ack());
    const v = i.onClientData(openRequest());
    expect(v.map((x) => x.action)).toEqual(['reply', 'close']);
    expect(parseError(replied(v)[0] ?? Buffer.alloc(0))).toMatchObject({
      frame: { error: STATUS.BadSecurityPolicyRejected },
    });
    expect(events(v)[0]).toMatchObject({
      reason: 'opcua.security-policy',
      verdict: 'refuse',
      detail: { securityPolicy: 'None' },
    });
  });

  it('refuses another security policy, with the certificate subject in the event', () => {
    const i = inspector(spec({ securityModes: ['SignAndEncrypt'], securityPolicies: ['Basic256Sha256'] }));
    i.onClientData(hello());
    const v = i.onClientData(openRequest({ policy: 'Basic128Rsa15', certificate: cert }));
    expect(parseError(replied(v)[0] ?? Buffer.alloc(0))).toMatchObject({
      frame: { error: STATUS.BadSecurityPolicyRejected },
    });
    expect(events(v)[0]).toMatchObject({
      reason: 'opcua.security-policy',
      detail: { securityPolicy: 'Basic128Rsa15', certificateSubject: expect.stringContaining('CN=hmi-1') },
    });
  });

  it('checks the certificate allow-list', () => {
    const s = spec({
      securityModes: ['SignAndEncrypt'],
      securityPolicies: ['Basic256Sha256'],
      certificates: ['B'.repeat(40)],
    });
    const refused = inspector(s);
    refused.onClientData(hello());
    const v = refused.onClientData(openRequest({ policy: 'Basic256Sha256', certificate: cert }));
    expect(parseError(replied(v)[0] ?? Buffer.alloc(0))).toMatchObject({
      frame: { error: STATUS.BadCertificateUntrusted },
    });
    expect(events(v)[0]).toMatchObject({
      reason: 'opcua.certificate',
      detail: { certificateThumbprint: thumb },
    });
    const allowed = inspector({ ...s, certificates: [thumb] });
    allowed.onClientData(hello());
    const ok = allowed.onClientData(openRequest({ policy: 'Basic256Sha256', certificate: cert }));
    expect(ok.map((x) => x.action)).toEqual(['forward']);
    expect(allowed.channel?.certificate?.commonName).toBe('hmi-1');
  });

  it('monitor mode forwards a refused channel and logs would-refuse', () => {
    const i = inspector(
      spec({ securityModes: ['SignAndEncrypt'], securityPolicies: ['Basic256Sha256'], services: [] }),
      'monitor',
    );
    i.onClientData(hello());
    const v = i.onClientData(openRequest());
    expect(v).toEqual([
      {
        action: 'forward',
        bytes: expect.any(Buffer),
        event: expect.objectContaining({ verdict: 'would-refuse' }),
      },
    ]);
  });

  it('closes a renewal that changes the policy', () => {
    const i = openNone();
    const v = i.onClientData(openRequest({ policy: 'Basic256Sha256', certificate: cert, requestType: 1 }));
    expect(v.at(-1)).toMatchObject({ action: 'close', event: { reason: 'opcua.channel-changed' } });
  });
});

describe('OpcuaInspector: None channel services and sequence rewriting', () => {
  it('answers a refused Write with a ServiceFault and keeps both numberings contiguous, across token renewal', () => {
    const i = openNone();
    const toServer: Buffer[] = [];
    const toClient: Buffer[] = [];
    const client = (b: Buffer): ClientVerdict[] => {
      const v = i.onClientData(b);
      toServer.push(...forwarded(v));
      toClient.push(...replied(v));
      return v;
    };
    const server = (b: Buffer): void => {
      toClient.push(...forwarded(i.onServerData(b)));
    };

    client(msgChunk(read(10), { sequenceNumber: 2, requestId: 2 }));
    server(readResponse({ sequenceNumber: 2, requestId: 2, requestHandle: 10 }));
    const refused = client(msgChunk(write(11, 'ns=2;s=Alarms.Ack'), { sequenceNumber: 3, requestId: 3 }));
    expect(events(refused)[0]).toMatchObject({
      reason: 'opcua.write-node',
      verdict: 'refuse',
      detail: {
        service: 'Write',
        nodeIds: ['ns=2;s=Alarms.Ack'],
        securityMode: 'None',
        securityPolicy: 'None',
      },
    });
    expect(faultOf(toClient.at(-1))).toEqual({
      handle: 11,
      status: STATUS.BadUserAccessDenied,
      requestId: 3,
      tokenId: 1,
    });
    client(msgChunk(read(12), { sequenceNumber: 4, requestId: 4 }));
    server(readResponse({ sequenceNumber: 3, requestId: 4, requestHandle: 12 }));
    // Token renewal: the client renews (None OPN, requestType Renew), the server answers with token 2.
    client(openRequest({ sequenceNumber: 5, requestId: 5, requestType: 1, channelId: 7 }));
    server(openResponse({ channelId: 7, tokenId: 2, sequenceNumber: 4, requestId: 5 }));
    client(msgChunk(read(13), { sequenceNumber: 6, requestId: 6, tokenId: 2 }));
    client(msgChunk(write(14, 'ns=2;s=Other'), { sequenceNumber: 7, requestId: 7, tokenId: 2 }));
    expect(faultOf(toClient.at(-1))).toEqual({
      handle: 14,
      status: STATUS.BadUserAccessDenied,
      requestId: 7,
      tokenId: 2,
    });
    server(readResponse({ sequenceNumber: 5, requestId: 6, requestHandle: 13, tokenId: 2 }));
    client(msgChunk(write(15, 'ns=2;s=Setpoints.Speed'), { sequenceNumber: 8, requestId: 8, tokenId: 2 }));
    server(readResponse({ sequenceNumber: 6, requestId: 8, requestHandle: 15, tokenId: 2 }));

    // What the server saw after the first OPN (1): Read, Read, OPN renew, Read, Write — 2..6 without a gap.
    const serverSecure = toServer.filter((c) => c.toString('latin1', 0, 3) !== 'HEL');
    const serverSeqs = serverSecure.map((c) =>
      c.toString('latin1', 0, 3) === 'OPN' ? openSeq(c) : seqOf(c),
    );
    expect(serverSeqs).toEqual([2, 3, 4, 5, 6]);
    // What the client saw after the first OPN response (1): Read, Fault, Read, OPN, Fault, Read, Write — 2..8.
    const clientSecure = toClient.filter((c) => c.toString('latin1', 0, 3) !== 'ACK');
    const clientSeqs = clientSecure.map((c) =>
      c.toString('latin1', 0, 3) === 'OPN' ? openSeq(c) : seqOf(c),
    );
    expect(clientSeqs).toEqual([2, 3, 4, 5, 6, 7, 8]);
    expect(i.outstandingRequests).toBe(0);
  });

  it('holds a ServiceFault until the server response in progress has sent its final chunk', () => {
    const i = openNone();
    expect(forwarded(i.onClientData(msgChunk(read(10), { sequenceNumber: 2, requestId: 2 })))).toHaveLength(
      1,
    );
    // The server's answer to request 2 comes in several chunks (C, C, …, F).
    const response = msgChunks(Buffer.alloc(64, 1), 16, { sequenceNumber: 2, requestId: 2 });
    expect(response.length).toBeGreaterThan(2);
    const toClient: Buffer[] = [...forwarded(i.onServerData(response[0] ?? Buffer.alloc(0)))];
    // A refused Write arrives between the server's C chunks: the fault may not go out now (Part 6 §6.7.2).
    const refused = i.onClientData(
      msgChunk(write(11, 'ns=2;s=Alarms.Ack'), { sequenceNumber: 3, requestId: 3 }),
    );
    expect(replied(refused)).toEqual([]);
    expect(events(refused)).toMatchObject([{ reason: 'opcua.write-node', verdict: 'refuse' }]);
    for (const c of response.slice(1, -1)) {
      const v = i.onServerData(c);
      expect(forwarded(v)).toEqual([c]);
      toClient.push(...forwarded(v));
    }
    // The final chunk ends the response: the fault follows it, numbered next.
    const last = forwarded(i.onServerData(response.at(-1) ?? Buffer.alloc(0)));
    expect(last).toHaveLength(2);
    toClient.push(...last);
    expect(toClient.slice(0, response.length)).toEqual(response);
    expect(faultOf(toClient.at(-1))).toMatchObject({ handle: 11, requestId: 3 });
    expect(toClient.map(seqOf)).toEqual(toClient.map((_, k) => 2 + k));
    // With no server response in progress a refusal is answered at once again.
    const again = i.onClientData(
      msgChunk(write(12, 'ns=2;s=Alarms.Ack'), { sequenceNumber: 4, requestId: 4 }),
    );
    expect(faultOf(replied(again)[0])).toMatchObject({ handle: 12, requestId: 4 });
    expect(seqOf(replied(again)[0])).toBe(2 + toClient.length);
  });

  it('counts completed client messages, not intermediate chunks (slow-sender deadline)', () => {
    const i = openNone();
    const before = i.completedMessages();
    const parts = msgChunks(read(30), 10, { sequenceNumber: 2, requestId: 2 });
    i.onClientData(parts[0] ?? Buffer.alloc(0));
    expect(i.completedMessages()).toBe(before);
    for (const c of parts.slice(1)) i.onClientData(c);
    expect(i.completedMessages()).toBe(before + 1);
  });

  it("takes the flow's own messageTimeoutMs from the plan entry's limits", () => {
    let now = 0;
    const entry = {
      ...planEntry(4840, { protocol: 'opcua', opcua: spec() }),
      limits: { messageTimeoutMs: 100 },
    };
    const i = new OpcuaInspector(
      { entry, client: { address: '10.0.0.1', port: 50000 }, limits: { maxOutstandingRequests: 4 } },
      { now: () => now, limits: { messageTimeoutMs: 60_000 } },
    );
    i.onClientData(hello());
    i.onServerData(ack());
    i.onClientData(openRequest({ sequenceNumber: 1, requestId: 1 }));
    i.onServerData(openResponse({ channelId: 7, tokenId: 1, sequenceNumber: 1, requestId: 1 }));
    const parts = msgChunks(read(1), 10, { sequenceNumber: 2, requestId: 2 });
    i.onClientData(parts[0] ?? Buffer.alloc(0));
    now = 100;
    expect(i.onClientData(parts[1] ?? Buffer.alloc(0)).at(-1)).toMatchObject({
      action: 'close',
      event: { reason: 'opcua.reassembly-timeout' },
    });
  });

  it('passes numbers through unchanged while nothing is refused', () => {
    const i = openNone();
    const c = msgChunk(read(1), { sequenceNumber: 2, requestId: 2 });
    const v = i.onClientData(c);
    expect(v).toEqual([{ action: 'forward', bytes: c }]);
  });

  it('reassembles a multi-chunk request and forwards it whole, or swallows it whole when refused', () => {
    const i = openNone();
    const allowed = msgChunks(write(20, 'ns=2;s=Setpoints.A'), 16, { sequenceNumber: 2, requestId: 2 });
    expect(allowed.length).toBeGreaterThan(3);
    for (const c of allowed.slice(0, -1)) {
      expect(i.onClientData(c)).toEqual([]);
      expect(i.hasPartialMessage()).toBe(true);
    }
    expect(forwarded(i.onClientData(allowed.at(-1) ?? Buffer.alloc(0)))).toEqual(allowed);
    expect(i.hasPartialMessage()).toBe(false);
    const refused = msgChunks(write(21, 'ns=2;s=Nope'), 16, {
      sequenceNumber: 2 + allowed.length,
      requestId: 3,
    });
    const v = refused.flatMap((c) => i.onClientData(c));
    expect(forwarded(v)).toEqual([]);
    expect(faultOf(replied(v)[0])).toMatchObject({ handle: 21, requestId: 3 });
    const next = forwarded(
      i.onClientData(
        msgChunk(read(22), { sequenceNumber: 2 + allowed.length + refused.length, requestId: 4 }),
      ),
    );
    expect(seqOf(next[0])).toBe(2 + allowed.length);
  });

  it('swallows an aborted request (C, C, A) and renumbers what follows', () => {
    const i = openNone();
    const parts = msgChunks(read(30), 10, { sequenceNumber: 2, requestId: 2 });
    expect(i.onClientData(parts[0] ?? Buffer.alloc(0))).toEqual([]);
    expect(i.onClientData(parts[1] ?? Buffer.alloc(0))).toEqual([]);
    const abort = msgChunk(Buffer.alloc(8), { sequenceNumber: 4, requestId: 2, chunkType: 'A' });
    expect(i.onClientData(abort)).toEqual([]);
    expect(i.hasPartialMessage()).toBe(false);
    const next = forwarded(i.onClientData(msgChunk(read(31), { sequenceNumber: 5, requestId: 3 })));
    expect(seqOf(next[0])).toBe(2);
  });

  it('closes on a client sequence gap or a server replay', () => {
    const i = openNone();
    expect(i.onClientData(msgChunk(read(1), { sequenceNumber: 4, requestId: 2 })).at(-1)).toMatchObject({
      action: 'close',
      event: { reason: 'opcua.sequence' },
    });
    const j = openNone();
    expect(
      j.onServerData(readResponse({ sequenceNumber: 1, requestId: 2, requestHandle: 1 })).at(-1),
    ).toMatchObject({
      action: 'close',
      event: { reason: 'opcua.sequence' },
    });
  });

  it('refuses a service group that is not allowed, and an anonymous session when anonymous is false', () => {
    const i = openNone(spec({ services: ['session'], anonymous: false }));
    const r = i.onClientData(msgChunk(read(40), { sequenceNumber: 2, requestId: 2 }));
    expect(events(r)[0]).toMatchObject({
      reason: 'opcua.service',
      detail: { service: 'Read', serviceGroup: 'read' },
    });
    const anon = encodeBody(
      new ActivateSessionRequest({
        requestHeader: { requestHandle: 41 },
        userIdentityToken: new AnonymousIdentityToken({ policyId: 'a' }),
      }),
    );
    const a = i.onClientData(msgChunk(anon, { sequenceNumber: 3, requestId: 3 }));
    expect(events(a)[0]).toMatchObject({ reason: 'opcua.anonymous', detail: { identity: 'anonymous' } });
    expect(faultOf(replied(a)[0])).toMatchObject({ handle: 41, status: STATUS.BadIdentityTokenRejected });
    const user = encodeBody(
      new ActivateSessionRequest({
        userIdentityToken: new UserNameIdentityToken({ policyId: 'u', userName: 'op' }),
      }),
    );
    expect(forwarded(i.onClientData(msgChunk(user, { sequenceNumber: 4, requestId: 4 })))).toHaveLength(1);
  });

  it('allows a Call of a listed method and answers another with a fault', () => {
    const i = openNone(spec({ services: ['call'], call: ['ns=2;s=Reset'] }));
    const call = (handle: number, method: string): Buffer =>
      encodeBody(
        new CallRequest({
          requestHeader: { requestHandle: handle },
          methodsToCall: [{ objectId: 'ns=2;i=1', methodId: method }],
        }),
      );
    const ok = msgChunk(call(60, 'ns=2;s=Reset'), { sequenceNumber: 2, requestId: 2 });
    expect(i.onClientData(ok)).toEqual([{ action: 'forward', bytes: ok }]);
    const v = i.onClientData(msgChunk(call(61, 'ns=2;s=Stop'), { sequenceNumber: 3, requestId: 3 }));
    expect(events(v)[0]).toMatchObject({
      reason: 'opcua.call-method',
      detail: { refusedNodeIds: ['ns=2;s=Stop'] },
    });
    expect(faultOf(replied(v)[0])).toMatchObject({
      handle: 61,
      status: STATUS.BadUserAccessDenied,
      requestId: 3,
    });
  });

  it('monitor mode forwards a refused Write and logs would-refuse', () => {
    const i = openNone(spec(), 'monitor');
    const c = msgChunk(write(50, 'ns=2;s=Alarms.Ack'), { sequenceNumber: 2, requestId: 2 });
    const v = i.onClientData(c);
    expect(v).toEqual([
      {
        action: 'forward',
        bytes: c,
        event: expect.objectContaining({ verdict: 'would-refuse', reason: 'opcua.write-node' }),
      },
    ]);
  });

  it('closes when the client pipelines more requests than allowed', () => {
    const i = openNone(spec(), 'enforce', {}, 2);
    i.onClientData(msgChunk(read(1), { sequenceNumber: 2, requestId: 2 }));
    i.onClientData(msgChunk(read(2), { sequenceNumber: 3, requestId: 3 }));
    expect(i.onClientData(msgChunk(read(3), { sequenceNumber: 4, requestId: 4 })).at(-1)).toMatchObject({
      action: 'close',
      event: { reason: 'too-many-outstanding-requests' },
    });
  });

  it('cuts an incomplete multi-chunk request after the timeout (clock driven by the caller)', () => {
    let now = 0;
    const i = openNone(spec(), 'enforce', { now: () => now, limits: { messageTimeoutMs: 1000 } });
    const parts = msgChunks(read(1), 10, { sequenceNumber: 2, requestId: 2 });
    i.onClientData(parts[0] ?? Buffer.alloc(0));
    now = 999;
    expect(i.onClientData(parts[1] ?? Buffer.alloc(0))).toEqual([]);
    now = 1000;
    expect(i.onClientData(parts[2] ?? Buffer.alloc(0)).at(-1)).toMatchObject({
      action: 'close',
      event: { reason: 'opcua.reassembly-timeout' },
    });
  });

  it('cuts endless intermediate chunks at the chunk limit (CVE-2022-21208)', () => {
    const i = openNone(spec(), 'enforce', { limits: { maxChunkCount: 16 } });
    let closedAt = -1;
    for (let n = 0; n < 1000 && closedAt < 0; n++) {
      const v = i.onClientData(
        msgChunk(Buffer.alloc(100), { sequenceNumber: 2 + n, requestId: 9, chunkType: 'C' }),
      );
      if (v.some((x) => x.action === 'close')) closedAt = n;
    }
    expect(closedAt).toBe(15);
  });
});

describe('OpcuaInspector: discovery-only None channel', () => {
  const s = spec({
    securityModes: ['SignAndEncrypt'],
    securityPolicies: ['Basic256Sha256'],
    services: ['discovery', 'session', 'read'],
  });

  it('lets GetEndpoints through and answers anything else with a fault', () => {
    const i = openNone(s);
    const get = msgChunk(
      encodeBody(
        new GetEndpointsRequest({ requestHeader: { requestHandle: 1 }, endpointUrl: 'opc.tcp://plc' }),
      ),
      {
        sequenceNumber: 2,
        requestId: 2,
      },
    );
    expect(i.onClientData(get)).toEqual([{ action: 'forward', bytes: get }]);
    const cs = msgChunk(encodeBody(new CreateSessionRequest({ requestHeader: { requestHandle: 2 } })), {
      sequenceNumber: 3,
      requestId: 3,
    });
    const v = i.onClientData(cs);
    expect(events(v)[0]).toMatchObject({
      reason: 'opcua.security-policy',
      detail: { service: 'CreateSession' },
    });
    expect(faultOf(replied(v)[0])).toMatchObject({ handle: 2, status: STATUS.BadSecurityPolicyRejected });
  });
});

describe('OpcuaInspector: Sign vs SignAndEncrypt', () => {
  const s = spec({
    securityModes: ['Sign', 'SignAndEncrypt'],
    securityPolicies: ['Basic256Sha256'],
    services: ['session', 'read'],
  });

  function openSecure(
    sp: OpcuaSpec = s,
    mode: ConduitMode = 'enforce',
    options: OpcuaInspectorOptions = {},
  ): OpcuaInspector {
    const i = inspector(sp, mode, options);
    i.onClientData(hello());
    i.onServerData(ack());
    expect(
      i.onClientData(openRequest({ policy: 'Basic256Sha256', certificate: cert })).map((x) => x.action),
    ).toEqual(['forward']);
    expect(i.channel?.securityMode).toBe('unknown');
    return i;
  }

  it('classifies a readable first MSG as Sign and inspects services; a refusal closes with ERR', () => {
    const i = openSecure();
    const c = msgChunk(read(1), { sequenceNumber: 2, requestId: 2, signatureLength: 32 });
    expect(i.onClientData(c)).toEqual([{ action: 'forward', bytes: c }]);
    expect(i.channel?.securityMode).toBe('Sign');
    i.onServerData(msgChunk(Buffer.alloc(40), { sequenceNumber: 2, requestId: 2, signatureLength: 32 }));
    expect(i.outstandingRequests).toBe(0);
    const w = i.onClientData(
      msgChunk(write(2, 'ns=2;s=Setpoints.A'), { sequenceNumber: 3, requestId: 3, signatureLength: 32 }),
    );
    expect(w.map((x) => x.action)).toEqual(['reply', 'close']);
    expect(parseError(replied(w)[0] ?? Buffer.alloc(0))).toMatchObject({
      frame: { error: STATUS.BadUserAccessDenied },
    });
    expect(events(w)[0]).toMatchObject({
      reason: 'opcua.service',
      detail: { securityMode: 'Sign', securityPolicy: 'Basic256Sha256' },
    });
  });

  it('refuses Sign when only SignAndEncrypt is allowed', () => {
    const i = openSecure({ ...s, securityModes: ['SignAndEncrypt'] });
    const v = i.onClientData(msgChunk(read(1), { sequenceNumber: 2, requestId: 2, signatureLength: 32 }));
    expect(parseError(replied(v)[0] ?? Buffer.alloc(0))).toMatchObject({
      frame: { error: STATUS.BadSecurityModeRejected },
    });
    expect(events(v)[0]).toMatchObject({ reason: 'opcua.security-mode' });
  });

  it('classifies ciphertext as SignAndEncrypt and forwards chunks as they come', () => {
    const i = openSecure();
    const first = encryptedChunk(8, { seed: 1 });
    expect(i.onClientData(first)).toEqual([{ action: 'forward', bytes: first }]);
    expect(i.channel?.securityMode).toBe('SignAndEncrypt');
    const c = encryptedChunk(4, { seed: 2, chunkType: 'C' });
    expect(i.onClientData(c)).toEqual([{ action: 'forward', bytes: c }]);
    expect(i.hasPartialMessage()).toBe(false);
  });

  it('refuses SignAndEncrypt when only Sign is allowed', () => {
    const i = openSecure({ ...s, securityModes: ['Sign'] });
    const v = i.onClientData(encryptedChunk(8, { seed: 3 }));
    expect(events(v)[0]).toMatchObject({
      reason: 'opcua.security-mode',
      detail: { securityMode: 'SignAndEncrypt' },
    });
    expect(v.at(-1)?.action).toBe('close');
  });

  it('catches a clear request on a channel classified SignAndEncrypt (mode evasion)', () => {
    for (const late of [
      msgChunk(write(9, 'ns=2;s=X'), { sequenceNumber: 3, requestId: 3, signatureLength: 32 }),
      // A 1-byte first chunk, prefix of a type id, then the rest.
      msgChunk(write(9, 'ns=2;s=X').subarray(0, 1), {
        sequenceNumber: 3,
        requestId: 3,
        signatureLength: 32,
        chunkType: 'C',
      }),
      // Block-aligned but clear.
      msgChunk(Buffer.concat([write(9, 'ns=2;s=X'), Buffer.alloc(64)]).subarray(0, 64 + 8 - 32 + 16 * 4), {
        sequenceNumber: 3,
        requestId: 3,
        signatureLength: 32,
        chunkType: 'C',
      }),
    ]) {
      const i = openSecure();
      i.onClientData(encryptedChunk(8, { seed: 4 }));
      const v = i.onClientData(late);
      expect(v.map((x) => x.action)).toEqual(['reply', 'close']);
      expect(events(v)[0]).toMatchObject({ reason: 'opcua.security-mode' });
    }
  });

  it('classifies as Sign when one chunk of the first message is clear, and refuses mixed request ids', () => {
    const i = openSecure();
    const noise = encryptedChunk(4, { seed: 5, chunkType: 'C' });
    expect(i.onClientData(noise)).toEqual([]);
    const v = i.onClientData(
      msgChunk(write(7, 'ns=2;s=X'), { sequenceNumber: 3, requestId: 99, signatureLength: 32 }),
    );
    expect(v.at(-1)).toMatchObject({ action: 'close', event: { reason: 'opcua.interleaved' } });
    expect(forwarded(v)).toEqual([]);
  });

  it('cuts an endless run of intermediate chunks on a SignAndEncrypt channel', () => {
    const i = openSecure(s, 'enforce', { limits: { maxChunkCount: 10 } });
    i.onClientData(encryptedChunk(8, { seed: 6 }));
    let closedAt = -1;
    for (let n = 0; n < 100 && closedAt < 0; n++) {
      if (
        i.onClientData(encryptedChunk(4, { seed: 100 + n, chunkType: 'C' })).some((x) => x.action === 'close')
      )
        closedAt = n;
    }
    expect(closedAt).toBe(9);
  });
});

function openSeq(c: Buffer): number {
  // OPN: header 12, then three ByteStrings; the sequence number follows them.
  let off = 12;
  for (let k = 0; k < 3; k++) {
    const len = c.readInt32LE(off);
    off += 4 + Math.max(len, 0);
  }
  return c.readUInt32LE(off);
}
