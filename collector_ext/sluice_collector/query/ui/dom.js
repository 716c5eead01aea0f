// DOM helpers. Every piece of record data reaches the page through createTextNode or
// textContent (never innerHTML: the page's CSP enforces Trusted Types, so an HTML sink would
// throw). Control characters, terminal escapes and bidi overrides are shown as visible escapes.

const INVISIBLE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;
const MASK = /\[REDACTED:[^\]\s]{0,64}\]/g;

/** `value` as text a person can read safely: ESC becomes "\x1b", U+202E "\u202e", ... */
export function visible(value) {
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  if (text === undefined) return '';
  return text.replace(INVISIBLE, (c) => {
    const code = c.charCodeAt(0);
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/** Text with every masked value (`[REDACTED:...]`) wrapped in a marked element. */
export function masked(value) {
  const text = visible(value);
  const out = document.createDocumentFragment();
  let last = 0;
  for (const m of text.matchAll(MASK)) {
    if (m.index > last) out.append(document.createTextNode(text.slice(last, m.index)));
    const mark = document.createElement('mark');
    mark.className = 'redacted';
    mark.title = 'masked by the receiver';
    mark.textContent = m[0];
    out.append(mark);
    last = m.index + m[0].length;
  }
  if (last < text.length) out.append(document.createTextNode(text.slice(last)));
  return out;
}

/**
 * h('div', {class: 'x', dataset: {id: 1}, onclick: fn, title: 't'}, child, 'text', ...)
 * Strings become text nodes; attributes are set one by one (no `style`, no inline handlers).
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(typeof child === 'string' || typeof child === 'number' ? document.createTextNode(String(child)) : child);
  }
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(typeof child === 'string' || typeof child === 'number' ? document.createTextNode(String(child)) : child);
  }
  return el;
}

function setAttrs(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'style' || name === 'href' || name === 'src') throw new Error(`h(): set ${name} explicitly`);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
}

/** A link inside the viewer; `route` is built by the viewer itself, never taken from data. */
export function link(route, ...children) {
  const a = h('a', {}, ...children);
  a.href = '#' + route;
  return a;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export const TRACE_ID = /^[0-9a-f]{32}$/;
export const SPAN_ID = /^[0-9a-f]{16}$/;

/** Unix ns (BigInt) of the files' RFC 3339 form, 2026-11-23T08:57:35.123456789Z. */
export function tsNs(text) {
  if (typeof text !== 'string' || text.length < 19) return null;
  const ms = Date.parse(text.slice(0, 19) + 'Z');
  if (Number.isNaN(ms)) return null;
  const frac = (text.slice(20).match(/^[0-9]*/) || [''])[0];
  return BigInt(ms) * 1000000n + BigInt((frac + '000000000').slice(0, 9));
}

/** "2026-11-23 08:57:35.123" from a stored timestamp (UTC, as stored). */
export function shortTime(text) {
  return typeof text === 'string' ? text.slice(0, 23).replace('T', ' ') : '';
}

export function fmtMs(ms) {
  if (!Number.isFinite(ms)) return '';
  if (ms >= 60000) return `${(ms / 60000).toFixed(1)} min`;
  if (ms >= 1000) return `${(ms / 1000).toFixed(ms >= 10000 ? 1 : 2)} s`;
  if (ms >= 1) return `${ms.toFixed(ms >= 100 ? 0 : 1)} ms`;
  return `${(ms * 1000).toFixed(0)} µs`;
}

/** A stable colour class (svc-0 … svc-11) for a service name. */
export function serviceClass(name) {
  let hash = 2166136261;
  for (const c of String(name)) hash = Math.imul(hash ^ c.codePointAt(0), 16777619) >>> 0;
  return `svc-${hash % 12}`;
}

export function severityClass(name) {
  const n = String(name || '').toUpperCase();
  for (const level of ['FATAL', 'ERROR', 'WARN', 'INFO', 'DEBUG', 'TRACE']) if (n.startsWith(level)) return `sev-${level.toLowerCase()}`;
  return 'sev-unspecified';
}
