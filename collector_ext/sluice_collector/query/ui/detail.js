// The side panel that shows one whole record or span: every field, masked values marked.

import { clear, fmtMs, h, link, masked, serviceClass, shortTime, SPAN_ID, TRACE_ID, visible } from './dom.js';

const panel = () => document.getElementById('detail');

export function closeDetail() {
  const el = panel();
  el.hidden = true;
  clear(el);
}

function table(obj) {
  const entries = Object.entries(obj && typeof obj === 'object' ? obj : {});
  if (!entries.length) return h('p', { class: 'muted' }, 'none');
  return h('table', { class: 'kv' }, h('tbody', {}, entries.map(([k, v]) =>
    h('tr', {}, h('th', { scope: 'row' }, visible(k)), h('td', {}, masked(v))))));
}

function section(title, ...content) {
  return h('section', {}, h('h3', {}, title), ...content);
}

function open(title, ...content) {
  const el = clear(panel());
  el.hidden = false;
  el.append(h('header', {}, h('h2', {}, title), h('button', { type: 'button', class: 'close', title: 'close', onclick: closeDetail }, '×')), ...content);
  el.scrollTop = 0;
}

function traceLink(id, label) {
  return TRACE_ID.test(id || '') ? link('/trace/' + id, label ?? id) : visible(id || '—');
}

const SHOWN = new Set(['timestamp', 'severity', 'severity_number', 'body', 'category', 'service.name', 'trace_id', 'span_id', 'attributes', 'resource', 'scope']);

export function showRecord(record) {
  if (isSpan(record)) { showSpan(record); return; }
  const other = Object.fromEntries(Object.entries(record).filter(([k]) => !SHOWN.has(k)));
  open('Log record',
    h('dl', { class: 'summary' },
      h('dt', {}, 'time'), h('dd', {}, visible(record.timestamp)),
      h('dt', {}, 'severity'), h('dd', {}, visible(record.severity)),
      h('dt', {}, 'category'), h('dd', {}, visible(record.category)),
      h('dt', {}, 'service'), h('dd', {}, masked(record['service.name'])),
      h('dt', {}, 'trace'), h('dd', {}, traceLink(record.trace_id)),
      h('dt', {}, 'span'), h('dd', {}, visible(record.span_id || '—'))),
    section('Body', h('pre', { class: 'body' }, masked(record.body))),
    section('Attributes', table(record.attributes)),
    section('Resource', table(record.resource)),
    section('Scope', table(record.scope ? { name: record.scope.name, version: record.scope.version, ...(record.scope.attributes || {}) } : {})),
    section('Other fields', table(other)),
    section('As stored', h('pre', { class: 'raw' }, masked(JSON.stringify(record, null, 2)))));
}

export function isSpan(record) {
  return record && typeof record === 'object' && 'start_time' in record && 'kind' in record;
}

export function showSpan(span, offsetMs) {
  const events = (span.events || []).map((e) => h('li', {}, h('strong', {}, visible(e.name)), ' ', h('span', { class: 'muted' }, visible(e.time)), table(e.attributes)));
  const links = (span.links || []).map((l) => h('li', {}, 'trace ', traceLink(l.trace_id), ' span ', visible(SPAN_ID.test(l.span_id || '') ? l.span_id : '—'), table(l.attributes)));
  const status = span.status || {};
  open('Span',
    h('dl', { class: 'summary' },
      h('dt', {}, 'name'), h('dd', {}, masked(span.name)),
      h('dt', {}, 'service'), h('dd', {}, h('span', { class: 'swatch ' + serviceClass(span['service.name']) }), masked(span['service.name'])),
      h('dt', {}, 'kind'), h('dd', {}, visible(span.kind)),
      h('dt', {}, 'status'), h('dd', { class: status.code === 'error' ? 'error' : '' }, visible(status.code || 'unset'), status.message ? [' — ', masked(status.message)] : []),
      h('dt', {}, 'start'), h('dd', {}, visible(span.start_time), offsetMs !== undefined ? ` (+${fmtMs(offsetMs)})` : ''),
      h('dt', {}, 'end'), h('dd', {}, visible(span.end_time)),
      h('dt', {}, 'duration'), h('dd', {}, fmtMs(Number(span.duration_ms))),
      h('dt', {}, 'trace'), h('dd', {}, traceLink(span.trace_id)),
      h('dt', {}, 'span'), h('dd', {}, visible(span.span_id)),
      h('dt', {}, 'parent'), h('dd', {}, visible(span.parent_span_id || '—'))),
    section('Attributes', table(span.attributes)),
    section(`Events (${events.length})`, events.length ? h('ul', { class: 'events' }, events) : h('p', { class: 'muted' }, 'none')),
    section(`Links (${links.length})`, links.length ? h('ul', { class: 'links' }, links) : h('p', { class: 'muted' }, 'none')),
    section('Resource', table(span.resource)),
    section('Scope', table(span.scope ? { name: span.scope.name, version: span.scope.version } : {})),
    section('As stored', h('pre', { class: 'raw' }, masked(JSON.stringify(span, null, 2)))));
}

export { shortTime };
