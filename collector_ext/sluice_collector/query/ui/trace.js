// Trace: a waterfall of the trace's spans on one time axis, nested by parent, coloured by
// service, errors marked, with the trace's log records interleaved in time. Spans whose parent
// never arrived are shown at the root, marked; spans that arrived minutes apart are just rows.

import { get } from './api.js';
import { isSpan, showRecord, showSpan } from './detail.js';
import { fmtMs, h, link, masked, serviceClass, severityClass, TRACE_ID, tsNs, visible } from './dom.js';
import { errorBox } from './logs.js';

const MAX_PAGES = 50;

async function fetchTrace(id, signal) {
  const items = [];
  let token = '';
  for (let page = 0; page < MAX_PAGES; page++) {
    const params = new URLSearchParams({ trace_id: id, order: 'oldest', limit: '1000' });
    if (token) params.set('page_token', token);
    const result = await get('logs', params, { signal });
    items.push(...result.records);
    token = result.next_page_token;
    if (!token) return { items, complete: true };
  }
  return { items, complete: false };
}

/** Spans and logs as a forest: each node {kind, record, start, end, children, orphan}. */
export function buildTree(items) {
  const spans = new Map();
  const nodes = [];
  for (const { record } of items) {
    if (isSpan(record)) {
      const start = tsNs(record.start_time) ?? tsNs(record.timestamp) ?? 0n;
      let end = tsNs(record.end_time) ?? start;
      if (end < start) end = start;
      const node = { kind: 'span', record, start, end, children: [], orphan: false };
      if (record.span_id && !spans.has(record.span_id)) spans.set(record.span_id, node);
      nodes.push(node);
    } else {
      const t = tsNs(record.timestamp) ?? 0n;
      nodes.push({ kind: 'log', record, start: t, end: t, children: [], orphan: false });
    }
  }
  const roots = [];
  for (const node of nodes) {
    const r = node.record;
    const parentId = node.kind === 'span' ? r.parent_span_id : r.span_id;
    const parent = parentId ? spans.get(parentId) : undefined;
    if (parent && parent !== node) parent.children.push(node);
    else {
      node.orphan = node.kind === 'span' && Boolean(parentId);
      roots.push(node);
    }
  }
  // Spans naming each other as parents (broken or hostile data) are reachable from no root:
  // each such cycle is cut and shown at the root, marked, so nothing sent goes missing.
  const reached = new Set();
  const mark = (start) => {
    const stack = [start];
    while (stack.length) {
      const n = stack.pop();
      if (reached.has(n)) continue;
      reached.add(n);
      stack.push(...n.children);
    }
  };
  for (const root of roots) mark(root);
  for (const node of nodes) {
    if (reached.has(node)) continue;
    for (const other of nodes) {
      const at = other.children.indexOf(node);
      if (at >= 0) other.children.splice(at, 1);
    }
    node.orphan = true;
    roots.push(node);
    mark(node);
  }
  const order = (a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : a.kind === b.kind ? 0 : a.kind === 'span' ? -1 : 1);
  const sort = (list) => { list.sort(order); for (const n of list) sort(n.children); };
  sort(roots);
  return roots;
}

function flatten(roots) {
  const rows = [];
  const walk = (node, depth) => {
    rows.push({ node, depth });
    for (const child of node.children) walk(child, depth + 1);
  };
  for (const root of roots) walk(root, 0);
  return rows;
}

function pct(value, total) {
  return `${Math.max(0, Math.min(100, Number(value * 10000n / total) / 100))}%`;
}

export function traceView(root, route) {
  const id = (route.rest || '').toLowerCase();
  const abort = new AbortController();
  if (!TRACE_ID.test(id)) {
    root.append(errorBox('not a trace id (32 hex characters)'));
    return () => {};
  }
  const status = h('p', { class: 'status', role: 'status' }, 'loading trace…');
  root.append(h('h2', { class: 'trace-title' }, 'Trace ', h('code', {}, id)), status);
  fetchTrace(id, abort.signal).then(({ items, complete }) => {
    status.remove();
    root.append(render(id, items, complete));
  }, (error) => { if (error.name !== 'AbortError') status.replaceWith(errorBox(error)); });
  return () => abort.abort();
}

function render(id, items, complete) {
  const roots = buildTree(items);
  const rows = flatten(roots);
  if (!rows.length) return h('p', { class: 'status' }, 'no spans or records of this trace are visible to this key');
  let t0 = null;
  let t1 = null;
  for (const { node } of rows) {
    if (t0 === null || node.start < t0) t0 = node.start;
    if (t1 === null || node.end > t1) t1 = node.end;
  }
  const total = t1 - t0 > 0n ? t1 - t0 : 1n;
  const spans = rows.filter((r) => r.node.kind === 'span');
  const services = [...new Set(spans.map((r) => r.node.record['service.name']))];
  const errors = spans.filter((r) => r.node.record.status && r.node.record.status.code === 'error').length;
  const ms = (ns) => Number(ns) / 1e6;
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => h('span', { class: 'tick', dataset: { at: String(f) } }, f ? fmtMs(ms(total) * f) : '0'));
  for (const tick of ticks) tick.style.left = `${Number(tick.dataset.at) * 100}%`;
  const body = h('div', { class: 'waterfall-rows', role: 'tree' });
  for (const { node, depth } of rows) body.append(node.kind === 'span' ? spanRow(node, depth, t0, total) : logRow(node, depth, t0, total));
  return h('div', { class: 'trace' },
    h('p', { class: 'trace-summary' },
      `${spans.length} spans, ${rows.length - spans.length} log records, ${fmtMs(ms(total))}`,
      errors ? h('span', { class: 'error-count' }, ` — ${errors} with errors`) : '',
      complete ? '' : ' (first 50,000 rows only)'),
    h('ul', { class: 'legend' }, services.map((s) => h('li', {}, h('span', { class: 'swatch ' + serviceClass(s) }), masked(s)))),
    h('div', { class: 'waterfall' },
      h('div', { class: 'axis' }, h('div', { class: 'label-col' }, 'span'), h('div', { class: 'lane-col ticks' }, ticks)),
      body));
}

function spanRow(node, depth, t0, total) {
  const r = node.record;
  const error = r.status && r.status.code === 'error';
  const bar = h('div', { class: `span-bar ${serviceClass(r['service.name'])}${error ? ' error' : ''}`, title: visible(r.name) });
  bar.style.left = pct(node.start - t0, total);
  bar.style.width = `max(2px, ${pct(node.end - node.start, total)})`;
  const duration = h('span', { class: 'duration' }, fmtMs(Number(r.duration_ms)));
  const label = h('div', { class: 'label-col' },
    error ? h('span', { class: 'error-mark', title: 'status: error' }, '!') : '',
    h('span', { class: 'service' }, masked(r['service.name'])), ' ',
    h('span', { class: 'name' }, masked(r.name)),
    node.orphan ? h('span', { class: 'orphan', title: `parent span ${visible(r.parent_span_id)} was not received` }, 'parent missing') : '');
  label.style.paddingLeft = `${0.4 + depth * 1.1}em`;
  const row = h('div', { class: 'span-row' + (error ? ' error' : '') + (node.orphan ? ' orphan' : ''), role: 'treeitem', tabindex: '0',
    dataset: { spanId: visible(r.span_id), parentId: visible(r.parent_span_id || ''), depth: String(depth), durationMs: String(r.duration_ms), service: visible(r['service.name']) } },
  label, h('div', { class: 'lane-col' }, bar, duration));
  const open = () => {
    for (const other of row.parentElement.querySelectorAll('.selected')) other.classList.remove('selected');
    row.classList.add('selected');
    showSpan(r, Number(node.start - t0) / 1e6);
  };
  row.addEventListener('click', open);
  row.addEventListener('keydown', (event) => { if (event.key === 'Enter') open(); });
  return row;
}

function logRow(node, depth, t0, total) {
  const r = node.record;
  const dot = h('div', { class: 'log-dot ' + severityClass(r.severity), title: visible(r.severity) });
  dot.style.left = pct(node.start - t0, total);
  const label = h('div', { class: 'label-col' },
    h('span', { class: 'level ' + severityClass(r.severity) }, visible(r.severity)), ' ',
    h('span', { class: 'message' }, masked(r.body)));
  label.style.paddingLeft = `${0.4 + depth * 1.1}em`;
  const row = h('div', { class: 'log-row', role: 'treeitem', tabindex: '0', dataset: { spanId: visible(r.span_id || ''), depth: String(depth) } },
    label, h('div', { class: 'lane-col' }, dot));
  const open = () => {
    for (const other of row.parentElement.querySelectorAll('.selected')) other.classList.remove('selected');
    row.classList.add('selected');
    showRecord(r);
  };
  row.addEventListener('click', open);
  row.addEventListener('keydown', (event) => { if (event.key === 'Enter') open(); });
  return row;
}

export { link };
