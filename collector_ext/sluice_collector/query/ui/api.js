// The JSON API client. The key lives in sessionStorage (this tab only) and travels in the
// X-Api-Key header: never in a URL, never in a cookie.

const STORE = 'sluice.apiKey';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  key() { return sessionStorage.getItem(STORE); },
  set(key) { sessionStorage.setItem(STORE, key); },
  clear() { sessionStorage.removeItem(STORE); },
  onLost: () => {},
};

function url(path, params) {
  const query = params ? params.toString() : '';
  return '/api/v1/' + path + (query ? '?' + query : '');
}

function options(signal, key) {
  return {
    headers: { 'X-Api-Key': key ?? session.key() ?? '' },
    cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer', signal,
  };
}

async function failure(response) {
  let code = 'HTTP_' + response.status;
  let message = response.statusText;
  try {
    const body = await response.json();
    code = body.error.code;
    message = body.error.message;
  } catch { /* not our JSON */ }
  if (response.status === 401) session.onLost();
  return new ApiError(response.status, code, message);
}

export async function get(path, params, { signal, key } = {}) {
  const response = await fetch(url(path, params), options(signal, key));
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** Downloads `path` (an export) as a file, through fetch: the key must stay in a header. */
export async function download(path, params) {
  const response = await fetch(url(path, params), options());
  if (!response.ok) throw await failure(response);
  const name = (response.headers.get('content-disposition') || '').match(/filename="([^"]+)"/);
  const blob = await response.blob();
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name ? name[1] : 'sluice-export';
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

/**
 * Server-sent events read with fetch (EventSource cannot send the key header): calls
 * onEvent(name, data) for each event until `signal` aborts or the server ends the stream.
 */
export async function stream(path, params, onEvent, signal) {
  const response = await fetch(url(path, params), options(signal));
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) name = line.slice(7);
        else if (line.startsWith('data: ')) data.push(line.slice(6));
      }
      if (data.length) onEvent(name, JSON.parse(data.join('\n')));
    }
  }
}
