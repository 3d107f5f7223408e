/**
 * The web UI end to end, in Debian's headless Chromium driven by playwright-core (never a downloaded browser),
 * against the real daemon (`sluice run --ulogd`) in a lab of network namespaces (prefix slcW) and the UI on the
 * host's loopback, talking to the daemon through its unix socket. Issue 6 "Proof": first-run admin setup,
 * login, the diagram with the policy's zones, an apply confirmed from the UI, an unconfirmed apply that rolls
 * back, lab traffic shown as blocked events, click-to-filter, the proposed allow rule. Screenshots of each page
 * go to test-output/screenshots/.
 */
import { it, expect, beforeAll, afterAll } from 'vitest';
import { gate, needsFile, needsRoot } from './lab/gate.ts';
import { mkdtemp, rm, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import pino from 'pino';
import { chromium, type Browser, type Page } from 'playwright-core';
import { labDown, type Lab } from './lab/topology.ts';
import { startTcpEcho, tcpProbe, type NsServer } from './lab/netns.ts';
import { CLI, gatewayLab, startGateway, type Gateway } from './lab/gateway.ts';
import { controlCall } from '../gateway/control.ts';
import { socketPath } from '../gateway/paths.ts';
import { startUi, type RunningUi } from '../web-ui/server.ts';

const PREFIX = 'slcW';
const CHROMIUM = '/usr/bin/chromium';
const uiGate = gate('test/ui-browser.test.ts', [
  needsRoot('network namespaces'),
  needsFile(CHROMIUM, 'Debian chromium'),
]);
const SHOTS = join(import.meta.dirname, '../test-output/screenshots');
const PASSWORD = 'plant admin passphrase';

const POLICY = `version: 1
gateway:
  name: ui-gw
  management: { interface: mgmt0, allowFrom: [10.86.99.0/24] }
defaults: { logRate: 100/second }
zones:
  hmi:    { securityLevel: 2, interfaces: [eth1], networks: [10.86.1.0/24], description: Control room }
  plant:  { securityLevel: 3, interfaces: [eth2], networks: [10.86.2.0/24], description: "<img src=x onerror=alert(1)>" }
  office: { securityLevel: 1, interfaces: [eth3], networks: [10.86.3.0/24] }
assets:
  hmi: { zone: hmi, addresses: [10.86.1.10] }
  plc: { zone: plant, addresses: [10.86.2.20] }
conduits:
  hmi-to-plant:
    from: hmi
    to: plant
    flows:
      - { name: app, protocol: tcp, from: [hmi], to: [plc], port: 8080 }
`;

let lab: Lab;
let stateDir: string;
let daemon: Gateway | undefined;
let ui: RunningUi | undefined;
let browser: Browser | undefined;
let page: Page;
const servers: NsServer[] = [];

const call = (method: string, params: Record<string, unknown> = {}) =>
  controlCall(socketPath(stateDir), method, params, { timeoutMs: 10_000 });

async function shot(name: string): Promise<void> {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function setEditor(text: string): Promise<void> {
  await page.locator('#editor').fill(text);
}

uiGate.describe('web UI in Chromium against a lab gateway', () => {
  beforeAll(async () => {
    await mkdir(SHOTS, { recursive: true });
    stateDir = await mkdtemp(join(tmpdir(), 'sluice-ui-e2e-'));
    lab = await gatewayLab(PREFIX, [
      { zone: 'hmi', host: 'hmi', address: '10.86.1.10' },
      { zone: 'plant', host: 'plc', address: '10.86.2.20' },
      { zone: 'office', host: 'pc', address: '10.86.3.10' },
    ]);
    servers.push(await startTcpEcho(lab.hostNs('plant', 'plc'), 8080));
    daemon = await startGateway(lab, stateDir, { ulogd: true });
    await call('apply', { text: POLICY, who: 'test', comment: 'initial' });
    ui = await startUi({
      stateDir,
      listen: '127.0.0.1:0',
      logger: pino({ level: 'warn' }),
      onSetupToken: () => undefined,
    });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.on('dialog', (d) => void d.accept());
  });

  afterAll(async () => {
    await browser?.close();
    await ui?.close();
    await daemon?.stop();
    for (const s of servers) await s.stop();
    await labDown(PREFIX);
    await rm(stateDir, { recursive: true, force: true });
  });

  it('first-run setup creates the admin; the setup token works once; login works', async () => {
    const base = (ui as RunningUi).url;
    const token = (ui as RunningUi).setupToken as string;
    await page.goto(`${base}/#setup=${token}`);
    await page.locator('#setup-form').waitFor();
    expect(await page.locator('#login-banner').textContent()).toMatch(/Authorised use only/);
    await shot('01-setup');
    await page.locator('#setup-name').fill('admin');
    await page.locator('#setup-password').fill(PASSWORD);
    await page.locator('#setup-submit').click();
    await page.locator('#diagram').waitFor();
    // Log out and in again through the login form.
    await page.locator('#logout').click();
    await page.locator('#login-form').waitFor();
    await shot('02-login');
    await page.locator('#login-name').fill('admin');
    await page.locator('#login-password').fill('wrong password here');
    await page.locator('#login-submit').click();
    await expect
      .poll(() => page.locator('#login-error').textContent())
      .toMatch(/wrong user name or password/);
    await page.locator('#login-password').fill(PASSWORD);
    await page.locator('#login-submit').click();
    await page.locator('#diagram').waitFor();
    const reuse = await fetch(`${base}/api/setup`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token, name: 'other', password: PASSWORD }),
    });
    expect(reuse.status).toBe(400);
  });

  it('the dashboard diagram shows the zones and conduits of the running policy, descriptions escaped', async () => {
    const zones = await page
      .locator('#diagram g.zone')
      .evaluateAll((els) => els.map((e) => e.getAttribute('data-zone')));
    expect(zones.sort()).toEqual(['hmi', 'office', 'plant']);
    expect(await page.locator('#diagram g.conduit').getAttribute('data-conduit')).toBe('hmi-to-plant');
    // The zone description with markup is text inside <title>, never an element.
    expect(await page.locator('#diagram img').count()).toBe(0);
    expect(await page.locator('#health-mode').textContent()).toBe('enforcing');
    await shot('03-dashboard');
  });

  it('an apply confirmed from the UI stays; an unconfirmed one rolls back by itself', async () => {
    await page.locator('#nav-policy').click();
    await page.locator('#editor').waitFor();
    // An error shows at its line as you type.
    await setEditor(POLICY.replace('securityLevel: 1', 'securityLevel: 7'));
    await expect.poll(() => page.locator('#gutter .ln.error').count(), { timeout: 5000 }).toBeGreaterThan(0);
    expect(await page.locator('#gutter .ln.error').first().getAttribute('data-line')).toBe('9');
    await shot('04-policy-error');
    const v2 = POLICY + '      - { name: api, protocol: tcp, from: [hmi], to: [plc], port: 9090 }\n';
    await setEditor(v2);
    await expect.poll(() => page.locator('#validity').textContent(), { timeout: 5000 }).toMatch(/valid/);
    await expect.poll(() => page.locator('#diff .add').count()).toBe(1);
    await page.locator('#apply-comment').fill('add api port');
    await page.locator('#confirm-within').fill('60');
    await page.locator('#apply').click();
    await page.locator('#pending #confirm').waitFor({ timeout: 10_000 });
    expect(await page.locator('#countdown').textContent()).toMatch(/^[01]:\d\d$/);
    await shot('05-policy-pending');
    await page.locator('#pending #confirm').click();
    await expect.poll(async () => ((await call('status')) as { pending: unknown }).pending).toBeNull();
    const st = (await call('status')) as { version: { id: number } };
    expect(st.version.id).toBe(2);
    // The daemon clears the pending state and then writes its audit entry: wait for the entry.
    await expect
      .poll(async () => {
        const audit = (await call('audit')) as { entries: { who: string; action: string }[] };
        return audit.entries.some((e) => e.who === 'ui:admin' && e.action === 'confirm');
      })
      .toBe(true);

    // Unconfirmed: 5 s window, nobody confirms, the daemon restores version 2.
    await page.locator('#nav-dashboard').click();
    await page.locator('#nav-policy').click();
    await page.locator('#editor').waitFor();
    await setEditor(v2 + '      - { name: extra, protocol: tcp, from: [hmi], to: [plc], port: 9091 }\n');
    await page.locator('#confirm-within').fill('5');
    await page.locator('#apply').click();
    await page.locator('#pending #confirm').waitFor({ timeout: 10_000 });
    await expect
      .poll(async () => ((await call('status')) as { version: { id: number } }).version.id, {
        timeout: 12_000,
        interval: 250,
      })
      .toBe(2);
    const versions = (await call('versions')) as { id: number; status: string }[];
    expect(versions.find((v) => v.id === 3)?.status).toBe('rolled-back');
    await page.reload();
    await page.locator('#history tr[data-version="3"]').waitFor();
    expect(await page.locator('#history tr[data-version="3"] td').nth(3).textContent()).toMatch(
      /rolled-back/,
    );
    await shot('06-policy-history');
  });

  it('lab traffic shows up as blocked events; click-to-filter; a proposed allow rule opens in the editor', async () => {
    const hmi = lab.hostNs('hmi', 'hmi');
    expect((await tcpProbe(hmi, '10.86.2.20', 22, 800)).ok).toBe(false);
    expect((await tcpProbe(lab.hostNs('office', 'pc'), '10.86.2.20', 8080, 800)).ok).toBe(false);
    await page.locator('#nav-logs').click();
    await page.locator('#events').waitFor();
    await page.locator('#live-tail').check();
    await expect
      .poll(() => page.locator('#events tr').count(), { timeout: 10_000, interval: 500 })
      .toBeGreaterThanOrEqual(2);
    await shot('07-logs');
    // Click-to-filter: the conduit value of a row becomes the filter.
    await page.locator('#events a.fv[data-field="conduit"]', { hasText: 'hmi-to-plant' }).first().click();
    await expect.poll(() => page.locator('#f-conduit').inputValue()).toBe('hmi-to-plant');
    await expect
      .poll(async () => {
        const conduits = await page.locator('#events tr td:nth-child(3)').allTextContents();
        return conduits.length > 0 && conduits.every((c) => c === 'hmi-to-plant');
      })
      .toBe(true);
    expect(await page.locator('#events tr td.why').first().textContent()).toMatch(/no flow/);
    expect(await page.locator('#export-csv').getAttribute('href')).toContain('conduit=hmi-to-plant');
    // A custom time range: from/to fields appear and become since/until.
    expect(await page.locator('#custom-range').isVisible()).toBe(false);
    await page.locator('#f-range').selectOption('custom');
    await page.locator('#f-from').fill('2020-01-01T00:00:00');
    await page.locator('#f-to').fill('2099-01-01T00:00:00');
    await page.locator('#apply-filters').click();
    await expect.poll(() => page.locator('#export-csv').getAttribute('href')).toMatch(/since=\d+.*until=\d+/);
    expect(await page.locator('#events tr').count()).toBeGreaterThan(0);
    await shot('08-logs-filtered');
    await page.locator('#events tr', { hasText: ':22' }).first().locator('button.propose').click();
    await page.locator('#proposal').waitFor();
    expect(await page.locator('#proposal-summary').textContent()).toMatch(/allow-tcp-22/);
    await shot('09-proposal');
    await page.locator('#open-in-editor').click();
    await page.locator('#proposal-note').waitFor();
    expect(await page.locator('#editor').inputValue()).toContain('name: allow-tcp-22');
    await expect.poll(() => page.locator('#diff .add').count()).toBeGreaterThan(0);
    await shot('10-policy-proposal');
  });

  it('audit log and users pages', async () => {
    await page.locator('#nav-audit').click();
    await page.locator('#audit tbody tr').first().waitFor();
    expect(await page.locator('#audit').textContent()).toMatch(/ui\.login-failed/);
    // The confirmed apply of version 2 shows its diff against version 1 (the added api flow).
    await page.locator('#audit button.show-diff[data-version="2"]').first().click();
    await page.locator('#audit tr.audit-diff .dl.add').first().waitFor();
    expect(await page.locator('#audit tr.audit-diff .dl.add').first().textContent()).toContain('port: 9090');
    await shot('11-audit');
    await page.locator('#nav-users').click();
    await page.locator('#add-user').waitFor();
    await page.locator('#new-user').fill('olga');
    await page.locator('#new-role').selectOption('operator');
    await page.locator('#new-password').fill('operator passphrase');
    await page.locator('#add-user button[type=submit]').click();
    await expect.poll(() => page.locator('#users').textContent()).toMatch(/olga/);
    await shot('12-users');
    // The CLI sees the same account store.
    const r = await execa(process.execPath, [CLI, 'user', 'list', '--state-dir', stateDir]);
    expect(r.stdout).toMatch(/olga\toperator/);
  });
});
