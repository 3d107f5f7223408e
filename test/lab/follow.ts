/**
 * Collects a lab child's JSON stdout lines as they arrive (non-JSON lines are kept as `{ text }`), for tests
 * that wait on what a PLC simulator, a server or a client prints.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Spawned } from './netns.ts';

export type Line = Record<string, unknown>;

export interface Follower {
  lines: Line[];
  /** The first line matching `pred`; throws after `ms` with the last lines seen. */
  waitFor(pred: (l: Line) => boolean, ms?: number): Promise<Line>;
}

export function follow(child: Spawned): Follower {
  const lines: Line[] = [];
  let rest = '';
  child.stdout?.on('data', (d: Buffer) => {
    rest += d.toString();
    let nl: number;
    while ((nl = rest.indexOf('\n')) >= 0) {
      const text = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      try {
        lines.push(JSON.parse(text) as Line);
      } catch {
        lines.push({ text });
      }
    }
  });
  return {
    lines,
    waitFor: async (pred, ms = 10_000) => {
      const deadline = Date.now() + ms;
      for (;;) {
        const hit = lines.find(pred);
        if (hit) return hit;
        if (Date.now() > deadline)
          throw new Error(`no matching line; have ${JSON.stringify(lines.slice(-20))}`);
        await sleep(20);
      }
    },
  };
}
