/**
 * The UI's HTTP application: a Fastify instance with the JSON API under /api and the static pages.
 *
 * Every API route is declared once in ROUTES with its access rule ('public' or the roles allowed) and its
 * JSON schemas; one registration loop attaches the session, role and CSRF checks, so a new route cannot be
 * added without them (the tests iterate the same table). The UI process never touches nft or the policy
 * store: changes go through the daemon's control socket, and the daemon writes them to its audit log.
 */
import Fastify, {
  LogController,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerOptions,
  type FastifyHttpsOptions,
} from 'fastify';
import type https from 'node:https';
import fastifyCookie from '@fastify/cookie';
import fastifyStatic from '@fastify/static';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { ControlError } from '../gateway/control.ts';
import { MAX_QUERY_LIMIT, type LogQuery, type LogQueryResult } from '../gateway/logstore.ts';
import { BLOCKED_VERDICTS, BLOCKED_SOURCES, type StoredEvent } from '../gateway/events.ts';
import { validatePolicyText } from '../policies/validate.ts';
import { SluiceError } from '../policies/errors.ts';
import { UserStore, UserError, ROLES, USER_NAME_RE, type Role } from './users.ts';
import {
  SessionStore,
  LoginThrottle,
  FailureAuditLimiter,
  csrfMatches,
  sourceKey,
  type Session,
} from './auth.ts';
import { lineDiff } from './diff.ts';
import { csvHeader, csvRow } from './csv.ts';
import { proposeAllowRule, ProposalError, type ProposalEvent } from './propose.ts';
import { RequestPacer, type PacerOptions } from './pacer.ts';
import { setTimeout as sleep } from 'node:timers/promises';

export type DaemonCall = (method: string, params: Record<string, unknown>) => Promise<unknown>;

const DEFAULT_BANNER =
  'Authorised use only. This gateway protects industrial control equipment; every action is logged ' +
  'and attributed to your account.';

export interface AppOptions {
  stateDir: string;
  daemon: DaemonCall;
  /** Sets Secure cookies and HSTS. */
  https: boolean;
  logger?: Logger;
  idleTimeoutMs?: number;
  now?: () => number;
  banner?: string;
  /** Where the pages live (tests may point elsewhere); default: web-ui/public next to the sources. */
  publicDir?: string;
  /** Key and certificate: the server speaks HTTPS. */
  tlsOptions?: { key: string; cert: string };
  /**
   * Origins (`https://10.0.0.1:8443`) a state-changing request may come from. The Host header cannot be
   * trusted for this (DNS rebinding makes it the attacker's name), so only configured origins count; startUi
   * adds those of the listen address once the port is known. Requests without an Origin header (non-browser
   * clients) still need the session and CSRF token.
   */
  allowedOrigins?: readonly string[];
  /** Per-client request pacing (web-ui/pacer.ts); startUi turns it on, unit tests leave it off. */
  pacer?: Partial<PacerOptions>;
}

/** A recorded policy version as the daemon's `version` call returns it. */
interface RecordedVersion {
  id: number;
  text: string;
  hash: string;
  when: string;
  who: string;
}

export interface AppContext {
  app: FastifyInstance;
  users: UserStore;
  sessions: SessionStore;
  throttle: LoginThrottle;
  /** The accepted Origins; startUi adds the listen address's after binding. */
  origins: Set<string>;
}

type Access = 'public' | readonly Role[];

interface RouteContext {
  req: FastifyRequest;
  reply: FastifyReply;
  /** Set on every non-public route (the access hook guarantees it). */
  session: Session;
}

export interface RouteDef {
  method: 'GET' | 'POST' | 'DELETE';
  url: string;
  access: Access;
  summary: string;
  schema: { body?: object; querystring?: object; params?: object };
  handler: (ctx: RouteContext) => Promise<unknown>;
}

const ALL: readonly Role[] = ROLES;
const POLICY_READ: readonly Role[] = ['admin', 'integrator', 'auditor'];
const POLICY_WRITE: readonly Role[] = ['admin', 'integrator'];
const AUDIT: readonly Role[] = ['admin', 'auditor'];
const ADMIN: readonly Role[] = ['admin'];

const NAME = { type: 'string', pattern: USER_NAME_RE.source } as const;
const PASSWORD = { type: 'string', minLength: 1, maxLength: 1024 } as const;
const POLICY_TEXT = { type: 'string', maxLength: 1_000_000 } as const;
const SHORT = { type: 'string', minLength: 1, maxLength: 200 } as const;

const LOG_FILTERS = {
  since: { type: 'integer', minimum: 0 },
  until: { type: 'integer', minimum: 0 },
  zone: SHORT,
  fromZone: SHORT,
  toZone: SHORT,
  /** `-` selects events outside any conduit. */
  conduit: SHORT,
  flow: SHORT,
  src: SHORT,
  dst: SHORT,
  port: { type: 'integer', minimum: 0, maximum: 65535 },
  protocol: SHORT,
  verdict: { type: 'string', enum: [...BLOCKED_VERDICTS] },
  reason: SHORT,
  source: { type: 'string', enum: [...BLOCKED_SOURCES] },
} as const;

const COOKIE = 'sluice_session';
const SECURE_COOKIE = '__Host-sluice_session';
/** Sent by the pages' background polls: they must not restart the idle timer. */
export const POLL_HEADER = 'x-sluice-poll';
/** Exports stop at this many rows; the response says so in X-Sluice-Truncated. */
export const EXPORT_MAX_ROWS = 10_000;
/** The timeline reads at most this many pages; a flood beyond that is shown as "at least". */
const TIMELINE_MAX_PAGES = 5;
/** Daemon calls that change state: only these invalidate the cached read-only answers. */
const STATE_CHANGES = new Set(['apply', 'confirm', 'rollback']);

/** The pages: web-ui/public beside the sources, also when running from dist/web-ui. */
function defaultPublicDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, 'public'), resolve(here, '../../web-ui/public')];
  return candidates.find((c) => existsSync(join(c, 'index.html'))) ?? (candidates[0] as string);
}

function httpError(statusCode: number, error: string, message: string, extra: object = {}): Error {
  return Object.assign(new Error(message), { statusCode, error, extra });
}

function logQueryOf(q: Record<string, unknown>): LogQuery {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(LOG_FILTERS)) if (q[k] !== undefined) out[k] = q[k];
  if (out['conduit'] === '-') out['conduit'] = null;
  return out as LogQuery;
}

/** Builds the app without listening: tests drive it with inject(), startUi() binds it. */
export async function buildApp(opts: AppOptions): Promise<AppContext> {
  const now = opts.now ?? Date.now;
  const users = new UserStore(opts.stateDir, { now });
  const sessions = new SessionStore({ idleTimeoutMs: opts.idleTimeoutMs, now });
  const throttle = new LoginThrottle({ now });
  const banner = opts.banner ?? DEFAULT_BANNER;
  const cookieName = opts.https ? SECURE_COOKIE : COOKIE;
  const cookieOpts = { path: '/', secure: opts.https } as const;
  const log = opts.logger;
  const origins = new Set((opts.allowedOrigins ?? []).map((o) => o.toLowerCase()));
  const failureAudit = new FailureAuditLimiter({ now });

  const fastifyOpts: FastifyServerOptions = {
    bodyLimit: 2 * 1024 * 1024,
    // One log line per request would let a UI flood fill the journal; errors are still logged.
    logController: new LogController({ disableRequestLogging: true }),
    // Report unknown body fields instead of silently dropping them: typos must be visible.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false } },
  };
  if (log !== undefined) fastifyOpts.loggerInstance = log;
  // Fastify's types pick the server flavour from the https option; the routes do not care which.
  const app = (opts.tlsOptions === undefined
    ? Fastify(fastifyOpts)
    : Fastify({
        ...(fastifyOpts as FastifyHttpsOptions<https.Server>),
        https: opts.tlsOptions,
      })) as unknown as FastifyInstance;
  await app.register(fastifyCookie);

  // Security headers on every answer, pages and API alike.
  app.addHook('onSend', async (req, reply, payload) => {
    reply.header(
      'Content-Security-Policy',
      "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    );
    reply.header('X-Content-Type-Options', 'nosniff');
    reply.header('Referrer-Policy', 'no-referrer');
    reply.header('X-Frame-Options', 'DENY');
    reply.header('Cross-Origin-Opener-Policy', 'same-origin');
    if (opts.https) reply.header('Strict-Transport-Security', 'max-age=31536000');
    if (req.url.startsWith('/api/')) reply.header('Cache-Control', 'no-store');
    return payload;
  });

  app.setErrorHandler((err: Error & Record<string, unknown>, _req, reply) => {
    const validation = err['validation'] as
      | { instancePath: string; keyword: string; params: Record<string, unknown>; message?: string }[]
      | undefined;
    if (validation !== undefined && validation.length > 0) {
      const v = validation[0] as (typeof validation)[number];
      const where = String(err['validationContext'] ?? 'request');
      let field = v.instancePath.replace(/^\//, '').replace(/\//g, '.');
      const missing = v.params['missingProperty'] ?? v.params['additionalProperty'];
      if (typeof missing === 'string') field = field === '' ? missing : `${field}.${missing}`;
      const what =
        v.keyword === 'additionalProperties' ? 'is not a known field' : (v.message ?? 'is invalid');
      return reply.code(400).send({
        error: 'validation',
        field,
        message: `${where}.${field === '' ? '' : field + ' '}${what}`.trim(),
      });
    }
    const status = typeof err['statusCode'] === 'number' ? err['statusCode'] : undefined;
    if (err instanceof ControlError) {
      if (err.code === 'control.unreachable' || err.code === 'control.timeout')
        return reply.code(503).send({ error: err.code, message: err.message });
      if (err.code === 'apply.invalid-policy' || Array.isArray(err.data))
        return reply.code(422).send({ error: err.code, message: err.message, problems: err.data ?? [] });
      return reply.code(err.userError ? 409 : 500).send({ error: err.code, message: err.message });
    }
    if (err instanceof UserError || err instanceof ProposalError)
      return reply
        .code(err.code === 'user.unknown' ? 404 : 400)
        .send({ error: err.code, message: err.message });
    // 503 too: "try again when the daemon is back" is the client's to act on, not an internal error.
    if (status !== undefined && (status < 500 || status === 503))
      return reply.code(status).send({
        error: typeof err['error'] === 'string' ? err['error'] : 'request',
        message: err.message,
        ...((err['extra'] as object | undefined) ?? {}),
      });
    if (err instanceof SluiceError && err.userError)
      return reply.code(400).send({ error: err.code, message: err.message });
    reply.log.error({ err }, 'request failed');
    return reply.code(500).send({ error: 'internal', message: 'internal error' });
  });

  // Read-only daemon answers are shared for a short time and concurrent identical calls coalesce, so the
  // daemon (which also hosts the protocol filters) sees a bounded load however many browsers poll the UI.
  const rawDaemon = opts.daemon;
  const cache = new Map<string, { at: number; value: Promise<unknown> }>();
  // Recorded versions never change, so their text can stay longer.
  const CACHE_TTL: Record<string, number> = {
    status: 1000,
    'logs.query': 1000,
    audit: 1000,
    versions: 1000,
    version: 60_000,
  };
  const daemon: DaemonCall = async (method, params) => {
    const ttl = CACHE_TTL[method];
    if (ttl === undefined) {
      // Only a policy change makes cached answers wrong; audit.add and the like leave them valid.
      if (STATE_CHANGES.has(method)) cache.clear();
      try {
        return await rawDaemon(method, params);
      } finally {
        // Also after the answer: a read that raced with the change must not be served for its TTL.
        if (STATE_CHANGES.has(method)) cache.clear();
      }
    }
    const key = method + JSON.stringify(params);
    // Wall-clock time on purpose (not the injectable clock): this is about load, not about session policy.
    const t = Date.now();
    const hit = cache.get(key);
    if (hit !== undefined && t - hit.at < ttl) return await hit.value;
    if (cache.size > 500) cache.clear();
    const value = rawDaemon(method, params);
    cache.set(key, { at: t, value });
    value.catch(() => cache.delete(key));
    return await value;
  };

  /** For events (logins, logouts): a daemon that is down must not stop people from working. */
  const audit = async (who: string, action: string, detail: string): Promise<void> => {
    try {
      await daemon('audit.add', { who, action, detail });
    } catch (err) {
      // The audit log lives in the daemon; if it is down, the event must still be recorded somewhere.
      log?.warn({ who, action, detail, err }, 'audit entry not delivered to the daemon');
    }
  };
  /** For changes: no record, no change (503), so every account change is in the audit log. */
  const auditOrRefuse = async (who: string, action: string, detail: string): Promise<void> => {
    try {
      await daemon('audit.add', { who, action, detail });
    } catch (err) {
      log?.warn({ who, action, detail, err }, 'audit log unavailable; change refused');
      throw httpError(
        503,
        'audit.unavailable',
        'the audit log (daemon) is not reachable; nothing was changed',
      );
    }
  };
  const roleText = (r: Role | null) => (r === null ? '(none)' : r);
  const who = (s: Session) => `ui:${s.user}`;
  const sourceOf = (req: FastifyRequest) => req.ip;

  const sameOrigin = (req: FastifyRequest): boolean => {
    const origin = req.headers.origin;
    if (origin === undefined) return true;
    return origins.has(origin.toLowerCase());
  };

  const startSession = (reply: FastifyReply, user: string, role: Role, userCreated: string) => {
    const s = sessions.create(user, role, userCreated);
    reply.setCookie(cookieName, s.id, { ...cookieOpts, httpOnly: true, sameSite: 'strict' });
    return {
      user: s.user,
      role: s.role,
      csrf: s.csrf,
      idleTimeoutSec: Math.round(sessions.idleTimeoutMs / 1000),
    };
  };

  /**
   * Counts an attempt from this source before the slow password or token check, so parallel guesses cannot
   * slip past the throttle; throws 429 (with Retry-After) while the source must wait.
   */
  const throttleAttempt = (reply: FastifyReply, key: string, what: string) => {
    const a = throttle.attempt(key);
    if (a.refusedMs > 0) {
      const sec = Math.ceil(a.refusedMs / 1000);
      reply.header('Retry-After', String(sec));
      throw httpError(429, 'throttled', `too many failed ${what}; try again in ${sec} s`);
    }
    return a;
  };

  let topologyCache: { id: number; value: unknown } | undefined;
  const runningVersion = async (): Promise<RecordedVersion | null> => {
    const st = (await daemon('status', {})) as { version: { id: number } | null };
    if (st.version === null) return null;
    return (await daemon('version', { id: st.version.id })) as RecordedVersion;
  };

  /** Pages through logs.query, at most maxPages pages; truncated when rows remained after the last one. */
  const collectEvents = async (
    q: LogQuery,
    maxPages: number,
  ): Promise<{ events: StoredEvent[]; truncated: boolean }> => {
    const out: StoredEvent[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < maxPages; page++) {
      const lq: LogQuery = { ...q, limit: MAX_QUERY_LIMIT };
      if (cursor !== undefined) lq.cursor = cursor;
      const r = (await daemon('logs.query', lq as Record<string, unknown>)) as LogQueryResult;
      out.push(...r.events);
      cursor = r.nextCursor;
      if (cursor === undefined) return { events: out, truncated: false };
    }
    return { events: out, truncated: true };
  };

  const routes: RouteDef[] = [
    {
      method: 'GET',
      url: '/api/health',
      access: 'public',
      summary: 'Liveness of the UI process (no session needed)',
      schema: {},
      handler: async () => ({ ok: true }),
    },
    {
      method: 'GET',
      url: '/api/login',
      access: 'public',
      summary: 'Login banner and whether the first admin must still be created',
      schema: {},
      handler: async ({ req }) => {
        const s = sessions.touch(req.cookies[cookieName]);
        return {
          banner,
          setupNeeded: !(await users.hasAdmin()),
          session: s === undefined ? null : { user: s.user, role: s.role },
        };
      },
    },
    {
      method: 'POST',
      url: '/api/login',
      access: 'public',
      summary: 'Log in; sets the session cookie and returns the CSRF token',
      schema: {
        body: {
          type: 'object',
          required: ['name', 'password'],
          additionalProperties: false,
          properties: { name: { type: 'string', maxLength: 64 }, password: PASSWORD },
        },
      },
      handler: async ({ req, reply }) => {
        const body = req.body as { name: string; password: string };
        const source = sourceOf(req);
        const key = sourceKey(source);
        const a = throttleAttempt(reply, key, 'logins');
        const user = await users.authenticate(body.name, body.password);
        if (user === undefined) {
          const w = failureAudit.record(key);
          if (w.write)
            await audit(
              `ui:${body.name.replace(/[^a-z0-9._-]/g, '?').slice(0, 32)}`,
              'ui.login-failed',
              `from ${source}` +
                (w.count > 1 ? `; ${w.count} failures from ${key} in the last minute` : '') +
                (w.othersHeld > 0 ? `; ${w.othersHeld} failures from other sources not logged singly` : '') +
                (a.delayIfFailed > 0
                  ? `; next attempt allowed in ${Math.ceil(a.delayIfFailed / 1000)} s`
                  : ''),
            );
          throw httpError(401, 'bad-credentials', 'wrong user name or password');
        }
        throttle.success(key);
        await audit(`ui:${user.name}`, 'ui.login', `from ${source}`);
        return startSession(reply, user.name, user.role, user.created);
      },
    },
    {
      method: 'POST',
      url: '/api/setup',
      access: 'public',
      summary: 'Create the first admin with the one-time setup token printed at first start',
      schema: {
        body: {
          type: 'object',
          required: ['token', 'name', 'password'],
          additionalProperties: false,
          properties: {
            token: { type: 'string', minLength: 1, maxLength: 200 },
            name: NAME,
            password: PASSWORD,
          },
        },
      },
      handler: async ({ req, reply }) => {
        const body = req.body as { token: string; name: string; password: string };
        const source = sourceOf(req);
        const key = sourceKey(source);
        throttleAttempt(reply, key, 'attempts');
        await users.consumeSetupToken(body.token, body.name, body.password, {
          beforeCommit: (c) =>
            auditOrRefuse(
              `ui:${body.name}`,
              'ui.user-add',
              `first admin '${c.name}' created with the setup token from ${source}; role ${roleText(c.before)} → ${roleText(c.after)}`,
            ),
        });
        throttle.success(key);
        const rec = await users.get(body.name);
        return startSession(reply, body.name, 'admin', rec?.created ?? '');
      },
    },
    {
      method: 'POST',
      url: '/api/logout',
      access: ALL,
      summary: 'End the session (forgotten by the server)',
      schema: {},
      handler: async ({ session, reply }) => {
        sessions.destroy(session.id);
        reply.clearCookie(cookieName, cookieOpts);
        await audit(who(session), 'ui.logout', '');
        return { ok: true };
      },
    },
    {
      method: 'GET',
      url: '/api/session',
      access: ALL,
      summary: 'The current user, role and CSRF token',
      schema: {},
      handler: async ({ session }) => ({
        user: session.user,
        role: session.role,
        csrf: session.csrf,
        idleTimeoutSec: Math.round(sessions.idleTimeoutMs / 1000),
      }),
    },
    {
      method: 'GET',
      url: '/api/openapi.json',
      access: ALL,
      summary: 'This API as an OpenAPI 3.1 document',
      schema: {},
      handler: async () => openApi(routes, cookieName),
    },
    {
      method: 'GET',
      url: '/api/status',
      access: ALL,
      summary: 'Daemon status: mode, running version, pending confirmation, counters, proxies',
      schema: {},
      handler: async () => ({ now: now(), daemon: await daemon('status', {}) }),
    },
    {
      method: 'GET',
      url: '/api/topology',
      access: ALL,
      summary: 'Zones and conduits of the running policy, for the diagram',
      schema: {},
      handler: async () => {
        const v = await runningVersion();
        if (v === null) return { versionId: null, zones: [], conduits: [] };
        // Validating the text is the costly part: done once per running version.
        if (topologyCache?.id === v.id) return topologyCache.value;
        const r = validatePolicyText(v.text, 'running', { now: new Date(v.when) });
        const p = r.policy;
        const value = {
          versionId: v.id,
          zones:
            p === undefined
              ? []
              : [...p.zones.values()].map((z) => ({
                  name: z.name,
                  securityLevel: z.securityLevel,
                  description: z.description ?? '',
                  networks: z.networks.map((n) => n.text),
                })),
          conduits:
            p === undefined
              ? []
              : [...p.conduits.values()].map((c) => ({
                  name: c.name,
                  from: c.from,
                  to: c.to,
                  mode: c.mode,
                  flows: c.flows.map((f) => ({ name: f.name, protocol: f.protocol })),
                })),
        };
        topologyCache = { id: v.id, value };
        return value;
      },
    },
    {
      method: 'GET',
      url: '/api/policy',
      access: POLICY_READ,
      summary: 'The running policy text',
      schema: {},
      handler: async () => {
        const v = await runningVersion();
        return v === null
          ? { versionId: null, text: '', hash: null }
          : { versionId: v.id, text: v.text, hash: v.hash, when: v.when, who: v.who };
      },
    },
    {
      method: 'POST',
      url: '/api/policy/validate',
      access: POLICY_WRITE,
      summary: 'Validate and lint a policy text; problems carry line and column',
      schema: {
        body: {
          type: 'object',
          required: ['text'],
          additionalProperties: false,
          properties: { text: POLICY_TEXT },
        },
      },
      handler: async ({ req }) => {
        const r = validatePolicyText((req.body as { text: string }).text, 'editor', { now: new Date(now()) });
        return { ok: r.ok, errors: r.errors, warnings: r.warnings, lint: r.lint };
      },
    },
    {
      method: 'POST',
      url: '/api/policy/diff',
      access: POLICY_READ,
      summary: 'Line diff of a policy text against the running version (or a given version)',
      schema: {
        body: {
          type: 'object',
          required: ['text'],
          additionalProperties: false,
          properties: { text: POLICY_TEXT, versionId: { type: 'integer', minimum: 1 } },
        },
      },
      handler: async ({ req }) => {
        const body = req.body as { text: string; versionId?: number };
        const base =
          body.versionId === undefined
            ? ((await runningVersion())?.text ?? '')
            : ((await daemon('version', { id: body.versionId })) as { text: string }).text;
        return { lines: lineDiff(base, body.text) };
      },
    },
    {
      method: 'POST',
      url: '/api/policy/apply',
      access: POLICY_WRITE,
      summary: 'Apply a policy through the daemon, optionally rolled back unless confirmed in time',
      schema: {
        body: {
          type: 'object',
          required: ['text'],
          additionalProperties: false,
          properties: {
            text: POLICY_TEXT,
            comment: { type: 'string', maxLength: 500 },
            confirmWithinSec: { type: 'integer', minimum: 5, maximum: 3600 },
          },
        },
      },
      handler: async ({ req, session }) => {
        const body = req.body as { text: string; comment?: string; confirmWithinSec?: number };
        const params: Record<string, unknown> = { text: body.text, file: 'web-ui', who: who(session) };
        if (body.comment !== undefined && body.comment !== '') params['comment'] = body.comment;
        if (body.confirmWithinSec !== undefined) params['confirmWithinSec'] = body.confirmWithinSec;
        const r = (await daemon('apply', params)) as {
          versionId: number;
          status: string;
          pending: unknown;
          previousVersionId: number | null;
          lint: unknown;
          warnings: unknown;
          proxyError?: string;
        };
        return {
          versionId: r.versionId,
          status: r.status,
          pending: r.pending,
          previousVersionId: r.previousVersionId,
          lint: r.lint,
          warnings: r.warnings,
          proxyError: r.proxyError ?? null,
        };
      },
    },
    {
      method: 'POST',
      url: '/api/policy/confirm',
      access: POLICY_WRITE,
      summary: 'Keep the applied version (cancels the automatic rollback)',
      schema: {},
      handler: async ({ session }) => await daemon('confirm', { who: who(session) }),
    },
    {
      method: 'POST',
      url: '/api/policy/rollback',
      access: POLICY_WRITE,
      summary: 'Restore a recorded version (default: the previous confirmed one)',
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          properties: { versionId: { type: 'integer', minimum: 1 } },
        },
      },
      handler: async ({ req, session }) => {
        const body = (req.body ?? {}) as { versionId?: number };
        const params: Record<string, unknown> = { who: who(session) };
        if (body.versionId !== undefined) params['versionId'] = body.versionId;
        return await daemon('rollback', params);
      },
    },
    {
      method: 'GET',
      url: '/api/policy/versions',
      access: POLICY_READ,
      summary: 'Recorded policy versions, newest first',
      schema: {},
      handler: async () =>
        ((await daemon('versions', {})) as { id: number }[]).slice().sort((a, b) => b.id - a.id),
    },
    {
      method: 'GET',
      url: '/api/policy/versions/:id',
      access: POLICY_READ,
      summary: 'One recorded version with its full text',
      schema: {
        params: { type: 'object', required: ['id'], properties: { id: { type: 'integer', minimum: 1 } } },
      },
      handler: async ({ req }) => await daemon('version', { id: (req.params as { id: number }).id }),
    },
    {
      method: 'GET',
      url: '/api/logs',
      access: ALL,
      summary: 'Blocked events, newest first, filtered and paged',
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            ...LOG_FILTERS,
            limit: { type: 'integer', minimum: 1, maximum: MAX_QUERY_LIMIT },
            cursor: { type: 'string', maxLength: 200 },
            total: { type: 'boolean' },
          },
        },
      },
      handler: async ({ req }) => {
        const q = req.query as Record<string, unknown>;
        const lq = logQueryOf(q);
        lq.limit = (q['limit'] as number | undefined) ?? 100;
        if (typeof q['cursor'] === 'string') lq.cursor = q['cursor'];
        if (q['total'] === true) lq.total = true;
        return await daemon('logs.query', lq as Record<string, unknown>);
      },
    },
    {
      method: 'GET',
      url: '/api/logs/timeline',
      access: ALL,
      summary: 'Blocked events per time bucket (sum of aggregated counts), for the chart',
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            minutes: { type: 'integer', minimum: 1, maximum: 1440 },
            buckets: { type: 'integer', minimum: 1, maximum: 120 },
          },
        },
      },
      handler: async ({ req }) => {
        const q = req.query as { minutes?: number; buckets?: number };
        const minutes = q.minutes ?? 60;
        const n = q.buckets ?? 30;
        // Aligned to the bucket width: within one bucket every poll asks the same question, so the
        // daemon cache answers it (a raw now() in the key would never hit).
        const width = Math.max(1, Math.round((minutes * 60_000) / n));
        const end = Math.ceil(now() / width) * width;
        const start = end - width * n;
        const counts = new Array<number>(n).fill(0);
        const { events, truncated } = await collectEvents(
          { since: start, until: end + 1 },
          TIMELINE_MAX_PAGES,
        );
        for (const e of events) {
          const i = Math.min(n - 1, Math.max(0, Math.floor((e.time - start) / width)));
          counts[i] = (counts[i] ?? 0) + e.count;
        }
        return { start, end, bucketMs: width, counts, truncated };
      },
    },
    {
      method: 'GET',
      url: '/api/logs/export.csv',
      access: ALL,
      summary:
        'Blocked events as CSV (formula-injection guarded), at most 10,000 rows (X-Sluice-Truncated says when cut)',
      schema: { querystring: { type: 'object', additionalProperties: false, properties: LOG_FILTERS } },
      handler: async ({ req, reply }) => {
        const { events, truncated } = await collectEvents(
          logQueryOf(req.query as Record<string, unknown>),
          EXPORT_MAX_ROWS / MAX_QUERY_LIMIT,
        );
        if (truncated) reply.header('X-Sluice-Truncated', String(EXPORT_MAX_ROWS));
        reply.header('Content-Type', 'text/csv; charset=utf-8');
        reply.header('Content-Disposition', 'attachment; filename="sluice-blocked.csv"');
        return csvHeader() + events.map(csvRow).join('');
      },
    },
    {
      method: 'GET',
      url: '/api/logs/export.json',
      access: ALL,
      summary: 'Blocked events as a JSON array, at most 10,000 rows (X-Sluice-Truncated says when cut)',
      schema: { querystring: { type: 'object', additionalProperties: false, properties: LOG_FILTERS } },
      handler: async ({ req, reply }) => {
        const { events, truncated } = await collectEvents(
          logQueryOf(req.query as Record<string, unknown>),
          EXPORT_MAX_ROWS / MAX_QUERY_LIMIT,
        );
        if (truncated) reply.header('X-Sluice-Truncated', String(EXPORT_MAX_ROWS));
        reply.header('Content-Disposition', 'attachment; filename="sluice-blocked.json"');
        return events;
      },
    },
    {
      method: 'POST',
      url: '/api/logs/propose',
      access: POLICY_WRITE,
      summary: 'A proposed allow rule for a blocked event, as new policy text and a diff',
      schema: {
        body: {
          type: 'object',
          required: ['event'],
          additionalProperties: false,
          properties: {
            event: {
              type: 'object',
              required: ['src', 'dst', 'protocol', 'source', 'reason'],
              properties: {
                conduit: SHORT,
                flow: SHORT,
                fromZone: SHORT,
                toZone: SHORT,
                src: SHORT,
                dst: SHORT,
                dstPort: { type: 'integer', minimum: 0, maximum: 65535 },
                protocol: SHORT,
                source: SHORT,
                reason: SHORT,
                detail: { type: 'object' },
              },
            },
          },
        },
      },
      handler: async ({ req }) => {
        const v = await runningVersion();
        if (v === null) throw httpError(409, 'no-policy', 'no policy is running');
        const p = proposeAllowRule(v.text, (req.body as { event: ProposalEvent }).event);
        return { ...p, baseVersionId: v.id, diff: lineDiff(v.text, p.text) };
      },
    },
    {
      method: 'GET',
      url: '/api/audit',
      access: AUDIT,
      summary: 'The audit log, newest first',
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { limit: { type: 'integer', minimum: 1, maximum: 10000 } },
        },
      },
      handler: async ({ req }) => {
        const a = (await daemon('audit', {})) as { entries: unknown[]; dropped: number };
        const limit = (req.query as { limit?: number }).limit ?? 500;
        return { entries: a.entries.slice(-limit).reverse(), dropped: a.dropped, total: a.entries.length };
      },
    },
    {
      method: 'GET',
      url: '/api/audit/diff/:versionId',
      access: AUDIT,
      summary: 'Line diff of a recorded version against the version recorded before it (for audit entries)',
      schema: {
        params: {
          type: 'object',
          required: ['versionId'],
          properties: { versionId: { type: 'integer', minimum: 1 } },
        },
      },
      handler: async ({ req }) => {
        const id = (req.params as { versionId: number }).versionId;
        const list = (await daemon('versions', {})) as { id: number }[];
        if (!list.some((v) => v.id === id)) throw httpError(404, 'not-found', `no version ${id}`);
        const prev = list.reduce<number | null>(
          (m, v) => (v.id < id && (m === null || v.id > m) ? v.id : m),
          null,
        );
        const cur = (await daemon('version', { id })) as { text: string };
        const base = prev === null ? '' : ((await daemon('version', { id: prev })) as { text: string }).text;
        return { versionId: id, previousVersionId: prev, lines: lineDiff(base, cur.text) };
      },
    },
    {
      method: 'GET',
      url: '/api/users',
      access: ADMIN,
      summary: 'UI accounts',
      schema: {},
      handler: async () => await users.list(),
    },
    {
      method: 'POST',
      url: '/api/users',
      access: ADMIN,
      summary: 'Add a UI account',
      schema: {
        body: {
          type: 'object',
          required: ['name', 'role', 'password'],
          additionalProperties: false,
          properties: { name: NAME, role: { type: 'string', enum: [...ROLES] }, password: PASSWORD },
        },
      },
      handler: async ({ req, session, reply }) => {
        const body = req.body as { name: string; role: Role; password: string };
        await users.add(body.name, body.role, body.password, {
          beforeCommit: (c) =>
            auditOrRefuse(
              who(session),
              'ui.user-add',
              `added '${c.name}' as ${body.role}; role ${roleText(c.before)} → ${roleText(c.after)}`,
            ),
        });
        reply.code(201);
        return { name: body.name, role: body.role };
      },
    },
    {
      method: 'DELETE',
      url: '/api/users/:name',
      access: ADMIN,
      summary: 'Remove a UI account and end its sessions',
      schema: { params: { type: 'object', required: ['name'], properties: { name: NAME } } },
      handler: async ({ req, session }) => {
        const name = (req.params as { name: string }).name;
        await users.remove(name, {
          beforeCommit: (c) =>
            auditOrRefuse(
              who(session),
              'ui.user-remove',
              `removed '${c.name}'; role ${roleText(c.before)} → ${roleText(c.after)}`,
            ),
        });
        sessions.destroyUser(name);
        return { ok: true };
      },
    },
  ];

  const pacer = opts.pacer === undefined ? undefined : new RequestPacer(opts.pacer);
  for (const r of routes) {
    app.route({
      method: r.method,
      url: r.url,
      schema: r.schema,
      // onRequest runs before body parsing and validation: an anonymous request learns nothing but 401.
      onRequest: async (req, reply) => {
        if (pacer !== undefined) {
          // Paced per session (or per source before login) before any work is done for the request.
          const cookie = req.cookies[cookieName];
          const d = pacer.decide(cookie !== undefined ? `s:${cookie}` : `ip:${sourceKey(req.ip)}`);
          if (d.kind === 'reject') {
            reply.header('retry-after', String(Math.ceil(d.retryAfterMs / 1000)));
            throw httpError(429, 'rate-limited', 'too many requests from this client; slow down');
          }
          if (d.delayMs > 0) await sleep(d.delayMs);
        }
        const changes = req.method !== 'GET' && req.method !== 'HEAD';
        if (changes && !sameOrigin(req)) throw httpError(403, 'origin', 'cross-origin request refused');
        if (r.access === 'public') return;
        const session = sessions.touch(req.cookies[cookieName], {
          refresh: req.headers[POLL_HEADER] !== '1',
        });
        if (session === undefined) {
          reply.clearCookie(cookieName, cookieOpts);
          throw httpError(401, 'unauthenticated', 'log in first (or the session expired)');
        }
        // An account removed (here or with `sluice user remove`), or removed and re-added with another role,
        // loses its sessions at the next request: the session must match the stored record.
        const rec = await users.get(session.user);
        if (rec === undefined || rec.role !== session.role || rec.created !== session.userCreated) {
          sessions.destroy(session.id);
          reply.clearCookie(cookieName, cookieOpts);
          throw httpError(401, 'unauthenticated', 'this account no longer exists or has changed');
        }
        if (!r.access.includes(session.role))
          throw httpError(403, 'forbidden', `the ${session.role} role may not use ${r.method} ${r.url}`);
        if (changes && !csrfMatches(session, req.headers['x-csrf-token'] as string | undefined))
          throw httpError(403, 'csrf', 'missing or wrong X-CSRF-Token header');
        (req as FastifyRequest & { session?: Session }).session = session;
      },
      handler: async (req, reply) =>
        await r.handler({ req, reply, session: (req as FastifyRequest & { session: Session }).session }),
    });
  }
  routeTables.set(app, routes);

  await app.register(fastifyStatic, {
    root: opts.publicDir ?? defaultPublicDir(),
    prefix: '/',
    index: ['index.html'],
    // Pages change with the software version only; revalidate so an upgrade shows at once.
    cacheControl: true,
    maxAge: 0,
  });
  app.setNotFoundHandler((req, reply) => {
    if (req.url.startsWith('/api/'))
      return reply.code(404).send({ error: 'not-found', message: 'no such API route' });
    return reply.code(404).type('text/plain').send('not found');
  });

  return { app, users, sessions, throttle, origins };
}

const routeTables = new WeakMap<FastifyInstance, RouteDef[]>();

/** The route table of an app built by buildApp (tests iterate it). */
export function routesOf(app: FastifyInstance): readonly RouteDef[] {
  return routeTables.get(app) ?? [];
}

function openApi(routes: readonly RouteDef[], cookieName: string): object {
  const paths: Record<string, Record<string, object>> = {};
  for (const r of routes) {
    const path = r.url.replace(/:([A-Za-z]+)/g, '{$1}');
    const parameters: object[] = [];
    for (const [where, schema] of [
      ['query', r.schema.querystring],
      ['path', r.schema.params],
    ] as const) {
      const props =
        (schema as { properties?: Record<string, object>; required?: string[] } | undefined) ?? {};
      for (const [name, s] of Object.entries(props.properties ?? {}))
        parameters.push({
          name,
          in: where,
          required: where === 'path' || (props.required ?? []).includes(name),
          schema: s,
        });
    }
    const op: Record<string, unknown> = {
      summary: r.summary,
      'x-sluice-access': r.access === 'public' ? 'public' : [...r.access],
      responses: { '200': { description: 'OK' } },
    };
    if (r.access !== 'public') op['security'] = [{ session: [] }];
    if (parameters.length > 0) op['parameters'] = parameters;
    if (r.schema.body !== undefined)
      op['requestBody'] = { required: true, content: { 'application/json': { schema: r.schema.body } } };
    (paths[path] ??= {})[r.method.toLowerCase()] = op;
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Sluice gateway API',
      version: '1',
      description:
        'State-changing requests need the session cookie and the X-CSRF-Token header returned by /api/login.',
    },
    components: { securitySchemes: { session: { type: 'apiKey', in: 'cookie', name: cookieName } } },
    paths,
  };
}
