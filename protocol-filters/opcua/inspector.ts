/**
 * OpcuaInspector: the per-connection OPC UA filter behind the shared proxy core (core/inspector.ts). Pure with
 * respect to I/O: bytes in, verdicts out; the clock is injected.
 *
 * Per connection (Part 6 §7.1 then §6.7):
 * 1. HEL (client) / ACK (server) are rewritten: buffer sizes lowered to the gateway's chunk limit and ACK's
 *    MaxMessageSize/MaxChunkCount to its reassembly limits (transport.ts); both decoders then bound chunks by
 *    the negotiated sizes. RHE (reverse connect) is not supported on a client→server flow: closed.
 * 2. The client's OPN: SecurityPolicyUri and sender certificate are read in clear and the channel decided
 *    (decide.ts). Refused → ERR (Bad_SecurityPolicyRejected / Bad_CertificateUntrusted / …) and close. A None
 *    channel may be admitted for discovery only. Renewals must keep the policy and certificate.
 * 3. The security mode. Policy None → mode None. Otherwise the OPN cannot tell Sign from SignAndEncrypt (its
 *    body is asymmetrically encrypted in both), so the first client MSG decides — see "Sign or
 *    SignAndEncrypt" below — and the mode is then checked against the flow (ERR Bad_SecurityModeRejected).
 * 4. Requests on None and Sign channels are reassembled (reassembly.ts), decoded (services.ts) and decided.
 *    Allowed → the held chunks go to the server. Refused → None: a ServiceFault (Bad_UserAccessDenied) answers
 *    the request and sequence numbers are rewritten both ways from then on (sequence.ts), so the session goes
 *    on; Sign: the numbers are signed and a reply cannot be forged, so ERR and close.
 *    SignAndEncrypt channels are opaque: chunks are forwarded as they come, bounded (a run of intermediate
 *    chunks longer than maxChunkCount is cut), and watched for cleartext.
 * 5. Server chunks are framed and forwarded whole (never split), renumbered on None channels after a refusal.
 *
 * ## Sign or SignAndEncrypt
 * Under Sign a MSG chunk is `header · token · sequence header · body · signature` with everything in clear;
 * under SignAndEncrypt everything from the sequence header on is AES-CBC ciphertext, so that part is a whole
 * number of 16-byte blocks. The first complete client message is classified:
 * - Sign when any of its chunks is not block-aligned (it cannot be ciphertext), or when its body, with the
 *   policy's signature length removed from every chunk, starts like a request: a known request type id then
 *   a plausible RequestHeader (services.ts `startsLikeRequest`; random ciphertext passes with a probability
 *   far below 1e-9);
 * - SignAndEncrypt otherwise.
 * Sign is then confirmed by fully decoding the request (failure closes the connection). A misclassification
 * towards SignAndEncrypt would skip the service checks, so it is re-checked on every later client chunk: a
 * chunk that is not block-aligned or whose body starts like a request (or is a prefix of one: a 1-byte first
 * chunk is caught too) cannot be ciphertext, and the connection is refused as a mode violation. A genuine
 * ciphertext chunk has at least 4 body bytes and passes with negligible probability.
 *
 * ## Limits
 * Outstanding requests (forwarded, unanswered) are tracked by request id on None and Sign channels and capped
 * by ctx.limits.maxOutstandingRequests. OPC UA matches responses by request id, not by order (Part 6
 * §6.7.2.4), so refusals are answered at once instead of being queued behind outstanding requests (a queued
 * fault could wait behind Publish requests the server parks for a whole keep-alive interval).
 *
 * Reassembly memory is bounded across connections too: every byte an inspector holds for reassembly (its two
 * decoders' partial chunks, its assembler's kept chunks) is charged to a ReassemblyBudget shared by all the
 * inspectors of a factory (by default one process-wide budget of 64 MiB) and released when the message
 * completes, aborts, expires or fails, and on close. A connection whose next chunk does not fit is closed with
 * `opcua.memory-budget` (verdict drop): the one asking pays, connections already holding bytes are left alone
 * (budget.ts explains why).
 *
 * ## Known limits of this design
 * - On SignAndEncrypt channels services, NodeIds and the identity token are invisible: only the policy, the
 *   mode and the certificate are enforced (`anonymous: false` cannot be checked there).
 * - On Sign and not-yet-classified channels chunks of different requests must not interleave (their
 *   sequence numbers are signed, so the gateway cannot reorder them); on None channels up to
 *   maxPartialMessages requests may interleave.
 * - OPN and CLO must be single chunks.
 */
import type {
  ClientVerdict,
  ConnectionInspector,
  FilterEvent,
  InspectorContext,
  InspectorFactory,
  ServerVerdict,
} from '../core/inspector.ts';
import type { ConduitMode, OpcuaSpec } from '../../policies/types.ts';
import { Verdicts } from '../core/verdicts.ts';
import {
  MESSAGE_SECURITY_MODE,
  OPEN_SECURE_CHANNEL_REQUEST_ID,
  STATUS,
  SYMMETRIC_BLOCK_SIZE,
  SYMMETRIC_SIGNATURE_LENGTH,
} from './constants.ts';
import {
  decideChannel,
  decideRequest,
  decideSecurityMode,
  type Refusal,
  type RefusalVerdict,
} from './decide.ts';
import { BudgetAccount, ReassemblyBudget, sharedReassemblyBudget } from './budget.ts';
import { channelDetail, refusalEvent, requestDetail } from './describe.ts';
import { MessageAssembler, type AssembledMessage } from './reassembly.ts';
import { buildServiceFault } from './refusal.ts';
import { SequenceRewriter, withSequenceNumber } from './sequence.ts';
import { decodeRequest, startsLikeRequest } from './services.ts';
import { OpcuaChunkDecoder } from './stream.ts';
import {
  buildErrorMessage,
  clampAcknowledge,
  clampHello,
  encodeAcknowledge,
  encodeHello,
  parseAcknowledge,
  parseHello,
  parseOpenHeader,
  parseSymmetricHeader,
} from './transport.ts';
import {
  DEFAULT_OPCUA_LIMITS,
  MIN_BUFFER_SIZE,
  SYMMETRIC_BODY_OFFSET,
  SYMMETRIC_SEQUENCE_OFFSET,
  type ChannelSecurity,
  type Chunk,
  type Invalid,
  type OpcuaLimits,
  type SymmetricHeader,
} from './types.ts';

export interface OpcuaInspectorOptions {
  limits?: Partial<OpcuaLimits>;
  /** Epoch milliseconds; injected so tests drive the reassembly timeout. */
  now?: () => number;
  /**
   * Reassembly memory shared with other connections (budget.ts). A ReassemblyBudget is shared as is; a number
   * of bytes makes `createOpcuaInspectorFactory` create one budget shared by all the inspectors of that
   * factory (given to the constructor directly, it would be this connection's alone). Default: the
   * process-wide `sharedReassemblyBudget` (64 MiB).
   */
  reassemblyBudget?: ReassemblyBudget | number;
}

/** The policy the inspector enforces when a plan entry carries no opcua spec: nothing but discovery. */
const EMPTY_SPEC: OpcuaSpec = {
  securityModes: [],
  securityPolicies: [],
  services: [],
  write: [],
  call: [],
  anonymous: false,
  certificates: [],
};

type Phase = 'hello' | 'handshake' | 'secure';

export class OpcuaInspector implements ConnectionInspector {
  readonly #spec: OpcuaSpec;
  readonly #mode: ConduitMode;
  readonly #limits: OpcuaLimits;
  readonly #maxOutstanding: number;
  readonly #now: () => number;
  readonly #account: BudgetAccount;
  readonly #clientDecoder: OpcuaChunkDecoder;
  readonly #serverDecoder: OpcuaChunkDecoder;
  readonly #assembler: MessageAssembler;
  #phase: Phase = 'hello';
  #helloSeen = false;
  #ackSeen = false;
  #channel: ChannelSecurity | null = null;
  #discoveryOnly: Refusal | null = null;
  #signatureLength = 0;
  /** Sign channels: request id of the message being reassembled. */
  #signRequestId = 0;
  #seq: SequenceRewriter | null = null;
  readonly #outstanding = new Set<number>();
  /** SignAndEncrypt: intermediate chunks since the last final/abort chunk, and their bytes. */
  #opaqueRun = 0;
  #opaqueRunBytes = 0;
  #closed = false;
  /** Client chunks that ended a message (core/inspector.ts `completedMessages`). */
  #completed = 0;
  /** The server has sent an intermediate (C) chunk of a response and not yet its final or abort chunk. */
  #serverMidMessage = false;
  /** ServiceFaults waiting for the server's current response to end (Part 6 §6.7.2: no interleaving). */
  #heldFaults: HeldFault[] = [];

  constructor(ctx: InspectorContext, options: OpcuaInspectorOptions = {}) {
    this.#spec = ctx.entry.opcua ?? EMPTY_SPEC;
    this.#mode = ctx.entry.mode;
    this.#maxOutstanding = ctx.limits.maxOutstandingRequests;
    // The flow's own limits from the policy (per-flow `limits` of the plan entry) win over the factory's.
    const flowTimeout = ctx.entry.limits?.messageTimeoutMs;
    this.#limits = {
      ...DEFAULT_OPCUA_LIMITS,
      ...options.limits,
      ...(flowTimeout !== undefined ? { messageTimeoutMs: flowTimeout } : {}),
    };
    this.#now = options.now ?? Date.now;
    this.#account = new BudgetAccount(resolveBudget(options.reassemblyBudget));
    this.#clientDecoder = new OpcuaChunkDecoder(MIN_BUFFER_SIZE, this.#account);
    this.#serverDecoder = new OpcuaChunkDecoder(MIN_BUFFER_SIZE, this.#account);
    this.#assembler = new MessageAssembler(this.#limits, this.#account);
  }

  /** Bytes this connection holds charged to the shared reassembly budget. */
  get reassemblyBytes(): number {
    return this.#account.charged;
  }

  /** The channel's security as far as known (for tests and the daemon's status). */
  get channel(): Readonly<ChannelSecurity> | null {
    return this.#channel;
  }

  get outstandingRequests(): number {
    return this.#outstanding.size;
  }

  hasPartialMessage(): boolean {
    return this.#clientDecoder.buffered > 0 || this.#assembler.pending;
  }

  completedMessages(): number {
    return this.#completed;
  }

  onClose(): void {
    this.#closed = true;
    this.#releaseReassembly();
    this.#heldFaults = [];
  }

  /** Drops everything held for reassembly and returns it to the shared budget (the connection is done). */
  #releaseReassembly(): void {
    this.#assembler.clear();
    this.#clientDecoder.clear();
    this.#serverDecoder.clear();
    // Whatever a component might still have charged: the account frees this connection's share in full.
    this.#account.releaseAll();
  }

  // ------------------------------------------------------------------------------------------ events

  #detail(): Record<string, unknown> {
    return this.#channel === null ? {} : channelDetail(this.#channel);
  }

  #drop(code: string, message: string): FilterEvent {
    return { reason: code, verdict: 'drop', detail: { ...this.#detail(), message } };
  }

  #closeInvalid<V extends ClientVerdict | ServerVerdict>(out: Verdicts<V>, r: Invalid): void {
    this.#closed = true;
    this.#releaseReassembly();
    out.push({ action: 'close', event: this.#drop(r.code, r.reason) } as V);
  }

  /** ERR to the client, then close: channel-level refusals and refusals on signed channels. */
  #refuseWithError(out: Verdicts<ClientVerdict>, d: RefusalVerdict, event: FilterEvent): void {
    this.#closed = true;
    this.#releaseReassembly();
    out.push({ action: 'reply', bytes: buildErrorMessage(d.statusCode, d.message), event });
    out.push({
      action: 'close',
      event: { reason: 'opcua.closed-after-refusal', verdict: 'drop', detail: { after: d.reason } },
    });
  }

  // ---------------------------------------------------------------------------------- client → server

  onClientData(data: Buffer): ClientVerdict[] {
    const out = new Verdicts<ClientVerdict>();
    if (this.#closed) return out.done();
    const expired = this.#assembler.expire(this.#now());
    if (expired !== null) {
      this.#closeInvalid(out, expired);
      return out.done();
    }
    for (const item of this.#clientDecoder.push(data)) {
      if (item.kind === 'invalid') {
        this.#closeInvalid(out, item);
        break;
      }
      if (item.frame.chunkType !== 'C' || item.frame.messageType !== 'MSG') this.#completed++;
      this.#clientChunk(item.frame, out);
      if (out.closed) break;
    }
    return out.done();
  }

  #clientChunk(chunk: Chunk, out: Verdicts<ClientVerdict>): void {
    switch (chunk.messageType) {
      case 'HEL':
        return this.#clientHello(chunk, out);
      case 'OPN':
        return this.#clientOpen(chunk, out);
      case 'MSG':
        return this.#clientMessage(chunk, out);
      case 'CLO':
        return this.#clientClose(chunk, out);
      case 'RHE':
        return this.#closeInvalid(out, {
          kind: 'invalid',
          code: 'opcua.reverse-hello',
          reason: 'ReverseHello from the client side: reverse connect is not supported on this flow',
        });
      default:
        return this.#closeInvalid(out, {
          kind: 'invalid',
          code: 'opcua.unexpected-message',
          reason: `${chunk.messageType} from the client`,
        });
    }
  }

  #clientHello(chunk: Chunk, out: Verdicts<ClientVerdict>): void {
    if (this.#helloSeen) {
      return this.#closeInvalid(out, {
        kind: 'invalid',
        code: 'opcua.unexpected-message',
        reason: 'second HEL',
      });
    }
    const r = parseHello(chunk.bytes);
    if (r.kind !== 'frame') return this.#closeInvalid(out, r.kind === 'invalid' ? r : bug());
    this.#helloSeen = true;
    const hello = clampHello(r.frame, this.#limits.maxChunkSize);
    // The client never sends chunks larger than it offered, nor the server larger than the client accepts.
    this.#clientDecoder.maxChunkSize = hello.sendBufferSize;
    this.#serverDecoder.maxChunkSize = hello.receiveBufferSize;
    this.#phase = 'handshake';
    out.forward(encodeHello(hello));
  }

  #clientOpen(chunk: Chunk, out: Verdicts<ClientVerdict>): void {
    if (this.#phase === 'hello') {
      return this.#closeInvalid(out, {
        kind: 'invalid',
        code: 'opcua.unexpected-message',
        reason: 'OPN before HEL',
      });
    }
    const r = parseOpenHeader(chunk.bytes);
    if (r.kind !== 'frame') return this.#closeInvalid(out, r.kind === 'invalid' ? r : bug());
    const open = r.frame;
    let event: FilterEvent | undefined;
    if (this.#channel === null) {
      const d = decideChannel(open, this.#spec, this.#mode);
      const none = open.securityPolicy === 'None';
      this.#channel = {
        securityPolicy: open.securityPolicy,
        securityPolicyUri: open.securityPolicyUri,
        securityMode: none ? 'None' : 'unknown',
        certificate: open.senderCertificate,
      };
      if (d.verdict !== 'allow') {
        event = refusalEvent(d, channelDetail(this.#channel));
        if (d.verdict === 'refuse') return this.#refuseWithError(out, d, event);
      } else {
        this.#discoveryOnly = d.discoveryOnly;
      }
      this.#signatureLength =
        open.securityPolicy === null ? 0 : SYMMETRIC_SIGNATURE_LENGTH[open.securityPolicy];
      if (none) this.#seq = new SequenceRewriter();
      this.#phase = 'secure';
    } else if (
      open.securityPolicyUri !== this.#channel.securityPolicyUri ||
      open.senderCertificate?.thumbprint !== this.#channel.certificate?.thumbprint
    ) {
      // A renewal (Part 6 §6.7.4) keeps the channel's policy and certificate; anything else is a new channel
      // smuggled into an admitted one.
      return this.#closeInvalid(out, {
        kind: 'invalid',
        code: 'opcua.channel-changed',
        reason: 'OPN renewal with another security policy or certificate',
      });
    }
    if (this.#seq === null) {
      out.forward(chunk.bytes, event);
      return;
    }
    // SecurityPolicy None: the sequence header and the OpenSecureChannelRequest are readable.
    const seqOffset = open.sequenceOffset;
    const seqNo = chunk.bytes.readUInt32LE(seqOffset);
    const req = decodeRequest(chunk.bytes.subarray(seqOffset + 8));
    if (req.kind !== 'frame') return this.#closeInvalid(out, req.kind === 'invalid' ? req : bug());
    if (req.frame.typeId !== OPEN_SECURE_CHANNEL_REQUEST_ID) {
      return this.#closeInvalid(out, {
        kind: 'invalid',
        code: 'opcua.open-body',
        reason: `OPN carries ${req.frame.service}`,
      });
    }
    if (req.frame.openSecurityMode !== MESSAGE_SECURITY_MODE.None) {
      return this.#closeInvalid(out, {
        kind: 'invalid',
        code: 'opcua.open-mode',
        reason: `SecurityPolicy None with requested SecurityMode ${req.frame.openSecurityMode}`,
      });
    }
    if (!this.#seq.client.arrive(seqNo)) return this.#sequenceError(out, seqNo);
    out.forward(withSequenceNumber(chunk.bytes, seqOffset, this.#seq.client.emit(seqNo)), event);
  }

  #sequenceError<V extends ClientVerdict | ServerVerdict>(out: Verdicts<V>, n: number): void {
    this.#closeInvalid(out, {
      kind: 'invalid',
      code: 'opcua.sequence',
      reason: `sequence number ${n} does not follow the previous one`,
    });
  }

  #needChannel(out: Verdicts<ClientVerdict>, chunk: Chunk): ChannelSecurity | null {
    if (this.#channel !== null && this.#phase === 'secure') return this.#channel;
    this.#closeInvalid(out, {
      kind: 'invalid',
      code: 'opcua.unexpected-message',
      reason: `${chunk.messageType} before the secure channel was opened`,
    });
    return null;
  }

  #clientClose(chunk: Chunk, out: Verdicts<ClientVerdict>): void {
    const ch = this.#needChannel(out, chunk);
    if (ch === null) return;
    const h = parseSymmetricHeader(chunk.bytes);
    if (h.kind !== 'frame') return this.#closeInvalid(out, h.kind === 'invalid' ? h : bug());
    if (this.#seq !== null) {
      const n = h.frame.sequenceNumber;
      if (!this.#seq.client.arrive(n)) return this.#sequenceError(out, n);
      out.forward(withSequenceNumber(chunk.bytes, SYMMETRIC_SEQUENCE_OFFSET, this.#seq.client.emit(n)));
      return;
    }
    out.forward(chunk.bytes);
  }

  #clientMessage(chunk: Chunk, out: Verdicts<ClientVerdict>): void {
    const ch = this.#needChannel(out, chunk);
    if (ch === null) return;
    const parsed = parseSymmetricHeader(chunk.bytes);
    if (parsed.kind !== 'frame') return this.#closeInvalid(out, parsed.kind === 'invalid' ? parsed : bug());
    const h = parsed.frame;
    const bytes = chunk.bytes;
    if (ch.securityMode === 'SignAndEncrypt') return this.#opaqueChunk(bytes, h, out);
    const sig = ch.securityMode === 'None' ? 0 : this.#signatureLength;
    if (bytes.length < SYMMETRIC_BODY_OFFSET + sig) {
      return this.#closeInvalid(out, {
        kind: 'invalid',
        code: 'opcua.chunk-too-small',
        reason: 'chunk shorter than its headers and signature',
      });
    }
    let key = 0;
    if (this.#seq !== null) {
      if (!this.#seq.client.arrive(h.sequenceNumber)) return this.#sequenceError(out, h.sequenceNumber);
      key = h.requestId;
    } else if (ch.securityMode === 'Sign') {
      // Sign: one message at a time, and every chunk of it (abort included) must carry its request id. The
      // server groups chunks by request id: were a chunk of another request merged here, the server would
      // run a request the filter never decoded on its own.
      if (this.#assembler.pending && h.requestId !== this.#signRequestId) {
        return this.#closeInvalid(out, {
          kind: 'invalid',
          code: 'opcua.interleaved',
          reason: `chunk of request ${h.requestId} inside request ${this.#signRequestId}`,
        });
      }
      this.#signRequestId = h.requestId;
    } else if (h.chunkType === 'A' && this.#assembler.pending) {
      // Unclassified channel: the request ids may be ciphertext, so an abort cannot be matched to the held
      // message; an abort within a channel's very first request is not worth that ambiguity.
      return this.#closeInvalid(out, {
        kind: 'invalid',
        code: 'opcua.abort-unclassified',
        reason: 'abort chunk before the security mode was known',
      });
    }
    // Sign and unclassified channels use one reassembly slot (key 0): the request id is ciphertext if the
    // channel turns out to encrypt, and signed sequence numbers forbid reordering anyway.
    const r = this.#assembler.add(
      h.chunkType,
      key,
      bytes,
      SYMMETRIC_BODY_OFFSET,
      bytes.length - sig,
      this.#now(),
    );
    switch (r.kind) {
      case 'partial':
        return;
      case 'invalid':
        return this.#closeInvalid(out, r);
      case 'aborted':
        // Part 6 §6.7.3: the receiver discards an aborted message and does not answer it. On None the gateway
        // swallows it (renumbering closes the gap); on signed channels it cannot drop signed chunks, so it
        // forwards exactly what the client sent and the server discards it.
        if (this.#seq === null) for (const c of r.chunks) out.forward(c);
        return;
      case 'message':
        return this.#clientRequest(r, h, ch, out);
    }
  }

  /** A chunk on a SignAndEncrypt channel: bounded, checked for cleartext, forwarded. */
  #opaqueChunk(bytes: Buffer, h: SymmetricHeader, out: Verdicts<ClientVerdict>): void {
    if (!couldBeCiphertext(bytes, this.#signatureLength)) {
      const d: RefusalVerdict = {
        verdict: this.#mode === 'monitor' ? 'would-refuse' : 'refuse',
        reason: 'opcua.security-mode',
        message: 'cleartext request on a channel classified SignAndEncrypt: the channel only signs',
        statusCode: STATUS.BadSecurityModeRejected,
      };
      const ch = this.#channel;
      const event = refusalEvent(d, ch === null ? channelDetail(unknownChannel()) : channelDetail(ch));
      if (d.verdict === 'refuse') return this.#refuseWithError(out, d, event);
      // Monitor: inspect it as the Sign channel it evidently is from the next message on.
      if (ch !== null) ch.securityMode = 'Sign';
      this.#opaqueRun = 0;
      this.#opaqueRunBytes = 0;
      out.forward(bytes, event);
      return;
    }
    if (h.chunkType === 'C') {
      this.#opaqueRun++;
      this.#opaqueRunBytes += bytes.length;
      if (
        this.#opaqueRun >= this.#limits.maxChunkCount ||
        this.#opaqueRunBytes > this.#limits.maxMessageSize
      ) {
        return this.#closeInvalid(out, {
          kind: 'invalid',
          code: 'opcua.too-many-chunks',
          reason: `more than ${this.#limits.maxChunkCount} chunks or ${this.#limits.maxMessageSize} bytes without a final chunk`,
        });
      }
    } else {
      this.#opaqueRun = 0;
      this.#opaqueRunBytes = 0;
    }
    out.forward(bytes);
  }

  #clientRequest(
    msg: AssembledMessage,
    h: SymmetricHeader,
    ch: ChannelSecurity,
    out: Verdicts<ClientVerdict>,
  ): void {
    let modeEvent: FilterEvent | undefined;
    if (ch.securityMode === 'unknown') {
      const sig = this.#signatureLength;
      // SignAndEncrypt only when every chunk could be ciphertext: a single clear chunk makes it Sign, or a
      // clear chunk appended to a random-looking one would reach the server undecoded.
      const clear = msg.chunks.some((c) => !couldBeCiphertext(c, sig)) || startsLikeRequest(msg.body);
      ch.securityMode = clear ? 'Sign' : 'SignAndEncrypt';
      const d = decideSecurityMode(ch.securityMode, this.#spec, this.#mode);
      if (d.verdict !== 'allow') {
        modeEvent = refusalEvent(d, channelDetail(ch));
        if (d.verdict === 'refuse') return this.#refuseWithError(out, d, modeEvent);
      }
      if (ch.securityMode === 'SignAndEncrypt') {
        for (const c of msg.chunks) out.forward(c);
        if (modeEvent !== undefined) out.push({ action: 'log', event: modeEvent });
        return;
      }
    }
    if (ch.securityMode === 'Sign' && msg.chunks.some((c) => c.readUInt32LE(20) !== h.requestId)) {
      return this.#closeInvalid(out, {
        kind: 'invalid',
        code: 'opcua.interleaved',
        reason: 'chunks of different requests in one message',
      });
    }
    const decoded = decodeRequest(msg.body);
    if (decoded.kind !== 'frame')
      return this.#closeInvalid(out, decoded.kind === 'invalid' ? decoded : bug());
    const req = decoded.frame;
    const requestId = h.requestId;
    const d = decideRequest(req, this.#spec, this.#mode, this.#discoveryOnly);
    if (d.verdict === 'refuse') {
      const event = refusalEvent(d, requestDetail(req, requestId, ch));
      if (this.#seq === null) return this.#refuseWithError(out, d, event);
      if (this.#seq.server.lastOut === null) return this.#refuseWithError(out, d, event);
      const held: HeldFault = {
        channelId: h.channelId,
        tokenId: h.tokenId,
        requestId,
        requestHandle: req.requestHandle,
        statusCode: d.statusCode,
      };
      // The request's chunks are never emitted: the client sequence numbering skips them on its own.
      if (this.#serverMidMessage) {
        // Part 6 §6.7.2: the chunks of one message are sent sequentially, so the fault must not land between
        // the C and F chunks of the response the server is sending: it waits for that response's last chunk
        // (and gets its sequence number then, since numbers follow emission order).
        this.#heldFaults.push(held);
        out.push({ action: 'log', event });
        return;
      }
      const fault = this.#buildFault(held);
      if (fault === null) return this.#refuseWithError(out, d, event);
      out.push({ action: 'reply', bytes: fault, event });
      return;
    }
    if (!this.#outstanding.has(requestId) && this.#outstanding.size >= this.#maxOutstanding) {
      return this.#closeInvalid(out, {
        kind: 'invalid',
        code: 'too-many-outstanding-requests',
        reason: `more than ${this.#maxOutstanding} unanswered requests`,
      });
    }
    this.#outstanding.add(requestId);
    const event =
      d.verdict === 'would-refuse' ? refusalEvent(d, requestDetail(req, requestId, ch)) : undefined;
    const seq = this.#seq;
    msg.chunks.forEach((c, i) => {
      const bytes =
        seq === null
          ? c
          : withSequenceNumber(
              c,
              SYMMETRIC_SEQUENCE_OFFSET,
              seq.client.emit(c.readUInt32LE(SYMMETRIC_SEQUENCE_OFFSET)),
            );
      out.forward(bytes, i === 0 ? event : undefined);
    });
    if (modeEvent !== undefined) out.push({ action: 'log', event: modeEvent });
  }

  /** A ServiceFault numbered as the next server chunk, or null when the numbering has not started. */
  #buildFault(f: HeldFault): Buffer | null {
    const n = this.#seq?.server.inject() ?? null;
    if (n === null) return null;
    return buildServiceFault({
      channelId: f.channelId,
      tokenId: f.tokenId,
      sequenceNumber: n,
      requestId: f.requestId,
      requestHandle: f.requestHandle,
      statusCode: f.statusCode,
      timestamp: new Date(this.#now()),
    });
  }

  // ---------------------------------------------------------------------------------- server → client

  onServerData(data: Buffer): ServerVerdict[] {
    const out = new Verdicts<ServerVerdict>();
    if (this.#closed) return out.done();
    for (const item of this.#serverDecoder.push(data)) {
      if (item.kind === 'invalid') {
        this.#closeInvalid(out, item);
        break;
      }
      this.#serverChunk(item.frame, out);
      if (out.closed) break;
    }
    return out.done();
  }

  #serverChunk(chunk: Chunk, out: Verdicts<ServerVerdict>): void {
    const bytes = chunk.bytes;
    switch (chunk.messageType) {
      case 'ACK': {
        // The client may pipeline its OPN behind HEL, so the phase may already be 'secure'; one ACK per HEL.
        if (!this.#helloSeen || this.#ackSeen) {
          return this.#closeInvalid(out, {
            kind: 'invalid',
            code: 'opcua.unexpected-message',
            reason: 'unsolicited ACK',
          });
        }
        const r = parseAcknowledge(bytes);
        if (r.kind !== 'frame') return this.#closeInvalid(out, r.kind === 'invalid' ? r : bug());
        this.#ackSeen = true;
        const ack = clampAcknowledge(r.frame, this.#limits);
        this.#clientDecoder.maxChunkSize = Math.min(this.#clientDecoder.maxChunkSize, ack.receiveBufferSize);
        this.#serverDecoder.maxChunkSize = Math.min(this.#serverDecoder.maxChunkSize, ack.sendBufferSize);
        out.forward(encodeAcknowledge(ack));
        return;
      }
      case 'ERR':
        out.forward(bytes);
        return;
      case 'OPN': {
        if (this.#seq === null) {
          out.forward(bytes);
          return;
        }
        const r = parseOpenHeader(bytes);
        if (r.kind !== 'frame') return this.#closeInvalid(out, r.kind === 'invalid' ? r : bug());
        return this.#serverSecured(bytes, r.frame.sequenceOffset, null, out);
      }
      case 'MSG':
      case 'CLO': {
        const r = parseSymmetricHeader(bytes);
        if (r.kind !== 'frame') return this.#closeInvalid(out, r.kind === 'invalid' ? r : bug());
        const ch = this.#channel;
        // Request ids of responses are readable on None and Sign channels: an F or A chunk ends a response.
        const readable = ch !== null && (ch.securityMode === 'None' || ch.securityMode === 'Sign');
        const ended = readable && r.frame.chunkType !== 'C' ? r.frame.requestId : null;
        if (chunk.messageType === 'MSG') this.#serverMidMessage = r.frame.chunkType === 'C';
        if (this.#seq === null) {
          if (ended !== null) this.#outstanding.delete(ended);
          out.forward(bytes);
          return;
        }
        this.#serverSecured(bytes, SYMMETRIC_SEQUENCE_OFFSET, ended, out);
        if (!out.closed && !this.#serverMidMessage) this.#releaseFaults(out);
        return;
      }
      default:
        return this.#closeInvalid(out, {
          kind: 'invalid',
          code: 'opcua.unexpected-message',
          reason: `${chunk.messageType} from the server`,
        });
    }
  }

  /** The server's response ended: the faults held behind it go out now, in refusal order. */
  #releaseFaults(out: Verdicts<ServerVerdict>): void {
    const held = this.#heldFaults;
    this.#heldFaults = [];
    for (const f of held) {
      const fault = this.#buildFault(f);
      if (fault !== null) out.forward(fault);
    }
  }

  /** A server chunk on a None channel: sequence checked, renumbered if needed, forwarded. */
  #serverSecured(bytes: Buffer, seqOffset: number, ended: number | null, out: Verdicts<ServerVerdict>): void {
    const seq = this.#seq;
    if (seq === null || seqOffset + 8 > bytes.length) return this.#closeInvalid(out, bugInvalid());
    const n = bytes.readUInt32LE(seqOffset);
    if (!seq.server.arrive(n)) return this.#sequenceError(out, n);
    if (ended !== null) this.#outstanding.delete(ended);
    out.forward(withSequenceNumber(bytes, seqOffset, seq.server.emit(n)));
  }
}

/** What a ServiceFault needs, kept while it waits for the server's current response to end. */
interface HeldFault {
  channelId: number;
  tokenId: number;
  requestId: number;
  requestHandle: number;
  statusCode: number;
}

/**
 * Could this MSG chunk be SignAndEncrypt ciphertext? Not when the encrypted part (sequence header onwards) is
 * not whole AES blocks, nor when its body — read as if clear, signature removed — starts like a request.
 */
export function couldBeCiphertext(chunk: Buffer, signatureLength: number): boolean {
  if ((chunk.length - SYMMETRIC_SEQUENCE_OFFSET) % SYMMETRIC_BLOCK_SIZE !== 0) return false;
  const end = Math.max(SYMMETRIC_BODY_OFFSET, chunk.length - signatureLength);
  return !startsLikeRequest(chunk.subarray(SYMMETRIC_BODY_OFFSET, end));
}

function unknownChannel(): ChannelSecurity {
  return { securityPolicy: null, securityPolicyUri: '', securityMode: 'unknown', certificate: null };
}

function bugInvalid(): Invalid {
  return { kind: 'invalid', code: 'opcua.internal', reason: 'inspector state error' };
}

/** Unreachable states: throwing makes the proxy fail closed for this connection (inspector-error). */
function bug(): never {
  throw new Error('OpcuaInspector: unreachable state');
}

function resolveBudget(b: ReassemblyBudget | number | undefined): ReassemblyBudget {
  if (b === undefined) return sharedReassemblyBudget;
  return typeof b === 'number' ? new ReassemblyBudget(b) : b;
}

/** All inspectors of one factory share one reassembly budget (`options.reassemblyBudget`, see there). */
export function createOpcuaInspectorFactory(options: OpcuaInspectorOptions = {}): InspectorFactory {
  const shared: OpcuaInspectorOptions = {
    ...options,
    reassemblyBudget: resolveBudget(options.reassemblyBudget),
  };
  return { create: (ctx) => new OpcuaInspector(ctx, shared) };
}

export const opcuaInspectorFactory: InspectorFactory = createOpcuaInspectorFactory();
