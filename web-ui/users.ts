/**
 * UI accounts: a small JSON file in the state dir (mode 0600 through writeFileAtomic), shared by the UI process
 * and `sluice user add`. There is no default account (IEC 62443-4-2 CR 1.5): the first admin is created with a
 * one-time setup token printed at first start, or from the CLI on the box itself.
 *
 * Passwords are hashed with node:crypto scrypt (memory-hard, built into Node: no native addon to build on ARM
 * gateways, unlike argon2 bindings), with a random per-user salt and a timing-safe comparison.
 */
import { randomBytes, scrypt as scryptCb, timingSafeEqual, createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../gateway/state.ts';
import { SluiceError } from '../policies/errors.ts';

export const ROLES = ['admin', 'integrator', 'operator', 'auditor'] as const;
export type Role = (typeof ROLES)[number];
export const USERS_FILE = 'ui-users.json';
const MIN_PASSWORD_LENGTH = 12;
export const USER_NAME_RE = /^[a-z][a-z0-9._-]{0,31}$/;
/** A setup token is good for one hour: long enough to walk to a browser, short enough not to linger. */
export const SETUP_TOKEN_TTL_MS = 60 * 60 * 1000;

// scrypt cost: N=2^15, r=8 → 32 MiB and ~50-100 ms per hash on a small gateway; slow for guessing, fine for logins.
const SCRYPT = { N: 2 ** 15, r: 8, p: 1, keylen: 32, maxmem: 64 * 1024 * 1024 };

export class UserError extends SluiceError {}

export interface UserRecord {
  name: string;
  role: Role;
  /** `scrypt$N$r$p$saltB64$hashB64`: parameters travel with the hash so they can be raised later. */
  hash: string;
  created: string;
}

/** An account change, handed to `beforeCommit` (null = no account). */
export interface UserChange {
  name: string;
  before: Role | null;
  after: Role | null;
}

export interface ChangeHooks {
  beforeCommit?: (change: UserChange) => Promise<void>;
}

interface UsersFile {
  format: 1;
  users: UserRecord[];
  /** sha256 of the pending one-time setup token; only while no admin exists. */
  setup?: { tokenHash: string; expires: string };
}

function scrypt(password: string, salt: Buffer, p: typeof SCRYPT): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scryptCb(password, salt, p.keylen, { N: p.N, r: p.r, p: p.p, maxmem: p.maxmem }, (err, key) =>
      err === null ? resolve(key) : reject(err),
    ),
  );
}

async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(password, salt, SCRYPT);
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [, n, r, p, saltB64, hashB64] = parts as [string, string, string, string, string, string];
  const expected = Buffer.from(hashB64, 'base64');
  const key = await scrypt(password, Buffer.from(saltB64, 'base64'), {
    N: Number(n),
    r: Number(r),
    p: Number(p),
    keylen: expected.length,
    maxmem: SCRYPT.maxmem,
  });
  return key.length === expected.length && timingSafeEqual(key, expected);
}

/** A hash of a random password: compared against when the user does not exist, so timing does not tell. */
let dummyHash: Promise<string> | undefined;
function getDummyHash(): Promise<string> {
  dummyHash ??= hashPassword(randomBytes(16).toString('hex'));
  return dummyHash;
}

function checkPasswordPolicy(password: string): void {
  if (password.length < MIN_PASSWORD_LENGTH)
    throw new UserError(
      'user.weak-password',
      `password must have at least ${MIN_PASSWORD_LENGTH} characters`,
    );
  if (password.length > 1024) throw new UserError('user.weak-password', 'password is too long');
}

function checkUserName(name: string): void {
  if (!USER_NAME_RE.test(name))
    throw new UserError('user.bad-name', `user name must match ${USER_NAME_RE.source}`);
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * The account store. It re-reads the file when its mtime changes, so an account added with
 * `sluice user add` while the UI runs works at once.
 */
export class UserStore {
  readonly file: string;
  private cache: UsersFile | undefined;
  private cacheMtime = -1;
  private readonly now: () => number;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(stateDir: string, opts: { now?: () => number } = {}) {
    this.file = join(stateDir, USERS_FILE);
    this.now = opts.now ?? Date.now;
  }

  private async load(): Promise<UsersFile> {
    let mtime: number;
    try {
      mtime = (await stat(this.file)).mtimeMs;
    } catch {
      return { format: 1, users: [] };
    }
    if (this.cache !== undefined && mtime === this.cacheMtime) return this.cache;
    const parsed = JSON.parse(await readFile(this.file, 'utf8')) as UsersFile;
    if (parsed.format !== 1 || !Array.isArray(parsed.users))
      throw new UserError('user.bad-file', `${this.file} is not a Sluice users file`);
    this.cache = parsed;
    this.cacheMtime = mtime;
    return parsed;
  }

  private async save(data: UsersFile): Promise<void> {
    await writeFileAtomic(this.file, JSON.stringify(data, null, 2) + '\n');
    this.cache = undefined;
  }

  async list(): Promise<{ name: string; role: Role; created: string }[]> {
    return (await this.load()).users.map((u) => ({ name: u.name, role: u.role, created: u.created }));
  }

  async get(name: string): Promise<UserRecord | undefined> {
    return (await this.load()).users.find((u) => u.name === name);
  }

  async hasAdmin(): Promise<boolean> {
    return (await this.load()).users.some((u) => u.role === 'admin');
  }

  /**
   * Runs one read-modify-write of the file at a time (within this process): two concurrent changes would
   * otherwise both read the same state and the later write would drop the earlier one.
   */
  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /**
   * Adds an account. `beforeCommit` runs inside the lock after every check and before the file is written:
   * if it throws (e.g. the audit log cannot take the record), nothing changes.
   */
  async add(name: string, role: Role, password: string, opts: ChangeHooks = {}): Promise<void> {
    checkUserName(name);
    if (!ROLES.includes(role))
      throw new UserError('user.bad-role', `role must be one of ${ROLES.join(', ')}`);
    checkPasswordPolicy(password);
    const hash = await hashPassword(password);
    await this.locked(async () => {
      const data = await this.load();
      if (data.users.some((u) => u.name === name))
        throw new UserError('user.exists', `user '${name}' already exists`);
      await opts.beforeCommit?.({ name, before: null, after: role });
      const next: UsersFile = {
        ...data,
        users: [...data.users, { name, role, hash, created: new Date(this.now()).toISOString() }],
      };
      if (role === 'admin') delete next.setup;
      await this.save(next);
    });
  }

  async remove(name: string, opts: ChangeHooks = {}): Promise<void> {
    await this.locked(async () => {
      const data = await this.load();
      const user = data.users.find((u) => u.name === name);
      if (user === undefined) throw new UserError('user.unknown', `no user '${name}'`);
      // Removing the last admin would leave nobody able to manage accounts from the UI.
      if (user.role === 'admin' && data.users.filter((u) => u.role === 'admin').length === 1)
        throw new UserError('user.last-admin', 'the last admin cannot be removed');
      await opts.beforeCommit?.({ name, before: user.role, after: null });
      await this.save({ ...data, users: data.users.filter((u) => u.name !== name) });
    });
  }

  /** Returns the user when name and password match; spends the same scrypt time when the user is unknown. */
  async authenticate(name: string, password: string): Promise<UserRecord | undefined> {
    const user = await this.get(name);
    const ok = await verifyPassword(password, user?.hash ?? (await getDummyHash()));
    return ok && user !== undefined ? user : undefined;
  }

  /** Creates a fresh one-time setup token when no admin exists (replacing any older one); else undefined. */
  async issueSetupToken(): Promise<string | undefined> {
    return await this.locked(async () => {
      const data = await this.load();
      if (data.users.some((u) => u.role === 'admin')) return undefined;
      const token = randomBytes(24).toString('base64url');
      await this.save({
        ...data,
        setup: { tokenHash: sha256(token), expires: new Date(this.now() + SETUP_TOKEN_TTL_MS).toISOString() },
      });
      return token;
    });
  }

  async setupPending(): Promise<boolean> {
    const data = await this.load();
    return (
      data.setup !== undefined &&
      !data.users.some((u) => u.role === 'admin') &&
      Date.parse(data.setup.expires) > this.now()
    );
  }

  /**
   * Creates the first admin if the token is the pending one. Check, admin creation and spending the token are
   * one locked write, so of several concurrent requests with the same token exactly one succeeds.
   */
  async consumeSetupToken(
    token: string,
    name: string,
    password: string,
    opts: ChangeHooks = {},
  ): Promise<void> {
    checkUserName(name);
    checkPasswordPolicy(password);
    const hash = await hashPassword(password);
    await this.locked(async () => {
      const data = await this.load();
      const setup = data.setup;
      const given = Buffer.from(sha256(token), 'hex');
      const valid =
        setup !== undefined &&
        Date.parse(setup.expires) > this.now() &&
        timingSafeEqual(given, Buffer.from(setup.tokenHash, 'hex')) &&
        !data.users.some((u) => u.role === 'admin');
      if (!valid) throw new UserError('user.bad-setup-token', 'the setup token is invalid, used or expired');
      if (data.users.some((u) => u.name === name))
        throw new UserError('user.exists', `user '${name}' already exists`);
      await opts.beforeCommit?.({ name, before: null, after: 'admin' });
      const next: UsersFile = {
        ...data,
        users: [...data.users, { name, role: 'admin', hash, created: new Date(this.now()).toISOString() }],
      };
      delete next.setup;
      await this.save(next);
    });
  }
}
