/**
 * Unit tests of the apply engine with a fake nft (no root here; test/apply.test.ts drives the real one in a
 * network namespace). The fake models what matters: check() and load() may refuse, and a refused load
 * leaves the "kernel" ruleset exactly as it was.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { compileFailClosed, compilePolicy } from '../policies/compile.ts';
import { NftError, PolicyInvalidError, SluiceError } from '../policies/errors.ts';
import type { ProxyPlan } from '../policies/types.ts';
import { validatePolicyText } from '../policies/validate.ts';
import { ApplyEngine, PolicyRejectedError, type RulesetLoader } from './apply.ts';
import { StateStore } from './state.ts';

/** Narrows away undefined/null, failing the test with `what` instead of a TypeError later. */
function must<T>(x: T | undefined | null, what: string): T {
  if (x === undefined || x === null) throw new Error(`missing: ${what}`);
  return x;
}

class FakeNft implements RulesetLoader {
  running = '';
  loads: string[] = [];
  failCheck: ((script: string) => boolean) | undefined;
  failLoad: ((script: string) => boolean) | undefined;
  async check(script: string): Promise<void> {
    await Promise.resolve();
    if (this.failCheck?.(script)) throw new NftError('nft.check-failed', 'nft rejected the ruleset (fake)');
  }
  async load(script: string): Promise<void> {
    await Promise.resolve();
    if (this.failLoad?.(script))
      throw new NftError('nft.load-failed', 'nft could not load the ruleset (fake)');
    this.running = script;
    this.loads.push(script);
  }
}

function policy(opts: { port?: number; mgmt?: string; waiverExpires?: string } = {}): string {
  const port = opts.port === undefined ? '' : `\n        port: ${opts.port}`;
  const waiver =
    opts.waiverExpires === undefined
      ? ''
      : `waivers:
  - rule: any-port
    conduit: a-to-b
    rationale: legacy vendor protocol on dynamic ports; compensated by host allow-lists.
    expires: ${opts.waiverExpires}
`;
  return `version: 1
gateway:
  name: gw
  management:
    interface: ${opts.mgmt ?? 'mgmt0'}
    allowFrom: [10.99.0.0/24]
zones:
  a: { securityLevel: 2, interfaces: [eth1], networks: [10.1.0.0/24] }
  b: { securityLevel: 2, interfaces: [eth2], networks: [10.2.0.0/24] }
conduits:
  a-to-b:
    from: a
    to: b
    flows:
      - name: stream
        protocol: tcp${port}
${waiver}`;
}

function rulesetOf(text: string, now = new Date()): string {
  const r = validatePolicyText(text, 'x.yaml', { now });
  if (r.policy === undefined) throw new Error(JSON.stringify(r.errors));
  return compilePolicy(r.policy).ruleset;
}

const P1 = policy({ port: 9000 });
const P2 = policy({ port: 9001 });
const P3 = policy({ port: 9002 });
const INVALID = policy({}); // tcp flow with no port at SL 2: lint error any-port

let dir: string;
let nft: FakeNft;
let plans: ProxyPlan[];
const engines: ApplyEngine[] = [];
const quiet = pino({ level: 'silent' });

async function engine(opts: { now?: () => Date } = {}): Promise<{ e: ApplyEngine; store: StateStore }> {
  const store = await StateStore.open(dir);
  const e = new ApplyEngine({
    state: store,
    nft,
    logger: quiet,
    onPlanChange: async (p) => {
      plans.push(p);
    },
    ...opts,
  });
  engines.push(e);
  return { e, store };
}

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'slcA-apply-'));
  nft = new FakeNft();
  plans = [];
});
afterEach(async () => {
  for (const e of engines.splice(0)) e.close();
  await rm(dir, { recursive: true, force: true });
});

const actions = (store: StateStore): string[] => store.auditEntries().map((e) => e.action);

describe('ApplyEngine.apply', () => {
  it('validates, compiles, checks, loads and records a confirmed version', async () => {
    const { e, store } = await engine();
    const r = await e.apply(P1, { who: 'alice', comment: 'first', file: 'p1.yaml' });
    expect(r).toMatchObject({ versionId: 1, status: 'confirmed', pending: null, previousVersionId: null });
    expect(nft.running).toBe(rulesetOf(P1));
    expect(store.runtime()).toEqual({
      runningVersionId: 1,
      lastConfirmedVersionId: 1,
      pending: null,
      mode: 'policy',
    });
    expect(store.getVersion(1)).toMatchObject({ who: 'alice', comment: 'first', file: 'p1.yaml', text: P1 });
    expect(r.lint).toMatchObject({ errors: 0, acceptedRisks: 0 });
    expect(actions(store)).toEqual(['apply']);
    expect(plans).toHaveLength(1);
    expect(e.currentPlan()).toEqual(r.plan);
    expect(r.timings.totalMs).toBeGreaterThan(0);
  });

  it('rejects an invalid policy with its problems and changes nothing', async () => {
    const { e, store } = await engine();
    await e.apply(P1, { who: 'alice' });
    const err = await e.apply(INVALID, { who: 'mallory', file: 'bad.yaml' }).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(PolicyRejectedError);
    expect(err).toBeInstanceOf(PolicyInvalidError);
    expect((err as PolicyRejectedError).problems.map((p) => p.code)).toContain('lint.any-port');
    expect(nft.loads).toHaveLength(1);
    expect(nft.running).toBe(rulesetOf(P1));
    expect(store.versions()).toHaveLength(1);
    expect(store.runtime().runningVersionId).toBe(1);
    expect(actions(store)).toEqual(['apply', 'apply-rejected']);
  });

  it.each([
    ['nft -c', 'check'],
    ['the load', 'load'],
  ] as const)(
    'keeps the running ruleset when %s fails, and records the attempt as failed',
    async (_, stage) => {
      const { e, store } = await engine();
      await e.apply(P1, { who: 'alice' });
      const before = nft.running;
      if (stage === 'check') nft.failCheck = (s) => s.includes('9001');
      else nft.failLoad = (s) => s.includes('9001');
      await expect(e.apply(P2, { who: 'bob' })).rejects.toBeInstanceOf(NftError);
      expect(nft.running).toBe(before);
      expect(store.runtime()).toMatchObject({
        runningVersionId: 1,
        lastConfirmedVersionId: 1,
        pending: null,
      });
      expect(store.getVersion(2)).toMatchObject({ status: 'failed', who: 'bob' });
      expect(actions(store)).toEqual(['apply', 'apply-failed']);
      expect(plans).toHaveLength(1);
    },
  );

  it('restores the recorded ruleset when the new version cannot be recorded after the load', async () => {
    const { e, store } = await engine();
    await e.apply(P1, { who: 'alice' });
    vi.spyOn(store, 'setRuntime').mockRejectedValueOnce(new Error('ENOSPC: no space left on device'));
    await expect(e.apply(P2, { who: 'bob' })).rejects.toThrow(/could not record/);
    expect(nft.running).toBe(rulesetOf(P1));
    expect(store.runtime().runningVersionId).toBe(1);
    expect(store.getVersion(2)?.status).toBe('failed');
  });

  it('serialises concurrent applies: each one whole, in call order', async () => {
    const { e, store } = await engine();
    const results = await Promise.all([P1, P2, P3].map((t, i) => e.apply(t, { who: `u${i}` })));
    expect(results.map((r) => r.versionId)).toEqual([1, 2, 3]);
    expect(nft.loads).toEqual([rulesetOf(P1), rulesetOf(P2), rulesetOf(P3)]);
    expect(store.runtime().runningVersionId).toBe(3);
  });

  it('reports a proxy restart failure without undoing the live ruleset', async () => {
    const store = await StateStore.open(dir);
    const e = new ApplyEngine({
      state: store,
      nft,
      logger: quiet,
      onPlanChange: () => Promise.reject(new Error('port 20000 in use')),
    });
    engines.push(e);
    const r = await e.apply(P1, { who: 'alice' });
    expect(r.proxyError).toBe('port 20000 in use');
    expect(nft.running).toBe(rulesetOf(P1));
    expect(e.status()).toMatchObject({
      mode: 'policy',
      runningVersionId: 1,
      runningHash: r.hash,
      pending: null,
    });
  });

  it('refuses a nonsensical confirmation window before touching anything', async () => {
    const { e } = await engine();
    for (const s of [0, -1, Number.NaN, 86_401]) {
      await expect(e.apply(P1, { who: 'a', confirmWithinSec: s })).rejects.toThrow(/confirmation window/);
    }
    expect(nft.loads).toHaveLength(0);
  });
});

describe('confirmation and rollback', () => {
  it('rolls an unconfirmed apply back to the previous version when the deadline passes', async () => {
    const { e, store } = await engine();
    await e.apply(P1, { who: 'alice' });
    const r = await e.apply(P2, { who: 'bob', confirmWithinSec: 0.4 });
    expect(r).toMatchObject({ status: 'applied', previousVersionId: 1 });
    expect(e.pending()).toEqual({ versionId: 2, deadline: must(r.pending, 'pending').deadline });
    expect(nft.running).toBe(rulesetOf(P2));
    await sleep(700);
    await e.idle();
    expect(nft.running).toBe(rulesetOf(P1));
    expect(e.pending()).toBeNull();
    expect(store.runtime()).toEqual({
      runningVersionId: 1,
      lastConfirmedVersionId: 1,
      pending: null,
      mode: 'policy',
    });
    expect(store.getVersion(2)?.status).toBe('rolled-back');
    expect(actions(store)).toEqual(['apply', 'apply', 'auto-rollback']);
    expect(store.auditEntries().at(-1)).toMatchObject({ who: 'sluice', versionId: 2 });
    expect(plans).toHaveLength(3);
  });

  it('falls back to fail-closed when nothing was confirmed before the unconfirmed apply', async () => {
    const { e, store } = await engine();
    await e.apply(P1, { who: 'alice', confirmWithinSec: 0.3 });
    await sleep(600);
    await e.idle();
    const mgmt = must(validatePolicyText(P1, 'x', {}).policy, 'policy').gateway.management;
    expect(nft.running).toBe(compileFailClosed(mgmt));
    expect(store.runtime()).toMatchObject({ runningVersionId: null, mode: 'fail-closed', pending: null });
    expect(actions(store)).toEqual(['apply', 'auto-rollback', 'fail-closed']);
    expect(e.currentPlan()).toEqual({ version: 1, entries: [] });
  });

  it('keeps a version confirmed in time', async () => {
    const { e, store } = await engine();
    await e.apply(P1, { who: 'alice' });
    await e.apply(P2, { who: 'bob', confirmWithinSec: 0.4 });
    expect(await e.confirm('carol')).toEqual({ versionId: 2 });
    await sleep(600);
    await e.idle();
    expect(nft.running).toBe(rulesetOf(P2));
    expect(store.runtime()).toEqual({
      runningVersionId: 2,
      lastConfirmedVersionId: 2,
      pending: null,
      mode: 'policy',
    });
    expect(store.getVersion(2)?.status).toBe('confirmed');
    expect(actions(store)).toEqual(['apply', 'apply', 'confirm']);
    await expect(e.confirm('carol')).rejects.toThrow(/no applied version awaits confirmation/);
  });

  it('a second apply while one is pending keeps the known-good version as the one to return to', async () => {
    const { e, store } = await engine();
    await e.apply(P1, { who: 'alice' });
    await e.apply(P2, { who: 'bob', confirmWithinSec: 30 });
    const r = await e.apply(P3, { who: 'bob', confirmWithinSec: 0.3 });
    expect(r.previousVersionId).toBe(1);
    await sleep(600);
    await e.idle();
    expect(nft.running).toBe(rulesetOf(P1));
    expect(store.runtime().runningVersionId).toBe(1);
  });

  it('rolls back to the previous confirmed version, or to a named one', async () => {
    const { e, store } = await engine();
    await expect(e.rollback('alice')).rejects.toThrow(/no earlier confirmed version/);
    await e.apply(P1, { who: 'alice' });
    await e.apply(P2, { who: 'alice' });
    await e.apply(P3, { who: 'alice' });
    expect(await e.rollback('bob')).toEqual({ mode: 'policy', fromVersionId: 3, toVersionId: 2 });
    expect(nft.running).toBe(rulesetOf(P2));
    expect(store.getVersion(3)?.status).toBe('rolled-back');
    expect(await e.rollback('bob')).toMatchObject({ fromVersionId: 2, toVersionId: 1 });
    expect(await e.rollback('bob', 3)).toMatchObject({ fromVersionId: 1, toVersionId: 3 });
    expect(nft.running).toBe(rulesetOf(P3));
    expect(store.runtime()).toEqual({
      runningVersionId: 3,
      lastConfirmedVersionId: 3,
      pending: null,
      mode: 'policy',
    });
    await expect(e.rollback('bob', 42)).rejects.toThrow(/no version 42/);
    expect(actions(store).filter((a) => a === 'rollback')).toHaveLength(3);
  });

  it('a rollback during a pending confirmation resolves it and cancels the timer', async () => {
    const { e, store } = await engine();
    await e.apply(P1, { who: 'alice' });
    await e.apply(P2, { who: 'alice', confirmWithinSec: 0.3 });
    await e.rollback('alice');
    await sleep(500);
    await e.idle();
    expect(nft.running).toBe(rulesetOf(P1));
    expect(actions(store)).toEqual(['apply', 'apply', 'rollback']);
  });

  it('refuses to restore a version whose stored text was tampered with (CR 3.4)', async () => {
    const { e, store } = await engine();
    await e.apply(P1, { who: 'alice' });
    await e.apply(P2, { who: 'alice' });
    const file = path.join(dir, 'versions.json');
    const doc = JSON.parse(await (await import('node:fs/promises')).readFile(file, 'utf8')) as {
      versions: { text: string }[];
    };
    must(doc.versions[0], 'version 1').text = P3;
    await writeFile(file, JSON.stringify(doc));
    const { e: e2 } = await engine();
    await expect(e2.rollback('bob', 1)).rejects.toThrow(/does not match its sha256/);
    expect(nft.running).toBe(rulesetOf(P2));
    void e;
    void store;
  });
});

describe('ApplyEngine.boot', () => {
  it('boots fail-closed, loudly, when nothing was ever confirmed', async () => {
    const { e, store } = await engine();
    const r = await e.boot();
    expect(r).toEqual({ mode: 'fail-closed', reason: 'no confirmed policy version' });
    expect(nft.running).toBe(compileFailClosed(undefined));
    expect(actions(store)).toEqual(['boot', 'fail-closed']);
    expect(store.runtime().mode).toBe('fail-closed');
  });

  it('loads the last confirmed version after a restart', async () => {
    const { e } = await engine();
    await e.apply(P1, { who: 'alice' });
    await e.apply(P2, { who: 'alice' });
    e.close();
    nft.running = '';
    const { e: e2, store } = await engine();
    expect(await e2.boot()).toEqual({ mode: 'policy', versionId: 2, pending: null });
    expect(nft.running).toBe(rulesetOf(P2));
    expect(actions(store).at(-1)).toBe('boot');
    expect(e2.currentPlan()).toEqual(
      compilePolicy(must(validatePolicyText(P2, 'x.yaml', {}).policy, 'P2')).plan,
    );
  });

  it('rolls back at boot when the confirmation deadline passed while the daemon was down', async () => {
    const { e } = await engine();
    await e.apply(P1, { who: 'alice' });
    await e.apply(P2, { who: 'alice', confirmWithinSec: 0.2 });
    e.close(); // the daemon stops before the deadline
    await sleep(400);
    const { e: e2, store } = await engine();
    expect(await e2.boot()).toMatchObject({ mode: 'policy', versionId: 1 });
    expect(nft.running).toBe(rulesetOf(P1));
    expect(store.getVersion(2)?.status).toBe('rolled-back');
    expect(actions(store).slice(-2)).toEqual(['auto-rollback', 'boot']);
    expect(store.runtime()).toEqual({
      runningVersionId: 1,
      lastConfirmedVersionId: 1,
      pending: null,
      mode: 'policy',
    });
  });

  it('re-arms a pending confirmation whose deadline is still ahead', async () => {
    const { e } = await engine();
    await e.apply(P1, { who: 'alice' });
    const r = await e.apply(P2, { who: 'alice', confirmWithinSec: 0.6 });
    e.close();
    const { e: e2, store } = await engine();
    const boot = await e2.boot();
    expect(boot).toMatchObject({ mode: 'policy', versionId: 2, pending: r.pending });
    expect(nft.running).toBe(rulesetOf(P2));
    await sleep(900);
    await e2.idle();
    expect(nft.running).toBe(rulesetOf(P1));
    expect(actions(store).at(-1)).toBe('auto-rollback');
  });

  it('falls back to fail-closed with the last policy management when the confirmed version fails to load', async () => {
    const { e } = await engine();
    await e.apply(policy({ port: 9000, mgmt: 'mgmt7' }), { who: 'alice' });
    e.close();
    nft.failLoad = (s) => s.includes('9000');
    const { e: e2, store } = await engine();
    const r = await e2.boot();
    expect(r.mode).toBe('fail-closed');
    expect(r.reason).toMatch(/version 1: nft could not load/);
    expect(nft.running).toContain('iifname "mgmt7"');
    expect(nft.running).toContain('sluice anti-lockout');
    expect(store.runtime()).toMatchObject({
      mode: 'fail-closed',
      runningVersionId: null,
      lastConfirmedVersionId: 1,
    });
  });

  it('boots fail-closed when the state dir is corrupt', async () => {
    const { e } = await engine();
    await e.apply(P1, { who: 'alice' });
    e.close();
    await writeFile(path.join(dir, 'runtime.json'), '{"runningVers');
    const { e: e2 } = await engine();
    const r = await e2.boot();
    expect(r.mode).toBe('fail-closed');
    expect(r.reason).toMatch(/state dir unreadable: runtime\.json/);
    // versions.json is intact: management comes from the last known policy.
    expect(nft.running).toContain('iifname "mgmt0"');
  });

  it('restores a version whose waiver has expired since it was applied', async () => {
    let now = new Date('2026-01-10T00:00:00Z');
    const text = policy({ waiverExpires: '2026-06-30' });
    const { e } = await engine({ now: () => now });
    await e.apply(text, { who: 'alice' });
    e.close();
    now = new Date('2027-01-10T00:00:00Z');
    const { e: e2 } = await engine({ now: () => now });
    expect(await e2.boot()).toMatchObject({ mode: 'policy', versionId: 1 });
    expect(nft.running).toBe(rulesetOf(text, new Date('2026-01-10T00:00:00Z')));
    // A fresh apply of the same text today is refused: the waiver no longer covers it.
    await expect(e2.apply(text, { who: 'alice' })).rejects.toBeInstanceOf(PolicyRejectedError);
  });

  it('reports a rollback to an unknown or failed target as a SluiceError', async () => {
    const { e } = await engine();
    await e.apply(P1, { who: 'alice' });
    await expect(e.rollback('a', 7)).rejects.toBeInstanceOf(SluiceError);
  });
});
