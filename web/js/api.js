// api.js - the dwfd REST API from the browser: JSON requests with the
// bearer token (kept in sessionStorage), event streams and downloads.
// Every URL is relative ("v1/jobs"), so the dashboard works behind any
// host name or path prefix.

const TOKEN_KEY = 'dwf.token';

export const auth = {
  get() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
  },
  set(t) {
    try { sessionStorage.setItem(TOKEN_KEY, t); } catch { /* private mode */ }
  },
  clear() {
    try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* private mode */ }
  },
};

// Called with (status, message) when the server answers 401 or 403.
let authListener = () => {};
export function onAuthNeeded(fn) { authListener = fn; }

export class ApiError extends Error {
  constructor(status, err) {
    super((err && err.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (err && err.code) || 'http_' + status;
    this.field = (err && err.field) || null;
  }
}

function headers(extra = {}) {
  const hd = { Accept: 'application/json', ...extra };
  const t = auth.get();
  if (t) hd.Authorization = 'Bearer ' + t;
  return hd;
}

// fetch() of a relative API path; resolves to the parsed JSON body (null
// for 204), rejects with ApiError carrying the server's {"error": ...}.
export async function api(path, { method = 'GET', body, signal } = {}) {
  const init = { method, headers: headers(), signal, cache: 'no-cache' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, { code: 'network', message: 'the server cannot be reached' });
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const err = new ApiError(res.status, data && data.error);
    if (res.status === 401 || res.status === 403) authListener(res.status, err.message);
    throw err;
  }
  return data;
}

// Downloads a file (model, CSV). Without a token a plain link does it; with
// one the file is fetched with the Authorization header and saved as a blob.
export async function download(path, fallbackName) {
  const res = await fetch(path, { headers: headers({ Accept: '*/*' }) });
  if (!res.ok) {
    let err = null;
    try { err = (await res.json()).error; } catch { /* not JSON */ }
    if (res.status === 401 || res.status === 403) authListener(res.status, err && err.message);
    throw new ApiError(res.status, err);
  }
  const disp = res.headers.get('Content-Disposition') || '';
  const m = /filename="?([^";]+)"?/.exec(disp);
  const blob = await res.blob();
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = m ? m[1] : fallbackName;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// Server-Sent Events of path. on(name, data) gets every event with its
// JSON data; onFail() is called when the stream cannot be opened at all.
// EventSource is used when there is no token (it cannot send headers);
// with a token the stream is read through fetch(). Returns {close()}.
export function stream(path, on, onFail) {
  if (!auth.get() && typeof EventSource === 'function') return eventSource(path, on, onFail);
  return fetchStream(path, on, onFail);
}

function dispatch(on, name, text) {
  let data = null;
  try { data = JSON.parse(text); } catch { return; }
  on(name, data);
}

function eventSource(path, on, onFail) {
  const es = new EventSource(path);
  let opened = false;
  for (const name of ['state', 'epoch', 'deleted'])
    es.addEventListener(name, (ev) => { opened = true; dispatch(on, name, ev.data); });
  es.onopen = () => { opened = true; };
  es.onerror = () => {
    // Before any event: the route failed (401, 404, ...). After: the
    // browser reconnects by itself with Last-Event-ID.
    if (!opened) { es.close(); onFail && onFail(); }
  };
  return { close: () => es.close() };
}

function fetchStream(path, on, onFail) {
  const ctl = new AbortController();
  let lastId = '';
  let closed = false;
  const run = async (attempt) => {
    let res;
    try {
      const hd = headers({ Accept: 'text/event-stream' });
      if (lastId) hd['Last-Event-ID'] = lastId;
      res = await fetch(path, { headers: hd, signal: ctl.signal, cache: 'no-store' });
    } catch {
      if (!closed && attempt < 5) setTimeout(() => run(attempt + 1), 2000);
      return;
    }
    if (!res.ok || !res.body) {
      if (res.status === 401 || res.status === 403) authListener(res.status, 'the event stream needs a token');
      onFail && onFail();
      return;
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replace(/\r\n?/g, '\n');
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let name = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const i = line.indexOf(':');
            const k = i < 0 ? line : line.slice(0, i);
            const v = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
            if (k === 'event') name = v;
            else if (k === 'data') data.push(v);
            else if (k === 'id') lastId = v;
          }
          if (data.length) dispatch(on, name, data.join('\n'));
        }
      }
    } catch { /* aborted or dropped */ }
  };
  run(0);
  return { close: () => { closed = true; ctl.abort(); } };
}
