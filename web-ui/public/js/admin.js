/* global window */
// Audit log (auditor, admin) and UI accounts (admin).
import { h, replace, fmtTime } from './dom.js';
import { api, errorText } from './api.js';
import { diffView } from './policy.js';

/**
 * @typedef {{ seq: number, time: string, who: string, action: string, detail: string, versionId?: number }} AuditEntry
 * @typedef {{ name: string, role: string, created: string }} Account
 */

/** Entries that changed the running policy: these get a diff against the version recorded before. */
const VERSION_ACTIONS = new Set(['apply', 'rollback', 'auto-rollback', 'confirm']);

/** @param {AuditEntry} e */
function auditRows(e) {
  const diffRow = h('tr', { class: 'audit-diff', hidden: true }, h('td', { colspan: '7' }));
  const hasDiff = e.versionId !== undefined && VERSION_ACTIONS.has(e.action);
  let loaded = false;
  const toggle = async () => {
    diffRow.hidden = !diffRow.hidden;
    if (loaded || diffRow.hidden) return;
    loaded = true;
    const cell = /** @type {HTMLElement} */ (diffRow.firstChild);
    try {
      const d = await api('GET', `/api/audit/diff/${String(e.versionId)}`);
      replace(
        cell,
        h('p', {
          class: 'muted small',
          text: `Version ${d.versionId} against ${d.previousVersionId === null ? 'nothing (first version)' : `version ${d.previousVersionId}`}:`,
        }),
        diffView(d.lines),
      );
    } catch (err) {
      loaded = false;
      replace(cell, h('p', { class: 'error', text: errorText(err) }));
    }
  };
  return [
    h(
      'tr',
      {},
      h('td', { text: String(e.seq) }),
      h('td', { text: fmtTime(Date.parse(e.time)) }),
      h('td', { text: e.who }),
      h('td', { text: e.action }),
      h('td', { text: e.versionId === undefined ? '' : String(e.versionId) }),
      h('td', { class: 'detail', text: e.detail }),
      h(
        'td',
        {},
        hasDiff
          ? h('button', {
              class: 'show-diff',
              'data-version': String(e.versionId),
              text: 'diff',
              onclick: () => void toggle(),
            })
          : null,
      ),
    ),
    hasDiff ? diffRow : null,
  ];
}

/** @param {HTMLElement} el */
export async function auditPage(el) {
  const a = await api('GET', '/api/audit?limit=1000');
  replace(
    el,
    h('h1', { text: 'Audit log' }),
    h('p', {
      class: 'muted',
      text: `${a.total} entries kept${a.dropped > 0 ? `; ${a.dropped} oldest dropped to stay within the bound` : ''}. Newest first.`,
    }),
    h(
      'table',
      { class: 'grid', id: 'audit' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ...['#', 'Time', 'Who', 'Action', 'Version', 'Detail', 'Change'].map((t) => h('th', { text: t })),
        ),
      ),
      h('tbody', {}, ...a.entries.flatMap((/** @type {AuditEntry} */ e) => auditRows(e))),
    ),
  );
}

/** @param {HTMLElement} el */
export async function usersPage(el) {
  const list = await api('GET', '/api/users');
  const msg = h('p', { id: 'users-msg' });
  const name = /** @type {HTMLInputElement} */ (h('input', { id: 'new-user', placeholder: 'name' }));
  const role = /** @type {HTMLSelectElement} */ (
    h(
      'select',
      { id: 'new-role' },
      ...['operator', 'integrator', 'auditor', 'admin'].map((r) => h('option', { value: r, text: r })),
    )
  );
  const pw = /** @type {HTMLInputElement} */ (
    h('input', {
      id: 'new-password',
      type: 'password',
      placeholder: 'password (12+ characters)',
      autocomplete: 'new-password',
    })
  );
  replace(
    el,
    h('h1', { text: 'Users' }),
    h(
      'table',
      { class: 'grid', id: 'users' },
      h('thead', {}, h('tr', {}, ...['Name', 'Role', 'Created', ''].map((t) => h('th', { text: t })))),
      h(
        'tbody',
        {},
        ...list.map((/** @type {Account} */ u) =>
          h(
            'tr',
            {},
            h('td', { text: u.name }),
            h('td', { text: u.role }),
            h('td', { text: fmtTime(Date.parse(u.created)) }),
            h(
              'td',
              {},
              h('button', {
                text: 'Remove',
                onclick: async () => {
                  if (!window.confirm(`Remove ${u.name}?`)) return;
                  try {
                    await api('DELETE', `/api/users/${encodeURIComponent(u.name)}`);
                    await usersPage(el);
                  } catch (err) {
                    msg.textContent = errorText(err);
                  }
                },
              }),
            ),
          ),
        ),
      ),
    ),
    h(
      'form',
      {
        class: 'card',
        id: 'add-user',
        onsubmit: async (/** @type {Event} */ ev) => {
          ev.preventDefault();
          try {
            await api('POST', '/api/users', {
              name: name.value.trim(),
              role: role.value,
              password: pw.value,
            });
            await usersPage(el);
          } catch (err) {
            msg.textContent = errorText(err);
            msg.className = 'error';
          }
        },
      },
      h('h2', { text: 'Add a user' }),
      name,
      ' ',
      role,
      ' ',
      pw,
      ' ',
      h('button', { type: 'submit', class: 'primary', text: 'Add' }),
    ),
    msg,
  );
}
