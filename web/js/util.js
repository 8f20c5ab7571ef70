// util.js - DOM building, number and time formats, toasts and the page
// context (polling and clean-up when the route changes).

// h('a', {href: '#/jobs', class: 'x', onclick: fn}, 'text', child, [more])
export function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value' || k === 'checked' || k === 'selected') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, kids);
  return el;
}

function append(el, kids) {
  for (const c of kids) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

const isNum = (x) => typeof x === 'number' && Number.isFinite(x);

export const fmt = {
  pct(x, d = 1) { return isNum(x) ? (x * 100).toFixed(d) + '%' : '—'; },
  cr(x) {
    if (!isNum(x)) return '—';
    if (x < 10) return x.toFixed(2) + '×';
    if (x < 1000) return x.toFixed(1) + '×';
    return Math.round(x).toLocaleString('en-US') + '×';
  },
  // λ and other reals: short, exponent for very small / large values
  num(x) {
    if (!isNum(x)) return '—';
    if (x === 0) return '0';
    const a = Math.abs(x);
    if (a < 1e-3 || a >= 1e5) return x.toExponential(1).replace(/\.0e/, 'e').replace('e+', 'e');
    return String(parseFloat(x.toPrecision(4)));
  },
  int(x) { return isNum(x) ? Math.round(x).toLocaleString('en-US') : '—'; },
  bytes(n) {
    if (!isNum(n)) return '—';
    if (n < 1024) return n + ' B';
    if (n < 1048576) return (n / 1024).toFixed(1) + ' KiB';
    return (n / 1048576).toFixed(1) + ' MiB';
  },
  dur(s) {
    if (!isNum(s) || s < 0) return '—';
    if (s < 1) return '< 1 s';
    if (s < 60) return Math.round(s) + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${Math.round(s - m * 60)} s`;
    const hr = Math.floor(m / 60);
    return `${hr} h ${m - hr * 60} min`;
  },
  ago(iso) {
    const t = Date.parse(iso || '');
    if (!Number.isFinite(t)) return '—';
    const s = (Date.now() - t) / 1000;
    if (s < 45) return 'just now';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    if (s < 86400) return Math.round(s / 3600) + ' h ago';
    return new Date(t).toISOString().slice(0, 10);
  },
  time(iso) {
    const t = Date.parse(iso || '');
    return Number.isFinite(t) ? new Date(t).toLocaleString() : '—';
  },
};

// seconds between two ISO times (end = now when null)
export function span(a, b) {
  const t0 = Date.parse(a || '');
  const t1 = b ? Date.parse(b) : Date.now();
  return Number.isFinite(t0) && Number.isFinite(t1) ? (t1 - t0) / 1000 : NaN;
}

export const FINISHED = new Set(['succeeded', 'failed', 'canceled']);
export const STATES = ['queued', 'running', 'succeeded', 'failed', 'canceled'];

export function badge(state) {
  return h('span', { class: 'badge badge-' + (state || 'unknown') }, state || '?');
}

export function progressBar(p, state) {
  const frac = p && isNum(p.fraction) ? Math.max(0, Math.min(1, p.fraction)) : 0;
  return h('div', { class: 'bar bar-' + state, role: 'progressbar', 'aria-valuemin': 0,
    'aria-valuemax': 100, 'aria-valuenow': Math.round(frac * 100) },
  h('div', { class: 'bar-fill', style: { width: (frac * 100).toFixed(1) + '%' } }));
}

export function toast(msg, kind = 'info') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const t = h('div', { class: 'toast toast-' + kind, role: kind === 'error' ? 'alert' : 'status' }, msg);
  box.append(t);
  setTimeout(() => t.classList.add('toast-out'), 4200);
  setTimeout(() => t.remove(), 4700);
}

// A page's life: alive until the route changes; every() polls without
// overlapping calls; onCleanup() registers what to stop.
export function pageContext(el, params, args) {
  const cleanups = [];
  const ctx = {
    el, params, args, alive: true,
    onCleanup(fn) { cleanups.push(fn); },
    every(ms, fn) {
      let timer = null;
      let stopped = false;
      const tick = async () => {
        if (!ctx.alive || stopped) return;
        try { await fn(); } catch (e) { if (e && e.name !== 'AbortError') console.warn(e); }
        if (ctx.alive && !stopped) timer = setTimeout(tick, ms);
      };
      tick();
      const stop = () => { stopped = true; clearTimeout(timer); };
      cleanups.push(stop);
      return stop;
    },
    dispose() {
      ctx.alive = false;
      for (const fn of cleanups.splice(0)) {
        try { fn(); } catch (e) { console.warn(e); }
      }
    },
  };
  return ctx;
}

// A button that asks for a second click before doing fn (no dialogs).
export function confirmButton(label, confirmLabel, cls, fn) {
  let armed = null;
  const b = h('button', { type: 'button', class: cls }, label);
  b.addEventListener('click', async (ev) => {
    ev.preventDefault();
    if (!armed) {
      b.textContent = confirmLabel;
      b.classList.add('armed');
      armed = setTimeout(() => { armed = null; b.textContent = label; b.classList.remove('armed'); }, 3000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    b.disabled = true;
    try { await fn(); } finally { b.disabled = false; b.textContent = label; b.classList.remove('armed'); }
  });
  return b;
}

export function errorBox(title, msg) {
  return h('div', { class: 'banner banner-error', role: 'alert' }, h('strong', null, title), ' ', msg || '');
}
