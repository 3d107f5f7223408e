/**
 * Install on a gateway (issue 7): the units verify and are hardened, `systemd/install.sh` lays out the
 * expected tree in a DESTDIR (which runs on its bundled Node), upgrades keep state, uninstall removes all
 * but the state, and the early unit loads a ruleset (here: inside a throwaway network namespace).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { gate, needsRoot } from './lab/gate.ts';
import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseManagement } from '../gateway/cli.ts';

const REPO = path.resolve(import.meta.dirname, '..');
const UNITS = ['sluice-boot.service', 'sluice-ulogd.service', 'sluice.service', 'sluice-ui.service'];
const NS = 'sinst-boot';
const isRoot = process.getuid?.() === 0;
const boot = gate('test/install.test.ts (boot-ruleset test)', [needsRoot('a network namespace')]);

let dest: string;
/** stderr of the first install (the only one that may print the backup key). */
let firstInstallStderr = '';

async function install(action: 'install' | 'uninstall', env: Record<string, string> = {}) {
  return await execa('bash', [path.join(REPO, 'systemd/install.sh'), action], {
    env: { DESTDIR: dest, ...env },
    reject: false,
  });
}

/** `[Section] Key=Value` pairs of a unit file; repeated keys accumulate (space-joined), like systemd lists. */
function parseUnit(text: string): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^\[(.+)\]$/.exec(line);
    if (m !== null) {
      section = m[1] as string;
      out[section] ??= {};
      continue;
    }
    const eq = line.indexOf('=');
    const key = line.slice(0, eq);
    const sec = (out[section] ??= {});
    sec[key] = sec[key] === undefined ? line.slice(eq + 1) : `${sec[key]} ${line.slice(eq + 1)}`;
  }
  return out;
}

beforeAll(async () => {
  if (!existsSync(path.join(REPO, 'dist/gateway/cli.js')))
    await execa(path.join(REPO, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.build.json'], { cwd: REPO });
  dest = await mkdtemp(path.join(tmpdir(), 'sluice-destdir-'));
  const r = await install('install');
  expect(r.stderr).toContain('no systemd actions');
  expect(r.exitCode).toBe(0);
  firstInstallStderr = r.stderr;
});

afterAll(async () => {
  await rm(dest, { recursive: true, force: true });
  if (isRoot) await execa('ip', ['netns', 'del', NS], { reject: false });
});

describe('systemd units', () => {
  it('pass systemd-analyze verify as installed', async () => {
    // The units name their final paths (/opt/sluice/...); verify checks that ExecStart exists, so check the
    // installed units with those paths pointed into the DESTDIR tree.
    const dir = await mkdtemp(path.join(tmpdir(), 'sluice-verify-'));
    try {
      for (const u of UNITS) {
        const text = await readFile(path.join(dest, 'lib/systemd/system', u), 'utf8');
        await writeFile(path.join(dir, u), text.replaceAll('/opt/sluice', path.join(dest, 'opt/sluice')));
      }
      const r = await execa('systemd-analyze', ['verify', ...UNITS.map((u) => path.join(dir, u))], {
        reject: false,
      });
      expect(r.stderr + r.stdout).toBe('');
      expect(r.exitCode).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('keep the exposure score of every unit at or below 3.0', async () => {
    for (const u of UNITS) {
      const r = await execa(
        'systemd-analyze',
        ['security', '--offline=true', path.join(REPO, 'systemd', u)],
        {
          reject: false,
        },
      );
      const m = /Overall exposure level for \S+: (\d+\.\d+)/.exec(r.stdout);
      expect(m, r.stdout + r.stderr).not.toBeNull();
      const score = Number(m?.[1]);
      if (u === 'sluice.service') console.log(`systemd-analyze security: ${u} exposure ${score}`);
      expect(score).toBeLessThanOrEqual(3.0);
    }
  });

  it('load the ruleset early: before network-pre.target, without default dependencies', async () => {
    const boot = parseUnit(await readFile(path.join(REPO, 'systemd/sluice-boot.service'), 'utf8'));
    expect(boot['Unit']?.['DefaultDependencies']).toBe('no');
    expect(boot['Unit']?.['Before']?.split(/\s+/)).toContain('network-pre.target');
    expect(boot['Unit']?.['Wants']?.split(/\s+/)).toContain('network-pre.target');
    expect(boot['Unit']?.['After']?.split(/\s+/)).not.toContain('network.target');
    expect(boot['Service']?.['Type']).toBe('oneshot');
    expect(boot['Install']?.['WantedBy']).toBe('sysinit.target');
    const daemon = parseUnit(await readFile(path.join(REPO, 'systemd/sluice.service'), 'utf8'));
    expect(daemon['Unit']?.['After']?.split(/\s+/)).toContain('sluice-boot.service');
    expect(daemon['Service']?.['Type']).toBe('notify');
    expect(daemon['Service']?.['NotifyAccess']).toBe('all');
    expect(daemon['Service']?.['WatchdogSec']).toBeDefined();
    expect(daemon['Service']?.['User']).toBe('sluice');
    expect(daemon['Service']?.['CapabilityBoundingSet']).toBe('CAP_NET_ADMIN');
    const ui = parseUnit(await readFile(path.join(REPO, 'systemd/sluice-ui.service'), 'utf8'));
    expect(ui['Service']?.['CapabilityBoundingSet']).toBe('');
  });
});

describe('make install into a DESTDIR', () => {
  it('lays out the expected tree', async () => {
    for (const p of [
      'opt/sluice/bin/sluice.js',
      'opt/sluice/dist/gateway/cli.js',
      'opt/sluice/node_modules/node/bin/node',
      'opt/sluice/node_modules/yaml/package.json',
      'opt/sluice/docs/install.md',
      'usr/bin/sluice',
      'etc/sluice/sluice.env',
      'etc/sluice/ulogd.conf',
      'etc/sluice/backup.key',
      'etc/logrotate.d/sluice',
      'usr/lib/sysusers.d/sluice.conf',
      ...UNITS.map((u) => `lib/systemd/system/${u}`),
    ])
      expect(existsSync(path.join(dest, p)), p).toBe(true);
    // Production dependencies only.
    for (const dev of ['vitest', 'typescript', 'eslint', 'prettier'])
      expect(existsSync(path.join(dest, 'opt/sluice/node_modules', dev)), dev).toBe(false);
    expect((await stat(path.join(dest, 'var/lib/sluice'))).mode & 0o777).toBe(0o700);
    expect(await readFile(path.join(dest, 'etc/sluice/ulogd.conf'), 'utf8')).toContain('group=100');
    const wrapper = await readFile(path.join(dest, 'usr/bin/sluice'), 'utf8');
    expect(wrapper).toContain('/opt/sluice/node_modules/node/bin/node');
    expect(wrapper).toContain('SLUICE_BACKUP_KEY_FILE:=/etc/sluice/backup.key');
  });

  it('creates a per-gateway backup key, root-only, and prints it once', async () => {
    const keyFile = path.join(dest, 'etc/sluice/backup.key');
    expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
    const key = (await readFile(keyFile, 'utf8')).trim();
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    expect(firstInstallStderr).toContain(`backup key: ${key}`);
    // Another install (a second box) gets another key.
    const other = await mkdtemp(path.join(tmpdir(), 'sluice-destdir2-'));
    try {
      const r = await execa('bash', [path.join(REPO, 'systemd/install.sh'), 'install'], {
        env: { DESTDIR: other },
        reject: false,
      });
      expect(r.exitCode, r.stderr).toBe(0);
      expect((await readFile(path.join(other, 'etc/sluice/backup.key'), 'utf8')).trim()).not.toBe(key);
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });

  it('runs on its bundled Node with its own dependencies', async () => {
    const node = path.join(dest, 'opt/sluice/node_modules/node/bin/node');
    const cli = path.join(dest, 'opt/sluice/bin/sluice.js');
    const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: dest };
    const help = await execa(node, [cli, '--help'], { env, extendEnv: false, reject: false });
    expect(help.exitCode).toBe(0);
    expect(help.stdout).toContain('backup FILE');
    // validate loads yaml and ajv from the installed node_modules.
    const policy = path.join(dest, 'opt/sluice/examples/minimal.yaml');
    const v = await execa(node, [cli, 'validate', policy], { env, extendEnv: false, reject: false });
    expect(v.stderr).not.toMatch(/Cannot find (module|package)/);
    expect(v.exitCode).toBe(0);
  });

  it("backs up and restores with the install's key; another key is refused; the restore is audited", async () => {
    // The source CLI on the pinned Node (dist/ may predate the source), with the key install created.
    const node = path.join(REPO, 'node_modules/.bin/node');
    const cliTs = path.join(REPO, 'gateway/cli.ts');
    const work = await mkdtemp(path.join(tmpdir(), 'sluice-clibackup-'));
    const stateDir = path.join(work, 'state');
    const env = {
      SLUICE_BACKUP_KEY_FILE: path.join(dest, 'etc/sluice/backup.key'),
      SLUICE_STATE_DIR: stateDir,
    };
    const sluice = (...args: string[]) => execa(node, [cliTs, ...args], { env, reject: false });
    try {
      await mkdir(stateDir, { mode: 0o700 });
      await writeFile(path.join(stateDir, 'versions.json'), '{"format":1,"versions":[]}\n', { mode: 0o600 });
      const archive = path.join(work, 'b.tar.gz');
      const b = await sluice('backup', archive);
      expect(b.exitCode, b.stderr).toBe(0);
      expect(b.stdout).toContain('signed with backup key');
      const otherKey = path.join(work, 'other.key');
      await writeFile(otherKey, randomBytes(32).toString('hex'), { mode: 0o600 });
      const bad = await sluice('restore', archive, '--key-file', otherKey);
      expect(bad.exitCode).toBe(1);
      expect(bad.stderr).toContain('--key-file');
      const ok = await sluice('restore', archive);
      expect(ok.exitCode, ok.stderr).toBe(0);
      const audit = JSON.parse(await readFile(path.join(stateDir, 'audit.json'), 'utf8')) as {
        entries: { action: string }[];
      };
      expect(audit.entries.map((e) => e.action)).toEqual(['restore']);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  it('upgrade: replaces the app tree, keeps state, settings and the backup key', async () => {
    const stateDir = path.join(dest, 'var/lib/sluice');
    const state = path.join(stateDir, 'versions.json');
    const marker = `{"format":1,"versions":[],"marker":"${randomBytes(8).toString('hex')}"}\n`;
    await writeFile(state, marker, { mode: 0o600 });
    await mkdir(path.join(stateDir, 'sub'), { recursive: true });
    await writeFile(path.join(stateDir, 'sub', 'ui-users.json'), 'users\n', { mode: 0o600 });
    const env = path.join(dest, 'etc/sluice/sluice.env');
    const envText = (await readFile(env, 'utf8')) + 'SLUICE_UI_LISTEN=10.0.0.1:9443\n';
    await writeFile(env, envText);
    const keyFile = path.join(dest, 'etc/sluice/backup.key');
    const key = await readFile(keyFile, 'utf8');
    // Left over from the old version: the new tree must not contain it (a replaced tree, not a merge),
    // and a modified file of the old tree must come back as built.
    const stale = path.join(dest, 'opt/sluice/dist/stale-from-old-version.js');
    await writeFile(stale, 'old\n');
    const cli = path.join(dest, 'opt/sluice/dist/gateway/cli.js');
    const built = await readFile(cli, 'utf8');
    await writeFile(cli, '// old build\n');
    const r = await install('install');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(existsSync(stale)).toBe(false);
    expect(await readFile(cli, 'utf8')).toBe(built);
    expect(await readFile(state, 'utf8')).toBe(marker);
    expect(await readFile(path.join(stateDir, 'sub', 'ui-users.json'), 'utf8')).toBe('users\n');
    expect(await readFile(env, 'utf8')).toBe(envText);
    expect(await readFile(keyFile, 'utf8')).toBe(key);
    expect(r.stderr).not.toContain('backup key:');
    expect((await readdir(path.join(dest, 'opt'))).sort()).toEqual(['sluice']);
  });

  it('uninstalls all but configuration and state; PURGE=1 removes those too', async () => {
    const r = await install('uninstall');
    expect(r.exitCode).toBe(0);
    for (const p of ['opt/sluice', 'usr/bin/sluice', ...UNITS.map((u) => `lib/systemd/system/${u}`)])
      expect(existsSync(path.join(dest, p)), p).toBe(false);
    expect(existsSync(path.join(dest, 'var/lib/sluice/versions.json'))).toBe(true);
    // Like Debian conffiles: the installer's settings and the backup key survive a plain uninstall.
    expect(await readFile(path.join(dest, 'etc/sluice/sluice.env'), 'utf8')).toContain('10.0.0.1:9443');
    expect(existsSync(path.join(dest, 'etc/sluice/backup.key'))).toBe(true);
    const p = await install('uninstall', { PURGE: '1' });
    expect(p.exitCode).toBe(0);
    expect(existsSync(path.join(dest, 'var/lib/sluice'))).toBe(false);
    expect(existsSync(path.join(dest, 'etc/sluice'))).toBe(false);
  });
});

describe('sluice boot-ruleset', () => {
  boot.it('loads the fail-closed ruleset on an empty state dir (in a namespace)', async () => {
    await execa('ip', ['netns', 'del', NS], { reject: false });
    await execa('ip', ['netns', 'add', NS]);
    const state = await mkdtemp(path.join(tmpdir(), 'sluice-bootstate-'));
    try {
      const r = await execa(
        'ip',
        [
          'netns',
          'exec',
          NS,
          path.join(REPO, 'node_modules/.bin/node'),
          path.join(REPO, 'gateway/cli.ts'),
          'boot-ruleset',
          '--state-dir',
          state,
        ],
        {
          reject: false,
          env: {
            SLUICE_MGMT_INTERFACE: 'mgmt0',
            SLUICE_MGMT_ALLOW: '10.99.0.0/24',
            SLUICE_UI_LISTEN: '10.99.0.1:9443',
          },
        },
      );
      expect(r.stdout, r.stderr).toContain('FAIL-CLOSED');
      expect(r.exitCode).toBe(0);
      const rules = await execa('ip', ['netns', 'exec', NS, 'nft', 'list', 'table', 'inet', 'sluice']);
      expect(rules.stdout).toContain('mgmt0');
      // The UI's configured port, not a hard-coded 8443, stays reachable.
      expect(rules.stdout).toMatch(/9443/);
      expect(rules.stdout).not.toMatch(/8443/);
      expect(rules.stdout).toMatch(/chain forward[\s\S]*policy drop/);
      const audit = JSON.parse(await readFile(path.join(state, 'audit.json'), 'utf8')) as {
        entries: { action: string }[];
      };
      expect(audit.entries.map((e) => e.action)).toContain('fail-closed');
    } finally {
      await execa('ip', ['netns', 'del', NS], { reject: false });
      await rm(state, { recursive: true, force: true });
    }
  });
});

describe('the install docs', () => {
  it('exist and cover the topics the installer needs', async () => {
    const text = await readFile(path.join(REPO, 'docs/install.md'), 'utf8');
    for (const topic of [
      'interfaces per zone',
      'management port',
      'first login',
      'backup and restore',
      'upgrade',
      'at boot and on failure',
      'watchdog',
      // Declared dependencies (web-ui/tls.ts runs openssl) and the npm step of a fresh install.
      'openssl',
      "debian's `npm`",
      // The restart pause is fixed on systemd 252: say so rather than promise a backoff.
      'restartsteps',
      'backup.key',
      '--key-file',
      '--other-gateway',
    ])
      expect(text.toLowerCase().replace(/\s+/g, ' ')).toContain(topic);
  });
});

describe('make install on a fresh Debian', () => {
  it("installs Debian's npm through install-deps.sh before building when npm is missing", async () => {
    // A PATH with make and bash but no npm; INSTALL_DEPS records its arguments and stops the install there.
    const work = await mkdtemp(path.join(tmpdir(), 'sluice-nonpm-'));
    try {
      const bin = path.join(work, 'bin');
      await mkdir(bin);
      for (const tool of ['make', 'bash', 'sh', 'cat'])
        for (const dir of ['/usr/bin', '/bin'])
          if (existsSync(path.join(dir, tool))) {
            await symlink(path.join(dir, tool), path.join(bin, tool));
            break;
          }
      const record = path.join(work, 'deps.txt');
      const fake = path.join(work, 'fake-deps.sh');
      await writeFile(fake, `echo "$@" > ${record}\nexit 3\n`);
      await chmod(fake, 0o755);
      const r = await execa('make', ['--no-print-directory', 'install', `INSTALL_DEPS=bash ${fake}`], {
        cwd: REPO,
        env: { PATH: bin, DESTDIR: path.join(work, 'dest') },
        extendEnv: false,
        reject: false,
      });
      expect(r.exitCode).not.toBe(0);
      expect(existsSync(record), r.stderr).toBe(true);
      expect((await readFile(record, 'utf8')).trim()).toBe('npm');
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });
});

describe('fail-closed management access', () => {
  it('opens the UI port from SLUICE_UI_LISTEN, not a hard-coded 8443', () => {
    expect(parseManagement('mgmt0', '10.0.0.0/24', '192.168.100.1:9443').ports).toEqual([22, 9443]);
    expect(parseManagement('mgmt0', '10.0.0.0/24', '[fd00::1]:10443').ports).toEqual([22, 10443]);
    expect(parseManagement('mgmt0', '10.0.0.0/24', '').ports).toEqual([22, 8443]);
    expect(() => parseManagement('mgmt0', '10.0.0.0/24', '192.168.100.1')).toThrow(/ADDR:PORT/);
    expect(() => parseManagement('mgmt0', '10.0.0.0/24', '1.2.3.4:70000')).toThrow(/ADDR:PORT/);
  });
});
