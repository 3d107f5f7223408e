/**
 * CPU scheduling class for processes that must never delay the data path (the web UI).
 *
 * Why SCHED_IDLE and not only nice 19: since Linux 6.6 the fair scheduler is EEVDF, where nice changes a
 * task's share but not whether a waking task preempts the running one. A proxy woken by a Modbus request
 * can wait behind a nice-19 UI process for a whole slice (milliseconds: bench/ui measured the poll's p99
 * rising 1.5–1.9× with nice alone). A running SCHED_IDLE task is preempted by any normal task that wakes
 * (kernel/sched/fair.c, check_preempt_wakeup_fair), and it still gets a small share when the CPU is busy
 * (weight 3 against 1024), so the UI slows under load but is never frozen for good.
 *
 * Node has no API for the policy, so util-linux `chrt` sets it on every thread of this process (V8 and
 * libuv threads exist before any code runs, so the policy cannot simply be inherited). The systemd unit sets
 * the same with CPUSchedulingPolicy=idle; this covers `sluice ui` started by hand, by the demo or by benches.
 */
import { setPriority } from 'node:os';
import { readFile } from 'node:fs/promises';
import { execa } from 'execa';
import { UsageError } from '../policies/errors.ts';

export type BackgroundResult = { ok: true; policy: 'idle' } | { ok: false; policy: 'nice'; reason: string };

/** Nice 19 and SCHED_IDLE for every thread of `pid` (default: this process). Best effort, never throws. */
export async function runInBackground(pid: number = process.pid): Promise<BackgroundResult> {
  try {
    setPriority(pid, 19);
  } catch {
    // Not permitted (already niced further, or another user's process): the policy below still applies.
  }
  // --all-tasks: every thread; --idle with priority 0 (the only one SCHED_IDLE has).
  const r = await runUtil('chrt', ['--all-tasks', '--idle', '--pid', '0', String(pid)]);
  return r.ok ? { ok: true, policy: 'idle' } : { ok: false, policy: 'nice', reason: r.reason };
}

/** Runs a util-linux tool (chrt, taskset); best effort: a failure becomes a reason in words, never a throw. */
async function runUtil(tool: string, args: string[]): Promise<{ ok: true } | { ok: false; reason: string }> {
  try {
    const r = await execa(tool, args, { reject: false, timeout: 5000 });
    if (r.exitCode !== 0)
      return {
        ok: false,
        reason: `${tool}: ${String(r.stderr || r.stdout || `exit ${String(r.exitCode)}`).trim()}`,
      };
    return { ok: true };
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  }
}

// ---------------------------------------------------------------------------------------------------------
// CPU placement

/**
 * Why split CPUs between the daemon and the UI: with both free to run anywhere, a busy UI makes the kernel
 * place the filters' wake-ups next to it (a CPU running only SCHED_IDLE work counts as idle) and share its
 * caches and softirq work; bench/ui measured the poll's p99 1.3–1.5× under UI load that way, and 0.96× with
 * the UI on a CPU of its own. The daemon's event loop uses one core at most, so on a gateway with two or more
 * CPUs the UI takes the last one and the daemon (with its filters and the nft/ulogd2 children) the others.
 * Kernel forwarding is untouched: softirqs run wherever packets arrive.
 */
export type CpuRole = 'daemon' | 'ui';

/** `0-3,5` → [0,1,2,3,5]; undefined for anything else (bounded: CPU numbers below 4096). */
export function parseCpuList(text: string): number[] | undefined {
  const t = text.trim();
  if (t === '' || t.length > 1000) return undefined;
  const out = new Set<number>();
  for (const part of t.split(',')) {
    const m = /^(\d{1,4})(?:-(\d{1,4}))?$/.exec(part.trim());
    if (m === null) return undefined;
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (a > b || b >= 4096) return undefined;
    for (let c = a; c <= b; c++) out.add(c);
  }
  return [...out].sort((x, y) => x - y);
}

export function formatCpuList(cpus: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < cpus.length;) {
    let j = i;
    while (j + 1 < cpus.length && (cpus[j + 1] as number) === (cpus[j] as number) + 1) j++;
    parts.push(i === j ? String(cpus[i]) : `${String(cpus[i])}-${String(cpus[j])}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** The CPUs this process may run on (`Cpus_allowed_list` of /proc/PID/status). */
export async function allowedCpus(pid: number = process.pid): Promise<number[] | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const m = /^Cpus_allowed_list:\s*(\S+)$/m.exec(status);
    return m?.[1] === undefined ? undefined : parseCpuList(m[1]);
  } catch {
    return undefined;
  }
}

/**
 * Which CPUs a role should run on. `spec`: `auto` (default; the split above when 2+ CPUs are allowed),
 * `all` (no pinning), or a list such as `0-2`, which must lie within the allowed CPUs.
 * Returns undefined when nothing is to be changed.
 */
export function cpuPlan(role: CpuRole, allowed: readonly number[], spec = 'auto'): number[] | undefined {
  if (spec === 'all') return undefined;
  if (spec === 'auto') {
    if (allowed.length < 2) return undefined;
    const last = allowed[allowed.length - 1] as number;
    return role === 'ui' ? [last] : allowed.slice(0, -1);
  }
  const list = parseCpuList(spec);
  if (list === undefined)
    throw new UsageError('cli.cpus', `--cpus: '${spec}' is not auto, all or a CPU list such as 0-2,4`);
  const outside = list.filter((c) => !allowed.includes(c));
  if (outside.length > 0)
    throw new UsageError(
      'cli.cpus',
      `--cpus: CPU ${formatCpuList(outside)} is not available to this process (allowed: ${formatCpuList(allowed)})`,
    );
  return list;
}

/** Pins every thread of `pid` to `cpus` with util-linux taskset. Best effort, never throws. */
export async function pinCpus(
  cpus: readonly number[],
  pid: number = process.pid,
): Promise<{ ok: true } | { ok: false; reason: string }> {
  return await runUtil('taskset', ['--all-tasks', '--cpu-list', '--pid', formatCpuList(cpus), String(pid)]);
}

/**
 * `cpuPlan` for this process: throws UsageError for a bad spec (so the command fails before it starts),
 * else returns a function that pins the process and says what it did (or why not) in one line, or nothing.
 * Called in two steps so the pinning happens only once the daemon or UI is up (a command that fails early
 * must not have moved its caller, e.g. a test runner calling the CLI in-process).
 */
export async function planPlacement(
  role: CpuRole,
  spec: string | undefined,
): Promise<() => Promise<string | undefined>> {
  const allowed = await allowedCpus();
  if (allowed === undefined)
    return () => Promise.resolve('CPU placement skipped: cannot read the allowed CPUs');
  const plan = cpuPlan(role, allowed, spec);
  if (plan === undefined) return () => Promise.resolve(undefined);
  return async () => {
    const r = await pinCpus(plan);
    return r.ok ? `running on CPU ${formatCpuList(plan)}` : `CPU placement failed (${r.reason})`;
  };
}
