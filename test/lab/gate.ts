/**
 * The one gate of every integration file: with its prerequisites present the suite runs; without them it is
 * skipped and says why — except under CI=true, where nothing may be skipped: the suite runs and a missing
 * prerequisite fails it loudly instead of hiding behind a skip.
 */
import { existsSync } from 'node:fs';
import { describe, it } from 'vitest';

export interface Gate {
  /** Whether the gated tests run (prerequisites present, or CI). */
  run: boolean;
  describe: (name: string, body: () => void) => void;
  it: (name: string, body: () => unknown, timeoutMs?: number) => void;
}

/** `missing`: one reason per absent prerequisite, false/undefined for those present (see needsRoot/needsFile). */
export function gate(file: string, missing: readonly (string | false | undefined)[]): Gate {
  const why = missing.filter((m): m is string => typeof m === 'string');
  const run = why.length === 0 || process.env['CI'] === 'true';
  if (!run) console.warn(`${file}: skipped: needs ${why.join(', ')}`);
  return { run, describe: run ? describe : describe.skip, it: run ? it : it.skip };
}

export function needsRoot(what = 'network namespaces and nft'): string | false {
  return process.getuid?.() !== 0 && `root (${what})`;
}

/** Checks a file (a binary, a plugin directory) instead of running it: only gateway/nft.ts runs nft. */
export function needsFile(file: string, what: string): string | false {
  return !existsSync(file) && `${what} (${file}; make deps installs it)`;
}

export const NFT_BINARY = '/usr/sbin/nft';
