/**
 * The apply engine: puts a policy live safely, keeps it live across restarts, and brings the previous one
 * back when a change is not confirmed in time. No sockets here: the daemon calls it.
 *
 * Invariants (the reasons for the order of every step below):
 *  - The running ruleset is byte-identical after any failure: validate → compile → `nft -c` → one atomic
 *    `nft -f` transaction (gateway/nft.ts). Nothing touches the kernel before the last step, and the kernel
 *    applies that step whole or not at all.
 *  - A version is recorded as running only after its load succeeded, and the runtime pointers are one atomic
 *    file write. If the process dies between the load and that write, boot() reloads what is recorded:
 *    "what is recorded wins".
 *  - The gateway never forwards unfiltered: when nothing confirmed can be loaded, the built-in fail-closed
 *    ruleset is (IEC 62443-3-3 SR 5.2 RE3 / 62443-4-2 NDR 5.2 RE3, CR 3.6 deterministic output, CR 7.4).
 *  - One operation at a time: applies, confirms, rollbacks, the confirmation timer and boot are serialised.
 *  - Audit failures never stop the essential function (CR 2.10): they are logged, not thrown, once the
 *    kernel has changed.
 */
import { performance } from 'node:perf_hooks';
import pino, { type Logger } from 'pino';
import { compileFailClosed, compilePolicy } from '../policies/compile.ts';
import { PolicyInvalidError, SluiceError } from '../policies/errors.ts';
import type {
  CompileOptions,
  LintFinding,
  Management,
  Policy,
  Problem,
  ProxyPlan,
} from '../policies/types.ts';
import { validatePolicyText } from '../policies/validate.ts';
import {
  sha256,
  type LintSummary,
  type NewAuditEntry,
  type PendingConfirmation,
  type RuntimeState,
  type StateStore,
  type VersionRecord,
  type VersionStatus,
} from './state.ts';

/** What the engine needs of gateway/nft.ts's `Nft`; a structural subset so unit tests can pass a fake. */
export interface RulesetLoader {
  /** `nft -c`: throws NftError when nft would refuse the script; changes nothing. */
  check(script: string): Promise<unknown>;
  /** One atomic transaction: throws NftError and leaves the running ruleset untouched on failure. */
  load(script: string): Promise<unknown>;
}

export interface ApplyEngineOptions {
  state: StateStore;
  nft: RulesetLoader;
  now?: () => Date;
  logger?: Logger;
  /** Called after every successful load (apply, confirm-timeout, rollback, boot, fail-closed). */
  onPlanChange?: (plan: ProxyPlan) => Promise<void>;
  compileOptions?: CompileOptions;
  /** Who the engine's own actions (boot, auto-rollback) are attributed to. */
  systemUser?: string;
  /**
   * Management settings for fail-closed when no recorded policy yields any (first boot, lost state dir),
   * e.g. from the daemon's configuration; without it the fail-closed ruleset has no management access.
   */
  fallbackManagement?: Management;
}

export interface ApplyOptions {
  file?: string;
  who: string;
  comment?: string;
  /** Seconds until the previous version comes back unless confirm() is called. */
  confirmWithinSec?: number;
}

export interface ApplyTimings {
  validateMs: number;
  compileMs: number;
  checkMs: number;
  loadMs: number;
  recordMs: number;
  totalMs: number;
}

export interface ApplyResult {
  versionId: number;
  hash: string;
  status: VersionStatus;
  /** The version a rollback (manual or by deadline) returns to; null = fail-closed. */
  previousVersionId: number | null;
  pending: PendingConfirmation | null;
  lint: LintSummary;
  warnings: Problem[];
  plan: ProxyPlan;
  timings: ApplyTimings;
  /** Set when the ruleset is live but restarting the proxies failed. */
  proxyError?: string;
}

export interface BootResult {
  mode: 'policy' | 'fail-closed';
  versionId?: number;
  reason?: string;
  /** A pending confirmation re-armed at boot (its deadline had not passed). */
  pending?: PendingConfirmation | null;
}

export interface ConfirmResult {
  versionId: number;
}

export interface RollbackResult {
  mode: 'policy' | 'fail-closed';
  fromVersionId: number | null;
  /** Undefined when the rollback ended fail-closed. */
  toVersionId?: number;
  reason?: string;
}

export interface EngineStatus {
  mode: 'policy' | 'fail-closed' | 'none';
  runningVersionId: number | null;
  runningHash?: string;
  lastConfirmedVersionId: number | null;
  pending: PendingConfirmation | null;
}

/** A policy that failed validation or lint; nothing was changed. `problems` holds every error. */
export class PolicyRejectedError extends PolicyInvalidError {
  readonly problems: Problem[];
  readonly lint: LintFinding[];
  constructor(message: string, problems: Problem[], lint: LintFinding[]) {
    super('apply.invalid-policy', message);
    this.problems = problems;
    this.lint = lint;
  }
}

/** The longest delay setTimeout accepts; longer deadlines are re-armed in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** A confirmation window longer than a day is a typo, and a forgotten rollback a day later is a surprise. */
export const MAX_CONFIRM_WITHIN_SEC = 24 * 3600;
/** After a failed automatic rollback (nft unavailable, say), retry instead of leaving the change in place. */
const DEADLINE_RETRY_MS = 5000;

const EMPTY_PLAN: ProxyPlan = { version: 1, entries: [] };

export function summariseLint(findings: LintFinding[]): LintSummary {
  return {
    errors: findings.filter((f) => f.severity === 'error' && f.waiver === undefined).length,
    warnings: findings.filter((f) => f.severity === 'warning' && f.waiver === undefined).length,
    acceptedRisks: findings.filter((f) => f.waiver !== undefined).length,
    findings,
  };
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

interface Prepared {
  ruleset: string;
  plan: ProxyPlan;
}

export class ApplyEngine {
  private readonly state: StateStore;
  private readonly nft: RulesetLoader;
  private readonly now: () => Date;
  private readonly log: Logger;
  private readonly onPlanChange: ((plan: ProxyPlan) => Promise<void>) | undefined;
  private readonly compileOptions: CompileOptions | undefined;
  private readonly systemUser: string;
  private readonly fallbackManagement: Management | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private plan: ProxyPlan | undefined;
  private closed = false;

  constructor(opts: ApplyEngineOptions) {
    this.state = opts.state;
    this.nft = opts.nft;
    this.now = opts.now ?? (() => new Date());
    // Without a logger from the daemon, still say loud things (fail-closed) on stderr.
    this.log = opts.logger ?? pino({ name: 'sluice-apply', level: 'warn' }, pino.destination(2));
    this.onPlanChange = opts.onPlanChange;
    this.compileOptions = opts.compileOptions;
    this.systemUser = opts.systemUser ?? 'sluice';
    this.fallbackManagement = opts.fallbackManagement;
  }

  // ---------------------------------------------------------------------------------------------------
  // Public API

  /**
   * Loads what the state dir says should run: the last confirmed version, or — when a confirmation was
   * pending at shutdown — the unconfirmed version if its deadline is still ahead (the timer is re-armed)
   * or the previous one if it passed. Anything unloadable → the fail-closed ruleset, said loudly.
   */
  boot(): Promise<BootResult> {
    return this.serial(() => this.doBoot());
  }

  apply(text: string, opts: ApplyOptions): Promise<ApplyResult> {
    return this.serial(() => this.doApply(text, opts));
  }

  /** Makes the pending version permanent: clears the deadline and records it as confirmed. */
  confirm(who: string): Promise<ConfirmResult> {
    return this.serial(async () => {
      const rt = this.state.runtime();
      if (rt.pending === null)
        throw new SluiceError('apply.nothing-pending', 'no applied version awaits confirmation');
      const id = rt.pending.versionId;
      // Record first, then stop the timer: if the write fails, the deadline still rolls back, as recorded.
      await this.state.setRuntime({ pending: null, lastConfirmedVersionId: id });
      this.clearTimer();
      await this.state.setVersionStatus(id, 'confirmed');
      await this.audit({ who, action: 'confirm', detail: `version ${id} confirmed`, versionId: id });
      this.log.info({ versionId: id, who }, 'version confirmed');
      return { versionId: id };
    });
  }

  /**
   * Restores `versionId`, or without it the version before the running one: the pending confirmation's
   * previous version, else the newest confirmed version older than the running one. The restored version
   * counts as confirmed (the operator chose it); the one it replaces is marked rolled-back.
   */
  rollback(who: string, versionId?: number): Promise<RollbackResult> {
    return this.serial(async () => {
      const rt = this.state.runtime();
      const target = versionId ?? this.previousOf(rt.runningVersionId, rt.pending);
      if (target === undefined || target === null) {
        throw new SluiceError('apply.no-previous', 'there is no earlier confirmed version to roll back to');
      }
      const version = this.state.getVersion(target);
      if (version === undefined)
        throw new SluiceError('apply.unknown-version', `no version ${target} is recorded`);
      const prepared = this.prepare(version);
      await this.load(prepared.ruleset);
      const from = rt.runningVersionId;
      this.clearTimer();
      await this.bestEffort(async () => {
        await this.state.setRuntime({
          runningVersionId: target,
          lastConfirmedVersionId: target,
          pending: null,
          mode: 'policy',
        });
        if (from !== null && from !== target) await this.state.setVersionStatus(from, 'rolled-back');
        await this.state.setVersionStatus(target, 'confirmed');
      });
      await this.audit({
        who,
        action: 'rollback',
        detail: `${from === null ? rt.mode : `version ${from}`} → version ${target}`,
        versionId: target,
      });
      this.log.warn({ from, to: target, who }, 'rolled back');
      await this.setPlan(prepared.plan);
      return { mode: 'policy', fromVersionId: from, toVersionId: target };
    });
  }

  pending(): { versionId: number; deadline: string } | null {
    const p = this.state.runtime().pending;
    return p === null ? null : { versionId: p.versionId, deadline: p.deadline };
  }

  currentPlan(): ProxyPlan | undefined {
    return this.plan;
  }

  status(): EngineStatus {
    const rt = this.state.runtime();
    const running = rt.runningVersionId === null ? undefined : this.state.getVersion(rt.runningVersionId);
    return {
      mode: rt.mode,
      runningVersionId: rt.runningVersionId,
      ...(running === undefined ? {} : { runningHash: running.hash }),
      lastConfirmedVersionId: rt.lastConfirmedVersionId,
      pending: rt.pending,
    };
  }

  /** Stops the confirmation timer (daemon shutdown). The deadline stays recorded: the next boot honours it. */
  close(): void {
    this.closed = true;
    this.clearTimer();
  }

  /** Resolves when every operation queued so far has finished (tests, shutdown). */
  async idle(): Promise<void> {
    await this.serial(async () => undefined);
  }

  // ---------------------------------------------------------------------------------------------------
  // Operations (always run inside serial())

  private async doApply(text: string, opts: ApplyOptions): Promise<ApplyResult> {
    const t0 = performance.now();
    const confirmWithin = opts.confirmWithinSec;
    if (
      confirmWithin !== undefined &&
      (!Number.isFinite(confirmWithin) || confirmWithin <= 0 || confirmWithin > MAX_CONFIRM_WITHIN_SEC)
    ) {
      throw new SluiceError(
        'apply.bad-confirm-within',
        `the confirmation window must be between 1 and ${MAX_CONFIRM_WITHIN_SEC} seconds, got ${confirmWithin}`,
      );
    }
    const file = opts.file ?? '<policy>';

    // 1. validate (CR 3.5 input validation) — nothing has changed if this throws.
    const result = validatePolicyText(text, file, { now: this.now() });
    const t1 = performance.now();
    if (!result.ok || result.policy === undefined) {
      const errors = result.errors.length;
      await this.audit({
        who: opts.who,
        action: 'apply-rejected',
        detail: `${file}: ${errors} error${errors === 1 ? '' : 's'}; nothing changed`,
      });
      throw new PolicyRejectedError(
        `${file} is not valid (${errors} error${errors === 1 ? '' : 's'}); nothing was changed`,
        result.errors,
        result.lint,
      );
    }
    const lint = summariseLint(result.lint);
    // What every record of this attempt carries, failed or not.
    const attempt = {
      text,
      who: opts.who,
      ...(opts.comment === undefined ? {} : { comment: opts.comment }),
      ...(opts.file === undefined ? {} : { file: opts.file }),
      lint,
    };

    // 2. compile (pure), 3. nft -c, 4. one atomic load.
    let compiled: { ruleset: string; plan: ProxyPlan };
    const mark = { compiled: t1, checked: t1 };
    try {
      compiled = compilePolicy(result.policy, this.compileOptions);
      mark.compiled = performance.now();
      await this.nft.check(compiled.ruleset);
      mark.checked = performance.now();
      await this.nft.load(compiled.ruleset);
    } catch (err) {
      // Record the attempt so the audit trail shows what was tried and by whom; the kernel is unchanged.
      await this.bestEffort(async () => {
        const failed = await this.state.addVersion({
          ...attempt,
          status: 'failed',
          when: this.now().toISOString(),
        });
        await this.audit({
          who: opts.who,
          action: 'apply-failed',
          detail: `version ${failed.id} from ${file}: ${message(err)}; running ruleset unchanged`,
          versionId: failed.id,
        });
      });
      this.log.error({ err, file, who: opts.who }, 'apply failed; running ruleset unchanged');
      throw err;
    }
    const t4 = performance.now();

    // 5. record: the version, then the runtime pointers in one atomic write.
    const rt = this.state.runtime();
    // While a change awaits confirmation, "previous" stays the known-good version, not the unconfirmed one.
    const previous = rt.pending !== null ? rt.pending.previousVersionId : rt.lastConfirmedVersionId;
    let record: VersionRecord | undefined;
    let pending: PendingConfirmation | null;
    try {
      record = await this.state.addVersion({
        ...attempt,
        // Without a confirmation window the operator's apply is the confirmation.
        status: confirmWithin === undefined ? 'confirmed' : 'applied',
        when: this.now().toISOString(),
      });
      pending =
        confirmWithin === undefined
          ? null
          : {
              versionId: record.id,
              previousVersionId: previous,
              deadline: new Date(this.now().getTime() + confirmWithin * 1000).toISOString(),
            };
      await this.state.setRuntime({
        runningVersionId: record.id,
        lastConfirmedVersionId: pending === null ? record.id : previous,
        pending,
        mode: 'policy',
      });
    } catch (err) {
      // The kernel runs a ruleset the state dir does not know about. What is recorded wins: put the
      // recorded ruleset back so the kernel, the state dir and the next boot agree, then report.
      this.log.error({ err }, 'apply: the new version could not be recorded; restoring the recorded ruleset');
      const orphan = record;
      if (orphan !== undefined) await this.bestEffort(() => this.state.setVersionStatus(orphan.id, 'failed'));
      await this.restoreRecorded(rt).catch((restoreErr: unknown) =>
        this.log.fatal({ err: restoreErr }, 'apply: restoring the recorded ruleset failed too'),
      );
      throw new SluiceError(
        'apply.state-write',
        `the state dir could not record the new version: ${message(err)}`,
        {
          cause: err,
          userError: false,
        },
      );
    }
    const t5 = performance.now();
    const superseded = rt.pending !== null ? `; supersedes unconfirmed version ${rt.pending.versionId}` : '';
    await this.audit({
      who: opts.who,
      action: 'apply',
      detail:
        `version ${record.id} (sha256 ${record.hash.slice(0, 12)}) from ${file}` +
        (pending === null
          ? ''
          : `; confirm by ${pending.deadline} or version ${previous ?? 'fail-closed'} returns`) +
        superseded +
        (opts.comment ? `; ${opts.comment}` : ''),
      versionId: record.id,
    });
    if (pending === null) this.clearTimer();
    else this.arm(pending);
    this.log.info(
      { versionId: record.id, hash: record.hash, who: opts.who, pending, loadMs: t4 - mark.checked },
      'policy applied',
    );
    const proxyError = await this.setPlan(compiled.plan);
    return {
      versionId: record.id,
      hash: record.hash,
      status: record.status,
      previousVersionId: previous,
      pending,
      lint,
      warnings: result.warnings,
      plan: compiled.plan,
      timings: {
        validateMs: t1 - t0,
        compileMs: mark.compiled - t1,
        checkMs: mark.checked - mark.compiled,
        loadMs: t4 - mark.checked,
        recordMs: t5 - t4,
        totalMs: performance.now() - t0,
      },
      ...(proxyError === undefined ? {} : { proxyError }),
    };
  }

  private async doBoot(): Promise<BootResult> {
    this.closed = false;
    const rt = this.state.runtime();
    if (this.state.problems.length > 0) {
      // A damaged state dir cannot say what should run: fail closed rather than guess (CR 3.6).
      const reason =
        'state dir unreadable: ' +
        this.state.problems
          .map((p) => `${p.file}: ${p.message}${p.movedTo === undefined ? '' : ` (kept as ${p.movedTo})`}`)
          .join('; ');
      return await this.bootFailClosed(reason, []);
    }

    // Which versions to try, in order.
    const candidates: number[] = [];
    let rearm: PendingConfirmation | null = null;
    if (rt.pending !== null) {
      const p = rt.pending;
      if (Date.parse(p.deadline) <= this.now().getTime()) {
        await this.bestEffort(() => this.state.setVersionStatus(p.versionId, 'rolled-back'));
        await this.audit({
          who: this.systemUser,
          action: 'auto-rollback',
          detail:
            `version ${p.versionId} was not confirmed by ${p.deadline} (deadline passed while the daemon was down); ` +
            `restoring ${p.previousVersionId === null ? 'fail-closed' : `version ${p.previousVersionId}`}`,
          versionId: p.versionId,
        });
        if (p.previousVersionId !== null) candidates.push(p.previousVersionId);
      } else {
        rearm = p;
        candidates.push(p.versionId);
        if (p.previousVersionId !== null) candidates.push(p.previousVersionId);
      }
    } else if (rt.lastConfirmedVersionId !== null) {
      candidates.push(rt.lastConfirmedVersionId);
    }
    if (candidates.length === 0) {
      return await this.bootFailClosed(
        rt.pending !== null
          ? 'the unconfirmed version expired and nothing was confirmed before it'
          : 'no confirmed policy version',
        [],
      );
    }

    const failures: string[] = [];
    for (const id of candidates) {
      const version = this.state.getVersion(id);
      if (version === undefined) {
        failures.push(`version ${id} is not recorded`);
        continue;
      }
      let prepared: Prepared;
      try {
        prepared = this.prepare(version);
        await this.load(prepared.ruleset);
      } catch (err) {
        failures.push(`version ${id}: ${message(err)}`);
        this.log.error({ err, versionId: id }, 'boot: version failed to load');
        continue;
      }
      const keepPending = rearm !== null && rearm.versionId === id ? rearm : null;
      await this.bestEffort(() =>
        this.state.setRuntime({
          runningVersionId: id,
          mode: 'policy',
          pending: keepPending,
          // The unconfirmed version fell back to its predecessor: that one is what is confirmed.
          ...(keepPending === null ? { lastConfirmedVersionId: id } : {}),
        }),
      );
      if (keepPending !== null) this.arm(keepPending);
      await this.audit({
        who: this.systemUser,
        action: 'boot',
        detail:
          `loaded version ${id} (sha256 ${version.hash.slice(0, 12)})` +
          (keepPending === null ? '' : `; confirmation pending until ${keepPending.deadline}`) +
          (failures.length > 0 ? `; after failures: ${failures.join('; ')}` : ''),
        versionId: id,
      });
      this.log.info({ versionId: id, pending: keepPending }, 'boot: policy loaded');
      await this.setPlan(prepared.plan);
      return { mode: 'policy', versionId: id, pending: keepPending };
    }
    return await this.bootFailClosed(failures.join('; '), candidates);
  }

  /** Loads the fail-closed ruleset, keeping management reachable with the last known policy's settings. */
  private async bootFailClosed(reason: string, preferred: number[]): Promise<BootResult> {
    const management = this.lastKnownManagement(preferred);
    const script = compileFailClosed(management, this.compileOptions);
    await this.load(script);
    this.clearTimer();
    await this.bestEffort(() =>
      this.state.setRuntime({ runningVersionId: null, mode: 'fail-closed', pending: null }),
    );
    const detail =
      `FAIL-CLOSED: no forwarding, ${management === undefined ? 'no management access configured' : `management only (interface ${management.interface})`}. ` +
      `Reason: ${reason}`;
    await this.audit({ who: this.systemUser, action: 'boot', detail: 'booted fail-closed' });
    await this.audit({ who: this.systemUser, action: 'fail-closed', detail });
    // Loud: an operator must notice the plant's conduits are closed (NDR 5.2 RE3 / CR 3.6).
    this.log.fatal({ failClosed: true, reason }, detail);
    await this.setPlan(EMPTY_PLAN);
    return { mode: 'fail-closed', reason };
  }

  /** The confirmation deadline passed: restore the previous version, or fail-closed when there is none. */
  private async onDeadline(versionId: number): Promise<void> {
    const rt = this.state.runtime();
    const p = rt.pending;
    if (p === null || p.versionId !== versionId) return; // confirmed or superseded meanwhile
    const remaining = Date.parse(p.deadline) - this.now().getTime();
    if (remaining > 0) {
      this.arm(p); // the timer fired early (long deadlines are armed in steps)
      return;
    }
    const prev = p.previousVersionId;
    let restored: number | null = null;
    let plan = EMPTY_PLAN;
    let reason = '';
    try {
      if (prev !== null) {
        const version = this.state.getVersion(prev);
        if (version === undefined)
          throw new SluiceError('apply.unknown-version', `version ${prev} is not recorded`);
        const prepared = this.prepare(version);
        await this.load(prepared.ruleset);
        restored = prev;
        plan = prepared.plan;
      }
    } catch (err) {
      reason = `version ${prev} failed to load: ${message(err)}`;
      this.log.error({ err, versionId: prev }, 'auto-rollback: previous version failed to load');
    }
    if (restored === null) {
      try {
        const script = compileFailClosed(this.lastKnownManagement([versionId]), this.compileOptions);
        await this.load(script);
      } catch (err) {
        // Nothing could be loaded (nft gone?): the unconfirmed ruleset is still running. Keep trying.
        this.log.fatal({ err, versionId }, 'auto-rollback failed entirely; retrying');
        if (this.closed) return;
        this.timer = setTimeout(() => void this.serial(() => this.onDeadline(versionId)), DEADLINE_RETRY_MS);
        return;
      }
    }
    await this.bestEffort(async () => {
      await this.state.setRuntime({
        runningVersionId: restored,
        lastConfirmedVersionId: restored ?? rt.lastConfirmedVersionId,
        pending: null,
        mode: restored === null ? 'fail-closed' : 'policy',
      });
      await this.state.setVersionStatus(versionId, 'rolled-back');
    });
    const to = restored === null ? 'fail-closed' : `version ${restored}`;
    await this.audit({
      who: this.systemUser,
      action: 'auto-rollback',
      detail: `version ${versionId} was not confirmed by ${p.deadline}; restored ${to}${reason ? ` (${reason})` : ''}`,
      versionId,
    });
    if (restored === null) {
      await this.audit({
        who: this.systemUser,
        action: 'fail-closed',
        detail: `after auto-rollback of version ${versionId}`,
      });
      this.log.fatal({ failClosed: true, versionId }, 'FAIL-CLOSED after auto-rollback');
    } else {
      this.log.warn({ from: versionId, to: restored }, 'unconfirmed version rolled back');
    }
    await this.setPlan(plan);
  }

  // ---------------------------------------------------------------------------------------------------
  // Helpers

  private serial<R>(fn: () => Promise<R>): Promise<R> {
    const next = this.queue.then(fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async load(script: string): Promise<void> {
    await this.nft.check(script);
    await this.nft.load(script);
  }

  /**
   * Turns a recorded version back into a ruleset. The text is trusted only if its hash matches (CR 3.4;
   * CR 7.3 RE1 verify before restore).
   */
  private prepare(version: VersionRecord): Prepared {
    if (sha256(version.text) !== version.hash) {
      throw new SluiceError(
        'apply.integrity',
        `version ${version.id}: stored text does not match its sha256; refusing to load it`,
        { userError: false },
      );
    }
    const policy = this.revalidate(version);
    const { ruleset, plan } = compilePolicy(policy, this.compileOptions);
    return { ruleset, plan };
  }

  /**
   * Validates a recorded version again (the compiler trusts only validated input). A version that passes
   * only as of the day it was applied — typically a waiver that has expired since — is still restored, with
   * a warning: an expired waiver must not keep the plant fail-closed at the next reboot or block a rollback.
   */
  private revalidate(version: VersionRecord): Policy {
    const file = version.file ?? `version-${version.id}`;
    const today = validatePolicyText(version.text, file, { now: this.now() });
    if (today.ok && today.policy !== undefined) return today.policy;
    const then = validatePolicyText(version.text, file, { now: new Date(version.when) });
    if (then.ok && then.policy !== undefined) {
      this.log.warn(
        { versionId: version.id, errors: today.errors.map((e) => e.message) },
        'restoring a version that passed lint when applied but not today (expired waiver?)',
      );
      return then.policy;
    }
    throw new PolicyRejectedError(
      `version ${version.id} no longer validates (${today.errors.length} errors)`,
      today.errors,
      today.lint,
    );
  }

  /** Management settings for fail-closed: from the preferred versions first, then the newest parseable one. */
  private lastKnownManagement(preferred: number[]): Management | undefined {
    const all = this.state.versions();
    const ordered = [
      ...preferred
        .map((id) => all.find((v) => v.id === id))
        .filter((v): v is VersionRecord => v !== undefined),
      ...[...all].reverse(),
    ];
    for (const v of ordered) {
      if (sha256(v.text) !== v.hash) continue;
      try {
        return this.revalidate(v).gateway.management;
      } catch {
        // try the next one
      }
    }
    return this.fallbackManagement;
  }

  /** Reloads what `rt` records as running (a version or fail-closed); used when recording an apply failed. */
  private async restoreRecorded(rt: RuntimeState): Promise<void> {
    if (rt.mode === 'policy' && rt.runningVersionId !== null) {
      const version = this.state.getVersion(rt.runningVersionId);
      if (version !== undefined) {
        await this.load(this.prepare(version).ruleset);
        return;
      }
    }
    if (rt.mode === 'none') return; // nothing was loaded by Sluice before; the caller reports the failure
    await this.load(compileFailClosed(this.lastKnownManagement([]), this.compileOptions));
  }

  /** The version a rollback without an explicit id returns to. */
  private previousOf(running: number | null, pending: PendingConfirmation | null): number | null | undefined {
    if (pending !== null) return pending.previousVersionId;
    const confirmed = this.state
      .versions()
      .filter((v) => v.status === 'confirmed' && (running === null || v.id < running))
      .map((v) => v.id);
    return confirmed.length === 0 ? undefined : Math.max(...confirmed);
  }

  private arm(p: PendingConfirmation): void {
    this.clearTimer();
    if (this.closed) return;
    const delay = Math.max(0, Math.min(MAX_TIMER_MS, Date.parse(p.deadline) - this.now().getTime()));
    // Not unref'd on purpose: a pending rollback must keep the daemon alive until it has happened.
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.serial(() => this.onDeadline(p.versionId)).catch((err: unknown) =>
        this.log.fatal({ err, versionId: p.versionId }, 'auto-rollback crashed'),
      );
    }, delay);
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async setPlan(plan: ProxyPlan): Promise<string | undefined> {
    this.plan = plan;
    if (this.onPlanChange === undefined) return undefined;
    try {
      await this.onPlanChange(plan);
      return undefined;
    } catch (err) {
      // The ruleset is live either way; a proxy that failed to start is the daemon's to report and retry.
      this.log.error({ err }, 'proxy plan change failed');
      return message(err);
    }
  }

  /** CR 2.10: a failing audit write must not undo or block a change the kernel already has. */
  private async audit(entry: NewAuditEntry): Promise<void> {
    await this.bestEffort(() => this.state.audit({ time: this.now().toISOString(), ...entry }));
  }

  private async bestEffort(fn: () => Promise<unknown>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      this.log.error({ err }, 'state write failed');
    }
  }
}
