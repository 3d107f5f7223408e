/* global setInterval, clearInterval, window, sessionStorage, URLSearchParams */
// Blocked traffic: filters, click a value to filter by it, live tail, CSV/JSON export, why each event was
// blocked, and a proposed allow rule the integrator can open in the policy editor.
import { h, replace, fmtTime } from './dom.js';
import { api, canEditPolicy, errorText } from './api.js';
import { diffView, PROPOSAL_KEY } from './policy.js';

const FIELDS = ['zone', 'conduit', 'src', 'dst', 'protocol', 'verdict', 'reason'];
const RANGES = { '15m': 15 * 60e3, '1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3, all: 0, custom: -1 };
/**
 * Relative ranges start on a 10 s boundary: every browser (and every tail refresh) within those 10 s asks
 * the same question, so the UI's short daemon cache answers it instead of the daemon.
 */
const ROUND_MS = 10_000;

/** Why an event was blocked, in words. @param {import('./api.js').BlockedEvent} e */
export function explain(e) {
  const zones = `${e.fromZone ?? '?'} → ${e.toZone ?? '?'}`;
  if (e.source === 'nflog') {
    if (e.reason === 'no-conduit') return `Packet filter: no conduit joins ${zones}; default drop.`;
    if (e.reason === 'no-flow')
      return `Packet filter: conduit ${e.conduit} has no flow for ${e.protocol}${e.dstPort === undefined ? '' : ` port ${e.dstPort}`}.`;
    return `Packet filter${e.conduit ? ` on conduit ${e.conduit}` : ''}: ${e.reason}.`;
  }
  const d = e.detail ?? {};
  const what = [
    d.functionName ?? (d.function === undefined ? undefined : `function ${d.function}`),
    d.addresses === undefined ? undefined : `addresses ${d.addresses}`,
    d.values === undefined ? undefined : `values ${d.values}`,
  ]
    .filter((x) => x !== undefined)
    .join(', ');
  return `${e.source === 'modbus' ? 'Modbus' : 'OPC UA'} filter on ${e.conduit ?? '?'}/${e.flow ?? '?'}: ${e.reason}${what === '' ? '' : ` (${what})`}${d.why ? ` — ${d.why}` : ''}.`;
}

/** @param {HTMLElement} el */
export async function logsPage(el) {
  const writer = canEditPolicy();
  /** @type {Record<string, string>} */
  const filters = {};
  const qs = new URLSearchParams(window.location.hash.split('?')[1] ?? '');
  for (const f of FIELDS) if (qs.get(f)) filters[f] = /** @type {string} */ (qs.get(f));
  let range = '1h';

  const inputs = Object.fromEntries(
    FIELDS.map((f) => [
      f,
      /** @type {HTMLInputElement} */ (
        f === 'verdict'
          ? h(
              'select',
              { id: `f-${f}`, name: f },
              h('option', { value: '', text: 'any' }),
              ...['drop', 'would-drop', 'refuse', 'would-refuse'].map((v) =>
                h('option', { value: v, text: v }),
              ),
            )
          : h('input', {
              id: `f-${f}`,
              name: f,
              placeholder: f === 'conduit' ? 'name, or - for none' : '',
              size: '12',
            })
      ),
    ]),
  );
  const rangeSel = /** @type {HTMLSelectElement} */ (
    h(
      'select',
      { id: 'f-range' },
      ...Object.keys(RANGES).map((r) =>
        h('option', {
          value: r,
          text: r === 'all' ? 'all time' : r === 'custom' ? 'from … to …' : `last ${r}`,
          selected: r === range,
        }),
      ),
    )
  );
  // Custom range: local date and time, as the browser's datetime-local control gives it.
  const fromIn = /** @type {HTMLInputElement} */ (
    h('input', { id: 'f-from', type: 'datetime-local', name: 'from', step: '1' })
  );
  const toIn = /** @type {HTMLInputElement} */ (
    h('input', { id: 'f-to', type: 'datetime-local', name: 'to', step: '1' })
  );
  const customBox = h('span', { class: 'custom-range', id: 'custom-range' }, 'from ', fromIn, ' to ', toIn);
  const showCustom = () => {
    customBox.hidden = rangeSel.value !== 'custom';
  };
  rangeSel.addEventListener('change', showCustom);
  showCustom();
  const tail = /** @type {HTMLInputElement} */ (h('input', { id: 'live-tail', type: 'checkbox' }));
  const table = h('tbody', { id: 'events' });
  const info = h('p', { class: 'muted', id: 'events-info' });
  const detail = h('div', { id: 'event-detail' });
  const csv = /** @type {HTMLAnchorElement} */ (
    h('a', { id: 'export-csv', class: 'button', text: 'Export CSV' })
  );
  const json = /** @type {HTMLAnchorElement} */ (
    h('a', { id: 'export-json', class: 'button', text: 'Export JSON' })
  );

  const query = () => {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v !== '') p.set(k, v);
    const span = RANGES[/** @type {keyof typeof RANGES} */ (range)];
    if (span > 0) p.set('since', String(Math.floor((Date.now() - span) / ROUND_MS) * ROUND_MS));
    if (span < 0) {
      const from = fromIn.value === '' ? NaN : new Date(fromIn.value).getTime();
      const to = toIn.value === '' ? NaN : new Date(toIn.value).getTime();
      if (!Number.isNaN(from)) p.set('since', String(from));
      // The end is inclusive for the person (to 10:00:59 includes that second); the API's until is exclusive.
      if (!Number.isNaN(to)) p.set('until', String(to + 1000));
    }
    return p;
  };

  /** @param {string} field @param {string} value */
  const filterBy = (field, value) => {
    filters[field] = value;
    /** @type {HTMLInputElement} */ (inputs[field]).value = value;
    void load();
  };
  /** @param {string} field @param {unknown} value @param {string} [shown] */
  const cell = (field, value, shown) =>
    value === undefined || value === null || value === ''
      ? h('td', { text: shown ?? '—' })
      : h(
          'td',
          {},
          h('a', {
            href: '#logs',
            class: 'fv',
            'data-field': field,
            title: `filter by ${field} = ${String(value)}`,
            onclick: (/** @type {Event} */ ev) => {
              ev.preventDefault();
              filterBy(field, String(value));
            },
            text: shown ?? String(value),
          }),
        );

  /** @param {import('./api.js').BlockedEvent} e */
  const propose = async (e) => {
    try {
      const r = await api('POST', '/api/logs/propose', {
        event: {
          conduit: e.conduit,
          flow: e.flow,
          fromZone: e.fromZone,
          toZone: e.toZone,
          src: e.src,
          dst: e.dst,
          dstPort: e.dstPort,
          protocol: e.protocol,
          source: e.source,
          reason: e.reason,
          detail: e.detail,
        },
      });
      replace(
        detail,
        h(
          'section',
          { class: 'card', id: 'proposal' },
          h('h2', { text: 'Proposed allow rule' }),
          h('p', { id: 'proposal-summary', text: r.summary }),
          diffView(r.diff),
          h('button', {
            id: 'open-in-editor',
            class: 'primary',
            text: 'Open in the policy editor',
            onclick: () => {
              sessionStorage.setItem(PROPOSAL_KEY, r.text);
              window.location.hash = '#policy';
            },
          }),
        ),
      );
    } catch (err) {
      replace(
        detail,
        h('p', {
          class: 'error',
          id: 'proposal-error',
          text: `No proposal: ${errorText(err)}`,
        }),
      );
    }
  };

  /** @param {import('./api.js').BlockedEvent} e */
  const row = (e) =>
    h(
      'tr',
      { 'data-id': String(e.id) },
      h('td', { text: fmtTime(e.time) }),
      cell('verdict', e.verdict),
      cell('conduit', e.conduit ?? '-', e.conduit ?? '(none)'),
      h('td', { text: e.flow ?? '' }),
      cell('zone', e.fromZone),
      cell('zone', e.toZone),
      cell('src', e.src, `${e.src}${e.srcPort === undefined ? '' : `:${e.srcPort}`}`),
      cell('dst', e.dst, `${e.dst}${e.dstPort === undefined ? '' : `:${e.dstPort}`}`),
      cell('protocol', e.protocol),
      cell('reason', e.reason),
      h('td', { class: 'num', text: String(e.count) }),
      h('td', { class: 'why', text: explain(e) }),
      writer
        ? h(
            'td',
            {},
            h('button', { class: 'propose', text: 'Propose allow', onclick: () => void propose(e) }),
          )
        : null,
    );

  /** @param {boolean} [poll] a live-tail refresh, not the person acting */
  const load = async (poll = false) => {
    for (const f of FIELDS) filters[f] = /** @type {HTMLInputElement} */ (inputs[f]).value.trim();
    range = rangeSel.value;
    const p = query();
    csv.href = `/api/logs/export.csv?${p}`;
    json.href = `/api/logs/export.json?${p}`;
    p.set('limit', '200');
    p.set('total', 'true');
    const r = await api('GET', `/api/logs?${p}`, undefined, { poll });
    replace(table, ...r.events.map(row));
    info.textContent = `${r.total ?? r.events.length} matching event record(s); showing the newest ${r.events.length}.`;
  };

  for (const f of FIELDS) /** @type {HTMLInputElement} */ (inputs[f]).value = filters[f] ?? '';
  replace(
    el,
    h('h1', { text: 'Blocked traffic' }),
    h(
      'form',
      {
        class: 'filters card',
        id: 'filters',
        onsubmit: (/** @type {Event} */ ev) => {
          ev.preventDefault();
          void load();
        },
      },
      h('label', {}, 'Time', rangeSel),
      customBox,
      ...FIELDS.map((f) => h('label', {}, f, inputs[f])),
      h('button', { type: 'submit', class: 'primary', id: 'apply-filters', text: 'Filter' }),
      h('button', {
        type: 'button',
        id: 'clear-filters',
        text: 'Clear',
        onclick: () => {
          for (const f of FIELDS) /** @type {HTMLInputElement} */ (inputs[f]).value = '';
          void load();
        },
      }),
      h('label', { class: 'inline' }, tail, ' live tail'),
      csv,
      json,
      h('span', { class: 'muted small', text: 'exports hold at most 10,000 rows (newest first)' }),
    ),
    info,
    detail,
    h(
      'table',
      { class: 'grid events' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ...[
            'Time',
            'Verdict',
            'Conduit',
            'Flow',
            'From',
            'To',
            'Source',
            'Destination',
            'Proto',
            'Reason',
            'Count',
            'Why blocked',
            writer ? '' : null,
          ]
            .filter((x) => x !== null)
            .map((t) => h('th', { text: t })),
        ),
      ),
      table,
    ),
  );
  await load();
  const timer = setInterval(() => {
    if (tail.checked) void load(true).catch(() => undefined);
  }, 2000);
  return () => clearInterval(timer);
}
