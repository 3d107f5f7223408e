import { describe, it, expect } from 'vitest';
import { BinaryStream } from 'node-opcua-binary-stream';
import { decodeExpandedNodeId } from 'node-opcua-basic-types';
import { ServiceFault } from 'node-opcua-types';
import type { OpcuaSpec } from '../../policies/types.ts';
import { STATUS, STATUS_NAMES } from './constants.ts';
import { decideChannel, decideRequest, decideSecurityMode } from './decide.ts';
import { refusalEvent, requestDetail } from './describe.ts';
import { buildServiceFault } from './refusal.ts';
import { parseError } from './transport.ts';
import { buildErrorMessage } from './refusal.ts';
import type { CertificateInfo, DecodedRequest, OpenHeader } from './types.ts';

const THUMB = 'A'.repeat(40);

function spec(over: Partial<OpcuaSpec> = {}): OpcuaSpec {
  return {
    securityModes: ['SignAndEncrypt'],
    securityPolicies: ['Basic256Sha256'],
    services: ['discovery', 'session', 'read', 'browse', 'subscribe', 'write', 'call'],
    write: ['ns=2;s=Setpoints.*'],
    call: ['ns=2;s=Reset'],
    anonymous: false,
    certificates: [],
    ...over,
  };
}

function cert(thumbprint = THUMB): CertificateInfo {
  return { thumbprint, subject: 'CN=hmi-1', commonName: 'hmi-1', der: Buffer.alloc(0) };
}

function open(
  policy: OpenHeader['securityPolicy'],
  certificate: CertificateInfo | null = cert(),
): OpenHeader {
  return {
    chunkType: 'F',
    channelId: 0,
    securityPolicyUri: `http://opcfoundation.org/UA/SecurityPolicy#${policy ?? 'Custom'}`,
    securityPolicy: policy,
    senderCertificate: certificate,
    senderCertificateLength: 0,
    receiverThumbprint: null,
    sequenceOffset: 0,
  };
}

function req(over: Partial<DecodedRequest>): DecodedRequest {
  return {
    typeId: 631,
    service: 'ReadRequest',
    group: 'read',
    requestHandle: 1,
    nodeIds: [],
    writeNodeIds: [],
    writeValues: [],
    attributeIds: [],
    callMethodIds: [],
    callObjectIds: [],
    identity: null,
    openRequestType: null,
    openSecurityMode: null,
    ...over,
  };
}

describe('decideChannel (OPN)', () => {
  it('allows an allowed policy', () => {
    expect(decideChannel(open('Basic256Sha256'), spec(), 'enforce')).toEqual({
      verdict: 'allow',
      discoveryOnly: null,
    });
  });

  it('refuses another policy with Bad_SecurityPolicyRejected, would-refuse in monitor mode', () => {
    const d = decideChannel(open('Basic128Rsa15'), spec(), 'enforce');
    expect(d).toMatchObject({
      verdict: 'refuse',
      reason: 'opcua.security-policy',
      statusCode: STATUS.BadSecurityPolicyRejected,
    });
    expect(decideChannel(open('Basic128Rsa15'), spec(), 'monitor')).toMatchObject({
      verdict: 'would-refuse',
    });
  });

  it('refuses an unknown policy URI', () => {
    expect(decideChannel(open(null), spec(), 'enforce')).toMatchObject({
      verdict: 'refuse',
      reason: 'opcua.security-policy',
    });
  });

  it('admits a None channel for discovery only when None is not allowed but discovery is', () => {
    const d = decideChannel(open('None', null), spec(), 'enforce');
    expect(d).toMatchObject({ verdict: 'allow', discoveryOnly: { reason: 'opcua.security-policy' } });
    const m = decideChannel(
      open('None', null),
      spec({ securityPolicies: ['None', 'Basic256Sha256'] }),
      'enforce',
    );
    expect(m).toMatchObject({
      verdict: 'allow',
      discoveryOnly: { reason: 'opcua.security-mode', statusCode: STATUS.BadSecurityModeRejected },
    });
  });

  it('refuses a None channel outright without discovery', () => {
    const d = decideChannel(open('None', null), spec({ services: ['read'] }), 'enforce');
    expect(d).toMatchObject({ verdict: 'refuse', reason: 'opcua.security-policy' });
  });

  it('allows None fully when policy and mode None are allowed', () => {
    const s = spec({ securityPolicies: ['None'], securityModes: ['None'] });
    expect(decideChannel(open('None', null), s, 'enforce')).toEqual({
      verdict: 'allow',
      discoveryOnly: null,
    });
  });

  it('checks the certificate allow-list', () => {
    const s = spec({ certificates: [THUMB] });
    expect(decideChannel(open('Basic256Sha256'), s, 'enforce')).toMatchObject({
      verdict: 'allow',
      discoveryOnly: null,
    });
    expect(decideChannel(open('Basic256Sha256', cert('B'.repeat(40))), s, 'enforce')).toMatchObject({
      verdict: 'refuse',
      reason: 'opcua.certificate',
      statusCode: STATUS.BadCertificateUntrusted,
    });
    expect(decideChannel(open('Basic256Sha256', null), s, 'enforce')).toMatchObject({
      reason: 'opcua.certificate',
    });
  });

  it('does not trust a certificate on an unsigned None channel, but still admits discovery', () => {
    const s = spec({ securityPolicies: ['None'], securityModes: ['None'], certificates: [THUMB] });
    expect(decideChannel(open('None'), s, 'enforce')).toMatchObject({
      verdict: 'allow',
      discoveryOnly: { reason: 'opcua.certificate' },
    });
  });
});

describe('decideSecurityMode (first MSG)', () => {
  it('allows a listed mode and refuses another', () => {
    expect(decideSecurityMode('SignAndEncrypt', spec(), 'enforce')).toEqual({ verdict: 'allow' });
    expect(decideSecurityMode('Sign', spec(), 'enforce')).toMatchObject({
      verdict: 'refuse',
      reason: 'opcua.security-mode',
    });
    expect(decideSecurityMode('Sign', spec(), 'monitor')).toMatchObject({ verdict: 'would-refuse' });
  });
});

describe('decideRequest (services)', () => {
  it('allows a listed group and refuses another', () => {
    expect(decideRequest(req({}), spec(), 'enforce')).toEqual({ verdict: 'allow' });
    expect(
      decideRequest(req({ service: 'HistoryReadRequest', group: 'history' }), spec(), 'enforce'),
    ).toMatchObject({
      verdict: 'refuse',
      reason: 'opcua.service',
      statusCode: STATUS.BadUserAccessDenied,
    });
  });

  it('refuses unknown request types', () => {
    expect(decideRequest(req({ service: 'i=9999', group: null }), spec(), 'enforce')).toMatchObject({
      reason: 'opcua.service',
    });
  });

  it('allows Write only when every NodeId matches a write pattern', () => {
    const w = (ids: string[]): DecodedRequest =>
      req({ service: 'WriteRequest', group: 'write', writeNodeIds: ids, nodeIds: ids });
    expect(decideRequest(w(['ns=2;s=Setpoints.A', 'ns=2;s=Setpoints.B']), spec(), 'enforce')).toEqual({
      verdict: 'allow',
    });
    expect(decideRequest(w(['ns=2;s=Setpoints.A', 'ns=2;s=Alarms.Ack']), spec(), 'enforce')).toMatchObject({
      verdict: 'refuse',
      reason: 'opcua.write-node',
      nodeIds: ['ns=2;s=Alarms.Ack'],
    });
    expect(decideRequest(w(['ns=2;s=Setpoints.A']), spec({ write: [] }), 'enforce')).toMatchObject({
      reason: 'opcua.write-node',
    });
  });

  it('allows Call only when every method matches a call pattern', () => {
    const c = (ids: string[]): DecodedRequest =>
      req({ service: 'CallRequest', group: 'call', callMethodIds: ids });
    expect(decideRequest(c(['ns=2;s=Reset']), spec(), 'enforce')).toEqual({ verdict: 'allow' });
    expect(decideRequest(c(['ns=2;s=Reset', 'ns=2;s=Stop']), spec(), 'monitor')).toMatchObject({
      verdict: 'would-refuse',
      reason: 'opcua.call-method',
      nodeIds: ['ns=2;s=Stop'],
    });
  });

  it('refuses anonymous (and unclassifiable) identities unless anonymous is allowed', () => {
    const a = (identity: DecodedRequest['identity']): DecodedRequest =>
      req({ service: 'ActivateSessionRequest', group: 'session', identity });
    expect(decideRequest(a('anonymous'), spec(), 'enforce')).toMatchObject({
      reason: 'opcua.anonymous',
      statusCode: STATUS.BadIdentityTokenRejected,
    });
    expect(decideRequest(a('unknown'), spec(), 'enforce')).toMatchObject({ reason: 'opcua.anonymous' });
    expect(decideRequest(a('username'), spec(), 'enforce')).toEqual({ verdict: 'allow' });
    expect(decideRequest(a('anonymous'), spec({ anonymous: true }), 'enforce')).toEqual({ verdict: 'allow' });
  });

  it('on a discovery-only channel allows GetEndpoints/FindServers and refuses the rest with the channel reason', () => {
    const because = {
      reason: 'opcua.security-mode' as const,
      message: 'x',
      statusCode: STATUS.BadSecurityModeRejected,
    };
    const get = req({ service: 'GetEndpointsRequest', group: 'discovery' });
    const find = req({ service: 'FindServersRequest', group: 'discovery' });
    const reg = req({ service: 'RegisterServerRequest', group: 'discovery' });
    expect(decideRequest(get, spec(), 'enforce', because)).toEqual({ verdict: 'allow' });
    expect(decideRequest(find, spec(), 'enforce', because)).toEqual({ verdict: 'allow' });
    expect(decideRequest(reg, spec(), 'enforce', because)).toMatchObject({
      verdict: 'refuse',
      reason: 'opcua.security-mode',
    });
    expect(
      decideRequest(req({ service: 'CreateSessionRequest', group: 'session' }), spec(), 'enforce', because),
    ).toMatchObject({
      verdict: 'refuse',
      reason: 'opcua.security-mode',
    });
  });
});

describe('refusal encoding', () => {
  it('ServiceFault bytes decode back with node-opcua: handle, status, ids', () => {
    const bytes = buildServiceFault({
      channelId: 11,
      tokenId: 3,
      sequenceNumber: 57,
      requestId: 99,
      requestHandle: 1234,
      statusCode: STATUS.BadUserAccessDenied,
      timestamp: new Date('2026-01-02T03:04:05.678Z'),
    });
    expect(bytes.subarray(0, 4).toString('latin1')).toBe('MSGF');
    expect(bytes.readUInt32LE(4)).toBe(bytes.length);
    expect([
      bytes.readUInt32LE(8),
      bytes.readUInt32LE(12),
      bytes.readUInt32LE(16),
      bytes.readUInt32LE(20),
    ]).toEqual([11, 3, 57, 99]);
    const stream = new BinaryStream(bytes.subarray(24));
    const typeId = decodeExpandedNodeId(stream);
    expect(typeId.value).toBe(397);
    const fault = new ServiceFault();
    fault.decode(stream);
    expect(stream.length).toBe(bytes.length - 24);
    expect(fault.responseHeader.requestHandle).toBe(1234);
    expect(fault.responseHeader.serviceResult.value).toBe(0x801f0000);
    expect(fault.responseHeader.serviceResult.name).toBe('BadUserAccessDenied');
    expect(fault.responseHeader.timestamp?.toISOString()).toBe('2026-01-02T03:04:05.678Z');
  });

  it('the status constants carry node-opcua names', () => {
    for (const [name, value] of Object.entries(STATUS)) {
      const b = buildServiceFault({
        channelId: 1,
        tokenId: 1,
        requestId: 1,
        requestHandle: 1,
        statusCode: value,
        timestamp: new Date(0),
      });
      const s = new BinaryStream(b.subarray(28));
      const f = new ServiceFault();
      f.decode(s);
      expect(f.responseHeader.serviceResult.name).toBe(name);
      expect(STATUS_NAMES.get(value)).toBe(name);
    }
  });

  it('ERR for a channel refusal carries status and reason', () => {
    const e = buildErrorMessage(STATUS.BadSecurityPolicyRejected, 'security policy … not allowed');
    expect(parseError(e)).toMatchObject({
      kind: 'frame',
      frame: { error: 0x80550000, reason: 'security policy … not allowed' },
    });
  });
});

describe('event description', () => {
  it('carries service, NodeIds, policy/mode, certificate subject and reason', () => {
    const r = req({
      service: 'WriteRequest',
      group: 'write',
      writeNodeIds: ['ns=2;s=X'],
      nodeIds: ['ns=2;s=X'],
      writeValues: ['Double 1'],
    });
    const d = decideRequest(r, spec(), 'enforce');
    if (d.verdict === 'allow') throw new Error('expected a refusal');
    const ev = refusalEvent(
      d,
      requestDetail(r, 5, {
        securityPolicy: 'None',
        securityPolicyUri: 'u',
        securityMode: 'None',
        certificate: cert(),
      }),
    );
    expect(ev).toEqual({
      reason: 'opcua.write-node',
      verdict: 'refuse',
      detail: expect.objectContaining({
        service: 'Write',
        serviceGroup: 'write',
        nodeIds: ['ns=2;s=X'],
        refusedNodeIds: ['ns=2;s=X'],
        values: ['Double 1'],
        securityPolicy: 'None',
        securityMode: 'None',
        certificateSubject: 'CN=hmi-1',
        certificateThumbprint: THUMB,
        status: 'BadUserAccessDenied',
        requestId: 5,
      }),
    });
  });
});
