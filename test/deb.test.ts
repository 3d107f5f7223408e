/**
 * The Debian package (systemd/deb.sh, `make deb`): built from this checkout, then installed, reinstalled,
 * removed and purged with the real dpkg into a throwaway root (`dpkg --root` with `--force-script-chrootless`,
 * so the maintainer scripts run with DPKG_ROOT set and never touch this machine). Checks what an installer
 * relies on: the app runs on its bundled Node from the installed tree, the per-box backup key is made on the
 * box (never shipped), conffiles and state survive a remove and an upgrade, purge leaves nothing.
 */
import { it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gate, needsFile, needsRoot } from './lab/gate.ts';

const REPO = path.resolve(import.meta.dirname, '..');
const g = gate('test/deb.test.ts', [
  needsRoot('dpkg into a throwaway root'),
  needsFile('/usr/bin/dpkg-deb', 'dpkg-deb'),
]);

let work: string;
let deb: string;
let root: string;

/** dpkg acting on `root` only; dependencies are this machine's business, not the throwaway root's. */
function dpkg(...args: string[]) {
  return execa(
    'dpkg',
    [`--root=${root}`, '--force-script-chrootless', '--force-depends', '--log=/dev/null', ...args],
    { reject: false },
  );
}

/** Every path under the root, dpkg's own database left out. */
async function tree(): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      const rel = path.relative(root, p);
      if (rel === 'var/lib/dpkg') continue;
      out.push(rel);
      if (e.isDirectory()) await walk(p);
    }
  };
  await walk(root);
  return out.sort();
}

beforeAll(async () => {
  if (!g.run) return;
  if (!existsSync(path.join(REPO, 'dist/gateway/cli.js')))
    await execa(path.join(REPO, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.build.json'], { cwd: REPO });
  work = await mkdtemp(path.join(tmpdir(), 'sluice-deb-'));
  const built = await execa('bash', [path.join(REPO, 'systemd/deb.sh'), path.join(work, 'out')], {
    env: { DEB_COMPRESS: 'gzip', DEB_LEVEL: '1' },
  });
  deb = built.stdout.trim();
  root = path.join(work, 'root');
  for (const d of ['updates', 'info', 'triggers'])
    await mkdir(path.join(root, 'var/lib/dpkg', d), { recursive: true });
  await writeFile(path.join(root, 'var/lib/dpkg/status'), '');
  await writeFile(path.join(root, 'var/lib/dpkg/available'), '');
}, 120_000);

afterAll(async () => {
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

g.describe('the Debian package', () => {
  it('is named after the version and architecture, and declares what the gateway needs', async () => {
    const pkg = JSON.parse(await readFile(path.join(REPO, 'package.json'), 'utf8')) as { version: string };
    const arch = (await execa('dpkg', ['--print-architecture'])).stdout.trim();
    expect(path.basename(deb)).toBe(`sluice_${pkg.version}_${arch}.deb`);
    const field = async (name: string) => (await execa('dpkg-deb', ['-f', deb, name])).stdout.trim();
    expect(await field('Package')).toBe('sluice');
    expect((await field('Depends')).split(/,\s*/)).toEqual(
      expect.arrayContaining(['nftables', 'ulogd2', 'ulogd2-json', 'openssl']),
    );
    const conffiles = (await execa('dpkg-deb', ['--ctrl-tarfile', deb]).pipe('tar', ['-xO', './conffiles']))
      .stdout;
    expect(conffiles.trim().split('\n')).toEqual([
      '/etc/sluice/sluice.env',
      '/etc/sluice/ulogd.conf',
      '/etc/logrotate.d/sluice',
    ]);
  });

  it('ships no per-box secret and no state', async () => {
    const list = (await execa('dpkg-deb', ['-c', deb], { maxBuffer: 64 * 1024 * 1024 })).stdout;
    expect(list).not.toMatch(/backup\.key/);
    expect(list).not.toMatch(/\.\/var\/lib\/sluice/);
    expect(list).toMatch(/\.\/opt\/sluice\/node_modules\/node\/bin\/node/);
    expect(list).toMatch(/\.\/lib\/systemd\/system\/sluice\.service/);
  });

  it('installs, and the installed app runs on its bundled Node', async () => {
    const r = await dpkg('-i', deb);
    expect(r.exitCode, r.stderr).toBe(0);
    // The box's own backup key, made by the postinst and shown once.
    const key = path.join(root, 'etc/sluice/backup.key');
    expect((await stat(key)).mode & 0o777).toBe(0o600);
    const hex = (await readFile(key, 'utf8')).trim();
    expect(hex).toMatch(/^[0-9a-f]{64}$/);
    // Named, never printed: apt keeps maintainer-script output in /var/log/apt/term.log.
    expect(r.stderr).toContain("'cat /etc/sluice/backup.key'");
    expect(r.stderr + r.stdout).not.toContain(hex);
    expect((await stat(path.join(root, 'var/lib/sluice'))).mode & 0o777).toBe(0o700);
    const wrapper = await readFile(path.join(root, 'usr/bin/sluice'), 'utf8');
    expect(wrapper).toContain('exec "/opt/sluice/node_modules/node/bin/node" "/opt/sluice/bin/sluice.js"');
    // The wrapper names the final paths; run the same command inside the throwaway root's tree.
    const v = await execa(
      path.join(root, 'opt/sluice/node_modules/node/bin/node'),
      [
        path.join(root, 'opt/sluice/bin/sluice.js'),
        'validate',
        path.join(root, 'opt/sluice/examples/water-plant.yaml'),
      ],
      { reject: false },
    );
    expect(v.exitCode, v.stderr).toBe(0);
    expect(v.stdout).toMatch(/valid/i);
  });

  it('keeps a changed conffile, the key and the state over a reinstall (an upgrade)', async () => {
    const env = path.join(root, 'etc/sluice/sluice.env');
    await appendFile(env, 'SLUICE_UI_LISTEN=10.99.0.1:8443\n');
    const key = await readFile(path.join(root, 'etc/sluice/backup.key'), 'utf8');
    await writeFile(path.join(root, 'var/lib/sluice/marker'), 'running policy');
    const r = await dpkg('-i', deb);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('created the backup key');
    expect(await readFile(env, 'utf8')).toContain('SLUICE_UI_LISTEN=10.99.0.1:8443');
    expect(await readFile(path.join(root, 'etc/sluice/backup.key'), 'utf8')).toBe(key);
    expect(await readFile(path.join(root, 'var/lib/sluice/marker'), 'utf8')).toBe('running policy');
  });

  it('remove takes the software and keeps the configuration and state; purge leaves nothing', async () => {
    const removed = await dpkg('-r', 'sluice');
    expect(removed.exitCode, removed.stderr).toBe(0);
    const left = await tree();
    expect(left).not.toContain('opt/sluice');
    expect(left).not.toContain('usr/bin/sluice');
    expect(left).not.toContain('lib/systemd/system/sluice.service');
    expect(left).toEqual(
      expect.arrayContaining(['etc/sluice/sluice.env', 'etc/sluice/backup.key', 'var/lib/sluice/marker']),
    );
    const purged = await dpkg('-P', 'sluice');
    expect(purged.exitCode, purged.stderr).toBe(0);
    expect((await tree()).filter((p) => /sluice/.test(p))).toEqual([]);
  });
});
