// The filter every view shares: kept in the address (#/logs?range=1h&severity=ERROR...), so a
// filtered view is shared by copying the URL. The API key is never part of it.

import { h } from './dom.js';

export const RANGES = [['15m', 15 * 60], ['1h', 3600], ['6h', 6 * 3600], ['24h', 86400], ['7d', 7 * 86400], ['30d', 30 * 86400], ['all', 0], ['custom', -1]];
export const DEFAULT_RANGE = '24h';
const SEVERITIES = ['', 'TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL'];
const LISTS = ['category', 'service', 'attr'];
const SINGLES = ['range', 'from', 'to', 'severity', 'user', 'event_type', 'text', 'regex', 'trace_id'];

export function stateOf(params) {
  const state = {};
  for (const name of SINGLES) state[name] = params.get(name) || '';
  for (const name of LISTS) state[name] = params.getAll(name).filter(Boolean);
  if (!state.range) state.range = state.from || state.to ? 'custom' : DEFAULT_RANGE;
  return state;
}

export function paramsOf(state) {
  const params = new URLSearchParams();
  for (const name of SINGLES) {
    if (state[name] && !(name === 'range' && state[name] === DEFAULT_RANGE)) params.set(name, state[name]);
  }
  for (const name of LISTS) for (const value of state[name] || []) params.append(name, value);
  return params;
}

function nsOfInput(value) {
  // datetime-local values are read as UTC, like every time the viewer shows.
  const ms = Date.parse(value.length === 16 ? value + ':00Z' : value + 'Z');
  return Number.isNaN(ms) ? '' : (BigInt(ms) * 1000000n).toString();
}

/** The API's filter parameters, with the relative range resolved against `nowMs` once. */
export function apiParams(state, nowMs, { withTime = true } = {}) {
  const params = new URLSearchParams();
  if (withTime) {
    const range = RANGES.find(([name]) => name === state.range);
    if (range && range[1] > 0) {
      params.set('since', (BigInt(Math.floor(nowMs)) * 1000000n - BigInt(range[1]) * 1000000000n).toString());
    } else if (state.range === 'custom') {
      if (state.from && nsOfInput(state.from)) params.set('since', nsOfInput(state.from));
      if (state.to && nsOfInput(state.to)) params.set('until', nsOfInput(state.to));
    }
  }
  for (const name of ['severity', 'event_type', 'text', 'regex', 'trace_id']) if (state[name]) params.set(name, state[name]);
  if (state.user) params.set('user', state.user);
  for (const name of LISTS) for (const value of state[name] || []) params.append(name, value);
  return params;
}

function split(value) {
  return value.split(',').map((v) => v.trim()).filter(Boolean);
}

/** The filter bar; `onApply(state)` is called with the new filter. */
export function filterForm(state, { categories = [], onApply, extra = [] } = {}) {
  const field = (label, input) => h('label', { class: 'field' }, h('span', {}, label), input);
  const input = (name, value, attrs = {}) => {
    const el = h('input', { name, type: 'text', autocomplete: 'off', spellcheck: 'false', ...attrs });
    el.value = value || '';
    return el;
  };
  const quick = h('div', { class: 'quick', role: 'group', 'aria-label': 'time range' });
  let range = state.range;
  const from = input('from', state.from, { type: 'datetime-local', step: '1' });
  const to = input('to', state.to, { type: 'datetime-local', step: '1' });
  const custom = h('span', { class: 'custom' }, field('from (UTC)', from), field('to (UTC)', to));
  const pick = (name) => {
    range = name;
    for (const b of quick.children) b.classList.toggle('on', b.dataset.range === name);
    custom.hidden = name !== 'custom';
  };
  for (const [name] of RANGES) {
    quick.append(h('button', { type: 'button', dataset: { range: name }, onclick: () => { pick(name); if (name !== 'custom') submit(); } }, name));
  }
  const list = h('datalist', { id: 'categories' }, categories.map((c) => h('option', { value: c })));
  const category = input('category', (state.category || []).join(', '), { list: 'categories', placeholder: 'app, security' });
  const service = input('service', (state.service || []).join(', '), { placeholder: 'checkout' });
  const severity = h('select', { name: 'severity' }, SEVERITIES.map((s) => h('option', { value: s }, s ? `≥ ${s}` : 'any')));
  severity.value = SEVERITIES.includes((state.severity || '').toUpperCase()) ? state.severity.toUpperCase() : '';
  const user = input('user', state.user, { placeholder: 'user id' });
  const eventType = input('event_type', state.event_type, { placeholder: 'AUTH_LOGIN' });
  const attrs = h('span', { class: 'attrs' });
  const addAttr = (value) => attrs.append(input('attr', value, { placeholder: 'key=value', class: 'attr' }));
  for (const value of state.attr || []) addAttr(value);
  if (!(state.attr || []).length) addAttr('');
  const text = input('text', state.text, { placeholder: 'substring', type: 'search' });
  const regex = input('regex', state.regex, { placeholder: 'RE2 regex' });
  const form = h('form', { class: 'filters', autocomplete: 'off' },
    quick, custom, list,
    h('div', { class: 'row' },
      field('category', category), field('service', service), field('severity', severity),
      field('user', user), field('event type', eventType),
      field('attribute', h('span', {}, attrs, h('button', { type: 'button', class: 'small', title: 'another attribute', onclick: () => addAttr('') }, '+'))),
      field('text', text), field('regex', regex),
      h('button', { type: 'submit', class: 'primary' }, 'Apply'), ...extra));
  pick(range);
  function submit() {
    onApply({
      ...state, range, from: range === 'custom' ? from.value : '', to: range === 'custom' ? to.value : '',
      category: split(category.value), service: split(service.value), severity: severity.value,
      user: user.value.trim(), event_type: eventType.value.trim(),
      attr: [...attrs.querySelectorAll('input')].map((i) => i.value.trim()).filter((v) => v.includes('=')),
      text: text.value, regex: regex.value,
    });
  }
  form.addEventListener('submit', (event) => { event.preventDefault(); submit(); });
  return form;
}
