import { describe, it, expect } from 'vitest';
import { randomBytes } from 'node:crypto';
import {
  ActivateSessionRequest,
  AddNodesRequest,
  AddReferencesRequest,
  AnonymousIdentityToken,
  BrowseNextRequest,
  BrowseRequest,
  CallRequest,
  CancelRequest,
  CloseSessionRequest,
  CreateMonitoredItemsRequest,
  CreateSessionRequest,
  CreateSubscriptionRequest,
  DeleteMonitoredItemsRequest,
  DeleteNodesRequest,
  DeleteReferencesRequest,
  DeleteSubscriptionsRequest,
  FindServersOnNetworkRequest,
  FindServersRequest,
  GetEndpointsRequest,
  HistoryReadRequest,
  HistoryUpdateRequest,
  IssuedIdentityToken,
  ModifyMonitoredItemsRequest,
  ModifySubscriptionRequest,
  PublishRequest,
  QueryFirstRequest,
  QueryNextRequest,
  ReadRequest,
  RegisterNodesRequest,
  RegisterServer2Request,
  RegisterServerRequest,
  RepublishRequest,
  SetMonitoringModeRequest,
  SetPublishingModeRequest,
  SetTriggeringRequest,
  TransferSubscriptionsRequest,
  TranslateBrowsePathsToNodeIdsRequest,
  UnregisterNodesRequest,
  UpdateDataDetails,
  UserNameIdentityToken,
  WriteRequest,
  X509IdentityToken,
} from 'node-opcua-types';
import { coerceExpandedNodeId } from 'node-opcua-nodeid';
import { encodeBody, type Encodable } from './frames.ts';
import { REQUEST_TYPES, decodeRequest, matchesNodeIdPattern, startsLikeRequest } from './services.ts';
import type { DecodedRequest } from './types.ts';

const header = { requestHandle: 4242 };
const x = coerceExpandedNodeId;

function decoded(obj: Encodable): DecodedRequest {
  const r = decodeRequest(encodeBody(obj));
  if (r.kind !== 'frame') throw new Error(`${obj.schema.name}: ${JSON.stringify(r)}`);
  return r.frame;
}

/** One instance of every mapped request type, with the group and NodeIds the filter must report. */
const CASES: [Encodable, string, string[]][] = [
  [new FindServersRequest({ requestHeader: header }), 'discovery', []],
  [new FindServersOnNetworkRequest({ requestHeader: header }), 'discovery', []],
  [new GetEndpointsRequest({ requestHeader: header, endpointUrl: 'opc.tcp://x' }), 'discovery', []],
  [new RegisterServerRequest({ requestHeader: header }), 'discovery', []],
  [new RegisterServer2Request({ requestHeader: header }), 'discovery', []],
  [new CreateSessionRequest({ requestHeader: header, sessionName: 's' }), 'session', []],
  [new ActivateSessionRequest({ requestHeader: header }), 'session', []],
  [new CloseSessionRequest({ requestHeader: header }), 'session', []],
  [new CancelRequest({ requestHeader: header }), 'session', []],
  [
    new AddNodesRequest({
      requestHeader: header,
      nodesToAdd: [{ parentNodeId: x('ns=1;i=1'), requestedNewNodeId: x('ns=1;s=New') }],
    }),
    'node-management',
    ['ns=1;i=1', 'ns=1;s=New'],
  ],
  [
    new AddReferencesRequest({
      requestHeader: header,
      referencesToAdd: [{ sourceNodeId: 'ns=1;i=2', targetNodeId: x('ns=1;i=3') }],
    }),
    'node-management',
    ['ns=1;i=2', 'ns=1;i=3'],
  ],
  [
    new DeleteNodesRequest({ requestHeader: header, nodesToDelete: [{ nodeId: 'ns=1;i=4' }] }),
    'node-management',
    ['ns=1;i=4'],
  ],
  [
    new DeleteReferencesRequest({
      requestHeader: header,
      referencesToDelete: [{ sourceNodeId: 'i=85', targetNodeId: x('ns=1;i=5') }],
    }),
    'node-management',
    ['i=85', 'ns=1;i=5'],
  ],
  [
    new BrowseRequest({
      requestHeader: header,
      nodesToBrowse: [{ nodeId: 'i=85' }, { nodeId: 'ns=3;s=Line' }],
    }),
    'browse',
    ['i=85', 'ns=3;s=Line'],
  ],
  [new BrowseNextRequest({ requestHeader: header }), 'browse', []],
  [
    new TranslateBrowsePathsToNodeIdsRequest({
      requestHeader: header,
      browsePaths: [{ startingNode: 'i=84' }],
    }),
    'browse',
    ['i=84'],
  ],
  [
    new RegisterNodesRequest({ requestHeader: header, nodesToRegister: ['ns=2;i=9'] }),
    'browse',
    ['ns=2;i=9'],
  ],
  [
    new UnregisterNodesRequest({ requestHeader: header, nodesToUnregister: ['ns=2;i=9'] }),
    'browse',
    ['ns=2;i=9'],
  ],
  [
    new QueryFirstRequest({ requestHeader: header, nodeTypes: [{ typeDefinitionNode: x('i=58') }] }),
    'query',
    ['i=58'],
  ],
  [new QueryNextRequest({ requestHeader: header }), 'query', []],
  [
    new ReadRequest({
      requestHeader: header,
      nodesToRead: [
        { nodeId: 'ns=2;s=Temp', attributeId: 13 },
        { nodeId: 'i=2258', attributeId: 13 },
      ],
    }),
    'read',
    ['ns=2;s=Temp', 'i=2258'],
  ],
  [
    new HistoryReadRequest({ requestHeader: header, nodesToRead: [{ nodeId: 'ns=2;s=Hist' }] }),
    'history',
    ['ns=2;s=Hist'],
  ],
  [
    new HistoryUpdateRequest({
      requestHeader: header,
      historyUpdateDetails: [new UpdateDataDetails({ nodeId: 'ns=2;s=Hist' })],
    }),
    'history',
    ['ns=2;s=Hist'],
  ],
  [
    new WriteRequest({
      requestHeader: header,
      nodesToWrite: [
        { nodeId: 'ns=2;s=Setpoint', attributeId: 13, value: { value: { dataType: 'Double', value: 3.5 } } },
      ],
    }),
    'write',
    ['ns=2;s=Setpoint'],
  ],
  [
    new CallRequest({
      requestHeader: header,
      methodsToCall: [{ objectId: 'ns=2;i=5', methodId: 'ns=2;s=Reset' }],
    }),
    'call',
    ['ns=2;i=5', 'ns=2;s=Reset'],
  ],
  [
    new CreateMonitoredItemsRequest({
      requestHeader: header,
      itemsToCreate: [{ itemToMonitor: { nodeId: 'ns=2;s=Temp', attributeId: 13 } }],
    }),
    'subscribe',
    ['ns=2;s=Temp'],
  ],
  [new ModifyMonitoredItemsRequest({ requestHeader: header }), 'subscribe', []],
  [new SetMonitoringModeRequest({ requestHeader: header }), 'subscribe', []],
  [new SetTriggeringRequest({ requestHeader: header }), 'subscribe', []],
  [new DeleteMonitoredItemsRequest({ requestHeader: header }), 'subscribe', []],
  [new CreateSubscriptionRequest({ requestHeader: header }), 'subscribe', []],
  [new ModifySubscriptionRequest({ requestHeader: header }), 'subscribe', []],
  [new SetPublishingModeRequest({ requestHeader: header }), 'subscribe', []],
  [new PublishRequest({ requestHeader: header }), 'subscribe', []],
  [new RepublishRequest({ requestHeader: header }), 'subscribe', []],
  [new TransferSubscriptionsRequest({ requestHeader: header }), 'subscribe', []],
  [new DeleteSubscriptionsRequest({ requestHeader: header }), 'subscribe', []],
];

describe('decodeRequest: every mapped request type (Part 4 §5)', () => {
  for (const [obj, group, nodeIds] of CASES) {
    it(`${obj.schema.name} → ${group}`, () => {
      const d = decoded(obj);
      expect(d.service).toBe(obj.schema.name);
      expect(d.group).toBe(group);
      expect(d.requestHandle).toBe(4242);
      expect(d.nodeIds).toEqual(nodeIds);
    });
  }

  it('covers every request type in the table', () => {
    const names = new Set(CASES.map(([o]) => o.schema.name));
    for (const t of REQUEST_TYPES.values()) if (t.group !== null) expect(names).toContain(t.name);
  });

  it('reads Read attribute ids, Write values and Call method ids', () => {
    const r = decoded(
      new ReadRequest({
        nodesToRead: [
          { nodeId: 'ns=2;s=A', attributeId: 13 },
          { nodeId: 'ns=2;s=B', attributeId: 4 },
        ],
      }),
    );
    expect(r.attributeIds).toEqual([13, 4]);
    const w = decoded(
      new WriteRequest({
        nodesToWrite: [
          {
            nodeId: 'ns=2;g=72962b91-fa75-4ae6-8d28-b404dc7daf63',
            attributeId: 13,
            value: { value: { dataType: 'Double', value: 3.5 } },
          },
          { nodeId: 'ns=1;b=AQID', attributeId: 13, value: { value: { dataType: 'String', value: 'on' } } },
        ],
      }),
    );
    expect(w.writeNodeIds).toEqual(['ns=2;g=72962B91-FA75-4AE6-8D28-B404DC7DAF63', 'ns=1;b=AQID']);
    expect(w.writeValues).toEqual(['Double 3.5', 'String "on"']);
    const c = decoded(new CallRequest({ methodsToCall: [{ objectId: 'i=2253', methodId: 'ns=4;s=Start' }] }));
    expect(c.callObjectIds).toEqual(['i=2253']);
    expect(c.callMethodIds).toEqual(['ns=4;s=Start']);
  });

  it('reads the ActivateSession identity token type', () => {
    const kind = (token: unknown): unknown =>
      decoded(new ActivateSessionRequest({ userIdentityToken: token as AnonymousIdentityToken })).identity;
    expect(kind(null)).toBe('anonymous');
    expect(kind(new AnonymousIdentityToken({ policyId: 'anon' }))).toBe('anonymous');
    expect(kind(new UserNameIdentityToken({ policyId: 'u', userName: 'op' }))).toBe('username');
    expect(kind(new X509IdentityToken({ policyId: 'x' }))).toBe('x509');
    expect(kind(new IssuedIdentityToken({ policyId: 'i' }))).toBe('issued');
  });

  it('reports an unknown request type with its handle and no group', () => {
    const body = encodeBody(new ReadRequest({ requestHeader: { requestHandle: 77 } }), 9999);
    expect(decodeRequest(body)).toMatchObject({
      kind: 'frame',
      frame: { group: null, service: 'i=9999', requestHandle: 77 },
    });
  });

  const faults: [string, Buffer, string][] = [
    ['empty body', Buffer.alloc(0), 'opcua.decode-type-id'],
    [
      'truncated request',
      encodeBody(new ReadRequest({ nodesToRead: [{ nodeId: 'i=1' }] })).subarray(0, 30),
      'opcua.decode',
    ],
    [
      'trailing bytes',
      Buffer.concat([encodeBody(new CloseSessionRequest({})), Buffer.alloc(1)]),
      'opcua.trailing-bytes',
    ],
    [
      'array length beyond the body',
      (() => {
        const b = encodeBody(new ReadRequest({ nodesToRead: [] }));
        b.writeInt32LE(0x7ffffff0, b.length - 4);
        return b;
      })(),
      'opcua.decode',
    ],
  ];
  for (const [name, body, code] of faults) {
    it(`invalid: ${name}`, () => {
      expect(decodeRequest(body)).toMatchObject({ kind: 'invalid', code });
    });
  }
});

describe('decodeRequest: cost of hostile content', () => {
  it('fails fast on a Write packed with ExtensionObjects of unknown types (node-opcua would warn on each)', () => {
    const base = encodeBody(
      new WriteRequest({
        nodesToWrite: [
          { nodeId: 'ns=2;s=X', attributeId: 13, value: { value: { dataType: 'Boolean', value: true } } },
        ],
      }),
    );
    const at = base.lastIndexOf(Buffer.from([0x01, 0x01])); // the Variant: Boolean true
    const n = 100_000;
    const elem = Buffer.from([0x01, 0x00, 0x39, 0x30, 0x01, 0, 0, 0, 0]); // ns=0;i=12345, binary, length 0
    const arr = Buffer.alloc(5 + n * elem.length);
    arr[0] = 22 | 0x80; // ExtensionObject array
    arr.writeInt32LE(n, 1);
    for (let i = 0; i < n; i++) elem.copy(arr, 5 + i * elem.length);
    const body = Buffer.concat([base.subarray(0, at), arr, base.subarray(at + 2)]);
    const limit = Error.stackTraceLimit;
    const t = performance.now();
    expect(decodeRequest(body)).toMatchObject({ kind: 'invalid', code: 'opcua.decode' });
    // Without the guard this takes ~1.7 s (a stack capture per element).
    expect(performance.now() - t).toBeLessThan(200);
    expect(Error.stackTraceLimit).toBe(limit);
  });
  it('refuses unknown StatusCodes (node-opcua would print one console line each) without printing', () => {
    const body = encodeBody(
      new WriteRequest({
        nodesToWrite: [
          {
            nodeId: 'ns=2;s=X',
            attributeId: 13,
            value: { value: { dataType: 'StatusCode', value: { value: 0 } } },
          },
        ],
      }),
    );
    const at = body.lastIndexOf(Buffer.from([0x13, 0, 0, 0, 0])); // Variant StatusCode Good
    expect(at).toBeGreaterThan(0);
    body.writeUInt32LE(0x5c5c0000, at + 1);
    const warn = console.warn;
    let printed = 0;
    console.warn = () => void printed++;
    try {
      expect(decodeRequest(body)).toMatchObject({ kind: 'invalid', code: 'opcua.decode' });
    } finally {
      console.warn = warn;
    }
    expect(printed).toBe(0);
  });
});

describe('startsLikeRequest: the Sign vs SignAndEncrypt test', () => {
  it('accepts every mapped request and every prefix of one that holds its type id', () => {
    for (const [obj] of CASES) {
      const body = encodeBody(obj);
      for (let n = 0; n <= body.length; n++) expect(startsLikeRequest(body.subarray(0, n))).toBe(true);
    }
  });

  it('rejects random bytes (ciphertext) of realistic sizes', () => {
    let accepted = 0;
    for (let i = 0; i < 20000; i++) if (startsLikeRequest(randomBytes(8 + (i % 200)))) accepted++;
    expect(accepted).toBe(0);
  });
});

describe('matchesNodeIdPattern', () => {
  const rows: [string, string, boolean][] = [
    ['ns=2;s=Line1.Speed', 'ns=2;s=Line1.Speed', true],
    ['ns=2;s=Line1.Speed', 'ns=2;s=Line1.*', true],
    ['ns=2;s=Line1', 'ns=2;s=Line1.*', false],
    ['ns=2;s=line1.Speed', 'ns=2;s=Line1.*', false],
    ['ns=3;s=Line1.Speed', 'ns=2;s=Line1.*', false],
    ['i=85', 'ns=0;i=85', true],
    ['i=85', 'i=85', true],
    ['i=850', 'i=85', false],
    ['i=850', 'i=85*', true],
    ['ns=2;g=72962B91-FA75-4AE6-8D28-B404DC7DAF63', 'ns=2;g=72962b91-fa75-4ae6-8d28-b404dc7daf63', true],
    ['ns=1;b=AQID', 'ns=1;b=AQID', true],
    ['ns=1;b=AQIE', 'ns=1;b=AQID', false],
    ['ns=2;s=Anything', 'ns=2;s=*', true],
    ['ns=2;i=5', 'ns=2;s=*', false],
  ];
  for (const [id, pattern, want] of rows) {
    it(`${id} ${want ? 'matches' : 'does not match'} ${pattern}`, () => {
      expect(matchesNodeIdPattern(id, pattern)).toBe(want);
    });
  }
});
