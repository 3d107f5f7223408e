/**
 * Review findings on issue 6 (items 1-6, 8, 9, 12, 16, 19 and the test gaps): each test here fails against the
 * code before its fix. The daemon is a plain function, so calls can be counted and made to fail.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, rm, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import pino from 'pino';
import { ControlError } from '../gateway/control.ts';
import { buildApp, EXPORT_MAX_ROWS, POLL_HEADER, type AppContext, type DaemonCall } from './app.ts';
import { startUi } from './server.ts';
import { FREE_ATTEMPTS, sourceKey, FailureAuditLimiter } from './auth.ts';
import { SETUP_TOKEN_TTL_MS, USERS_FILE, UserStore } from './users.ts';

const quiet = pino({ level: 'silent' });
const PASSWORD = 'correct horse battery';
const V1 = 'version: 1\n# one\na: 1\n';
const V3 = 'version: 1\n# three\na: 1\nb: 2\n';

interface Harness {
  ctx: AppContext;
  calls: { method: string; params: Record<string, unknown> }[];
  dir: string;
  clock: { t: number };
  /** Set to make audit.add fail as if the daemon were down. */
  auditDown: { v: boolean };
  /** logs.query always has a next page (an export that hits the row cap). */
  endlessLogs: { v: boolean };
}

const harnesses: Harness[] = [];

async function harness(opts: { idleTimeoutMs?: number } = {}): Promise<Harness> {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-ui-sec-'));
  const calls: Harness['calls'] = [];
  const clock = { t: Date.UTC(2026, 0, 1, 12) };
  const auditDown = { v: false };
  const endlessLogs = { v: false };
  const daemon: DaemonCall = async (method, params) => {
    calls.push({ method, params });
    switch (method) {
      case 'status':
        return { version: { id: 3 }, pending: null };
      case 'versions':
        return [{ id: 1 }, { id: 3 }];
      case 'version':
        return {
          id: params['id'],
          text: params['id'] === 3 ? V3 : V1,
          hash: 'h',
          when: '2026-01-01',
          who: 'x',
        };
      case 'audit.add':
        if (auditDown.v) throw new ControlError('control.unreachable', 'no daemon');
        return {};
      case 'audit':
        return { entries: [], dropped: 0 };
      case 'logs.query':
        return {
          events: [{ id: 1, time: clock.t, src: 'a', dst: 'b', count: 1 }],
          ...(endlessLogs.v ? { nextCursor: 'more' } : {}),
        };
      default:
        return { ok: true };
    }
  };
  const ctx = await buildApp({
    stateDir: dir,
    https: false,
    daemon,
    now: () => clock.t,
    logger: quiet,
    idleTimeoutMs: opts.idleTimeoutMs ?? 60_000,
    allowedOrigins: ['http://127.0.0.1:8443'],
  });
  const h = { ctx, calls, dir, clock, auditDown, endlessLogs };
  harnesses.push(h);
  return h;
}

afterAll(async () => {
  for (const h of harnesses) {
    await h.ctx.app.close();
    await rm(h.dir, { recursive: true, force: true });
  }
});

async function login(h: Harness, name: string, ip = '10.0.0.1') {
  const res = await h.ctx.app.inject({
    method: 'POST',
    url: '/api/login',
    payload: { name, password: PASSWORD },
    remoteAddress: ip,
  });
  expect(res.statusCode, res.body).toBe(200);
  const set = res.headers['set-cookie'];
  const cookie = String(Array.isArray(set) ? set[0] : set).split(';')[0] as string;
  return { cookie, csrf: (res.json() as { csrf: string }).csrf };
}

const wrongLogin = (h: Harness, ip: string) =>
  h.ctx.app.inject({
    method: 'POST',
    url: '/api/login',
    payload: { name: 'alice', password: 'not the password' },
    remoteAddress: ip,
  });

describe('login throttling under parallel requests (item 2) and per /64 (item 4)', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await harness();
    await h.ctx.users.add('alice', 'admin', PASSWORD);
  });

  it('40 parallel wrong logins from one address: all but the free attempts are refused with 429', async () => {
    const res = await Promise.all(Array.from({ length: 40 }, () => wrongLogin(h, '10.7.7.7')));
    const codes = res.map((r) => r.statusCode);
    // The last free attempt sets the first delay; every later one waits, however many are in flight.
    expect(codes.filter((c) => c === 401).length).toBe(FREE_ATTEMPTS);
    expect(codes.filter((c) => c === 429).length).toBe(40 - FREE_ATTEMPTS);
  });

  it('rotating IPv6 addresses inside one /64 counts as one source; another /64 is unaffected', async () => {
    for (let i = 1; i <= FREE_ATTEMPTS; i++) await wrongLogin(h, `2001:db8:1:2::${i.toString(16)}`);
    expect((await wrongLogin(h, '2001:db8:1:2:ffff::1')).statusCode).toBe(429);
    expect((await wrongLogin(h, '2001:db8:1:3::1')).statusCode).toBe(401);
    expect(sourceKey('2001:db8:1:2:aaaa:bbbb:cccc:dddd')).toBe('2001:db8:1:2::/64');
    expect(sourceKey('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(sourceKey('::1')).toBe('0:0:0:0::/64');
  });

  it('failed logins are aggregated in the audit log: one entry per source per minute, a global cap', async () => {
    const before = h.calls.filter((c) => c.method === 'audit.add').length;
    h.clock.t += 10 * 60_000;
    for (let i = 0; i < 3; i++) await wrongLogin(h, '10.8.8.8');
    const mine = () => h.calls.filter((c) => c.method === 'audit.add').slice(before);
    expect(mine()).toHaveLength(1);
    h.clock.t += 61_000;
    await wrongLogin(h, '10.8.8.8');
    expect(mine()).toHaveLength(2);
    expect(String(mine()[1]?.params['detail'])).toMatch(/3 failures from 10\.8\.8\.8/);
    // A storm from many sources: the bounded audit log gets at most MAX_PER_WINDOW entries per minute.
    h.clock.t += 61_000;
    const n0 = mine().length;
    await Promise.all(Array.from({ length: 24 }, (_, i) => wrongLogin(h, `10.9.${i}.1`)));
    expect(mine().length - n0).toBe(FailureAuditLimiter.MAX_PER_WINDOW);
  });
});

describe('first-run setup (item 3 and the test gaps)', () => {
  it('three parallel setups with one token: exactly one admin is created', async () => {
    const h = await harness();
    const token = (await h.ctx.users.issueSetupToken()) as string;
    const res = await Promise.all(
      ['root1', 'root2', 'root3'].map((name) =>
        h.ctx.app.inject({ method: 'POST', url: '/api/setup', payload: { token, name, password: PASSWORD } }),
      ),
    );
    expect(res.map((r) => r.statusCode).sort()).toEqual([200, 400, 400]);
    expect(await h.ctx.users.list()).toHaveLength(1);
  });

  it('concurrent account changes are all kept', async () => {
    const h = await harness();
    await Promise.all(['u1', 'u2', 'u3', 'u4'].map((n) => h.ctx.users.add(n, 'operator', PASSWORD)));
    expect((await h.ctx.users.list()).map((u) => u.name).sort()).toEqual(['u1', 'u2', 'u3', 'u4']);
  });

  it('an expired setup token is refused', async () => {
    const h = await harness();
    const token = (await h.ctx.users.issueSetupToken()) as string;
    h.clock.t += SETUP_TOKEN_TTL_MS + 1;
    const r = await h.ctx.app.inject({
      method: 'POST',
      url: '/api/setup',
      payload: { token, name: 'root', password: PASSWORD },
    });
    expect(r.statusCode).toBe(400);
    expect(r.json()).toMatchObject({ error: 'user.bad-setup-token' });
    expect(await h.ctx.users.list()).toHaveLength(0);
  });
});

describe('sessions (items 1 and 8)', () => {
  it('background polls do not keep a session alive; requests by the person do', async () => {
    const h = await harness({ idleTimeoutMs: 60_000 });
    await h.ctx.users.add('olga', 'operator', PASSWORD);
    const s = await login(h, 'olga');
    const get = (poll: boolean) =>
      h.ctx.app.inject({
        method: 'GET',
        url: '/api/status',
        headers: { cookie: s.cookie, ...(poll ? { [POLL_HEADER]: '1' } : {}) },
      });
    for (let i = 0; i < 2; i++) {
      h.clock.t += 25_000;
      expect((await get(true)).statusCode).toBe(200);
    }
    h.clock.t += 25_000; // 75 s since the person last did something
    expect((await get(true)).statusCode).toBe(401);
    const t = await login(h, 'olga');
    for (let i = 0; i < 4; i++) {
      h.clock.t += 25_000;
      const r = await h.ctx.app.inject({ method: 'GET', url: '/api/status', headers: { cookie: t.cookie } });
      expect(r.statusCode).toBe(200);
    }
  });

  it('a session ends when its account is removed and re-added with another role', async () => {
    const h = await harness();
    await h.ctx.users.add('alice', 'admin', PASSWORD);
    await h.ctx.users.add('bob', 'admin', PASSWORD);
    const s = await login(h, 'bob');
    await h.ctx.users.remove('bob');
    await h.ctx.users.add('bob', 'operator', PASSWORD);
    const r = await h.ctx.app.inject({ method: 'GET', url: '/api/users', headers: { cookie: s.cookie } });
    expect(r.statusCode).toBe(401);
    // Same role, re-created: another account all the same.
    const o = await login(h, 'bob');
    await h.ctx.users.remove('bob');
    h.clock.t += 1000;
    await h.ctx.users.add('bob', 'operator', PASSWORD);
    expect(
      (await h.ctx.app.inject({ method: 'GET', url: '/api/status', headers: { cookie: o.cookie } }))
        .statusCode,
    ).toBe(401);
  });
});

describe('audit (items 5 and 6)', () => {
  it('user changes are refused (503) when the audit log is unreachable, and record before/after role', async () => {
    const h = await harness();
    await h.ctx.users.add('alice', 'admin', PASSWORD);
    await h.ctx.users.add('olga', 'operator', PASSWORD);
    const s = await login(h, 'alice');
    const hd = { cookie: s.cookie, 'x-csrf-token': s.csrf };
    h.auditDown.v = true;
    const add = await h.ctx.app.inject({
      method: 'POST',
      url: '/api/users',
      headers: hd,
      payload: { name: 'bob', role: 'operator', password: PASSWORD },
    });
    expect(add.statusCode, add.body).toBe(503);
    expect(await h.ctx.users.get('bob')).toBeUndefined();
    const del = await h.ctx.app.inject({ method: 'DELETE', url: '/api/users/olga', headers: hd });
    expect(del.statusCode).toBe(503);
    expect(await h.ctx.users.get('olga')).toBeDefined();
    h.auditDown.v = false;
    const ok = await h.ctx.app.inject({
      method: 'POST',
      url: '/api/users',
      headers: hd,
      payload: { name: 'bob', role: 'integrator', password: PASSWORD },
    });
    expect(ok.statusCode).toBe(201);
    const entry = h.calls.filter((c) => c.method === 'audit.add').at(-1)?.params;
    expect(entry).toMatchObject({ who: 'ui:alice', action: 'ui.user-add' });
    expect(String(entry?.['detail'])).toContain('role (none) → integrator');
  });

  it('the CLI refuses a user change it cannot audit', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sluice-ui-cli-'));
    try {
      const cli = join(import.meta.dirname, '../gateway/cli.ts');
      const r = await execa(
        process.execPath,
        [cli, 'user', 'add', 'bob', '--role', 'operator', '--password-stdin', '--state-dir', dir],
        { input: PASSWORD, reject: false },
      );
      expect(r.exitCode).not.toBe(0);
      expect(r.stderr).toMatch(/cannot be audited; nothing was changed/);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      await expect(readFile(join(dir, USERS_FILE), 'utf8')).rejects.toThrow();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('an apply entry links to the diff of its version against the version recorded before it', async () => {
    const h = await harness();
    await h.ctx.users.add('audrey', 'auditor', PASSWORD);
    const s = await login(h, 'audrey');
    const r = await h.ctx.app.inject({
      method: 'GET',
      url: '/api/audit/diff/3',
      headers: { cookie: s.cookie },
    });
    expect(r.statusCode, r.body).toBe(200);
    const d = r.json() as { previousVersionId: number; lines: { op: string; text: string }[] };
    expect(d.previousVersionId).toBe(1);
    expect(d.lines.filter((l) => l.op !== ' ')).toEqual([
      { op: '-', text: '# one' },
      { op: '+', text: '# three' },
      { op: '+', text: 'b: 2' },
    ]);
    const first = (
      await h.ctx.app.inject({ method: 'GET', url: '/api/audit/diff/1', headers: { cookie: s.cookie } })
    ).json() as { previousVersionId: number | null };
    expect(first.previousVersionId).toBeNull();
    expect(
      (await h.ctx.app.inject({ method: 'GET', url: '/api/audit/diff/2', headers: { cookie: s.cookie } }))
        .statusCode,
    ).toBe(404);
  });
});

describe('daemon cache (item 16) and export cap (item 19)', () => {
  it('timeline polls within one bucket hit the cache; audit.add does not clear it; apply does', async () => {
    const h = await harness();
    await h.ctx.users.add('ivan', 'integrator', PASSWORD);
    const s = await login(h, 'ivan');
    const count = (m: string) => h.calls.filter((c) => c.method === m).length;
    const get = (url: string) => h.ctx.app.inject({ method: 'GET', url, headers: { cookie: s.cookie } });
    // Start of a 2-minute bucket, so both calls fall in it.
    h.clock.t = Math.ceil(h.clock.t / 120_000) * 120_000 + 1;
    await get('/api/logs/timeline?minutes=60&buckets=30');
    h.clock.t += 500;
    await get('/api/logs/timeline?minutes=60&buckets=30');
    expect(count('logs.query')).toBe(1);
    await get('/api/status');
    await login(h, 'ivan'); // writes ui.login through audit.add
    await get('/api/status');
    expect(count('status')).toBe(1);
    await h.ctx.app.inject({
      method: 'POST',
      url: '/api/policy/confirm',
      headers: { cookie: s.cookie, 'x-csrf-token': s.csrf },
    });
    await get('/api/status');
    expect(count('status')).toBe(2);
  });

  it('exports say when they stop at the row cap', async () => {
    const h = await harness();
    await h.ctx.users.add('olga', 'operator', PASSWORD);
    const s = await login(h, 'olga');
    const get = (url: string) => h.ctx.app.inject({ method: 'GET', url, headers: { cookie: s.cookie } });
    expect((await get('/api/logs/export.json?verdict=refuse')).headers['x-sluice-truncated']).toBeUndefined();
    h.endlessLogs.v = true;
    for (const url of ['/api/logs/export.json', '/api/logs/export.csv?verdict=drop']) {
      const r = await get(url);
      expect(r.statusCode).toBe(200);
      expect(r.headers['x-sluice-truncated']).toBe(String(EXPORT_MAX_ROWS));
    }
  });
});

describe('static files and headers (test gaps)', () => {
  it('no path traversal out of the public dir; CSP has no unsafe-inline', async () => {
    const h = await harness();
    for (const url of [
      '/../app.ts',
      '/%2e%2e/app.ts',
      '/js/../../app.ts',
      '/js/%2e%2e/%2e%2e/users.ts',
      '/..%2fapp.ts',
    ]) {
      const r = await h.ctx.app.inject({ method: 'GET', url });
      expect(r.statusCode, url).toBeGreaterThanOrEqual(400);
      expect(r.body, url).not.toMatch(/buildApp|UserStore/);
    }
    const page = await h.ctx.app.inject({ method: 'GET', url: '/' });
    const csp = String(page.headers['content-security-policy']);
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval/);
    expect(csp).toMatch(/script-src 'self'/);
    const html = page.body;
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(html).not.toMatch(/\son[a-z]+=/i);
  });
});

describe('HTTPS (item 12, item 19, Secure cookies)', () => {
  it('prints the certificate fingerprint; logs in over HTTPS with __Host- Secure cookies; origins from the listen address', async () => {
    const d = await mkdtemp(join(tmpdir(), 'sluice-ui-https-'));
    try {
      let printed: string | undefined;
      const logLines: string[] = [];
      const logger = pino({ level: 'info' }, { write: (l: string) => void logLines.push(l) });
      const ui = await startUi({
        stateDir: d,
        listen: '127.0.0.1:0',
        tls: 'auto',
        logger,
        onSetupToken: (_u, _t, fp) => (printed = fp),
        daemon: async () => ({}),
      });
      try {
        const openssl = await execa('openssl', [
          'x509',
          '-noout',
          '-fingerprint',
          '-sha256',
          '-in',
          join(d, 'ui-tls.crt'),
        ]);
        const expected = openssl.stdout.split('=')[1]?.trim();
        expect(printed).toBe(expected);
        expect(ui.fingerprint).toBe(expected);
        expect(logLines.some((l) => l.includes('web UI listening') && l.includes(String(expected)))).toBe(
          true,
        );

        const { request } = await import('node:https');
        const call = (method: string, path: string, headers: Record<string, string>, body?: object) =>
          new Promise<{ status: number; headers: Record<string, unknown>; body: string }>(
            (resolve, reject) => {
              const req = request(
                `${ui.url}${path}`,
                {
                  method,
                  rejectUnauthorized: false,
                  headers: { ...headers, ...(body ? { 'content-type': 'application/json' } : {}) },
                },
                (res) => {
                  let text = '';
                  res.on('data', (c: Buffer) => (text += c.toString()));
                  res.on('end', () =>
                    resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }),
                  );
                },
              );
              req.on('error', reject);
              req.end(body ? JSON.stringify(body) : undefined);
            },
          );
        await new UserStore(d).add('alice', 'admin', PASSWORD);
        const li = await call('POST', '/api/login', {}, { name: 'alice', password: PASSWORD });
        expect(li.status, li.body).toBe(200);
        const set = String(li.headers['set-cookie']);
        expect(set).toMatch(/^__Host-sluice_session=/);
        expect(set).toMatch(/; Secure/);
        expect(set).toMatch(/HttpOnly/);
        expect(set).toMatch(/SameSite=Strict/);
        const cookie = set.split(';')[0] as string;
        const csrf = (JSON.parse(li.body) as { csrf: string }).csrf;
        const api = JSON.parse((await call('GET', '/api/openapi.json', { cookie })).body) as {
          components: { securitySchemes: { session: { name: string } } };
        };
        expect(api.components.securitySchemes.session.name).toBe('__Host-sluice_session');
        const port = new URL(ui.url).port;
        const evil = await call('POST', '/api/logout', {
          cookie,
          'x-csrf-token': csrf,
          origin: `https://evil.example:${port}`,
        });
        expect(evil.status).toBe(403);
        const out = await call('POST', '/api/logout', {
          cookie,
          'x-csrf-token': csrf,
          origin: `https://localhost:${port}`,
        });
        expect(out.status, out.body).toBe(200);
        // The browser only drops a __Host- cookie when the clearing Set-Cookie is Secure as well.
        expect(String(out.headers['set-cookie'])).toMatch(/^__Host-sluice_session=;.*Secure/);
      } finally {
        await ui.close();
      }
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });

  it('sluice ui --tls-cert /missing: a clear error, no stack trace', async () => {
    const cli = join(import.meta.dirname, '../gateway/cli.ts');
    const r = await execa(
      process.execPath,
      [
        cli,
        'ui',
        '--tls-cert',
        '/missing/cert.pem',
        '--tls-key',
        '/missing/key.pem',
        '--state-dir',
        tmpdir(),
      ],
      { reject: false, timeout: 20_000 },
    );
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/cannot read the TLS certificate '\/missing\/cert\.pem': ENOENT/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});
