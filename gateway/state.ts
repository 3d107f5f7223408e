/**
 * The gateway's state dir: policy versions, runtime pointers and the audit log, as JSON files through lowdb.
 *
 * Every file is written atomically (temp file in the same dir → fsync → rename → fsync of the dir), so a
 * crash or a power loss mid-write leaves either the old or the new file, never a torn one: the boot path
 * must be able to trust what it reads (IEC 62443-4-2 CR 3.6 deterministic output, CR 7.4 recovery to a
 * known secure state). Writes are serialised through one queue per store, so concurrent callers in one
 * process never interleave read-modify-write cycles.
 *
 * Layout (dir 0700, files 0600 — the policy text and the audit trail are security configuration):
 *   versions.json  every policy version applied, with its text, hash, author, time, comment, lint summary
 *   runtime.json   which version runs, which was last confirmed, and a pending confirmation deadline
 *   audit.json     append-only audit entries, bounded (CR 2.9 audit storage capacity)
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import { userInfo } from 'node:os';
import path from 'node:path';
import { Low, type Adapter } from 'lowdb';
import type { LintFinding } from '../policies/types.ts';
import { SluiceError } from '../policies/errors.ts';

export const DEFAULT_STATE_DIR = '/var/lib/sluice';
export const STATE_DIR_ENV = 'SLUICE_STATE_DIR';
/** CR 2.9: the audit log is bounded; older entries are dropped (and counted) rather than filling the disk. */
export const DEFAULT_AUDIT_LIMIT = 10_000;

const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
const FORMAT = 1;

/** `--state-dir DIR` wins over `SLUICE_STATE_DIR`, which wins over the default. Returns an absolute path. */
export function resolveStateDir(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (flag !== undefined && flag !== '') return path.resolve(flag);
  const fromEnv = env[STATE_DIR_ENV];
  if (fromEnv !== undefined && fromEnv !== '') return path.resolve(fromEnv);
  return DEFAULT_STATE_DIR;
}

/** The OS user running this process, for the `who` of CLI actions (CR 2.12 non-repudiation). */
export function osUser(): string {
  try {
    return userInfo().username;
  } catch {
    // No passwd entry (e.g. an arbitrary uid in a container): the uid is still an identity.
    return `uid:${process.getuid?.() ?? 'unknown'}`;
  }
}

export function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

// ---------------------------------------------------------------------------------------------------------
// Records

export type VersionStatus = 'applied' | 'confirmed' | 'rolled-back' | 'failed';

export interface LintSummary {
  errors: number;
  warnings: number;
  acceptedRisks: number;
  findings: LintFinding[];
}

export interface VersionRecord {
  id: number;
  /** The policy text exactly as applied: the source of truth a rollback or a boot recompiles. */
  text: string;
  /** sha256 hex of `text`; checked before the text is trusted again (CR 3.4, CR 7.3 RE1). */
  hash: string;
  who: string;
  /** ISO 8601. */
  when: string;
  comment: string;
  /** File name the text came from, when known. */
  file?: string;
  lint: LintSummary;
  status: VersionStatus;
}

export interface PendingConfirmation {
  versionId: number;
  /** What comes back if the deadline passes; null = nothing confirmed yet, so fail-closed comes back. */
  previousVersionId: number | null;
  /** ISO 8601. */
  deadline: string;
}

export interface RuntimeState {
  /** The version whose ruleset is loaded; null when nothing or the fail-closed ruleset is. */
  runningVersionId: number | null;
  lastConfirmedVersionId: number | null;
  pending: PendingConfirmation | null;
  /** What the last successful load put in the kernel. */
  mode: 'policy' | 'fail-closed' | 'none';
}

export interface AuditEntry {
  /** Monotonic sequence number over the whole life of the log, dropped entries included. */
  seq: number;
  /** ISO 8601 (CR 2.11 timestamps). */
  time: string;
  who: string;
  /** apply, apply-rejected, apply-failed, confirm, rollback, auto-rollback, boot, fail-closed, … */
  action: string;
  detail: string;
  versionId?: number;
}

export interface VersionsFile {
  format: number;
  versions: VersionRecord[];
}

export interface RuntimeFile extends RuntimeState {
  format: number;
}

export interface AuditFile {
  format: number;
  /** How many of the oldest entries were dropped to keep the bound (CR 2.9). */
  dropped: number;
  entries: AuditEntry[];
}

export class StateError extends SluiceError {}

// ---------------------------------------------------------------------------------------------------------
// Atomic JSON adapter

/**
 * A lowdb adapter that never leaves a partial file. lowdb's own TextFile (steno) renames a temp file but
 * does not fsync, so after a power loss the renamed file may point at blocks that never reached the disk.
 * Here: write temp (0600, O_EXCL) → fsync it → rename over the target → fsync the directory, so the rename
 * itself is durable. Writes through one adapter are serialised.
 */
export class AtomicJsonFile<T> implements Adapter<T> {
  readonly filename: string;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(filename: string) {
    this.filename = filename;
  }

  async read(): Promise<T | null> {
    let text: string;
    try {
      text = await readFile(this.filename, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    return JSON.parse(text) as T;
  }

  write(data: T): Promise<void> {
    // Serialise the bytes now: a caller mutating `data` after write() must not change what lands on disk.
    const text = JSON.stringify(data, null, 1) + '\n';
    const next = this.queue.then(() => writeFileAtomic(this.filename, text));
    this.queue = next.catch(() => undefined);
    return next;
  }
}

/** Temp files are `.NAME.PID.RANDOM.tmp`, so a crashed writer's leftovers are recognisable and removable. */
function tempName(filename: string): string {
  const dir = path.dirname(filename);
  return path.join(dir, `.${path.basename(filename)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

/**
 * Writes a file so that a crash or power loss leaves either the old or the new content, never a mix: temp
 * file in the same directory, fsync, rename, fsync of the directory. Used for all state and restored files.
 */
export async function writeFileAtomic(
  filename: string,
  data: string | Buffer,
  mode: number = FILE_MODE,
): Promise<void> {
  const tmp = tempName(filename);
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, filename);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fsyncDir(path.dirname(filename));
}

/** fsync of a directory, so a rename in it survives power loss. */
export async function fsyncDir(dir: string): Promise<void> {
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Shape checks: a file that parses but has the wrong shape is as corrupt as one that does not parse.

function isObj(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}
const isIdOrNull = (x: unknown): boolean => x === null || (Number.isSafeInteger(x) && (x as number) > 0);
const STATUSES: readonly string[] = ['applied', 'confirmed', 'rolled-back', 'failed'];

function checkVersions(x: unknown): string | undefined {
  if (!isObj(x) || !Array.isArray(x.versions)) return 'expected {"versions": [...]}';
  for (const [i, v] of x.versions.entries()) {
    if (!isObj(v)) return `versions[${i}] is not an object`;
    if (!Number.isSafeInteger(v.id) || (v.id as number) < 1)
      return `versions[${i}].id is not a positive integer`;
    if (typeof v.text !== 'string' || typeof v.hash !== 'string') return `versions[${i}] lacks text or hash`;
    if (typeof v.who !== 'string' || typeof v.when !== 'string') return `versions[${i}] lacks who or when`;
    if (typeof v.status !== 'string' || !STATUSES.includes(v.status))
      return `versions[${i}].status is invalid`;
    if (!isObj(v.lint)) return `versions[${i}].lint is missing`;
  }
  return undefined;
}

function checkRuntime(x: unknown): string | undefined {
  if (!isObj(x)) return 'expected an object';
  if (!isIdOrNull(x.runningVersionId)) return 'runningVersionId is invalid';
  if (!isIdOrNull(x.lastConfirmedVersionId)) return 'lastConfirmedVersionId is invalid';
  if (x.pending !== null) {
    const p = x.pending;
    if (!isObj(p) || !isIdOrNull(p.versionId) || p.versionId === null || !isIdOrNull(p.previousVersionId))
      return 'pending is invalid';
    if (typeof p.deadline !== 'string' || Number.isNaN(Date.parse(p.deadline)))
      return 'pending.deadline is invalid';
  }
  if (x.mode !== 'policy' && x.mode !== 'fail-closed' && x.mode !== 'none') return 'mode is invalid';
  return undefined;
}

function checkAudit(x: unknown): string | undefined {
  if (!isObj(x) || !Array.isArray(x.entries)) return 'expected {"entries": [...]}';
  if (!Number.isSafeInteger(x.dropped) || (x.dropped as number) < 0) return 'dropped is invalid';
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------
// The store

export interface StateProblem {
  file: string;
  message: string;
  /** Where the unreadable file was moved, so it is kept as evidence instead of being overwritten. */
  movedTo?: string;
}

export interface OpenOptions {
  auditLimit?: number;
  now?: () => Date;
}

export interface NewVersion {
  text: string;
  who: string;
  comment?: string;
  file?: string;
  lint: LintSummary;
  status: VersionStatus;
  /** ISO 8601; defaults to the store's clock. */
  when?: string;
}

export type NewAuditEntry = Omit<AuditEntry, 'seq' | 'time'> & { time?: string };

const emptyRuntime = (): RuntimeFile => ({
  format: FORMAT,
  runningVersionId: null,
  lastConfirmedVersionId: null,
  pending: null,
  mode: 'none',
});

export class StateStore {
  readonly dir: string;
  /** Files that could not be read at open (moved aside); the engine boots fail-closed when any are listed. */
  readonly problems: readonly StateProblem[];
  readonly auditLimit: number;
  private readonly versionsDb: Low<VersionsFile>;
  private readonly runtimeDb: Low<RuntimeFile>;
  private readonly auditDb: Low<AuditFile>;
  private readonly now: () => Date;
  /** One queue for every mutation of every file: read-modify-write cycles never interleave. */
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    dir: string,
    dbs: { versions: Low<VersionsFile>; runtime: Low<RuntimeFile>; audit: Low<AuditFile> },
    problems: StateProblem[],
    opts: OpenOptions,
  ) {
    this.dir = dir;
    this.versionsDb = dbs.versions;
    this.runtimeDb = dbs.runtime;
    this.auditDb = dbs.audit;
    this.problems = problems;
    this.auditLimit = opts.auditLimit ?? DEFAULT_AUDIT_LIMIT;
    this.now = opts.now ?? (() => new Date());
  }

  /** Creates the dir (0700) if needed, tightens modes, removes crashed writers' temp files, reads all files. */
  static async open(dir: string, opts: OpenOptions = {}): Promise<StateStore> {
    const abs = path.resolve(dir);
    await mkdir(abs, { recursive: true, mode: DIR_MODE });
    const st = await stat(abs);
    if (!st.isDirectory()) throw new StateError('state.not-a-dir', `state dir ${abs} is not a directory`);
    // mkdir's mode does not apply to an existing dir, and umask may have widened nothing but could narrow it.
    await chmod(abs, DIR_MODE);
    await removeStaleTemps(abs);
    const now = opts.now ?? (() => new Date());
    const problems: StateProblem[] = [];
    const versions = await loadFile<VersionsFile>(abs, 'versions.json', checkVersions, problems, now, () => ({
      format: FORMAT,
      versions: [],
    }));
    const runtime = await loadFile<RuntimeFile>(
      abs,
      'runtime.json',
      checkRuntime,
      problems,
      now,
      emptyRuntime,
    );
    const audit = await loadFile<AuditFile>(abs, 'audit.json', checkAudit, problems, now, () => ({
      format: FORMAT,
      dropped: 0,
      entries: [],
    }));
    return new StateStore(abs, { versions, runtime, audit }, problems, opts);
  }

  private serial<R>(fn: () => Promise<R>): Promise<R> {
    const next = this.queue.then(fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  // --- versions -------------------------------------------------------------------------------------

  versions(): VersionRecord[] {
    return this.versionsDb.data.versions.map((v) => structuredClone(v));
  }

  getVersion(id: number): VersionRecord | undefined {
    const v = this.versionsDb.data.versions.find((x) => x.id === id);
    return v === undefined ? undefined : structuredClone(v);
  }

  /** Records a version with the next id (ids only grow, even across corrupt-file recovery of this file). */
  addVersion(input: NewVersion): Promise<VersionRecord> {
    return this.serial(async () => {
      const db = this.versionsDb;
      const record: VersionRecord = {
        id: this.highestKnownId() + 1,
        text: input.text,
        hash: sha256(input.text),
        who: input.who,
        when: input.when ?? this.now().toISOString(),
        comment: input.comment ?? '',
        ...(input.file === undefined ? {} : { file: input.file }),
        lint: input.lint,
        status: input.status,
      };
      await commit(db, { ...db.data, versions: [...db.data.versions, record] });
      return structuredClone(record);
    });
  }

  setVersionStatus(id: number, status: VersionStatus): Promise<void> {
    return this.serial(async () => {
      const db = this.versionsDb;
      const v = db.data.versions.find((x) => x.id === id);
      if (v === undefined) throw new StateError('state.unknown-version', `no version ${id} is recorded`);
      if (v.status === status) return;
      await commit(db, {
        ...db.data,
        versions: db.data.versions.map((x) => (x.id === id ? { ...x, status } : x)),
      });
    });
  }

  /**
   * Ids only grow: if versions.json was lost to corruption, the runtime pointers and the audit trail still
   * remember ids, and reusing one would make the audit trail point at the wrong policy.
   */
  private highestKnownId(): number {
    let max = 0;
    for (const v of this.versionsDb.data.versions) max = Math.max(max, v.id);
    const rt = this.runtimeDb.data;
    for (const id of [rt.runningVersionId, rt.lastConfirmedVersionId, rt.pending?.versionId ?? null])
      if (id !== null) max = Math.max(max, id);
    for (const e of this.auditDb.data.entries)
      if (e.versionId !== undefined) max = Math.max(max, e.versionId);
    return max;
  }

  // --- runtime --------------------------------------------------------------------------------------

  runtime(): RuntimeState {
    const { format: _format, ...rest } = this.runtimeDb.data;
    return structuredClone(rest);
  }

  /** Replaces the runtime pointers in one atomic file write (never a mix of old and new pointers). */
  setRuntime(patch: Partial<RuntimeState>): Promise<RuntimeState> {
    return this.serial(async () => {
      const next: RuntimeFile = { ...this.runtimeDb.data, ...structuredClone(patch), format: FORMAT };
      await commit(this.runtimeDb, next);
      return this.runtime();
    });
  }

  // --- audit ----------------------------------------------------------------------------------------

  /** Appends one entry; keeps the last `auditLimit` and counts the dropped ones (CR 2.9). */
  audit(entry: NewAuditEntry): Promise<AuditEntry> {
    return this.serial(async () => {
      const db = this.auditDb;
      const seq = db.data.dropped + db.data.entries.length + 1;
      const full: AuditEntry = {
        seq,
        time: entry.time ?? this.now().toISOString(),
        who: entry.who,
        action: entry.action,
        detail: entry.detail,
        ...(entry.versionId === undefined ? {} : { versionId: entry.versionId }),
      };
      const entries = [...db.data.entries, full];
      const excess = Math.max(0, entries.length - this.auditLimit);
      const next: AuditFile = {
        format: FORMAT,
        dropped: db.data.dropped + excess,
        entries: entries.slice(excess),
      };
      await commit(db, next);
      return structuredClone(full);
    });
  }

  auditEntries(): AuditEntry[] {
    return this.auditDb.data.entries.map((e) => structuredClone(e));
  }

  auditDropped(): number {
    return this.auditDb.data.dropped;
  }

  /** Resolves once every write queued so far has reached the disk. */
  async flush(): Promise<void> {
    await this.serial(async () => undefined);
  }
}

/** Writes the new object first and swaps it in only on success, so a failed write leaves memory = disk. */
async function commit<T>(db: Low<T>, next: T): Promise<void> {
  await db.adapter.write(next);
  db.data = next;
}

async function removeStaleTemps(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    if (/^\.(versions|runtime|audit)\.json\.\d+\.[0-9a-f]+\.tmp$/.test(name)) {
      await unlink(path.join(dir, name)).catch(() => undefined);
    }
  }
}

async function loadFile<T>(
  dir: string,
  name: string,
  check: (x: unknown) => string | undefined,
  problems: StateProblem[],
  now: () => Date,
  fallback: () => T,
): Promise<Low<T>> {
  const filename = path.join(dir, name);
  const adapter = new AtomicJsonFile<T>(filename);
  const db = new Low<T>(adapter, fallback());
  let why: string | undefined;
  try {
    await db.read();
    why = check(db.data);
  } catch (err) {
    why = err instanceof Error ? err.message : String(err);
  }
  if (why === undefined) {
    await chmod(filename, FILE_MODE).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    return db;
  }
  // Keep the unreadable file for investigation instead of overwriting it with the next write.
  const movedTo = `${filename}.corrupt-${now().toISOString().replace(/[:.]/g, '-')}`;
  let moved = true;
  await rename(filename, movedTo).catch(() => {
    moved = false;
  });
  problems.push({ file: name, message: why, ...(moved ? { movedTo } : {}) });
  db.data = fallback();
  return db;
}
