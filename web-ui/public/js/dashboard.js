/* global setInterval, clearInterval */
// Dashboard: the zone/conduit diagram (SVG, laid out by security level), health, blocked events over time.
import { h, s, replace, fmtTime } from './dom.js';
import { api } from './api.js';

const SL_COLOURS = { 1: '#dbeafe', 2: '#dcfce7', 3: '#fef3c7', 4: '#fee2e2' };
const SL_STROKE = { 1: '#3b82f6', 2: '#16a34a', 3: '#d97706', 4: '#dc2626' };
const BOX_W = 170;
const BOX_H = 64;
const COL_W = 400;
const ROW_H = 150;

/**
 * Layout: one column per security level (SL1 on the left, SL4 on the right), zones stacked in file order.
 * Conduits are arrows between box edges; a pair of opposite conduits is drawn as two offset arrows.
 * @param {import('./api.js').Topology} topo
 * @param {import('./api.js').DaemonStatus} daemon
 */
export function diagram(topo, daemon) {
  const levels = [...new Set(topo.zones.map((z) => z.securityLevel))].sort();
  /** @type {Map<string, {x: number, y: number, z: import('./api.js').Zone}>} */
  const pos = new Map();
  let maxRows = 1;
  levels.forEach((lvl, col) => {
    const zs = topo.zones.filter((z) => z.securityLevel === lvl);
    maxRows = Math.max(maxRows, zs.length);
    zs.forEach((z, row) => pos.set(z.name, { x: 40 + col * COL_W, y: 50 + row * ROW_H + (col % 2) * 40, z }));
  });
  const width = 80 + Math.max(1, levels.length) * COL_W - (COL_W - BOX_W);
  const height = 100 + maxRows * ROW_H;
  /** @type {Record<string, number>} */
  const packets = {};
  for (const f of daemon?.flows ?? []) packets[f.conduit] = (packets[f.conduit] ?? 0) + f.packets;
  /** @type {Record<string, number>} */
  const blocked = {};
  for (const c of daemon?.blocked ?? []) if (c.conduit !== null) blocked[c.conduit] = c.events;
  const drops = daemon?.conduitDrops ?? {};

  const svg = s(
    'svg',
    {
      id: 'diagram',
      viewBox: `0 0 ${width} ${height}`,
      width: String(width),
      height: String(height),
      role: 'img',
      'aria-label': 'Zones and conduits',
    },
    s(
      'defs',
      {},
      s(
        'marker',
        {
          id: 'arrow',
          viewBox: '0 0 10 10',
          refX: '9',
          refY: '5',
          markerWidth: '8',
          markerHeight: '8',
          orient: 'auto-start-reverse',
        },
        s('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#334155' }),
      ),
    ),
  );
  const names = new Set(topo.conduits.map((c) => `${c.from}>${c.to}`));
  for (const c of topo.conduits) {
    const a = pos.get(c.from);
    const b = pos.get(c.to);
    if (a === undefined || b === undefined) continue;
    const ax = a.x + BOX_W / 2;
    const ay = a.y + BOX_H / 2;
    const bx = b.x + BOX_W / 2;
    const by = b.y + BOX_H / 2;
    const len = Math.hypot(bx - ax, by - ay) || 1;
    const ux = (bx - ax) / len;
    const uy = (by - ay) / len;
    // Offset opposite conduits sideways so both arrows stay readable.
    const paired = names.has(`${c.to}>${c.from}`);
    const off = paired ? 14 : 0;
    const nx = -uy * off;
    const ny = ux * off;
    // Clip to the box edges: distance from centre to edge along the direction.
    const edge = Math.min(Math.abs(BOX_W / 2 / (ux || 1e-9)), Math.abs(BOX_H / 2 / (uy || 1e-9))) + 4;
    const x1 = ax + ux * edge + nx;
    const y1 = ay + uy * edge + ny;
    const x2 = bx - ux * edge + nx;
    const y2 = by - uy * edge + ny;
    const protos = [...new Set(c.flows.map((f) => f.protocol))].join(', ');
    // A paired conduit's label sits well outside its own arrow (the normals point opposite ways), so the two
    // three-line labels never overlap.
    const labelOff = paired ? 3.2 : 1.5;
    const mx = (x1 + x2) / 2 + nx * labelOff;
    const my = (y1 + y2) / 2 + ny * labelOff;
    svg.append(
      s(
        'g',
        { class: `conduit ${c.mode}`, 'data-conduit': c.name },
        s('line', {
          x1,
          y1,
          x2,
          y2,
          stroke: c.mode === 'monitor' ? '#7c3aed' : '#334155',
          'stroke-width': '2',
          'stroke-dasharray': c.mode === 'monitor' ? '6 4' : null,
          'marker-end': 'url(#arrow)',
        }),
        s(
          'text',
          { x: mx, y: my - 6, class: 'clabel', 'text-anchor': 'middle' },
          `${c.name}${c.mode === 'monitor' ? ' (monitor)' : ''}`,
        ),
        s('text', { x: mx, y: my + 8, class: 'csub', 'text-anchor': 'middle' }, protos),
        s(
          'text',
          { x: mx, y: my + 21, class: 'ccount', 'text-anchor': 'middle' },
          `${packets[c.name] ?? 0} pkts · ${drops[c.name] ?? 0} drops · ${blocked[c.name] ?? 0} logged`,
        ),
      ),
    );
  }
  for (const { x, y, z } of pos.values()) {
    svg.append(
      s(
        'g',
        { class: 'zone', 'data-zone': z.name },
        s('title', {}, `${z.name} (SL-T ${z.securityLevel})\n${z.description}\n${z.networks.join(', ')}`),
        s('rect', {
          x,
          y,
          width: BOX_W,
          height: BOX_H,
          rx: '8',
          fill: SL_COLOURS[/** @type {1|2|3|4} */ (z.securityLevel)] ?? '#eee',
          stroke: SL_STROKE[/** @type {1|2|3|4} */ (z.securityLevel)] ?? '#999',
          'stroke-width': '2',
        }),
        s('text', { x: x + BOX_W / 2, y: y + 26, 'text-anchor': 'middle', class: 'zname' }, z.name),
        s(
          'text',
          { x: x + BOX_W / 2, y: y + 46, 'text-anchor': 'middle', class: 'zsl' },
          `SL-T ${z.securityLevel} · ${z.networks.join(' ')}`.slice(0, 34),
        ),
      ),
    );
  }
  const legend = h(
    'div',
    { class: 'legend' },
    ...[1, 2, 3, 4].map((l) => h('span', { class: `sl sl${l}`, text: `SL-T ${l}` })),
    h('span', { class: 'muted', text: ' dashed = monitor mode' }),
  );
  return h('div', { class: 'diagram-wrap' }, svg, legend);
}

/** @param {import('./api.js').DaemonStatus} daemon */
function health(daemon) {
  const mode = daemon.mode;
  const v = daemon.version;
  const proxies = daemon.proxies ?? [];
  const up = proxies.filter((p) => p.state === 'up' || p.state === 'running').length;
  return h(
    'div',
    { class: 'cards', id: 'health' },
    h(
      'div',
      { class: `card stat ${mode === 'policy' ? 'ok' : 'bad'}` },
      h('div', { class: 'label', text: 'Mode' }),
      h('div', { class: 'value', id: 'health-mode', text: mode === 'policy' ? 'enforcing' : mode }),
    ),
    h(
      'div',
      { class: 'card stat' },
      h('div', { class: 'label', text: 'Running version' }),
      h('div', { class: 'value', text: v === null ? '—' : `#${v.id}` }),
      h('div', { class: 'muted small', text: v === null ? '' : `${v.who}, ${fmtTime(Date.parse(v.when))}` }),
    ),
    h(
      'div',
      { class: 'card stat' },
      h('div', { class: 'label', text: 'Filters (proxies)' }),
      h('div', { class: 'value', text: `${up}/${proxies.length} up` }),
      h('div', {
        class: 'muted small',
        text: proxies.map((p) => `${p.conduit}/${p.flow}: ${p.state}`).join('; '),
      }),
    ),
    h(
      'div',
      { class: 'card stat' },
      h('div', { class: 'label', text: 'Blocked-event log' }),
      h('div', { class: 'value', text: `${daemon.log?.stored ?? 0} stored` }),
      h('div', {
        class: 'muted small',
        text: `${daemon.log?.droppedByRetention ?? 0} dropped by retention; ulogd2 ${daemon.ulogd?.managed ? (daemon.ulogd.running ? 'running' : 'DOWN') : 'external'}`,
      }),
    ),
    h(
      'div',
      { class: `card stat ${daemon.pending ? 'warn' : ''}` },
      h('div', { class: 'label', text: 'Pending confirmation' }),
      h('div', { class: 'value', text: daemon.pending ? `#${daemon.pending.versionId}` : 'none' }),
      h('div', {
        class: 'muted small',
        text: daemon.pending ? `deadline ${fmtTime(Date.parse(daemon.pending.deadline))}` : '',
      }),
    ),
  );
}

/** @param {import('./api.js').Timeline} tl */
export function chart(tl) {
  const W = 720;
  const H = 160;
  const max = Math.max(1, ...tl.counts);
  const bw = (W - 50) / tl.counts.length;
  const svg = s(
    'svg',
    {
      id: 'chart',
      viewBox: `0 0 ${W} ${H}`,
      width: String(W),
      height: String(H),
      role: 'img',
      'aria-label': 'Blocked events over time',
    },
    s('line', { x1: 40, y1: H - 20, x2: W - 5, y2: H - 20, stroke: '#94a3b8' }),
    s('text', { x: 35, y: 14, 'text-anchor': 'end', class: 'axis' }, String(max)),
    s('text', { x: 35, y: H - 20, 'text-anchor': 'end', class: 'axis' }, '0'),
    s('text', { x: 40, y: H - 4, class: 'axis' }, fmtTime(tl.start).slice(11, 16)),
    s('text', { x: W - 5, y: H - 4, 'text-anchor': 'end', class: 'axis' }, fmtTime(tl.end).slice(11, 16)),
  );
  tl.counts.forEach((/** @type {number} */ c, /** @type {number} */ i) => {
    const bh = ((H - 30) * c) / max;
    svg.append(
      s(
        'rect',
        { x: 42 + i * bw, y: H - 20 - bh, width: Math.max(1, bw - 2), height: bh, class: 'bar' },
        s('title', {}, `${fmtTime(tl.start + i * tl.bucketMs)}: ${c}`),
      ),
    );
  });
  return svg;
}

/** @param {HTMLElement} el */
export async function dashboardPage(el) {
  /** @param {boolean} poll */
  const draw = async (poll) => {
    const o = { poll };
    const [topo, st, tl] = await Promise.all([
      api('GET', '/api/topology', undefined, o),
      api('GET', '/api/status', undefined, o),
      api('GET', '/api/logs/timeline?minutes=60&buckets=30', undefined, o),
    ]);
    const d = st.daemon;
    replace(
      el,
      h('h1', { text: 'Dashboard' }),
      health(d),
      h(
        'section',
        { class: 'card' },
        h('h2', {
          text: `Zones and conduits${topo.versionId === null ? '' : ` (version #${topo.versionId})`}`,
        }),
        topo.zones.length === 0
          ? h('p', { class: 'muted', text: 'No policy is running (fail-closed).' })
          : diagram(topo, d),
      ),
      h(
        'section',
        { class: 'card' },
        h('h2', { text: 'Blocked events, last hour' }),
        chart(tl),
        tl.truncated
          ? h('p', { class: 'muted small', text: 'More than 5,000 log rows: the chart shows the newest.' })
          : null,
      ),
    );
  };
  await draw(false);
  const t = setInterval(() => void draw(true).catch(() => undefined), 5000);
  return () => clearInterval(t);
}
