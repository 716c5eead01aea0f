// The viewer's shell: sign-in, navigation and the hash router (#/logs?..., #/trace/<id>,
// #/stats?..., #/audit). Views render into <main> and return a function that stops them.

import { ApiError, get, session } from './api.js';
import { auditView } from './audit.js';
import { closeDetail } from './detail.js';
import { clear, h, visible } from './dom.js';
import { logsView } from './logs.js';
import { statsView } from './stats.js';
import { traceView } from './trace.js';

const VIEWS = { logs: logsView, trace: traceView, stats: statsView, audit: auditView };
const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
let stop = () => {};
let me = null;

function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [path, query] = hash.split('?', 2);
  const [view, ...rest] = path.split('/');
  return { view: VIEWS[view] ? view : 'logs', rest: rest.join('/'), params: new URLSearchParams(query || '') };
}

function go(path, params) {
  const query = params && params.toString();
  location.hash = '#' + path + (query ? '?' + query : '');
}

function signIn(message) {
  stop();
  stop = () => {};
  me = null;
  nav.hidden = true;
  clear(who);
  closeDetail();
  const key = h('input', { type: 'password', name: 'key', id: 'key', autocomplete: 'off', required: true, minlength: '16', spellcheck: 'false' });
  const error = h('p', { class: 'status error', role: 'alert' }, message || '');
  const form = h('form', { class: 'signin', autocomplete: 'off' },
    h('h2', {}, 'Sign in'),
    h('p', {}, 'Paste an API key from the receiver\'s query.api_keys. It is kept in this tab only and sent in a header, never in the address.'),
    h('label', { for: 'key' }, 'API key'), key,
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'), error);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const info = await get('session', null, { key: key.value.trim() });
      session.set(key.value.trim());
      start(info);
    } catch (e) {
      error.textContent = e instanceof ApiError && e.status === 401 ? 'Unknown API key.' : `Cannot sign in: ${e.message || e}`;
    }
  });
  clear(main).append(form);
  key.focus();
}

function start(info) {
  me = info;
  nav.hidden = false;
  for (const a of nav.querySelectorAll('[data-admin]')) a.hidden = !info.admin;
  clear(who).append(
    h('span', { class: 'key-name' }, visible(info.name)), ' ',
    h('span', { class: 'role' }, info.admin ? 'admin' : `user ${visible(info.user_id || '')}${info.tenant ? ' @ ' + visible(info.tenant) : ''}`),
    h('button', { type: 'button', class: 'small', id: 'signout', onclick: () => { session.clear(); signIn(); } }, 'Sign out'));
  render();
}

function render() {
  if (!me) return;
  stop();
  closeDetail();
  const r = route();
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('on', a.dataset.view === r.view);
  const view = h('div', { class: 'view view-' + r.view, id: 'view' });
  clear(main).append(view);
  stop = VIEWS[r.view](view, r, { session: me, go }) || (() => {});
}

session.onLost = () => { session.clear(); signIn('The key was refused; sign in again.'); };
window.addEventListener('hashchange', render);
document.addEventListener('keydown', (event) => { if (event.key === 'Escape') closeDetail(); });

async function boot() {
  const key = session.key();
  if (!key) { signIn(); return; }
  try {
    start(await get('session'));
  } catch {
    session.clear();
    signIn();
  }
}

boot();
