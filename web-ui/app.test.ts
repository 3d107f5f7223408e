import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, rm, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { ControlServer, ControlError, controlCall } from '../gateway/control.ts';
import { buildApp, routesOf, type AppContext } from './app.ts';
import { startUi } from './server.ts';
import { USERS_FILE } from './users.ts';
import { MAX_DELAY_MS } from './auth.ts';
import pino from 'pino';

const quiet = pino({ level: 'silent' });

const POLICY = `version: 1
gateway:
  name: gw
  management: { interface: mgmt0, allowFrom: [192.168.100.0/24] }
zones:
  ops: { securityLevel: 2, interfaces: [eth1], networks: [10.1.0.0/24] }
  cell: { securityLevel: 3, interfaces: [eth2], networks: [10.2.0.0/24] }
assets:
  hmi: { zone: ops, addresses: [10.1.0.10] }
  plc: { zone: cell, addresses: [10.2.0.20] }
conduits:
  hmi-to-plc:
    from: ops
    to: cell
    flows:
      - name: poll
        protocol: modbus
        from: [hmi]
        to: [plc]
        modbus:
          rules:
            - functions: [read-holding-registers]
              addresses: 0-999
`;

const PASSWORD = 'correct horse battery';

interface Fake {
  calls: { method: string; params: Record<string, unknown> }[];
  server: ControlServer;
}

async function fakeDaemon(dir: string): Promise<Fake> {
  const calls: Fake['calls'] = [];
  const rec =
    (method: string, fn: (p: Record<string, unknown>) => unknown) => async (p: Record<string, unknown>) => {
      calls.push({ method, params: p });
      return fn(p);
    };
  const server = new ControlServer(join(dir, 'fake.sock'), {
    status: rec('status', () => ({
      mode: 'policy',
      version: { id: 1, hash: 'abc', when: '2026-01-01T00:00:00Z', who: 'demo', comment: null },
      pending: null,
      flows: [],
      conduitDrops: {},
      blocked: [],
      log: { stored: 0 },
      proxies: [],
    })),
    version: rec('version', (p) => ({
      id: p['id'],
      text: p['id'] === 2 ? POLICY.replace('addresses: 0-999', 'addresses: 0-99') + '# v2\n' : POLICY,
      hash: 'abc',
      when: '2026-01-01T00:00:00Z',
      who: 'demo',
    })),
    versions: rec('versions', () => [
      { id: 1, status: 'confirmed' },
      { id: 2, status: 'confirmed' },
    ]),
    apply: rec('apply', (p) => {
      if (String(p['text']).includes('broken'))
        throw new ControlError('apply.invalid-policy', 'invalid', [
          { severity: 'error', code: 'schema', path: [], message: 'bad' },
        ]);
      return { versionId: 2, status: 'applied', pending: null, previousVersionId: 1, lint: {}, warnings: [] };
    }),
    confirm: rec('confirm', () => ({ versionId: 2 })),
    rollback: rec('rollback', () => ({ mode: 'policy', fromVersionId: 2, toVersionId: 1 })),
    audit: rec('audit', () => ({
      entries: [{ seq: 1, time: '2026-01-01T00:00:00Z', who: 'x', action: 'boot', detail: '' }],
      dropped: 0,
    })),
    'audit.add': rec('audit.add', () => ({})),
    'logs.query': rec('logs.query', () => ({
      events: [
        {
          id: 7,
          time: Date.UTC(2026, 0, 1),
          src: '10.1.0.10',
          dst: '10.2.0.20',
          dstPort: 22,
          protocol: 'tcp',
          verdict: 'drop',
          reason: 'no-flow',
          source: 'nflog',
          conduit: '=HYPERLINK("x")',
          count: 3,
        },
      ],
    })),
  });
  await server.start();
  return { calls, server };
}

let dir: string;
let fake: Fake;
let ctx: AppContext;
let app: FastifyInstance;
let clock = Date.now();

/** A concrete URL for a route pattern (a user that does not exist, so DELETE changes nothing). */
function urlOf(pattern: string): string {
  return pattern.replace(':versionId', '2').replace(':id', '1').replace(':name', 'nobody');
}

function cookieOf(res: { headers: Record<string, unknown> }): string {
  const set = res.headers['set-cookie'];
  const first = Array.isArray(set) ? String(set[0]) : String(set);
  return first.split(';')[0] as string;
}

function nameOf(role: string): string {
  return { admin: 'alice', integrator: 'ivan', operator: 'olga', auditor: 'audrey' }[role] ?? role;
}

async function login(name: string, password = PASSWORD, ip = '10.0.0.1') {
  const res = await app.inject({
    method: 'POST',
    url: '/api/login',
    payload: { name, password },
    remoteAddress: ip,
  });
  expect(res.statusCode, res.body).toBe(200);
  return { cookie: cookieOf(res), csrf: (res.json() as { csrf: string }).csrf };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sluice-ui-'));
  fake = await fakeDaemon(dir);
  ctx = await buildApp({
    stateDir: dir,
    https: false,
    daemon: (m, p) => controlCall(fake.server.socketPath, m, p),
    idleTimeoutMs: 60_000,
    now: () => clock,
    logger: quiet,
    allowedOrigins: ['http://gw:8443'],
  });
  app = ctx.app;
  await ctx.users.add('alice', 'admin', PASSWORD);
  await ctx.users.add('ivan', 'integrator', PASSWORD);
  await ctx.users.add('olga', 'operator', PASSWORD);
  await ctx.users.add('audrey', 'auditor', PASSWORD);
});

afterAll(async () => {
  await app?.close();
  await fake?.server.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('access control', () => {
  it('every route except health, login and setup needs a session', async () => {
    const routes = routesOf(app);
    expect(routes.length).toBeGreaterThan(20);
    const pub = routes.filter((r) => r.access === 'public').map((r) => `${r.method} ${r.url}`);
    expect(pub.sort()).toEqual(['GET /api/health', 'GET /api/login', 'POST /api/login', 'POST /api/setup']);
    for (const r of routes.filter((x) => x.access !== 'public')) {
      const res = await app.inject({
        method: r.method,
        url: urlOf(r.url),
        payload: r.method === 'GET' ? undefined : {},
      });
      expect(res.statusCode, `${r.method} ${r.url}`).toBe(401);
    }
    expect((await app.inject({ method: 'GET', url: '/api/health' })).statusCode).toBe(200);
  });

  it('a forged or stale cookie is not a session', async () => {
    const res = await app.inject({
      method: 'GET',
      url: '/api/status',
      headers: { cookie: 'sluice_session=forged' },
    });
    expect(res.statusCode).toBe(401);
  });

  it('roles: each route answers 403 to the roles it does not list, and something else to those it does', async () => {
    const sess = {
      admin: await login('alice'),
      integrator: await login('ivan'),
      operator: await login('olga'),
      auditor: await login('audrey'),
    };
    for (const r of routesOf(app).filter((x) => x.access !== 'public' && x.method === 'GET')) {
      for (const [role, s] of Object.entries(sess)) {
        const res = await app.inject({
          method: 'GET',
          url: urlOf(r.url),
          headers: { cookie: s.cookie },
        });
        const allowed = (r.access as readonly string[]).includes(role);
        if (allowed) expect(res.statusCode, `${role} GET ${r.url}: ${res.body}`).toBe(200);
        else expect(res.statusCode, `${role} GET ${r.url}`).toBe(403);
      }
    }
    // Every state-changing route × role, with and without the CSRF token. Bodies are empty on purpose:
    // an allowed request then fails validation (400) instead of changing anything, after the access checks.
    const changing = routesOf(app).filter((x) => x.access !== 'public' && x.method !== 'GET');
    expect(changing.length).toBeGreaterThan(6);
    for (const r of changing) {
      for (const role of Object.keys(sess) as (keyof typeof sess)[]) {
        const allowed = (r.access as readonly string[]).includes(role);
        const s = sess[role];
        const without = await app.inject({
          method: r.method,
          url: urlOf(r.url),
          headers: { cookie: s.cookie },
          payload: {},
        });
        expect(without.statusCode, `${role} ${r.method} ${r.url} without CSRF`).toBe(403);
        expect((without.json() as { error: string }).error).toBe(allowed ? 'csrf' : 'forbidden');
        const withToken = await app.inject({
          method: r.method,
          url: urlOf(r.url),
          headers: { cookie: s.cookie, 'x-csrf-token': s.csrf },
          payload: {},
        });
        if (allowed)
          expect([401, 403], `${role} ${r.method} ${r.url}: ${withToken.body}`).not.toContain(
            withToken.statusCode,
          );
        else expect(withToken.statusCode, `${role} ${r.method} ${r.url}`).toBe(403);
        // Logout ended that session: log in again for the next routes.
        if (r.url === '/api/logout' && allowed) sess[role] = await login(nameOf(role));
      }
    }
    const op = sess.operator;
    const apply = await app.inject({
      method: 'POST',
      url: '/api/policy/apply',
      headers: { cookie: op.cookie, 'x-csrf-token': op.csrf },
      payload: { text: POLICY },
    });
    expect(apply.statusCode).toBe(403);
    const aud = sess.auditor;
    const add = await app.inject({
      method: 'POST',
      url: '/api/users',
      headers: { cookie: aud.cookie, 'x-csrf-token': aud.csrf },
      payload: { name: 'x', role: 'admin', password: PASSWORD },
    });
    expect(add.statusCode).toBe(403);
  });
});

describe('CSRF and origin', () => {
  it('a state change without the CSRF header, with a wrong one, or from another origin is refused', async () => {
    const s = await login('ivan');
    const confirms = () => fake.calls.filter((c) => c.method === 'confirm').length;
    const before = confirms();
    const base = { method: 'POST' as const, url: '/api/policy/confirm', payload: {} };
    expect((await app.inject({ ...base, headers: { cookie: s.cookie } })).statusCode).toBe(403);
    expect(
      (await app.inject({ ...base, headers: { cookie: s.cookie, 'x-csrf-token': 'nope' } })).json(),
    ).toMatchObject({ error: 'csrf' });
    const cross = await app.inject({
      ...base,
      headers: { cookie: s.cookie, 'x-csrf-token': s.csrf, origin: 'https://evil.example', host: 'gw:8443' },
    });
    expect(cross.statusCode).toBe(403);
    // DNS rebinding: the attacker's name resolves to the gateway, so Host and Origin agree: still refused.
    const rebound = await app.inject({
      ...base,
      headers: {
        cookie: s.cookie,
        'x-csrf-token': s.csrf,
        origin: 'http://evil.example:8443',
        host: 'evil.example:8443',
      },
    });
    expect(rebound.statusCode, rebound.body).toBe(403);
    expect(rebound.json()).toMatchObject({ error: 'origin' });
    expect(confirms()).toBe(before);
    const ok = await app.inject({
      ...base,
      headers: { cookie: s.cookie, 'x-csrf-token': s.csrf, origin: 'http://gw:8443', host: 'gw:8443' },
    });
    expect(ok.statusCode, ok.body).toBe(200);
    expect(fake.calls.filter((c) => c.method === 'confirm').at(-1)?.params).toEqual({ who: 'ui:ivan' });
    // No Origin header (curl, scripts): the session and CSRF token decide.
    const noOrigin = await app.inject({ ...base, headers: { cookie: s.cookie, 'x-csrf-token': s.csrf } });
    expect(noOrigin.statusCode).toBe(200);
  });
});

describe('validation errors name the field', () => {
  it('missing, wrongly typed and unknown fields', async () => {
    const s = await login('alice');
    const h = { cookie: s.cookie, 'x-csrf-token': s.csrf };
    const missing = await app.inject({
      method: 'POST',
      url: '/api/users',
      headers: h,
      payload: { name: 'bob', role: 'operator' },
    });
    expect(missing.statusCode).toBe(400);
    expect(missing.json()).toMatchObject({ error: 'validation', field: 'password' });
    const badRole = await app.inject({
      method: 'POST',
      url: '/api/users',
      headers: h,
      payload: { name: 'bob', role: 'root', password: PASSWORD },
    });
    expect(badRole.json()).toMatchObject({ field: 'role' });
    const extra = await app.inject({
      method: 'POST',
      url: '/api/policy/apply',
      headers: h,
      payload: { text: POLICY, confirmWithin: 5 },
    });
    expect(extra.json()).toMatchObject({ field: 'confirmWithin' });
    const q = await app.inject({ method: 'GET', url: '/api/logs?port=99999', headers: { cookie: s.cookie } });
    expect(q.statusCode).toBe(400);
    expect(q.json()).toMatchObject({ field: 'port' });
    const weak = await app.inject({
      method: 'POST',
      url: '/api/users',
      headers: h,
      payload: { name: 'bob', role: 'operator', password: 'short' },
    });
    expect(weak.statusCode).toBe(400);
    expect(weak.json()).toMatchObject({ error: 'user.weak-password' });
  });
});

describe('policy and logs through the daemon', () => {
  it('apply passes the UI user as who; an invalid policy comes back with its problems', async () => {
    const s = await login('ivan');
    const h = { cookie: s.cookie, 'x-csrf-token': s.csrf };
    const ok = await app.inject({
      method: 'POST',
      url: '/api/policy/apply',
      headers: h,
      payload: { text: POLICY, confirmWithinSec: 30, comment: 'c' },
    });
    expect(ok.statusCode, ok.body).toBe(200);
    expect(fake.calls.find((c) => c.method === 'apply')?.params).toMatchObject({
      who: 'ui:ivan',
      confirmWithinSec: 30,
      comment: 'c',
    });
    const bad = await app.inject({
      method: 'POST',
      url: '/api/policy/apply',
      headers: h,
      payload: { text: 'broken' },
    });
    expect(bad.statusCode).toBe(422);
    expect(bad.json()).toMatchObject({ error: 'apply.invalid-policy', problems: [{ message: 'bad' }] });
  });

  it('validate gives positions; topology lists zones; diff and propose work', async () => {
    const s = await login('ivan');
    const h = { cookie: s.cookie, 'x-csrf-token': s.csrf };
    const v = await app.inject({
      method: 'POST',
      url: '/api/policy/validate',
      headers: h,
      payload: { text: POLICY.replace('securityLevel: 3', 'securityLevel: 9') },
    });
    const body = v.json() as { ok: boolean; errors: { position?: { line: number } }[] };
    expect(body.ok).toBe(false);
    expect(body.errors[0]?.position?.line).toBe(7);
    const topo = (
      await app.inject({ method: 'GET', url: '/api/topology', headers: { cookie: s.cookie } })
    ).json() as { zones: { name: string }[] };
    expect(topo.zones.map((z) => z.name)).toEqual(['ops', 'cell']);
    const d = (
      await app.inject({
        method: 'POST',
        url: '/api/policy/diff',
        headers: h,
        payload: { text: POLICY + '# x\n' },
      })
    ).json() as { lines: { op: string }[] };
    expect(d.lines.filter((l) => l.op === '+')).toHaveLength(1);
    const p = await app.inject({
      method: 'POST',
      url: '/api/logs/propose',
      headers: h,
      payload: {
        event: {
          conduit: 'hmi-to-plc',
          fromZone: 'ops',
          toZone: 'cell',
          src: '10.1.0.10',
          dst: '10.2.0.20',
          dstPort: 22,
          protocol: 'tcp',
          source: 'nflog',
          reason: 'no-flow',
        },
      },
    });
    expect(p.statusCode, p.body).toBe(200);
    expect((p.json() as { text: string }).text).toContain('name: allow-tcp-22');
  });

  it('CSV export escapes and guards against formula injection; JSON export is an array', async () => {
    const s = await login('olga');
    const csv = await app.inject({
      method: 'GET',
      url: '/api/logs/export.csv?verdict=drop',
      headers: { cookie: s.cookie },
    });
    expect(csv.statusCode).toBe(200);
    expect(csv.headers['content-type']).toContain('text/csv');
    expect(csv.body).toContain(`"'=HYPERLINK(""x"")"`);
    expect(fake.calls.filter((c) => c.method === 'logs.query').at(-1)?.params).toMatchObject({
      verdict: 'drop',
      limit: 1000,
    });
    const json = await app.inject({
      method: 'GET',
      url: '/api/logs/export.json',
      headers: { cookie: s.cookie },
    });
    expect(Array.isArray(json.json())).toBe(true);
  });
});

describe('sessions', () => {
  it('cookie flags, logout invalidates server-side, idle timeout ends the session', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/api/login',
      payload: { name: 'olga', password: PASSWORD },
    });
    const set = String(res.headers['set-cookie']);
    expect(set).toMatch(/HttpOnly/);
    expect(set).toMatch(/SameSite=Strict/);
    const s = { cookie: cookieOf(res), csrf: (res.json() as { csrf: string }).csrf };
    expect(
      (
        await app.inject({
          method: 'POST',
          url: '/api/logout',
          headers: { cookie: s.cookie, 'x-csrf-token': s.csrf },
        })
      ).statusCode,
    ).toBe(200);
    expect(
      (await app.inject({ method: 'GET', url: '/api/session', headers: { cookie: s.cookie } })).statusCode,
    ).toBe(401);
    const t = await login('olga');
    clock += 59_000;
    expect(
      (await app.inject({ method: 'GET', url: '/api/session', headers: { cookie: t.cookie } })).statusCode,
    ).toBe(200);
    clock += 61_000;
    expect(
      (await app.inject({ method: 'GET', url: '/api/session', headers: { cookie: t.cookie } })).statusCode,
    ).toBe(401);
  });

  it('security headers', async () => {
    const res = await app.inject({ method: 'GET', url: '/' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-security-policy']).toMatch(/script-src 'self'/);
    expect(res.headers['content-security-policy']).toMatch(/frame-ancestors 'none'/);
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['referrer-policy']).toBe('no-referrer');
    expect(res.headers['strict-transport-security']).toBeUndefined();
  });
});

describe('login throttling', () => {
  it('backs off per source, never locks out for good, and another source still logs in', async () => {
    const ip = '10.9.9.9';
    for (let i = 0; i < 5; i++) {
      const r = await app.inject({
        method: 'POST',
        url: '/api/login',
        payload: { name: 'alice', password: 'wrong password!' },
        remoteAddress: ip,
      });
      expect(r.statusCode).toBe(401);
    }
    await app.inject({
      method: 'POST',
      url: '/api/login',
      payload: { name: 'alice', password: 'wrong password!' },
      remoteAddress: ip,
    });
    const blocked = await app.inject({
      method: 'POST',
      url: '/api/login',
      payload: { name: 'alice', password: PASSWORD },
      remoteAddress: ip,
    });
    expect(blocked.statusCode).toBe(429);
    expect(blocked.headers['retry-after']).toBeDefined();
    await login('alice', PASSWORD, '10.9.9.10');
    for (let i = 0; i < 30; i++) {
      clock += MAX_DELAY_MS + 1;
      await app.inject({
        method: 'POST',
        url: '/api/login',
        payload: { name: 'alice', password: 'wrong password!' },
        remoteAddress: ip,
      });
    }
    expect(ctx.throttle.waitMs(ip)).toBeLessThanOrEqual(MAX_DELAY_MS);
    clock += MAX_DELAY_MS + 1;
    await login('alice', PASSWORD, ip);
    expect(fake.calls.some((c) => c.method === 'audit.add' && c.params['action'] === 'ui.login-failed')).toBe(
      true,
    );
  });
});

describe('first-run setup', () => {
  it('prints a token, which creates the first admin once; the users file is 0600 and holds no password', async () => {
    const d = await mkdtemp(join(tmpdir(), 'sluice-ui-setup-'));
    let printed = '';
    const ui = await startUi({
      stateDir: d,
      listen: '127.0.0.1:0',
      daemon: (m, p) => controlCall(fake.server.socketPath, m, p),
      onSetupToken: (url) => (printed = url),
      logger: quiet,
    });
    try {
      expect(ui.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(printed).toContain('#setup=');
      const token = ui.setupToken as string;
      const info = (await (await fetch(`${ui.url}/api/login`)).json()) as {
        setupNeeded: boolean;
        banner: string;
      };
      expect(info.setupNeeded).toBe(true);
      expect(info.banner).toMatch(/Authorised use only/);
      const post = (body: object) =>
        fetch(`${ui.url}/api/setup`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
      expect((await post({ token: 'wrong', name: 'root', password: PASSWORD })).status).toBe(400);
      const ok = await post({ token, name: 'root', password: PASSWORD });
      expect(ok.status).toBe(200);
      expect((await post({ token, name: 'root2', password: PASSWORD })).status).toBe(400);
      const file = join(d, USERS_FILE);
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      const text = await readFile(file, 'utf8');
      expect(text).not.toContain(PASSWORD);
      expect(text).toContain('scrypt$');
      expect(text).not.toContain('setup');
    } finally {
      await ui.close();
      await rm(d, { recursive: true, force: true });
    }
  });

  it('refuses plain HTTP off loopback; HTTPS with a generated certificate sets HSTS and Secure cookies', async () => {
    const d = await mkdtemp(join(tmpdir(), 'sluice-ui-tls-'));
    try {
      await expect(startUi({ stateDir: d, listen: '0.0.0.0:0', tls: false })).rejects.toThrow(/loopback/);
      const ui = await startUi({
        stateDir: d,
        listen: '127.0.0.1:0',
        tls: 'auto',
        logger: quiet,
        onSetupToken: () => undefined,
        daemon: async () => ({}),
      });
      try {
        expect(ui.url).toMatch(/^https:/);
        expect((await stat(join(d, 'ui-tls.key'))).mode & 0o777).toBe(0o600);
        const { request } = await import('node:https');
        const headers = await new Promise<Record<string, unknown>>((resolve, reject) => {
          const req = request(`${ui.url}/api/health`, { rejectUnauthorized: false }, (res) => {
            res.resume();
            resolve(res.headers);
          });
          req.on('error', reject);
          req.end();
        });
        expect(headers['strict-transport-security']).toMatch(/max-age/);
      } finally {
        await ui.close();
      }
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });
});
