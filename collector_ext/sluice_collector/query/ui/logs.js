// Logs: the filter bar, newest first with infinite scroll over page tokens, a live tail, and
// one click on a row for the whole record.

import { ApiError, download, get, stream } from './api.js';
import { isSpan, showRecord } from './detail.js';
import { clear, fmtMs, h, link, masked, serviceClass, severityClass, shortTime, TRACE_ID, visible } from './dom.js';
import { apiParams, filterForm, paramsOf, stateOf } from './filters.js';

const PAGE = 100;
const MAX_TAILED_ROWS = 5000;

function userOf(record) {
  const a = record.attributes || {};
  return a['user.id'] ?? a['enduser.id'] ?? '';
}

function messageOf(record) {
  if (isSpan(record)) return h('span', {}, h('span', { class: 'tag' }, 'SPAN'), ' ', masked(record.name), ' ', h('span', { class: 'muted' }, fmtMs(Number(record.duration_ms))));
  return masked(record.body);
}

function row(item, { fresh = false } = {}) {
  const r = item.record;
  const level = isSpan(r) ? (r.status && r.status.code === 'error' ? 'ERROR' : 'SPAN') : r.severity;
  const trace = TRACE_ID.test(r.trace_id || '') ? link('/trace/' + r.trace_id, 'trace') : '';
  if (trace) trace.addEventListener('click', (event) => event.stopPropagation());
  const tr = h('tr', { class: 'record' + (fresh ? ' fresh' : ''), tabindex: '0', dataset: { id: item.id, category: item.category } },
    h('td', { class: 'time' }, shortTime(r.timestamp)),
    h('td', { class: 'level ' + severityClass(level) }, visible(level)),
    h('td', { class: 'category' }, visible(item.category)),
    h('td', { class: 'service' }, h('span', { class: 'swatch ' + serviceClass(r['service.name']) }), masked(r['service.name'])),
    h('td', { class: 'user' }, masked(userOf(r))),
    h('td', { class: 'message' }, messageOf(r)),
    h('td', { class: 'trace' }, trace));
  const open = () => {
    for (const other of tr.parentElement.querySelectorAll('tr.selected')) other.classList.remove('selected');
    tr.classList.add('selected');
    showRecord(r);
  };
  tr.addEventListener('click', open);
  tr.addEventListener('keydown', (event) => { if (event.key === 'Enter') open(); });
  return tr;
}

/** A list of records for a fixed filter: pages on demand, optionally tails. */
export class RecordList {
  constructor(params, { tailParams = null } = {}) {
    this.params = params;
    this.tailParams = tailParams;
    this.token = '';
    this.done = false;
    this.loading = false;
    this.seen = new Set();
    this.abort = new AbortController();
    this.tailAbort = null;
    this.status = h('p', { class: 'status', role: 'status' });
    this.body = h('tbody', {});
    this.sentinel = h('div', { class: 'sentinel' });
    this.el = h('div', { class: 'records' },
      h('table', { class: 'records' },
        h('thead', {}, h('tr', {}, ['time (UTC)', 'level', 'category', 'service', 'user', 'message', ''].map((c) => h('th', { scope: 'col' }, c)))),
        this.body),
      this.sentinel, this.status);
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.more();
    }, { rootMargin: '600px' });
    this.observer.observe(this.sentinel);
  }

  async more() {
    if (this.loading || this.done) return;
    this.loading = true;
    this.status.textContent = 'loading…';
    const params = new URLSearchParams(this.params);
    params.set('limit', String(PAGE));
    if (this.token) params.set('page_token', this.token);
    try {
      const page = await get('logs', params, { signal: this.abort.signal });
      const rows = document.createDocumentFragment();
      for (const item of page.records) {
        if (this.seen.has(item.id)) continue;
        this.seen.add(item.id);
        rows.append(row(item));
      }
      this.body.append(rows);
      this.token = page.next_page_token;
      this.done = !this.token;
      this.status.textContent = this.done ? (this.body.children.length ? `${this.body.children.length} records — end of results` : 'no records match') : '';
      if (!performance.getEntriesByName('sluice:logs-rendered').length) performance.mark('sluice:logs-rendered');
      this.el.dataset.loaded = 'true';
    } catch (error) {
      if (error.name === 'AbortError') return;
      this.done = true;
      this.status.textContent = error instanceof ApiError ? `${error.code}: ${error.message}` : String(error);
      this.status.classList.add('error');
    } finally {
      this.loading = false;
    }
    // Still on screen (a short page, a tall window): keep filling.
    const box = this.sentinel.getBoundingClientRect();
    if (!this.done && box.top < window.innerHeight + 600) this.more();
  }

  tail(on, onState) {
    if (this.tailAbort) { this.tailAbort.abort(); this.tailAbort = null; }
    if (!on) { onState('off'); return; }
    const abort = new AbortController();
    this.tailAbort = abort;
    onState('connecting');
    stream('tail', this.tailParams, (name, data) => {
      if (name === 'ready') onState('live');
      if (name !== 'records') return;
      for (const item of data.records) {
        if (this.seen.has(item.id)) continue;
        this.seen.add(item.id);
        this.body.prepend(row(item, { fresh: true }));
      }
      while (this.body.children.length > MAX_TAILED_ROWS) this.body.lastElementChild.remove();
    }, abort.signal).then(() => onState('ended'), (error) => {
      if (error.name !== 'AbortError') onState('error: ' + (error.message || error));
    });
  }

  stop() {
    this.abort.abort();
    if (this.tailAbort) this.tailAbort.abort();
    this.observer.disconnect();
  }
}

export function logsView(root, route, ctx) {
  const state = stateOf(route.params);
  const now = Date.now();
  const list = new RecordList(apiParams(state, now), { tailParams: apiParams(state, now, { withTime: false }) });
  const tailState = h('span', { class: 'tail-state', role: 'status' }, '');
  const tail = h('input', { type: 'checkbox', id: 'tail', name: 'tail' });
  tail.addEventListener('change', () => list.tail(tail.checked, (s) => { tailState.textContent = s === 'off' ? '' : s; tailState.dataset.state = s; }));
  const exportButton = h('button', { type: 'button', title: 'download the matching records (JSON lines)', onclick: () => {
    download('export', apiParams(state, now)).catch((error) => { list.status.textContent = String(error.message || error); });
  } }, 'Export');
  root.append(
    filterForm(state, { categories: ctx.session.categories, onApply: (s) => ctx.go('/logs', paramsOf(s)),
      extra: [h('label', { class: 'toggle', title: 'show records as they arrive' }, tail, ' live tail'), tailState, exportButton] }),
    list.el);
  list.more();
  return () => list.stop();
}

export function errorBox(error) {
  return h('p', { class: 'status error' }, error instanceof ApiError ? `${error.code}: ${error.message}` : String(error));
}

export { clear };
