/* global setTimeout, clearTimeout, window, sessionStorage */
// Policy page: running text, a YAML editor with line numbers and problems at their lines (validated through
// the API as you type), diff against the running version, apply with a confirm window, history with rollback.
import { h, replace, fmtTime } from './dom.js';
import { api, canEditPolicy } from './api.js';

export const PROPOSAL_KEY = 'sluice.proposal';

/** @param {import('./api.js').DiffLine[]} lines */
export function diffView(lines) {
  const changed = lines.some((l) => l.op !== ' ');
  if (!changed)
    return h('p', { class: 'muted', id: 'diff-empty', text: 'No change against the running version.' });
  // Show changes with 3 lines of context; long unchanged stretches fold.
  const keep = new Set();
  lines.forEach((l, i) => {
    if (l.op !== ' ') for (let k = i - 3; k <= i + 3; k++) keep.add(k);
  });
  /** @type {HTMLElement[]} */
  const rows = [];
  let folded = false;
  lines.forEach((l, i) => {
    if (!keep.has(i)) {
      if (!folded) rows.push(h('div', { class: 'dl fold', text: '⋯' }));
      folded = true;
      return;
    }
    folded = false;
    rows.push(
      h('div', { class: `dl ${l.op === '+' ? 'add' : l.op === '-' ? 'del' : ''}` }, `${l.op} ${l.text}`),
    );
  });
  return h('pre', { class: 'diff', id: 'diff' }, ...rows);
}

/** @param {HTMLElement} el */
export async function policyPage(el) {
  const writer = canEditPolicy();
  let running = await api('GET', '/api/policy');
  const runningEl = h('p', { class: 'muted', id: 'running' });
  const showRunning = () => {
    runningEl.textContent =
      running.versionId === null
        ? 'No policy running.'
        : `Running: version #${running.versionId} (${running.hash.slice(0, 12)}…) by ${running.who}`;
  };
  showRunning();
  const proposal = sessionStorage.getItem(PROPOSAL_KEY);
  if (proposal !== null) sessionStorage.removeItem(PROPOSAL_KEY);

  const gutter = h('pre', { class: 'gutter', id: 'gutter', 'aria-hidden': 'true' });
  const ta = /** @type {HTMLTextAreaElement} */ (
    h('textarea', { id: 'editor', spellcheck: 'false', wrap: 'off', readonly: writer ? null : true })
  );
  ta.value = proposal ?? running.text;
  const problemsEl = h('ul', { class: 'problems', id: 'problems' });
  const statusEl = h('span', { id: 'validity', class: 'muted' });
  const diffEl = h('div', { id: 'diff-wrap' });
  const applyMsg = h('p', { id: 'apply-msg' });
  const comment = /** @type {HTMLInputElement} */ (
    h('input', { id: 'apply-comment', placeholder: 'Comment (why this change)', maxlength: '500' })
  );
  const confirmWithin = /** @type {HTMLInputElement} */ (
    h('input', { id: 'confirm-within', type: 'number', min: '5', max: '3600', value: '60' })
  );
  const needConfirm = /** @type {HTMLInputElement} */ (
    h('input', { id: 'need-confirm', type: 'checkbox', checked: true })
  );
  /** @type {Map<number, {sev: string, msgs: string[]}>} */
  let marks = new Map();

  const drawGutter = () => {
    const n = ta.value.split('\n').length;
    replace(
      gutter,
      ...Array.from({ length: n }, (_, i) => {
        const m = marks.get(i + 1);
        return h(
          'div',
          {
            class: m === undefined ? 'ln' : `ln ${m.sev}`,
            title: m === undefined ? null : m.msgs.join('\n'),
            'data-line': String(i + 1),
          },
          String(i + 1),
        );
      }),
    );
    gutter.scrollTop = ta.scrollTop;
  };
  ta.addEventListener('scroll', () => {
    gutter.scrollTop = ta.scrollTop;
  });

  /** @param {number} line */
  const goToLine = (line) => {
    const lines = ta.value.split('\n');
    let pos = 0;
    for (let i = 0; i < line - 1 && i < lines.length; i++) pos += (lines[i] ?? '').length + 1;
    ta.focus();
    ta.setSelectionRange(pos, pos + (lines[line - 1] ?? '').length);
    ta.scrollTop = Math.max(0, (line - 5) * 18);
  };

  const validate = async () => {
    if (!writer) return;
    const r = await api('POST', '/api/policy/validate', { text: ta.value });
    marks = new Map();
    /** @type {{sev: string, line: number|undefined, col: number|undefined, text: string}[]} */
    const items = [];
    for (const [sev, list] of [
      ['error', r.errors],
      ['warning', r.warnings],
    ])
      for (const p of list)
        items.push({ sev, line: p.position?.line, col: p.position?.column, text: `${p.code}: ${p.message}` });
    for (const f of r.lint) {
      if (
        f.waiver !== undefined ||
        r.errors.some(
          (/** @type {import('./api.js').Problem} */ e) =>
            e.code === `lint.${f.rule}` && e.position?.line === f.position?.line,
        )
      )
        continue;
      items.push({
        sev: f.severity === 'error' ? 'error' : 'warning',
        line: f.position?.line,
        col: f.position?.column,
        text: `lint ${f.rule}: ${f.message} (${f.cites})`,
      });
    }
    for (const it of items) {
      if (it.line === undefined) continue;
      const m = marks.get(it.line) ?? { sev: it.sev, msgs: [] };
      if (it.sev === 'error') m.sev = 'error';
      m.msgs.push(it.text);
      marks.set(it.line, m);
    }
    statusEl.textContent = r.ok ? `valid · ${items.length} finding(s)` : `${r.errors.length} error(s)`;
    statusEl.className = r.ok ? 'ok' : 'error';
    replace(
      problemsEl,
      ...items.map((it) =>
        h(
          'li',
          { class: it.sev, 'data-line': it.line === undefined ? null : String(it.line) },
          h('a', {
            href: '#policy',
            onclick: (/** @type {Event} */ e) => {
              e.preventDefault();
              if (it.line !== undefined) goToLine(it.line);
            },
            text: it.line === undefined ? '—' : `line ${it.line}${it.col === undefined ? '' : `:${it.col}`}`,
          }),
          ' ',
          it.text,
        ),
      ),
    );
    drawGutter();
  };

  const showDiff = async () => {
    const r = await api('POST', '/api/policy/diff', { text: ta.value });
    replace(diffEl, h('h2', { text: 'Diff against the running version' }), diffView(r.lines));
  };

  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  ta.addEventListener('input', () => {
    drawGutter();
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(
      () =>
        void validate()
          .then(showDiff)
          .catch(() => undefined),
      400,
    );
  });

  const apply = async () => {
    applyMsg.textContent = 'Applying…';
    applyMsg.className = '';
    /** @type {Record<string, unknown>} */
    const body = { text: ta.value, comment: comment.value };
    if (needConfirm.checked) body.confirmWithinSec = Number(confirmWithin.value);
    try {
      const r = await api('POST', '/api/policy/apply', body);
      applyMsg.className = 'ok';
      applyMsg.textContent =
        r.pending === null
          ? `Version ${r.versionId} applied and confirmed.`
          : `Version ${r.versionId} applied; confirm it before the countdown ends or it rolls back.`;
      window.dispatchEvent(new window.CustomEvent('sluice:pending-changed'));
      await history();
    } catch (err) {
      applyMsg.className = 'error';
      const e = /** @type {{ message: string, body?: import('./api.js').ErrorBody }} */ (err);
      const problems = Array.isArray(e.body?.problems)
        ? e.body.problems
            .map(
              (/** @type {import('./api.js').Problem} */ p) =>
                `${p.position ? `line ${p.position.line}: ` : ''}${p.message}`,
            )
            .join('; ')
        : '';
      applyMsg.textContent = `Not applied: ${e.message}${problems === '' ? '' : ` — ${problems}`}`;
    }
  };

  const historyEl = h('div', { id: 'history' });
  const history = async () => {
    const versions = await api('GET', '/api/policy/versions');
    const cur = await api('GET', '/api/policy');
    running = { ...cur, text: running.text };
    showRunning();
    replace(
      historyEl,
      h('h2', { text: 'History' }),
      h(
        'table',
        { class: 'grid' },
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            ...['#', 'When', 'Who', 'Status', 'Lint', 'Comment', ''].map((t) => h('th', { text: t })),
          ),
        ),
        h(
          'tbody',
          {},
          ...versions.map((/** @type {import('./api.js').VersionInfo} */ v) =>
            h(
              'tr',
              { 'data-version': String(v.id) },
              h('td', { text: String(v.id) }),
              h('td', { text: fmtTime(Date.parse(v.when)) }),
              h('td', { text: v.who }),
              h('td', {
                class: `st-${v.status}`,
                text: v.id === running.versionId ? `${v.status} (running)` : v.status,
              }),
              h('td', { text: `${v.lint?.errors ?? 0} err · ${v.lint?.warnings ?? 0} warn` }),
              h('td', { text: v.comment ?? '' }),
              h(
                'td',
                {},
                h('button', {
                  text: 'Load',
                  onclick: async () => {
                    const full = await api('GET', `/api/policy/versions/${v.id}`);
                    ta.value = full.text;
                    drawGutter();
                    await validate();
                    await showDiff();
                  },
                }),
                writer
                  ? h('button', {
                      class: 'rollback',
                      text: 'Roll back to this',
                      onclick: async () => {
                        if (!window.confirm(`Restore version ${v.id}?`)) return;
                        await api('POST', '/api/policy/rollback', { versionId: v.id });
                        window.dispatchEvent(new window.CustomEvent('sluice:pending-changed'));
                        await policyPage(el);
                      },
                    })
                  : null,
              ),
            ),
          ),
        ),
      ),
    );
  };

  replace(
    el,
    h('h1', { text: 'Policy' }),
    proposal !== null
      ? h('p', {
          class: 'note',
          id: 'proposal-note',
          text: 'A proposed allow rule from the blocked-traffic page is loaded. Review it, then apply with a confirm window.',
        })
      : null,
    runningEl,
    h('div', { class: 'editor-wrap' }, gutter, ta),
    h(
      'div',
      { class: 'toolbar' },
      statusEl,
      writer
        ? h(
            'span',
            {},
            h('label', { class: 'inline' }, needConfirm, ' Roll back unless confirmed within '),
            confirmWithin,
            ' s ',
            comment,
            h('button', { id: 'apply', class: 'primary', text: 'Apply', onclick: () => void apply() }),
          )
        : h('span', { class: 'muted', text: 'Read-only (your role cannot change policies).' }),
    ),
    applyMsg,
    writer ? h('section', { class: 'card' }, h('h2', { text: 'Problems' }), problemsEl) : null,
    h('section', { class: 'card' }, diffEl),
    h('section', { class: 'card' }, historyEl),
  );
  drawGutter();
  await Promise.all([validate(), showDiff(), history()]);
  return () => {
    if (timer !== undefined) clearTimeout(timer);
  };
}
