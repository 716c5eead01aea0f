// Stats: volume over time by category and by severity, error rate, top event types and
// services — SVG charts drawn here, for the filter and range chosen.

import { get } from './api.js';
import { h, s, serviceClass, severityClass, visible } from './dom.js';
import { apiParams, filterForm, paramsOf, stateOf } from './filters.js';
import { errorBox } from './logs.js';

let W = 720; // set from the view's width on each render
const H = 180;
const PAD = { l: 48, r: 8, t: 8, b: 22 };
const SEVERITY_ORDER = ['FATAL', 'ERROR', 'WARN', 'INFO', 'DEBUG', 'TRACE', 'UNSPECIFIED'];

let labelFrom = 5;
let labelTo = 16;

function label(startNs) {
  return new Date(Number(BigInt(startNs) / 1000000n)).toISOString().slice(labelFrom, labelTo).replace('T', ' ');
}

/** Every bucket start of the range, empty buckets included (the API returns non-empty ones). */
function bucketStarts(stats, sinceNs, nowNs) {
  const step = BigInt(stats.bucket_seconds || 1) * 1000000000n;
  const have = stats.buckets.map((b) => BigInt(b[0]));
  if (!have.length) return [];
  let first = have[0];
  while (sinceNs && first - step >= sinceNs && have.length + Number((have[0] - first) / step) < 1000) first -= step;
  let last = have[have.length - 1];
  while (last + step <= nowNs && Number((last - first) / step) < 1000) last += step;
  const out = [];
  for (let t = first; t <= last && out.length < 1000; t += step) out.push(t.toString());
  return out;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 5, 10]) if (value <= m * step) return m * step;
  return 10 * step;
}

function axes(svg, max, starts, format = (v) => String(v)) {
  const ih = H - PAD.t - PAD.b;
  for (const f of [0, 0.5, 1]) {
    const y = PAD.t + ih * (1 - f);
    svg.append(s('line', { x1: PAD.l, x2: W - PAD.r, y1: y, y2: y, class: 'grid' }),
      s('text', { x: PAD.l - 4, y: y + 4, class: 'axis-label', 'text-anchor': 'end' }, format(max * f)));
  }
  if (starts.length) {
    const iw = W - PAD.l - PAD.r;
    const picks = [...new Set([0, Math.floor((starts.length - 1) / 2), starts.length - 1])];
    for (const i of picks) {
      const anchor = picks.length > 1 && i === 0 ? 'start' : picks.length > 1 && i === starts.length - 1 ? 'end' : 'middle';
      const x = anchor === 'start' ? PAD.l : anchor === 'end' ? W - PAD.r : PAD.l + iw * (i + 0.5) / starts.length;
      svg.append(s('text', { x, y: H - 6, class: 'axis-label', 'text-anchor': anchor }, label(starts[i])));
    }
  }
}

/** Stacked bars: one bar per bucket, split by key; `classOf(key)` colours a key. */
function stacked(title, starts, points, keys, classOf) {
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': title });
  const index = new Map(starts.map((b, i) => [b, i]));
  const totals = starts.map(() => 0);
  const parts = starts.map(() => new Map());
  for (const [start, key, count] of points) {
    const i = index.get(start);
    if (i === undefined) continue;
    totals[i] += count;
    parts[i].set(key, (parts[i].get(key) || 0) + count);
  }
  const max = niceMax(Math.max(0, ...totals));
  axes(svg, max, starts);
  const iw = W - PAD.l - PAD.r;
  const ih = H - PAD.t - PAD.b;
  const bw = iw / Math.max(1, starts.length);
  starts.forEach((start, i) => {
    let y = PAD.t + ih;
    for (const key of keys) {
      const n = parts[i].get(key) || 0;
      if (!n) continue;
      const bh = ih * n / max;
      y -= bh;
      svg.append(s('rect', { x: PAD.l + i * bw + bw * 0.1, y, width: Math.max(1, bw * 0.8), height: bh, class: 'bar ' + classOf(key), dataset: { key: visible(key), count: n } },
        s('title', {}, `${label(start)} — ${visible(key)}: ${n}`)));
    }
  });
  return figure(title, svg, legend(keys, classOf));
}

function legend(keys, classOf) {
  return h('ul', { class: 'legend' }, keys.map((k) => h('li', {}, h('span', { class: 'swatch ' + classOf(k) }), visible(k))));
}

function figure(title, ...content) {
  return h('figure', { class: 'chart-box' }, h('figcaption', {}, title), ...content);
}

function errorRate(stats) {
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': 'error rate over time' });
  const buckets = stats.buckets;
  const rates = buckets.map(([, n, e]) => (n ? e / n : 0));
  const max = Math.max(0.01, ...rates) > 0.5 ? 1 : niceMax(Math.max(0.01, ...rates) * 100) / 100;
  axes(svg, max, buckets.map((b) => b[0]), (v) => `${(v * 100).toFixed(max < 0.1 ? 1 : 0)}%`);
  const iw = W - PAD.l - PAD.r;
  const ih = H - PAD.t - PAD.b;
  const bw = iw / Math.max(1, buckets.length);
  const pts = rates.map((r, i) => `${PAD.l + bw * (i + 0.5)},${PAD.t + ih * (1 - r / max)}`);
  if (pts.length) svg.append(s('polyline', { points: pts.join(' '), class: 'rate-line' }));
  rates.forEach((r, i) => svg.append(s('circle', { cx: PAD.l + bw * (i + 0.5), cy: PAD.t + ih * (1 - r / max), r: 2.5, class: 'rate-dot' },
    s('title', {}, `${label(buckets[i][0])}: ${buckets[i][2]} errors of ${buckets[i][1]} (${(r * 100).toFixed(1)}%)`))));
  return figure(`Error rate — ${(stats.error_rate * 100).toFixed(2)}% overall (${stats.errors} of ${stats.total})`, svg);
}

function topBars(title, counts, classOf) {
  const BW = Math.max(360, Math.floor(W / 2) - 10);
  const top = counts.slice(0, 10);
  const rowH = 22;
  const height = Math.max(1, top.length) * rowH + 4;
  const svg = s('svg', { viewBox: `0 0 ${BW} ${height}`, class: 'chart bars', role: 'img', 'aria-label': title });
  const max = Math.max(1, ...top.map(([, n]) => n));
  const lw = Math.min(220, Math.floor(BW * 0.4));
  top.forEach(([key, n], i) => {
    const y = 2 + i * rowH;
    const text = visible(key);
    svg.append(
      s('text', { x: lw - 6, y: y + 15, class: 'bar-label', 'text-anchor': 'end' }, text.length > 32 ? text.slice(0, 31) + '…' : text),
      s('rect', { x: lw, y: y + 3, width: Math.max(1, (BW - lw - 60) * n / max), height: rowH - 6, class: 'bar ' + classOf(key), dataset: { key: text, count: n } }, s('title', {}, `${text}: ${n}`)),
      s('text', { x: lw + (BW - lw - 60) * n / max + 6, y: y + 15, class: 'bar-value' }, String(n)));
  });
  if (!top.length) svg.append(s('text', { x: 8, y: 16, class: 'axis-label' }, 'none in this range'));
  return figure(title, svg);
}

function tiles(stats) {
  const tile = (name, value) => h('div', { class: 'tile' }, h('span', { class: 'tile-value' }, value), h('span', { class: 'tile-name' }, name));
  return h('div', { class: 'tiles' },
    tile('records', stats.total.toLocaleString('en')),
    tile('errors', stats.errors.toLocaleString('en')),
    tile('error rate', `${(stats.error_rate * 100).toFixed(2)}%`),
    tile('users', stats.unique_users.toLocaleString('en')),
    tile('avg duration', stats.with_duration ? `${stats.avg_duration_ms.toFixed(1)} ms` : '—'));
}

export function statsView(root, route, ctx) {
  const state = stateOf(route.params);
  const abort = new AbortController();
  const status = h('p', { class: 'status', role: 'status' }, 'counting…');
  root.append(filterForm(state, { categories: ctx.session.categories, onApply: (st) => ctx.go('/stats', paramsOf(st)) }), status);
  const now = Date.now();
  const params = apiParams(state, now);
  get('stats', params, { signal: abort.signal }).then((stats) => {
    W = Math.max(480, Math.min(1600, root.clientWidth - 24));
    [labelFrom, labelTo] = stats.bucket_seconds < 60 ? [11, 19] : stats.bucket_seconds < 86400 ? [5, 16] : [0, 10];
    const starts = bucketStarts(stats, params.get('since') ? BigInt(params.get('since')) : 0n, BigInt(now) * 1000000n);
    const filled = new Map(stats.buckets.map((b) => [b[0], b]));
    stats.buckets = starts.map((b) => filled.get(b) || [b, 0, 0]);
    const categories = stats.by_category.map(([k]) => k);
    const categoryClass = (k) => serviceClass('category:' + k);
    const severities = [...new Set(stats.severity_buckets.map((p) => p[1]))].sort((a, b) => SEVERITY_ORDER.indexOf(a) - SEVERITY_ORDER.indexOf(b));
    status.replaceWith(h('div', { class: 'stats', dataset: { total: String(stats.total) } },
      tiles(stats),
      stacked(`Records over time by category (${stats.bucket_seconds} s buckets)`, starts, stats.category_buckets, categories, categoryClass),
      stacked('Records over time by severity', starts, stats.severity_buckets, severities, severityClass),
      errorRate(stats),
      h('div', { class: 'pair' },
        topBars('Top event types', stats.by_event_type, (k) => serviceClass('event:' + k)),
        topBars('Top services', stats.by_service, serviceClass))));
  }, (error) => { if (error.name !== 'AbortError') status.replaceWith(errorBox(error)); });
  return () => abort.abort();
}
