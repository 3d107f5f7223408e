/**
 * The apply engine against real nft in a lab (network namespaces, prefix `slcA`): no mocks of nft or the
 * kernel. Needs root; elsewhere it skips and says why (never in CI).
 *
 * How a load failure is forced despite a valid policy: `KernelRejectingNft.load()` appends one line,
 * `create element inet sluice mgmt_ports { 22 }`. It parses and passes nft's own evaluation, but the
 * kernel refuses it at commit time (EEXIST: 22 is already in the set), *after* the same batch has already
 * deleted and re-created `table inet sluice`. So it proves the whole-transaction rollback in the kernel,
 * not just a userspace parse error. (Pointing a zone at an odd interface name would not do: `iifname`
 * matches any string, and the kernel accepts hooks on absent devices.) `nft -c` is left untouched, so the
 * failure happens at the very last step of the apply.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import pino from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { gate, needsRoot } from './lab/gate.ts';
import { startEcho, startStream, streamSurvived } from '../bench/apply.ts';
import { ApplyEngine } from '../gateway/apply.ts';
import { Nft } from '../gateway/nft.ts';
import { StateStore } from '../gateway/state.ts';
import { NftError } from '../policies/errors.ts';
import type { Management } from '../policies/types.ts';
import { tcpProbe } from './lab/netns.ts';
import { labDown, labUp, type Lab } from './lab/topology.ts';

const { describe: suite } = gate('test/apply.test.ts', [needsRoot()]);

const PREFIX = 'slcA';
const MGMT_PORT = 8443;

function policy(ports: number[], extraFlows = 0): string {
  const flows = [
    `      - name: stream
        protocol: tcp
        from: [10.71.1.0/24]
        to: [10.71.2.0/24]
        port: [${ports.join(', ')}]`,
  ];
  // Bulk for the kill test: many flows, each with its own sets and counter, so the load takes a while.
  for (let i = 0; i < extraFlows; i++) {
    flows.push(`      - name: bulk-${i}
        protocol: tcp
        from: [10.71.1.${(i % 200) + 20}]
        to: [10.71.2.${(i % 200) + 20}]
        port: ${20000 + i}`);
  }
  return `version: 1
gateway:
  name: lab-gw
  management:
    interface: mgmt0
    allowFrom: [10.71.99.0/24]
zones:
  za: { securityLevel: 2, interfaces: [eth1], networks: [10.71.1.0/24] }
  zb: { securityLevel: 2, interfaces: [eth2], networks: [10.71.2.0/24] }
conduits:
  za-to-zb:
    from: za
    to: zb
    flows:
${flows.join('\n')}
`;
}

const P1 = policy([9000]);
const P2 = policy([9000, 9001]); // still allows the stream on 9000
const P3 = policy([9001]);

/** Loads that the kernel refuses at commit time (see the file comment). */
class KernelRejectingNft extends Nft {
  override async load(script: string): Promise<void> {
    await super.load(`${script}\ncreate element inet sluice mgmt_ports { 22 }\n`);
  }
}

/** Counters move with traffic; compare rulesets with them zeroed where only the rules matter. */
const zeroCounters = (ruleset: string): string =>
  ruleset.replace(/packets \d+ bytes \d+/g, 'packets 0 bytes 0');

/** Narrows away undefined/null, failing the test with `what` instead of a TypeError later. */
function must<T>(x: T | undefined | null, what: string): T {
  if (x === undefined || x === null) throw new Error(`missing: ${what}`);
  return x;
}

suite('apply engine with real nft in a lab', () => {
  let lab: Lab;
  let nft: Nft;
  let dir: string;
  let state: StateStore;
  let engine: ApplyEngine;
  const listings = new Map<string, string>();
  const logger = pino({ level: 'silent' });
  const h1 = (): string => lab.hostNs('za', 'h1');
  const H2 = '10.71.2.20';

  async function expectAntiLockout(): Promise<void> {
    const ruleset = await nft.listRuleset();
    expect(ruleset).toMatch(/iifname "mgmt0" .*tcp dport @mgmt_ports accept comment "sluice anti-lockout"/);
    // And it works: the management workstation reaches a service on the gateway's management port.
    const probe = await tcpProbe(
      must(lab.mgmtNs, 'mgmt ns'),
      must(lab.gwMgmtAddress, 'gw mgmt address'),
      MGMT_PORT,
      2000,
    );
    expect(probe).toEqual({ ok: true, outcome: 'ok' });
  }

  const ids = new Map<string, number>();
  async function applyAndList(text: string, key: string): Promise<number> {
    const r = await engine.apply(text, { who: 'tester', file: `${key}.yaml` });
    listings.set(key, await nft.listRuleset());
    ids.set(key, r.versionId);
    await expectAntiLockout();
    return r.versionId;
  }

  beforeAll(async () => {
    lab = await labUp({
      prefix: PREFIX,
      zones: [
        { name: 'za', iface: 'eth1', subnet: '10.71.1.0/24', hosts: [{ name: 'h1', address: '10.71.1.10' }] },
        { name: 'zb', iface: 'eth2', subnet: '10.71.2.0/24', hosts: [{ name: 'h2', address: H2 }] },
      ],
      management: { iface: 'mgmt0', subnet: '10.71.99.0/24', hostAddress: '10.71.99.10' },
    });
    nft = new Nft({ netns: lab.gw });
    dir = await mkdtemp(path.join(tmpdir(), 'slcA-it-'));
    state = await StateStore.open(path.join(dir, 'state'));
    // The daemon's own configuration supplies management access for a first boot with no policy at all.
    const fallbackManagement: Management = {
      interface: 'mgmt0',
      allowFrom: [{ family: 4, text: '10.71.99.0/24', address: '10.71.99.0', prefix: 24 }],
      ports: [22, MGMT_PORT],
    };
    engine = new ApplyEngine({ state, nft, logger, fallbackManagement });
    await startEcho(lab, lab.hostNs('zb', 'h2'), 9000);
    await startEcho(lab, lab.hostNs('zb', 'h2'), 9001);
    await startEcho(lab, lab.gw, MGMT_PORT);
  });

  afterAll(async () => {
    engine?.close();
    if (lab !== undefined) await lab.down();
    else await labDown(PREFIX);
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('boots fail-closed with nothing confirmed: no forwarding, management reachable', async () => {
    const r = await engine.boot();
    expect(r).toEqual({ mode: 'fail-closed', reason: 'no confirmed policy version' });
    expect((await tcpProbe(h1(), H2, 9000, 1000)).ok).toBe(false);
    await expectAntiLockout();
  });

  it('applies a valid policy: the allowed flow passes, another port is dropped', async () => {
    await applyAndList(P1, 'p1');
    expect(await tcpProbe(h1(), H2, 9000)).toEqual({ ok: true, outcome: 'ok' });
    expect((await tcpProbe(h1(), H2, 9001, 1000)).outcome).toBe('timeout');
    expect(state.runtime()).toMatchObject({ runningVersionId: 1, lastConfirmedVersionId: 1, mode: 'policy' });
  });

  it('a load the kernel refuses leaves `nft list ruleset` byte-identical', async () => {
    const before = await nft.listRuleset({ stateless: true });
    const failing = new ApplyEngine({ state, nft: new KernelRejectingNft({ netns: lab.gw }), logger });
    const err = await failing.apply(P2, { who: 'tester' }).catch((e: unknown) => e);
    failing.close();
    expect(err).toBeInstanceOf(NftError);
    expect((err as NftError).message).toMatch(/File exists/);
    expect(await nft.listRuleset({ stateless: true })).toBe(before);
    expect(state.runtime().runningVersionId).toBe(1);
    expect(state.auditEntries().at(-1)?.action).toBe('apply-failed');
    await expectAntiLockout();
  });

  it('a long-lived TCP stream survives an apply that still allows it (no reset, no gap > 1 s)', async () => {
    const stream = await startStream(lab, h1(), H2, 9000, 2500);
    await sleep(700);
    await applyAndList(P2, 'p2');
    await sleep(400);
    await applyAndList(P2, 'p2'); // a second apply of the same policy mid-stream as well
    const report = await stream.done;
    expect(report).toMatchObject({ error: null, closed: false });
    expect(report.sent).toBeGreaterThanOrEqual(20);
    expect(report.received).toBe(report.sent);
    expect(report.maxGapMs).toBeLessThan(1000);
    expect(streamSurvived(report)).toBe(true);
    expect(await tcpProbe(h1(), H2, 9001)).toEqual({ ok: true, outcome: 'ok' });
  });

  it('the stream probe does notice an outage (control: fail-closed cuts established flows)', async () => {
    const { compileFailClosed } = await import('../policies/compile.ts');
    const stream = await startStream(lab, h1(), H2, 9000, 2500);
    await sleep(500);
    await nft.load(compileFailClosed(undefined));
    await sleep(1300);
    await engine.rollback('tester', ids.get('p2')); // restore through the engine
    const report = await stream.done;
    expect(streamSurvived(report)).toBe(false);
    expect(report.maxGapMs).toBeGreaterThan(1000);
    expect(zeroCounters(await nft.listRuleset())).toBe(zeroCounters(must(listings.get('p2'), 'p2 listing')));
  });

  it('an unconfirmed apply (T = 3 s) is rolled back by T + 2 s, with auto-rollback in the audit log', async () => {
    const previous = zeroCounters(await nft.listRuleset());
    const t0 = Date.now();
    const r = await engine.apply(P3, { who: 'tester', confirmWithinSec: 3 });
    expect(r.pending?.previousVersionId).toBe(state.runtime().lastConfirmedVersionId);
    await expectAntiLockout();
    expect(zeroCounters(await nft.listRuleset())).not.toBe(previous);
    let restoredAt = 0;
    while (Date.now() - t0 < 6000) {
      if (zeroCounters(await nft.listRuleset()) === previous) {
        restoredAt = Date.now() - t0;
        break;
      }
      await sleep(100);
    }
    expect(restoredAt).toBeGreaterThanOrEqual(2900);
    expect(restoredAt).toBeLessThanOrEqual(5000);
    await engine.idle();
    expect(state.auditEntries().at(-1)).toMatchObject({ action: 'auto-rollback', versionId: r.versionId });
    expect(state.getVersion(r.versionId)?.status).toBe('rolled-back');
    expect(engine.pending()).toBeNull();
    await expectAntiLockout();
  });

  it('an apply confirmed in time stays', async () => {
    const r = await engine.apply(P3, { who: 'tester', confirmWithinSec: 3 });
    const applied = await nft.listRuleset();
    await sleep(1000);
    await engine.confirm('tester');
    await sleep(2600);
    await engine.idle();
    expect(zeroCounters(await nft.listRuleset())).toBe(zeroCounters(applied));
    expect(state.runtime()).toMatchObject({
      runningVersionId: r.versionId,
      lastConfirmedVersionId: r.versionId,
    });
    expect(state.auditEntries().at(-1)?.action).toBe('confirm');
    await expectAntiLockout();
  });

  it('rolls back to a recorded version', async () => {
    const p1 = must(ids.get('p1'), 'p1 id');
    await engine.rollback('tester', p1);
    expect(zeroCounters(await nft.listRuleset())).toBe(zeroCounters(must(listings.get('p1'), 'p1 listing')));
    expect(state.runtime()).toMatchObject({
      runningVersionId: p1,
      lastConfirmedVersionId: p1,
      pending: null,
    });
    await expectAntiLockout();
    expect(await tcpProbe(h1(), H2, 9000)).toEqual({ ok: true, outcome: 'ok' });
  });

  it('kill -9 of a process mid-apply leaves the ruleset fully old or fully new; boot reloads what is recorded', async () => {
    const oldText = P1;
    const newText = policy([9000, 9001], 600);
    // Reference listings of both, loaded whole.
    await engine.apply(newText, { who: 'tester' });
    const newList = zeroCounters(await nft.listRuleset());
    const oldId = (await engine.apply(oldText, { who: 'tester' })).versionId;
    const oldList = zeroCounters(await nft.listRuleset());
    expect(newList).not.toBe(oldList);

    const newFile = path.join(dir, 'new.yaml');
    await writeFile(newFile, newText);
    const url = (p: string): string =>
      JSON.stringify(pathToFileURL(path.resolve(import.meta.dirname, p)).href);
    const childJs = `
      import { readFileSync } from 'node:fs';
      import pino from 'pino';
      import { ApplyEngine } from ${url('../gateway/apply.ts')};
      import { Nft } from ${url('../gateway/nft.ts')};
      import { StateStore } from ${url('../gateway/state.ts')};
      const [stateDir, file, netns] = process.argv.slice(1);
      const state = await StateStore.open(stateDir);
      const engine = new ApplyEngine({ state, nft: new Nft({ netns }), logger: pino({ level: 'silent' }) });
      const text = readFileSync(file, 'utf8');
      console.log('applying');
      await engine.apply(text, { who: 'child', file });
      console.log('applied');
    `;
    const outcomes: string[] = [];
    const delays = [0, 200, 350, 450, 520, 600, 700, 900];
    for (const [i, delay] of delays.entries()) {
      // Each round starts from "old running and recorded" in its own state dir.
      const stateDir = path.join(dir, `kill-${i}`);
      const s = await StateStore.open(stateDir);
      const e = new ApplyEngine({ state: s, nft, logger });
      await e.apply(oldText, { who: 'tester' });
      e.close();
      expect(zeroCounters(await nft.listRuleset())).toBe(oldList);

      const child = spawn(
        process.execPath,
        ['--input-type=module', '-e', childJs, stateDir, newFile, lab.gw],
        {
          cwd: path.resolve(import.meta.dirname, '..'),
          stdio: ['ignore', 'pipe', 'pipe'],
          // Its own process group, so the kill takes nft down with it, as systemd does with a daemon's cgroup.
          detached: true,
        },
      );
      const exited = new Promise((resolve) => child.once('exit', resolve));
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const t0 = Date.now();
      while (!out.includes('applying') && child.exitCode === null && Date.now() - t0 < 20_000) await sleep(5);
      expect(out).toContain('applying');
      await sleep(delay);
      try {
        process.kill(-must(child.pid, 'child pid'), 'SIGKILL');
      } catch (err) {
        // ESRCH: the apply finished and the child exited before the kill; that round is "new".
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
      }
      await exited;
      expect(out).not.toMatch(/Error/);
      await sleep(100);
      const now = zeroCounters(await nft.listRuleset());
      const which = now === oldList ? 'old' : now === newList ? 'new' : 'MIXED';
      outcomes.push(`${delay}ms:${which}${out.includes('applied') ? '(finished)' : ''}`);
      expect(which).not.toBe('MIXED');

      // A restarted daemon loads what the state dir records, whatever the kernel holds.
      const s2 = await StateStore.open(stateDir);
      const e2 = new ApplyEngine({ state: s2, nft, logger });
      const boot = await e2.boot();
      e2.close();
      const recorded = s2.runtime().runningVersionId;
      expect(boot).toMatchObject({ mode: 'policy', versionId: recorded });
      const expected =
        must(s2.getVersion(must(recorded, 'recorded id')), 'recorded version').text === newText
          ? newList
          : oldList;
      expect(zeroCounters(await nft.listRuleset())).toBe(expected);
    }
    console.log(`kill -9 mid-apply outcomes: ${outcomes.join(', ')}`);
    await engine.rollback('tester', oldId);
    await expectAntiLockout();
  });
});
