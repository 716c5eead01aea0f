// Audit (admins): the hash-chain verdict of every audit file set, then the audit trail itself.

import { get } from './api.js';
import { h, visible } from './dom.js';
import { apiParams, filterForm, paramsOf, stateOf } from './filters.js';
import { errorBox, RecordList } from './logs.js';

function chains(result) {
  if (!result.sets.length) return h('p', { class: 'muted' }, 'no audit files yet');
  return h('table', { class: 'chains' },
    h('thead', {}, h('tr', {}, ['file set', 'files', 'records', 'torn (crash)', 'chain'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, result.sets.map((set) => h('tr', { class: set.intact ? 'intact' : 'broken', dataset: { set: visible(set.set) } },
      h('td', {}, visible(set.set)),
      h('td', {}, String(set.files.length)),
      h('td', {}, String(set.records)),
      h('td', {}, String(set.torn)),
      h('td', { class: 'verdict' }, set.intact ? '✔ intact' : ['✘ broken at ', h('code', {}, `${visible(set.broken.file)}:${set.broken.line}`), ' — ', visible(set.broken.reason)])))));
}

export function auditView(root, route, ctx) {
  if (!ctx.session.admin) {
    root.append(errorBox('The audit trail needs an admin key.'));
    return () => {};
  }
  const state = { ...stateOf(route.params), category: ['audit'] };
  const abort = new AbortController();
  const chainBox = h('section', { class: 'chain-status' }, h('h2', {}, 'Hash chains'), h('p', { class: 'status' }, 'verifying…'));
  const now = Date.now();
  const params = apiParams(state, now);
  params.set('include_reads', '1'); // the audit trail is where admins see who read what
  const list = new RecordList(params);
  root.append(chainBox, h('h2', {}, 'Audit trail'),
    filterForm(state, { categories: ['audit'], onApply: (s) => ctx.go('/audit', paramsOf({ ...s, category: [] })) }), list.el);
  get('audit/chains', null, { signal: abort.signal }).then((result) => {
    chainBox.lastElementChild.replaceWith(h('div', {},
      h('p', { class: 'muted' }, result.keyed ? 'Chains are keyed (HMAC-SHA256).' : 'Chains are plain SHA-256 (no key configured).'),
      chains(result)));
  }, (error) => { if (error.name !== 'AbortError') chainBox.lastElementChild.replaceWith(errorBox(error)); });
  list.more();
  return () => { abort.abort(); list.stop(); };
}
