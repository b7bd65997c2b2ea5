// The btd dashboard. Everything shown comes from this daemon's JSON API (/api/...), and every
// remote string is set as text (never parsed as HTML). Live updates arrive as server-sent events.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';

function el(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'text') e.textContent = v;
    else if (k === 'cls') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

const short = (id) => (id && id.length > 16 ? id.slice(0, 8) + '…' + id.slice(-6) : id || '');
const num = (v) => (typeof v === 'number' && isFinite(v) ? v.toFixed(6) : '–');
const when = (ms) => (ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 19) : '–');
const tag = (check) =>
  el('span', { cls: 'tag ' + (check === '-' ? 'none' : check), text: check === '-' ? 'unchecked' : check });

function table(headers, rows, id) {
  const t = el('table', id ? { id } : {});
  t.append(el('thead', {}, el('tr', {}, headers.map((h) => el('th', { cls: h.num ? 'num' : '', text: h.t || h })))));
  const body = el('tbody');
  for (const r of rows) body.append(r);
  t.append(body);
  return t;
}

function card(title, ...kids) {
  return el('section', { cls: 'card' }, title ? el('h2', { text: title }) : null, ...kids);
}

// ---- live updates -------------------------------------------------------------------------

let updates = 0;
function live(url, draw) {
  const badge = document.getElementById('live');
  const es = new EventSource(url);
  es.addEventListener('update', (e) => {
    updates += 1;
    badge.dataset.updates = String(updates);
    badge.className = 'live on';
    badge.textContent = 'live · ' + new Date().toLocaleTimeString();
    draw(JSON.parse(e.data));
  });
  es.addEventListener('problem', (e) => {
    badge.className = 'live off';
    badge.textContent = e.data;
  });
  es.onerror = () => {
    badge.className = 'live off';
    badge.textContent = 'reconnecting…';
  };
}

async function getJson(url) {
  const r = await fetch(url, { credentials: 'same-origin' });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function show(...kids) {
  const main = document.getElementById('main');
  main.replaceChildren(...kids);
}

function fail(err) {
  show(card('Cannot show this page', el('p', { cls: 'reason', text: String(err.message || err) })));
}

// ---- node page ----------------------------------------------------------------------------

function drawNode(n) {
  document.getElementById('crumb').textContent = 'node ' + short(n.info.peer_id);
  const programs = n.programs.map((p) =>
    el('tr', {},
      el('td', {}, el('a', { href: '/programs/' + p.id, text: p.name })),
      el('td', { cls: 'id', text: short(p.id) }),
      el('td', { text: p.own ? 'owner' : p.member ? 'member' : 'known' }),
      el('td', { text: p.objective }),
    ));
  const peers = n.peers.map((p) =>
    el('tr', {},
      el('td', { cls: 'id', text: short(p.peer_id) }),
      el('td', { text: p.connection }),
      el('td', { text: p.agent || '–' }),
      el('td', { text: (p.rungs || []).map((r) => r.id).join(', ') || '–' }),
      el('td', { cls: 'id', text: (p.addresses || []).join(' ') }),
    ));
  const rungs = n.info.rungs.map((r) =>
    el('tr', {}, el('td', { text: r.id }), el('td', { text: r.hardware }), el('td', { text: r.spend_class }), el('td', { text: r.detail })));
  show(
    el('h1', { text: 'This node' }),
    el('p', { cls: 'id', text: n.info.peer_id }),
    card('Programs', n.programs.length ? table(['name', 'id', 'role', 'objective'], programs, 'programs')
      : el('p', { cls: 'muted', text: 'No programs known yet.' })),
    el('div', { cls: 'grid' },
      card('Peers (' + n.peers.length + ')', table(['peer', 'connection', 'agent', 'rungs', 'addresses'], peers, 'peers')),
      card('Rungs this node offers', n.info.rungs.length ? table(['id', 'hardware', 'spend', 'detail'], rungs)
        : el('p', { cls: 'muted', text: 'None configured.' })),
      card('Addresses', el('p', { cls: 'id', text: [...n.info.listen, ...n.info.external].join('\n') }))),
  );
}

// ---- program page -------------------------------------------------------------------------

function chart(page) {
  const rs = page.results;
  const W = 760, H = 260, L = 64, R = 12, T = 12, B = 28;
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', id: 'history', role: 'img' });
  // The scale follows values that may count: a rejected claim's value (often absurd, by design of
  // whoever doctored it) is pinned to the edge instead of flattening everything else.
  const counted = rs.filter((r) => r.check !== 'rejected');
  const values = (counted.length ? counted : rs).map((r) => r.value).filter((v) => isFinite(v));
  if (page.program.baseline !== null && page.program.baseline !== undefined) values.push(page.program.baseline);
  if (!rs.length || !values.length) {
    root.append(svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'label' }, 'No results yet'));
    return root;
  }
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
  const pad = (hi - lo) * 0.05; lo -= pad; hi += pad;
  const s0 = rs[0].seq, s1 = Math.max(rs[rs.length - 1].seq, s0 + 1);
  const x = (seq) => L + ((seq - s0) / (s1 - s0)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  root.append(svg('line', { x1: L, y1: H - B, x2: W - R, y2: H - B, class: 'axis' }));
  root.append(svg('line', { x1: L, y1: T, x2: L, y2: H - B, class: 'axis' }));
  for (const v of [lo + pad, (lo + hi) / 2, hi - pad]) {
    root.append(svg('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'label' }, v.toFixed(4)));
  }
  root.append(svg('text', { x: L, y: H - 8, class: 'label' }, 'result ' + s0));
  root.append(svg('text', { x: W - R, y: H - 8, 'text-anchor': 'end', class: 'label' }, 'result ' + rs[rs.length - 1].seq));
  const base = page.program.baseline;
  if (base !== null && base !== undefined) {
    root.append(svg('line', { x1: L, y1: y(base), x2: W - R, y2: y(base), class: 'base' }));
  }
  // The champion as a step line through every accepted step that still counts.
  const steps = rs.filter((r) => r.champion && r.check !== 'rejected');
  if (steps.length) {
    let d = `M ${x(steps[0].seq)} ${y(steps[0].value)}`;
    for (const s of steps.slice(1)) d += ` H ${x(s.seq)} V ${y(s.value)}`;
    d += ` H ${x(rs[rs.length - 1].seq)}`;
    root.append(svg('path', { d, class: 'step' }));
  }
  for (const r of rs) {
    if (!isFinite(r.value)) continue;
    const cls = r.check === '-' ? 'none' : r.check;
    const cy = Math.min(Math.max(y(r.value), T), H - B);
    const c = svg('circle', { cx: x(r.seq), cy, r: r.champion ? 5 : 3.2, class: 'p-' + cls, 'data-seq': r.seq });
    c.append(svg('title', {}, `#${r.seq} ${num(r.value)} by ${short(r.worker)} on ${r.rung} (${r.check}${r.reason ? ': ' + r.reason : ''})`));
    root.append(c);
  }
  return root;
}

function legend() {
  const box = el('div', { cls: 'legend' });
  for (const [t, color] of [['verified', 'var(--ok)'], ['pending check', 'var(--pend)'],
    ['rejected by the check', 'var(--bad)'], ['unchecked (not accepted)', 'var(--off)']]) {
    const dot = el('i');
    dot.style.background = color;
    box.append(el('span', {}, dot, t));
  }
  return box;
}

function drawProgram(page) {
  const p = page.program;
  document.getElementById('crumb').textContent = p.name + ' · ' + short(p.id);
  const head = [
    el('h1', { id: 'program-name', text: p.name }),
    el('p', { cls: 'muted', text: `${p.objective} — ${p.metric}, ${p.direction}; checks: ${p.verify}; owner ${short(p.owner)}` }),
  ];
  if (!page.readable) {
    show(...head, card('Knowledge base', el('p', { cls: 'reason', id: 'refused', text: page.refused || 'not readable' })));
    return;
  }
  const s = page.status;
  const champ = s.champion;
  const kpi = (k, v, id) => el('div', { cls: 'kpi' }, el('div', { cls: 'v', id: id || null, text: v }), el('div', { cls: 'k', text: k }));
  const kpis = el('div', { cls: 'kpis' },
    kpi('champion ' + p.metric, champ ? num(champ.value) : 'none yet', 'champion-value'),
    kpi('champion by', champ ? short(champ.worker) : '–', 'champion-worker'),
    kpi('submissions', String(s.submissions), 'submissions'),
    kpi('accepted', String(s.accepted)),
    kpi('pending check', String(s.pending), 'pending'),
    kpi('verified', String(s.verified)),
    kpi('rejected', String(s.rejected), 'rejected'),
    kpi('members', String(s.members)),
    kpi('pool', `${s.pool} ${s.token}`));
  const stops = page.stop.map((st) => el('div', {},
    el('div', { text: st.what + (st.reached ? ' — reached' : '') }),
    (() => { const b = el('div', { cls: 'bar' }); const f = el('span'); f.style.width = (st.progress * 100).toFixed(1) + '%'; b.append(f); return b; })()));
  const boards = page.leaderboards.map((b) => card(
    b.rung === null ? 'Leaderboard — all rungs' : 'Leaderboard — rung ' + b.rung,
    table(['#', 'member', { t: 'best', num: true }, 'check', { t: 'result', num: true }, { t: 'results', num: true }],
      b.rows.map((r, i) => el('tr', {},
        el('td', { text: String(i + 1) }), el('td', { cls: 'id', text: short(r.worker) }),
        el('td', { cls: 'num', text: num(r.best) }), el('td', {}, tag(r.check)),
        el('td', { cls: 'num', text: '#' + r.seq }), el('td', { cls: 'num', text: String(r.results) }))),
      'board-' + (b.rung === null ? 'all' : b.rung))));
  const members = table(['member', { t: 'results', num: true }, { t: 'accepted', num: true }, { t: 'verified', num: true },
    { t: 'pending', num: true }, { t: 'rejected', num: true }, { t: 'champions', num: true }, { t: 'payout', num: true }],
  page.members.map((m) => el('tr', {},
    el('td', { cls: 'id', text: short(m.worker) }), ...[m.results, m.accepted, m.verified, m.pending, m.rejected, m.champions]
      .map((v) => el('td', { cls: 'num', text: String(v) })),
    el('td', { cls: 'num', text: m.payout ? `${m.payout} ${s.token}` : '–' }))), 'members');
  const recent = page.results.slice().reverse().slice(0, 200);
  const claims = table(['result', 'made', 'member', 'rung', { t: p.metric, num: true }, 'KEEP', 'check'],
    recent.map((r) => el('tr', { id: 'result-' + r.seq },
      el('td', { text: '#' + r.seq + (r.champion ? ' ★' : '') }), el('td', { text: when(r.at_ms) }),
      el('td', { cls: 'id', text: short(r.worker) }), el('td', { text: r.rung }),
      el('td', { cls: 'num', text: num(r.value) }), el('td', { text: r.accepted ? 'kept' : 'not better' }),
      el('td', {}, tag(r.check), r.reason ? el('div', { cls: 'reason', text: r.reason }) : null))), 'results');
  const parts = [...head, card(null, kpis)];
  parts.push(card('Champion history', chart(page), legend(),
    el('p', { cls: 'muted', text: `Showing results ${page.results.length ? '#' + page.results[0].seq + '–#' + page.results[page.results.length - 1].seq : ''} of ${s.submissions}. The line is the champion; large dots made a champion.` })));
  if (stops.length) parts.push(card('Stop conditions', ...stops));
  parts.push(el('div', { cls: 'grid' }, ...boards));
  parts.push(card('Members and payouts', members));
  if (page.lineage.length) {
    const rows = page.lineage.slice().reverse().map((l) => el('tr', {},
      el('td', { text: '#' + l.seq }), el('td', { text: l.parent === null ? 'bundle' : '#' + l.parent }),
      el('td', { cls: 'id', text: short(l.worker) }), el('td', { cls: 'num', text: num(l.value) }),
      el('td', {}, tag(l.check)), el('td', { text: l.files.join(', ') || '(no change)' }),
      el('td', { text: (l.rationale || '').split('\n')[0] })));
    parts.push(card('Ledger — who built on whom', table(['result', 'built on', 'member', { t: p.metric, num: true }, 'check', 'files', 'rationale'], rows, 'lineage')));
  }
  parts.push(card('Claims', claims));
  show(...parts);
}

// ---- routing ------------------------------------------------------------------------------

window.addEventListener('DOMContentLoaded', async () => {
  window.btdLoadedAt = Date.now();
  const m = location.pathname.match(/^\/programs\/([0-9a-f]{64})$/);
  try {
    if (m) {
      drawProgram(await getJson('/api/programs/' + m[1]));
      live('/api/events?program=' + m[1], drawProgram);
    } else {
      drawNode(await getJson('/api/node'));
      live('/api/events', drawNode);
    }
  } catch (e) {
    fail(e);
  }
});
