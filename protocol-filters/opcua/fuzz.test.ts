/**
 * Property run over 1,000,000 mutated OPC UA frames: the parsers, the stream decoder, the request decoder, the
 * decisions and whole inspectors never throw, every result keeps its invariants, and the heap does not grow.
 * Frames are made by mutating valid ones (real node-opcua encodings) with a seeded PRNG in a plain loop
 * (cheap and reproducible: a failure prints its seed and iteration; OPCUA_FUZZ_SEED picks another seed).
 */
import { describe, it, expect } from 'vitest';
import { getGc, heapReport, mutateInto, prng, type MutatorOptions } from '../core/fuzz.ts';
import { planEntry } from '../core/test-helpers.ts';
import {
  ActivateSessionRequest,
  AnonymousIdentityToken,
  BrowseRequest,
  CallRequest,
  CreateMonitoredItemsRequest,
  CreateSessionRequest,
  GetEndpointsRequest,
  HistoryReadRequest,
  PublishRequest,
  ReadRequest,
  UserNameIdentityToken,
  WriteRequest,
} from 'node-opcua-types';
import type { ClientVerdict, ServerVerdict } from '../core/inspector.ts';
import type { OpcuaSpec, ProxyPlanEntry } from '../../policies/types.ts';
import { decideRequest } from './decide.ts';
import { requestDetail } from './describe.ts';
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
import { OpcuaInspector } from './inspector.ts';
import { decodeRequest, startsLikeRequest } from './services.ts';
import { OpcuaChunkDecoder } from './stream.ts';
import {
  parseAcknowledge,
  parseChunk,
  parseError,
  parseHello,
  parseOpenHeader,
  parseReverseHello,
  parseSymmetricHeader,
} from './transport.ts';

const ITERATIONS = 1_000_000;
const SEED = Number(process.env.OPCUA_FUZZ_SEED ?? 0x0bca5eed) >>> 0;
const MAX_CHUNK = 65536;

const h = { requestHandle: 7 };
const BODIES: Buffer[] = [
  encodeBody(
    new ReadRequest({
      requestHeader: h,
      nodesToRead: [{ nodeId: 'ns=2;s=Temp', attributeId: 13 }, { nodeId: 'i=2258' }],
    }),
  ),
  encodeBody(
    new WriteRequest({
      requestHeader: h,
      nodesToWrite: [
        {
          nodeId: 'ns=2;s=Setpoints.A',
          attributeId: 13,
          value: { value: { dataType: 'Double', value: 2.5 } },
        },
        {
          nodeId: 'ns=2;s=Alarms.Ack',
          attributeId: 13,
          value: { value: { dataType: 'String', value: 'x' } },
        },
      ],
    }),
  ),
  encodeBody(
    new CallRequest({
      requestHeader: h,
      methodsToCall: [
        {
          objectId: 'ns=2;i=5',
          methodId: 'ns=2;s=Reset',
          inputArguments: [{ dataType: 'UInt32', value: 3 }],
        },
      ],
    }),
  ),
  encodeBody(
    new ActivateSessionRequest({
      requestHeader: h,
      userIdentityToken: new AnonymousIdentityToken({ policyId: 'a' }),
    }),
  ),
  encodeBody(
    new ActivateSessionRequest({
      requestHeader: h,
      userIdentityToken: new UserNameIdentityToken({
        policyId: 'u',
        userName: 'op',
        password: Buffer.from('pw'),
      }),
    }),
  ),
  encodeBody(new BrowseRequest({ requestHeader: h, nodesToBrowse: [{ nodeId: 'i=85' }] })),
  encodeBody(
    new CreateMonitoredItemsRequest({
      requestHeader: h,
      itemsToCreate: [{ itemToMonitor: { nodeId: 'ns=2;s=Temp' } }],
    }),
  ),
  encodeBody(new CreateSessionRequest({ requestHeader: h, sessionName: 'fuzz' })),
  encodeBody(new GetEndpointsRequest({ requestHeader: h, endpointUrl: 'opc.tcp://plc:4840' })),
  encodeBody(new HistoryReadRequest({ requestHeader: h, nodesToRead: [{ nodeId: 'ns=2;s=Hist' }] })),
  encodeBody(new PublishRequest({ requestHeader: h })),
];

const SPEC: OpcuaSpec = {
  securityModes: ['None', 'Sign'],
  securityPolicies: ['None', 'Basic256Sha256'],
  services: ['discovery', 'session', 'read', 'browse', 'write'],
  write: ['ns=2;s=Setpoints.*'],
  call: ['ns=2;s=Reset'],
  anonymous: false,
  certificates: [],
};

const ENTRY: ProxyPlanEntry = planEntry(4840, { protocol: 'opcua', opcua: SPEC });

/** Seed frames of every kind the filter parses. */
const FRAMES: Buffer[] = [
  hello(),
  hello({ endpointUrl: null }),
  ack(),
  openRequest({ sequenceNumber: 1, requestId: 1 }),
  openRequest({ policy: 'Basic256Sha256', receiverThumbprint: Buffer.alloc(20, 3) }),
  openResponse({ channelId: 7, tokenId: 1, sequenceNumber: 1, requestId: 1 }),
  readResponse({ sequenceNumber: 2, requestId: 2, requestHandle: 7 }),
  encryptedChunk(6, { seed: 9 }),
  msgChunk(Buffer.alloc(12), { sequenceNumber: 3, requestId: 3, chunkType: 'A' }),
  ...BODIES.map((b, i) => msgChunk(b, { sequenceNumber: 2 + i, requestId: 2 + i })),
  ...BODIES.slice(0, 3).map((b, i) =>
    msgChunk(b, { sequenceNumber: 2 + i, requestId: 2 + i, signatureLength: 32 }),
  ),
  ...msgChunks(BODIES[1] ?? Buffer.alloc(0), 40, { sequenceNumber: 2, requestId: 9 }),
];

const BOUNDARY_BYTES = [0, 1, 2, 3, 0x41, 0x43, 0x46, 0x7f, 0x80, 0xff];
const BOUNDARY_WORDS = [
  0, 1, 3, 24, 255, 256, 8191, 8192, 65535, 65536, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff,
];
const MUTATOR: MutatorOptions = {
  boundaryBytes: BOUNDARY_BYTES,
  boundaryWords: BOUNDARY_WORDS,
  word: 'u32le',
  wordStart: (_len, x) => (x >>> 8) % Math.max(_len, 1),
  maxAppend: 24,
};

function newInspector(): OpcuaInspector {
  return new OpcuaInspector(
    { entry: ENTRY, client: { address: '10.0.0.1', port: 1 }, limits: { maxOutstandingRequests: 8 } },
    { now: () => 0 },
  );
}

/** A None channel past HEL/ACK/OPN (client seq 1 and server seq 1 used). */
function openedInspector(): OpcuaInspector {
  const i = newInspector();
  i.onClientData(hello());
  i.onServerData(ack());
  i.onClientData(openRequest({ sequenceNumber: 1, requestId: 1 }));
  i.onServerData(openResponse({ channelId: 7, tokenId: 1, sequenceNumber: 1, requestId: 1 }));
  return i;
}

function checkVerdicts(v: (ClientVerdict | ServerVerdict)[]): boolean {
  let closed = false;
  for (const x of v) {
    if (closed) throw new Error('verdict after close');
    if (x.action === 'close') closed = true;
    if ((x.action === 'forward' || x.action === 'reply') && x.bytes.length === 0)
      throw new Error('empty bytes');
    if (x.action !== 'forward' && x.event === undefined) throw new Error('event missing');
  }
  return closed;
}

describe('fuzz: 1,000,000 mutated OPC UA frames', () => {
  it('never throws, keeps every invariant, and keeps memory flat', () => {
    const rnd = prng(SEED);
    const scratch = Buffer.alloc(2048);
    const gc = getGc();
    const counts = {
      frame: 0,
      invalid: 0,
      'need-more': 0,
      decoded: 0,
      refused: 0,
      inspectorCloses: 0,
      streamFrames: 0,
      forwarded: 0,
    };
    let inspector = openedInspector();
    let decoder = new OpcuaChunkDecoder(MAX_CHUNK);
    let clientSeq = 2;
    let baseline = 0;
    let iteration = 0;

    const mutate = (seed: Buffer): number => {
      const len = mutateInto(scratch, seed, rnd, MUTATOR);
      // Mostly keep the size field consistent, so the parsers behind the framing are exercised.
      if ((rnd() & 3) !== 0 && len >= 8) scratch.writeUInt32LE(len, 4);
      return len;
    };

    try {
      for (iteration = 0; iteration < ITERATIONS; iteration++) {
        if (iteration === 50_000) {
          gc?.();
          baseline = process.memoryUsage().heapUsed;
        }
        const seed = FRAMES[rnd() % FRAMES.length] ?? Buffer.alloc(0);
        const len = mutate(seed);
        const view = scratch.subarray(0, len);
        const choice = rnd() & 7;

        if (choice < 5) {
          const r = parseChunk(view, MAX_CHUNK);
          counts[r.kind]++;
          if (r.kind === 'invalid' && (r.code.length === 0 || r.reason.length === 0))
            throw new Error('invalid without code');
          if (r.kind !== 'frame') continue;
          if (
            r.consumed > len ||
            r.consumed !== r.frame.bytes.length ||
            r.frame.bytes.readUInt32LE(4) !== r.consumed
          ) {
            throw new Error(`consumed ${r.consumed} of ${len}`);
          }
          const b = r.frame.bytes;
          switch (r.frame.messageType) {
            case 'HEL':
              parseHello(b);
              break;
            case 'ACK':
              parseAcknowledge(b);
              break;
            case 'ERR':
              parseError(b);
              break;
            case 'RHE':
              parseReverseHello(b);
              break;
            case 'OPN': {
              const o = parseOpenHeader(b);
              if (
                o.kind === 'frame' &&
                (o.frame.sequenceOffset + 8 > b.length || o.frame.sequenceOffset < 24)
              ) {
                throw new Error('OPN sequence offset out of bounds');
              }
              break;
            }
            default: {
              parseSymmetricHeader(b);
              const body = b.subarray(24);
              startsLikeRequest(body);
              const d = decodeRequest(body);
              if (d.kind === 'frame') {
                counts.decoded++;
                const dec = decideRequest(d.frame, SPEC, choice & 1 ? 'enforce' : 'monitor');
                if (dec.verdict !== 'allow') counts.refused++;
                if ((iteration & 63) === 0) {
                  requestDetail(d.frame, 1, {
                    securityPolicy: 'None',
                    securityPolicyUri: '',
                    securityMode: 'None',
                    certificate: null,
                  });
                }
              }
            }
          }
        } else if (choice < 7) {
          // A live None channel: mostly well-numbered mutated MSGs, so decoding and deciding run, not just the
          // sequence check. The inspector copies what it keeps; `scratch` is reused next iteration.
          if (len >= 24 && scratch.toString('latin1', 0, 3) === 'MSG' && (rnd() & 7) !== 0)
            scratch.writeUInt32LE(clientSeq, 16);
          const v = inspector.onClientData(view);
          for (const x of v) if (x.action === 'forward') counts.forwarded++;
          if (checkVerdicts(v)) {
            counts.inspectorCloses++;
            inspector = openedInspector();
            clientSeq = 2;
          } else if (v.length > 0 || len >= 24) {
            clientSeq++;
          }
          if ((iteration & 15) === 0) {
            const s = inspector.onServerData(view);
            if (checkVerdicts(s)) {
              inspector = openedInspector();
              clientSeq = 2;
            }
          }
          inspector.hasPartialMessage();
        } else {
          const cut = rnd() % (len + 1);
          for (const part of [view.subarray(0, cut), view.subarray(cut)]) {
            for (const item of decoder.push(part)) if (item.kind === 'frame') counts.streamFrames++;
            if (decoder.buffered > MAX_CHUNK) throw new Error(`decoder holds ${decoder.buffered} bytes`);
          }
          if (decoder.failed !== null) decoder = new OpcuaChunkDecoder(MAX_CHUNK);
        }
      }
    } catch (err) {
      throw new Error(`seed ${SEED} iteration ${iteration}: ${String(err)}`, { cause: err });
    }

    const { growth, bound } = heapReport('opcua', SEED, ITERATIONS, counts, gc, baseline);
    // Every outcome must actually occur, or the generator is not exercising the code.
    expect(counts.frame).toBeGreaterThan(50_000);
    expect(counts.invalid).toBeGreaterThan(10_000);
    expect(counts['need-more']).toBeGreaterThan(1_000);
    expect(counts.decoded).toBeGreaterThan(10_000);
    expect(counts.refused).toBeGreaterThan(1_000);
    expect(counts.inspectorCloses).toBeGreaterThan(1_000);
    expect(counts.forwarded).toBeGreaterThan(1_000);
    expect(counts.streamFrames).toBeGreaterThan(1_000);
    expect(growth).toBeLessThan(bound);
  });
});
