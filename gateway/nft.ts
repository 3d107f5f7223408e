/**
 * The only module that runs `nft`. Everything else hands it script text.
 *
 * Why this shape: scripts go to `nft -f -` on stdin (never a temp file a second writer could swap, never a
 * shell string), arguments are arrays, and a script is always one nft transaction, so a failed load leaves
 * the running ruleset exactly as it was. With `netns`, the same commands run through `ip netns exec NS`.
 */
import { execa } from 'execa';
import { NftError } from '../policies/errors.ts';
import { TABLE_FAMILY, TABLE_NAME } from '../policies/compile.ts';

export interface NftOptions {
  /** Run inside this network namespace (`ip netns exec NS nft …`). */
  netns?: string;
  /** The nft binary; default `nft` from PATH. */
  binary?: string;
  /** Kill nft after this many milliseconds (default 30 s): a wedged netlink socket must not hang an apply. */
  timeoutMs?: number;
}

export interface CounterValue {
  packets: number;
  bytes: number;
}

interface RunResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

// Same whitelist as `ip netns` names we create; anything else would be an argument to `ip`, so refuse it.
const NETNS_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export class Nft {
  readonly #netns: string | undefined;
  readonly #binary: string;
  readonly #timeoutMs: number;

  constructor(opts: NftOptions = {}) {
    if (opts.netns !== undefined && !NETNS_RE.test(opts.netns)) {
      throw new NftError('nft.bad-netns', `not a network namespace name: ${JSON.stringify(opts.netns)}`, {
        userError: false,
      });
    }
    this.#netns = opts.netns;
    this.#binary = opts.binary ?? 'nft';
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
  }

  async #run(args: readonly string[], input?: string): Promise<RunResult> {
    const [file, argv] =
      this.#netns === undefined
        ? [this.#binary, [...args]]
        : ['ip', ['netns', 'exec', this.#netns, this.#binary, ...args]];
    try {
      const r = await execa(file, argv, {
        input: input ?? '',
        reject: false,
        timeout: this.#timeoutMs,
        stripFinalNewline: false,
        // nft's messages are what the operator needs to see; keep them untranslated.
        env: { LC_ALL: 'C' },
      });
      if (r.failed && r.exitCode === undefined) {
        // Not an nft verdict: the binary is missing, or it was killed by the timeout.
        throw new NftError('nft.exec-failed', `cannot run ${file}: ${r.shortMessage}`, {
          userError: false,
          cause: r.cause,
        });
      }
      return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
    } catch (err) {
      if (err instanceof NftError) throw err;
      throw new NftError('nft.exec-failed', `cannot run ${file}: ${(err as Error).message}`, {
        userError: false,
        cause: err,
      });
    }
  }

  /** Dry run (`nft -c -f -`): parses and validates against the kernel without committing anything. */
  async check(script: string): Promise<void> {
    const r = await this.#run(['-c', '-f', '-'], script);
    if (r.exitCode !== 0) {
      throw new NftError('nft.check-failed', `nft rejected the ruleset:\n${r.stderr.trimEnd()}`, {
        userError: false,
      });
    }
  }

  /** Loads a script as one transaction (`nft -f -`): all of it, or none of it. */
  async load(script: string): Promise<void> {
    const r = await this.#run(['-f', '-'], script);
    if (r.exitCode !== 0) {
      throw new NftError('nft.load-failed', `nft could not load the ruleset:\n${r.stderr.trimEnd()}`, {
        userError: false,
      });
    }
  }

  /**
   * `nft list ruleset`. With `stateless`, `nft -s`: counter values and set timeouts left out, so two listings
   * of the same ruleset compare equal while traffic keeps counting (what "unchanged" means for a ruleset).
   */
  async listRuleset(opts: { stateless?: boolean } = {}): Promise<string> {
    const r = await this.#run(opts.stateless === true ? ['-s', 'list', 'ruleset'] : ['list', 'ruleset']);
    if (r.exitCode !== 0)
      throw new NftError('nft.list-failed', `nft list ruleset: ${r.stderr.trimEnd()}`, { userError: false });
    return r.stdout;
  }

  /** The running Sluice table, or undefined when there is none. */
  async listTable(): Promise<string | undefined> {
    const r = await this.#run(['list', 'table', TABLE_FAMILY, TABLE_NAME]);
    if (r.exitCode === 0) return r.stdout;
    if (/No such file or directory/.test(r.stderr)) return undefined;
    throw new NftError('nft.list-failed', `nft list table: ${r.stderr.trimEnd()}`, { userError: false });
  }

  /** Named counters of the Sluice table by name (empty when the table is absent). */
  async counters(): Promise<Record<string, CounterValue>> {
    const r = await this.#run(['-j', 'list', 'counters', 'table', TABLE_FAMILY, TABLE_NAME]);
    if (r.exitCode !== 0) {
      if (/No such file or directory/.test(r.stderr)) return {};
      throw new NftError('nft.list-failed', `nft list counters: ${r.stderr.trimEnd()}`, { userError: false });
    }
    return parseCounters(r.stdout);
  }

  /** Removes the Sluice table; a no-op when it is absent. */
  async deleteTable(): Promise<void> {
    // The add-then-delete idiom makes this one transaction that succeeds whether or not the table exists.
    await this.load(`table ${TABLE_FAMILY} ${TABLE_NAME} {}\ndelete table ${TABLE_FAMILY} ${TABLE_NAME}\n`);
  }
}

/** Parses `nft -j list counters` output; exported for tests. Ignores other tables' counters. */
export function parseCounters(json: string): Record<string, CounterValue> {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch (err) {
    throw new NftError('nft.bad-json', 'nft -j printed something that is not JSON', {
      userError: false,
      cause: err,
    });
  }
  const out: Record<string, CounterValue> = {};
  const items = (doc as { nftables?: unknown }).nftables;
  if (!Array.isArray(items)) return out;
  for (const item of items as unknown[]) {
    const c = (item as { counter?: Record<string, unknown> } | null)?.counter;
    if (c === undefined || c === null) continue;
    if (c.family !== TABLE_FAMILY || c.table !== TABLE_NAME || typeof c.name !== 'string') continue;
    out[c.name] = { packets: Number(c.packets ?? 0), bytes: Number(c.bytes ?? 0) };
  }
  return out;
}
