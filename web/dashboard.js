/**
 * The live dashboard demo (dashboard.html): subscribes to the "ticker"
 * topic (?topic= to change it), fed by web/ticker.js through
 * POST /api/publish, and draws each symbol's price as it moves (SVG, drawn
 * here; no library).
 *
 * A tick is {"ts": ms, "quotes": [{"symbol", "name", "price", "open"}]}.
 * The page subscribes with since=0, so the chart starts with what the
 * server retains; after a network drop duplex.js fills in the missed
 * ticks, or a gap notice says what was lost (the line breaks there).
 *
 * Stable hooks for tests: #status[data-state], #cards > .symbol[data-symbol]
 * (.sym-price, .sym-change), #chart-line[data-points], #gaps > li.gap-notice,
 * #stat-count, #stat-seq, window.dashboard = {client, topic, series}.
 */
import { Duplex } from './duplex.js';
import { h, bindStatus } from './ui.js';

const $ = (id) => document.getElementById(id);
const SVGNS = 'http://www.w3.org/2000/svg';
const MAX_POINTS = 240; // per symbol
const params = new URLSearchParams(location.search);
const topic = params.get('topic') || 'ticker';

/** @type {Map<string, {name: string, open: number, points: Array<{ts: number, price: number}|{gap: true}>, card: HTMLElement}>} */
const series = new Map();
let selected = null;
let ticks = 0;
let initial = true;
let dirty = false;
const arrivals = []; // receive times, for messages/s

const client = new Duplex();
window.dashboard = { client, topic, series };
bindStatus(client, $('status'));
$('topic').textContent = topic;

client.on('subscribed', (e) => {
  if (e.topic !== topic) return;
  initial = !e.resumed;
  position();
  setTimeout(() => {
    if (ticks === 0) $('waiting').classList.remove('hidden');
  }, 3000);
});
client.subscribe(topic, onTick, { since: 0, onGap }).catch((e) => notice(`Cannot subscribe to ${topic}: ${e.message}`, 'error'));

// ---- data ----------------------------------------------------------------

function onTick(data) {
  ticks++;
  arrivals.push(performance.now());
  $('waiting').classList.add('hidden');
  const ts = Number(data && data.ts) || Date.now();
  for (const q of (data && Array.isArray(data.quotes)) ? data.quotes : []) {
    if (typeof q.symbol !== 'string' || !Number.isFinite(q.price)) continue;
    let s = series.get(q.symbol);
    if (!s) s = addSymbol(q);
    s.open = Number.isFinite(q.open) ? q.open : (s.open ?? q.price);
    s.name = q.name || s.name;
    s.points.push({ ts, price: q.price });
    if (s.points.length > MAX_POINTS) s.points.splice(0, s.points.length - MAX_POINTS);
  }
  position();
  schedule();
}

function onGap(g) {
  position();
  if (g.reason === 'history' && initial) return; // older ticks than the server keeps: no loss
  const n = g.to >= g.from ? g.to - g.from + 1 : 0;
  const when = new Date().toLocaleTimeString();
  let text;
  if (g.reason === 'epoch') text = `${when} · the server restarted: its history was reset, ticks may be missing`;
  else if (g.reason === 'dropped') text = `${when} · ${n} ticks dropped (the connection fell behind)`;
  else text = `${when} · ${n} tick${n === 1 ? '' : 's'} lost while disconnected (#${g.from}–#${g.to})`;
  notice(text, '', g);
  // The marker sits between the last tick before the hole and the first
  // after it (drawn there by renderChart), not at the time it arrived.
  for (const s of series.values()) s.points.push({ gap: true });
  $('stat-gaps').textContent = String(client.stats.gaps);
  schedule();
}

function notice(text, kind, g) {
  const li = h('li', {
    className: `gap-notice ${kind || ''}`,
    dataset: g ? { reason: g.reason, from: String(g.from), to: String(g.to) } : {},
  }, text);
  $('gaps').prepend(li);
  $('no-gaps').classList.add('hidden');
}

function position() {
  const p = client.position(topic);
  if (!p) return;
  $('stat-seq').textContent = p.seq === null ? '–' : String(p.seq);
  $('epoch-line').textContent = `epoch ${p.epoch || '–'}`;
}

// ---- cards ---------------------------------------------------------------

function addSymbol(q) {
  const sym = q.symbol;
  const spark = document.createElementNS(SVGNS, 'svg');
  spark.setAttribute('class', 'spark');
  spark.setAttribute('viewBox', '0 0 100 40');
  spark.setAttribute('preserveAspectRatio', 'none');
  spark.append(document.createElementNS(SVGNS, 'path'));
  const card = h('button', {
    type: 'button', className: 'panel symbol', id: `sym-${sym}`,
    dataset: { symbol: sym }, 'aria-pressed': 'false',
  },
  h('div', { className: 'sym-top' },
    h('span', { className: 'sym-name' }, sym),
    h('span', { className: 'sym-desc' }, q.name || '')),
  h('div', { className: 'sym-price' }, '–'),
  h('div', { className: 'sym-change' }, ''),
  spark);
  card.addEventListener('click', () => select(sym));
  const s = { name: q.name || sym, open: q.open, points: [], card };
  series.set(sym, s);
  // Keep the cards in alphabetical order.
  const after = [...$('cards').children].find((c) => c.dataset.symbol > sym);
  $('cards').insertBefore(card, after || null);
  if (!selected) select(sym);
  return s;
}

function select(sym) {
  selected = sym;
  for (const c of $('cards').children) c.setAttribute('aria-pressed', String(c.dataset.symbol === sym));
  schedule();
}

const fmt = (x) => x.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });

function change(s, last) {
  const d = last - s.open;
  const pct = s.open ? (d / s.open) * 100 : 0;
  return { d, text: `${d >= 0 ? '+' : '−'}${fmt(Math.abs(d))} (${d >= 0 ? '+' : '−'}${Math.abs(pct).toFixed(2)}%)` };
}

function lastPrice(s) {
  for (let i = s.points.length - 1; i >= 0; i--) if (!s.points[i].gap) return s.points[i].price;
  return null;
}

function renderCard(s) {
  const last = lastPrice(s);
  if (last === null) return;
  const priceEl = s.card.querySelector('.sym-price');
  const chEl = s.card.querySelector('.sym-change');
  priceEl.textContent = fmt(last);
  const c = change(s, last);
  chEl.textContent = c.text;
  chEl.className = `sym-change ${c.d >= 0 ? 'up' : 'down'}`;
  const pts = s.points.slice(-80);
  const prices = pts.filter((p) => !p.gap).map((p) => p.price);
  const lo = Math.min(...prices);
  const hi = Math.max(...prices);
  const span = hi - lo || 1;
  let d = '';
  let pen = 'M';
  pts.forEach((p, i) => {
    if (p.gap) {
      pen = 'M';
      return;
    }
    const x = pts.length > 1 ? (i / (pts.length - 1)) * 100 : 100;
    const y = 37 - ((p.price - lo) / span) * 34;
    d += `${pen}${x.toFixed(2)} ${y.toFixed(2)}`;
    pen = 'L';
  });
  const path = s.card.querySelector('.spark path');
  path.setAttribute('d', d);
  path.style.stroke = c.d >= 0 ? 'var(--up)' : 'var(--down)';
}

// ---- the big chart ---------------------------------------------------------

function renderChart() {
  const s = series.get(selected);
  const svg = $('chart');
  const W = Math.max(300, Math.round(svg.getBoundingClientRect().width) || 800);
  const H = 320;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const pad = { l: 64, r: 16, t: 14, b: 28 };
  const line = $('chart-line');
  if (!s) return;
  const last = lastPrice(s);
  $('chart-symbol').textContent = `${selected} · ${s.name}`;
  $('chart-price').textContent = last === null ? '' : fmt(last);
  if (last !== null) {
    const c = change(s, last);
    $('chart-change').textContent = c.text;
    $('chart-change').className = `sym-change ${c.d >= 0 ? 'up' : 'down'}`;
  }

  const pts = s.points;
  const real = pts.filter((p) => !p.gap);
  if (real.length === 0) return;
  let lo = Math.min(...real.map((p) => p.price), s.open ?? Infinity);
  let hi = Math.max(...real.map((p) => p.price), s.open ?? -Infinity);
  if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
  const m = (hi - lo) * 0.08;
  lo -= m;
  hi += m;
  const t0 = real[0].ts;
  const t1 = Math.max(real[real.length - 1].ts, t0 + 1);
  const X = (ts) => pad.l + ((ts - t0) / (t1 - t0)) * (W - pad.l - pad.r);
  const Y = (v) => pad.t + (1 - (v - lo) / (hi - lo)) * (H - pad.t - pad.b);

  // Grid and price labels.
  const grid = $('chart-grid');
  grid.replaceChildren();
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4;
    const y = Y(v);
    grid.append(svgEl('line', { x1: pad.l, x2: W - pad.r, y1: y, y2: y }));
    grid.append(svgEl('text', { x: pad.l - 10, y: y + 4, 'text-anchor': 'end' }, fmt(v)));
  }
  // Time labels.
  const xa = $('chart-x');
  xa.replaceChildren();
  for (const f of [0, 0.5, 1]) {
    const ts = t0 + (t1 - t0) * f;
    const anchor = f === 0 ? 'start' : f === 1 ? 'end' : 'middle';
    xa.append(svgEl('text', { x: X(ts), y: H - 8, 'text-anchor': anchor }, new Date(ts).toLocaleTimeString()));
  }
  // The open price.
  const open = $('chart-open');
  if (Number.isFinite(s.open)) {
    open.setAttribute('x1', pad.l);
    open.setAttribute('x2', W - pad.r);
    open.setAttribute('y1', Y(s.open));
    open.setAttribute('y2', Y(s.open));
  }

  // The line, broken at gaps; the area under each segment.
  let d = '';
  let area = '';
  let seg = [];
  const gaps = $('chart-gaps');
  gaps.replaceChildren();
  const flush = () => {
    if (!seg.length) return;
    d += seg.map((p, i) => `${i ? 'L' : 'M'}${X(p.ts).toFixed(1)} ${Y(p.price).toFixed(1)}`).join('');
    const base = (H - pad.b).toFixed(1);
    area += `M${X(seg[0].ts).toFixed(1)} ${base}` +
      seg.map((p) => `L${X(p.ts).toFixed(1)} ${Y(p.price).toFixed(1)}`).join('') +
      `L${X(seg[seg.length - 1].ts).toFixed(1)} ${base}Z`;
    seg = [];
  };
  pts.forEach((p, i) => {
    if (p.gap) {
      const before = seg.length ? seg[seg.length - 1] : null;
      const after = pts.slice(i + 1).find((q) => !q.gap);
      flush();
      if (!before && !after) return;
      const x = before && after ? (X(before.ts) + X(after.ts)) / 2 : X((before || after).ts);
      gaps.append(svgEl('line', { class: 'gap-mark', x1: x, x2: x, y1: pad.t, y2: H - pad.b }));
    } else {
      seg.push(p);
    }
  });
  flush();
  line.setAttribute('d', d);
  line.dataset.points = String(real.length);
  $('chart-area').setAttribute('d', area);
  const dot = $('chart-dot');
  const lp = real[real.length - 1];
  dot.setAttribute('cx', X(lp.ts));
  dot.setAttribute('cy', Y(lp.price));
  dot.classList.remove('hidden');
}

function svgEl(tag, attrs, text) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// ---- rendering loop --------------------------------------------------------

function schedule() {
  if (dirty) return;
  dirty = true;
  requestAnimationFrame(() => {
    dirty = false;
    for (const s of series.values()) renderCard(s);
    renderChart();
    $('stat-count').textContent = String(ticks);
  });
}

setInterval(() => {
  const now = performance.now();
  while (arrivals.length && now - arrivals[0] > 5000) arrivals.shift();
  $('stat-rate').textContent = (arrivals.length / 5).toFixed(1);
}, 1000);

new ResizeObserver(() => schedule()).observe($('chart'));
