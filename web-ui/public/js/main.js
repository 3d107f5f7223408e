/* global document, window, setInterval, clearInterval */
// Entry point: login or first-admin setup, navigation by role, the pending-confirmation banner.
import { h, replace, fmtCountdown } from './dom.js';
import { api, session, setSession, can, canEditPolicy, errorText } from './api.js';
import { dashboardPage } from './dashboard.js';
import { policyPage } from './policy.js';
import { logsPage } from './logs.js';
import { auditPage, usersPage } from './admin.js';

const view = /** @type {HTMLElement} */ (document.getElementById('view'));
const nav = /** @type {HTMLElement} */ (document.getElementById('nav'));
const whoEl = /** @type {HTMLElement} */ (document.getElementById('who'));
const pendingEl = /** @type {HTMLElement} */ (document.getElementById('pending'));

/** @type {{ id: string, label: string, roles: string[], render: (el: HTMLElement) => Promise<(() => void) | void> }[]} */
const PAGES = [
  {
    id: 'dashboard',
    label: 'Dashboard',
    roles: ['admin', 'integrator', 'operator', 'auditor'],
    render: dashboardPage,
  },
  { id: 'policy', label: 'Policy', roles: ['admin', 'integrator', 'auditor'], render: policyPage },
  {
    id: 'logs',
    label: 'Blocked traffic',
    roles: ['admin', 'integrator', 'operator', 'auditor'],
    render: logsPage,
  },
  { id: 'audit', label: 'Audit log', roles: ['admin', 'auditor'], render: auditPage },
  { id: 'users', label: 'Users', roles: ['admin'], render: usersPage },
];

/** @type {(() => void) | undefined} */
let cleanup;
/** @type {ReturnType<typeof setInterval> | undefined} */
let pendingTimer;
/**
 * The trial's rollback deadline on this browser's clock (ms); undefined when nothing is pending.
 * @type {number | undefined}
 */
let pendingDeadline;

function routeId() {
  const id = window.location.hash.replace(/^#/, '').split('?')[0];
  return id === '' ? 'dashboard' : id;
}

async function render() {
  if (cleanup !== undefined) cleanup();
  cleanup = undefined;
  if (session === null) return;
  const role = session.role;
  const page = PAGES.find((p) => p.id === routeId() && can(role, p.roles)) ?? PAGES[0];
  for (const a of nav.querySelectorAll('a'))
    a.classList.toggle('active', a.getAttribute('href') === `#${page.id}`);
  replace(view, h('p', { class: 'muted', text: 'Loading…' }));
  try {
    const c = await page.render(view);
    if (typeof c === 'function') cleanup = c;
  } catch (err) {
    replace(
      view,
      h('p', {
        class: 'error',
        text: `Could not load ${page.label}: ${errorText(err)}`,
      }),
    );
  }
}

function showNav() {
  if (session === null) {
    replace(nav);
    replace(whoEl);
    return;
  }
  const role = session.role;
  replace(
    nav,
    ...PAGES.filter((p) => can(role, p.roles)).map((p) =>
      h('a', { href: `#${p.id}`, id: `nav-${p.id}`, text: p.label }),
    ),
  );
  replace(
    whoEl,
    h('span', { text: `${session.user} (${role})` }),
    ' ',
    h('button', {
      id: 'logout',
      text: 'Log out',
      onclick: async () => {
        try {
          await api('POST', '/api/logout', {});
        } finally {
          setSession(null);
          void start();
        }
      },
    }),
  );
}

async function refreshPending() {
  if (session === null) return;
  try {
    const st = await api('GET', '/api/status', undefined, { poll: true });
    const p = st.daemon.pending;
    if (p === null || p === undefined) {
      pendingDeadline = undefined;
      pendingEl.hidden = true;
      replace(pendingEl);
      return;
    }
    // The deadline is on the gateway's clock: shift it by this browser's offset, so a skewed clock counts right.
    pendingDeadline = Date.parse(p.deadline) + (Date.now() - st.now);
    pendingEl.hidden = false;
    replace(
      pendingEl,
      h('strong', { text: `Policy version ${p.versionId} is on trial.` }),
      ' It rolls back to ',
      p.previousVersionId === null ? 'fail-closed' : `version ${p.previousVersionId}`,
      ' in ',
      h('span', { class: 'countdown', id: 'countdown' }),
      ' unless confirmed. ',
      canEditPolicy()
        ? h('button', {
            id: 'confirm',
            class: 'primary',
            text: 'Confirm',
            onclick: async () => {
              await api('POST', '/api/policy/confirm', {});
              await refreshPending();
            },
          })
        : null,
    );
    countdownTick();
  } catch {
    // the status poll retries; a daemon restart must not break the page
  }
}

function countdownTick() {
  const cd = pendingEl.querySelector('.countdown');
  if (cd === null || pendingEl.hidden || pendingDeadline === undefined) return;
  cd.textContent = fmtCountdown((pendingDeadline - Date.now()) / 1000);
}

/** @param {string} banner */
function bannerEl(banner) {
  return h('div', { class: 'banner', id: 'login-banner', role: 'note' }, banner);
}

/** @param {string} banner @param {string} token */
function setupView(banner, token) {
  const msg = h('p', { class: 'error', id: 'setup-error' });
  const tokenIn = h('input', { id: 'setup-token', name: 'token', value: token, autocomplete: 'off' });
  const nameIn = h('input', { id: 'setup-name', name: 'name', autocomplete: 'username', value: 'admin' });
  const pwIn = h('input', {
    id: 'setup-password',
    name: 'password',
    type: 'password',
    autocomplete: 'new-password',
    minlength: '12',
  });
  const form = h(
    'form',
    {
      class: 'card narrow',
      id: 'setup-form',
      onsubmit: async (/** @type {Event} */ ev) => {
        ev.preventDefault();
        try {
          const s = await api('POST', '/api/setup', {
            token: /** @type {HTMLInputElement} */ (tokenIn).value.trim(),
            name: /** @type {HTMLInputElement} */ (nameIn).value.trim(),
            password: /** @type {HTMLInputElement} */ (pwIn).value,
          });
          window.history.replaceState(null, '', '#dashboard');
          setSession(s);
          await afterLogin();
        } catch (err) {
          msg.textContent = errorText(err);
        }
      },
    },
    h('h1', { text: 'Create the first admin' }),
    bannerEl(banner),
    h('p', {
      class: 'muted',
      text: 'Use the one-time setup token printed by the gateway at its first start. Passwords need at least 12 characters.',
    }),
    h('label', {}, 'Setup token', tokenIn),
    h('label', {}, 'User name', nameIn),
    h('label', {}, 'Password', pwIn),
    h('button', { type: 'submit', class: 'primary', id: 'setup-submit', text: 'Create admin' }),
    msg,
  );
  replace(view, form);
}

/** @param {string} banner */
function loginView(banner) {
  const msg = h('p', { class: 'error', id: 'login-error' });
  const nameIn = h('input', { id: 'login-name', name: 'name', autocomplete: 'username' });
  const pwIn = h('input', {
    id: 'login-password',
    name: 'password',
    type: 'password',
    autocomplete: 'current-password',
  });
  const form = h(
    'form',
    {
      class: 'card narrow',
      id: 'login-form',
      onsubmit: async (/** @type {Event} */ ev) => {
        ev.preventDefault();
        try {
          const s = await api('POST', '/api/login', {
            name: /** @type {HTMLInputElement} */ (nameIn).value.trim(),
            password: /** @type {HTMLInputElement} */ (pwIn).value,
          });
          setSession(s);
          await afterLogin();
        } catch (err) {
          msg.textContent = errorText(err);
        }
      },
    },
    h('h1', { text: 'Sluice gateway' }),
    bannerEl(banner),
    h('label', {}, 'User name', nameIn),
    h('label', {}, 'Password', pwIn),
    h('button', { type: 'submit', class: 'primary', id: 'login-submit', text: 'Log in' }),
    msg,
  );
  replace(view, form);
  /** @type {HTMLInputElement} */ (nameIn).focus();
}

async function afterLogin() {
  showNav();
  if (pendingTimer !== undefined) clearInterval(pendingTimer);
  let n = 0;
  pendingTimer = setInterval(() => {
    // Re-sync with the daemon every 5 s, count down locally in between.
    if (++n % 5 === 0) void refreshPending();
    else countdownTick();
  }, 1000);
  await refreshPending();
  await render();
}

async function start() {
  if (pendingTimer !== undefined) clearInterval(pendingTimer);
  pendingEl.hidden = true;
  showNav();
  const info = await api('GET', '/api/login');
  const m = /setup=([A-Za-z0-9_-]+)/.exec(window.location.hash);
  if (info.session !== null) {
    setSession(await api('GET', '/api/session'));
    await afterLogin();
  } else if (info.setupNeeded) {
    setupView(info.banner, m === null ? '' : m[1]);
  } else {
    loginView(info.banner);
  }
}

window.addEventListener('hashchange', () => void render());
window.addEventListener('sluice:logged-out', () => void start());
window.addEventListener('sluice:pending-changed', () => void refreshPending());
void start();
