/**
 * systemd readiness and watchdog notifications (sd_notify(3)). Node has no unix datagram sockets, so the
 * message goes through systemd's own `systemd-notify` helper; the unit sets NotifyAccess=all for it.
 * Outside systemd (no NOTIFY_SOCKET) this does nothing.
 */
import { spawn } from 'node:child_process';

export async function notifySystemd(...assignments: string[]): Promise<void> {
  if (process.env['NOTIFY_SOCKET'] === undefined || process.env['NOTIFY_SOCKET'] === '') return;
  await new Promise<void>((resolve) => {
    const child = spawn('systemd-notify', [`--pid=${process.pid}`, ...assignments], { stdio: 'ignore' });
    child.on('error', () => resolve());
    child.on('exit', () => resolve());
  });
}

/** Half the watchdog period systemd asks for (WATCHDOG_USEC), or undefined when no watchdog is configured. */
export function watchdogIntervalMs(env: NodeJS.ProcessEnv): number | undefined {
  const usec = Number(env['WATCHDOG_USEC']);
  if (!Number.isFinite(usec) || usec <= 0) return undefined;
  const pid = env['WATCHDOG_PID'];
  if (pid !== undefined && pid !== '' && Number(pid) !== process.pid) return undefined;
  return Math.max(1000, Math.floor(usec / 1000 / 2));
}
