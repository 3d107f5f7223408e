import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { readdir, readFile } from 'node:fs/promises';
import { allowedCpus, cpuPlan, formatCpuList, parseCpuList, pinCpus, runInBackground } from './sched.ts';

/**
 * The scheduling policy of every thread of `pid`, from /proc (field 41 of /proc/PID/task/TID/stat;
 * 5 = SCHED_IDLE, 0 = SCHED_OTHER).
 */
async function threadPolicies(pid: number): Promise<number[]> {
  const tids = await readdir(`/proc/${pid}/task`);
  const out: number[] = [];
  for (const tid of tids) {
    try {
      const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      // The command name (field 2) may contain spaces and parentheses: count fields after the last ')'.
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // rest[0] is field 3, so field 41 is rest[38].
      out.push(Number(rest[38]));
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return out;
}

const SCHED_IDLE = 5;

/** A Node child with its usual worker threads, idling until killed. */
async function idleNode() {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000); console.log("up")'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await once(child.stdout, 'data');
  return child;
}

describe('runInBackground', () => {
  it('puts every thread of a running Node process in SCHED_IDLE at nice 19', async () => {
    const child = await idleNode();
    try {
      const pid = child.pid as number;
      const before = await threadPolicies(pid);
      // Node starts several threads (V8 platform, libuv): all of them must change, not just the main one.
      expect(before.length).toBeGreaterThan(1);
      expect(before.every((p) => p === 0)).toBe(true);
      const r = await runInBackground(pid);
      expect(r).toEqual({ ok: true, policy: 'idle' });
      const after = await threadPolicies(pid);
      expect(after.length).toBe(before.length);
      expect(after.every((p) => p === SCHED_IDLE)).toBe(true);
      // Field 19 of /proc/PID/stat is the nice value.
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
      expect(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]).toBe('19');
    } finally {
      child.kill();
    }
  });

  it('reports, without throwing, a process it cannot change', async () => {
    // No such process: chrt fails and says so; the caller keeps running at its old class.
    const r = await runInBackground(2 ** 22 + 12345);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(/chrt/);
  });
});

describe('CPU lists and placement', () => {
  it('parses and formats CPU lists', () => {
    expect(parseCpuList('0-3,5')).toEqual([0, 1, 2, 3, 5]);
    expect(parseCpuList(' 7 ')).toEqual([7]);
    expect(parseCpuList('3,1,1-2')).toEqual([1, 2, 3]);
    for (const bad of ['', '3-1', 'a', '1,,2', '0-5000', '-1', '1-2-3'])
      expect(parseCpuList(bad), bad).toBeUndefined();
    expect(formatCpuList([0, 1, 2, 3, 5])).toBe('0-3,5');
    expect(formatCpuList([1])).toBe('1');
    expect(formatCpuList([])).toBe('');
  });

  it('auto gives the UI the last allowed CPU and the daemon the rest; one CPU stays shared', () => {
    expect(cpuPlan('ui', [0, 1])).toEqual([1]);
    expect(cpuPlan('daemon', [0, 1])).toEqual([0]);
    expect(cpuPlan('daemon', [2, 3, 6])).toEqual([2, 3]);
    expect(cpuPlan('ui', [2, 3, 6])).toEqual([6]);
    expect(cpuPlan('ui', [0])).toBeUndefined();
    expect(cpuPlan('daemon', [0])).toBeUndefined();
    expect(cpuPlan('daemon', [0, 1], 'all')).toBeUndefined();
  });

  it('an explicit list must be valid and allowed, else a usage error that names it', () => {
    expect(cpuPlan('daemon', [0, 1, 2, 3], '1-2')).toEqual([1, 2]);
    expect(() => cpuPlan('ui', [0, 1], 'fast')).toThrow(/--cpus: 'fast' is not auto, all or a CPU list/);
    expect(() => cpuPlan('ui', [0, 1], '1-3')).toThrow(/CPU 2-3 is not available .*allowed: 0-1/);
    expect(() => cpuPlan('ui', [0, 1], 'x')).toThrow(expect.objectContaining({ code: 'cli.cpus' }));
  });

  it('pins every thread of a running process', async () => {
    const allowed = await allowedCpus();
    expect(allowed?.length).toBeGreaterThan(0);
    const child = await idleNode();
    try {
      const pid = child.pid as number;
      const target = [(allowed as number[])[(allowed as number[]).length - 1] as number];
      expect(await pinCpus(target, pid)).toEqual({ ok: true });
      const tids = await readdir(`/proc/${pid}/task`);
      expect(tids.length).toBeGreaterThan(1);
      for (const tid of tids) {
        const status = await readFile(`/proc/${pid}/task/${tid}/status`, 'utf8');
        expect(/^Cpus_allowed_list:\s*(\S+)$/m.exec(status)?.[1]).toBe(formatCpuList(target));
      }
      // This process is untouched.
      expect(await allowedCpus()).toEqual(allowed);
    } finally {
      child.kill();
    }
  });
});
