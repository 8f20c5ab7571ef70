// main.js - the dashboard's shell: hash routes, the server status in the
// top bar and the token bar shown when the server answers 401/403.
import { api, auth, onAuthNeeded } from './api.js';
import { h, pageContext } from './util.js';
import { jobsPage } from './jobs.js';
import { jobPage } from './job.js';
import { sweepsPage, sweepPage } from './sweeps.js';
import { newJobPage, newSweepPage } from './forms.js';

const routes = [
  [/^\/?$/, 'jobs', jobsPage],
  [/^\/jobs$/, 'jobs', jobsPage],
  [/^\/jobs\/(\d+)$/, 'jobs', jobPage],
  [/^\/sweeps$/, 'sweeps', sweepsPage],
  [/^\/sweeps\/(\d+)$/, 'sweeps', sweepPage],
  [/^\/new$/, 'new', newJobPage],
  [/^\/new-sweep$/, 'new-sweep', newSweepPage],
];

let current = null;

function notFound(ctx) {
  document.title = 'Not found · dwf';
  ctx.el.append(h('div', { class: 'empty' },
    h('h2', null, 'Nothing here'),
    h('p', null, 'This page does not exist. ', h('a', { href: '#/jobs' }, 'Go to the jobs'), '.')));
}

function route() {
  const raw = location.hash.replace(/^#/, '') || '/jobs';
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const params = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
  if (current) current.dispose();
  const el = document.getElementById('app');
  el.replaceChildren();
  let page = notFound;
  let args = [];
  let section = '';
  for (const [re, sec, fn] of routes) {
    const m = path.match(re);
    if (m) { page = fn; args = m.slice(1); section = sec; break; }
  }
  for (const a of document.querySelectorAll('#nav a'))
    a.classList.toggle('active', a.dataset.nav === section);
  current = pageContext(el, params, args);
  try {
    page(current);
  } catch (e) {
    console.warn(e);
    el.append(h('div', { class: 'banner banner-error' }, 'This page failed: ' + e.message));
  }
  window.scrollTo(0, 0);
}

// ---- token bar -------------------------------------------------------------

const bar = document.getElementById('tokenbar');
const input = document.getElementById('token-input');
const label = document.getElementById('token-label');
const openBtn = document.getElementById('token-open');

function showTokenBar(status, msg) {
  const have = !!auth.get();
  label.textContent = status === 403
    ? `This token may not do that${msg ? ` (${msg})` : ''}. Enter a read-write token.`
    : have ? 'The server refused the token. Enter another one.'
      : 'This server needs an access token.';
  bar.hidden = false;
  openBtn.hidden = false;
  input.focus();
}

function syncTokenButton() {
  openBtn.hidden = !auth.get() && bar.hidden;
  openBtn.textContent = auth.get() ? 'Token ✓' : 'Token';
}

onAuthNeeded(showTokenBar);
document.getElementById('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const t = input.value.trim();
  if (!t) return;
  auth.set(t);
  input.value = '';
  bar.hidden = true;
  syncTokenButton();
  route();
});
document.getElementById('token-forget').addEventListener('click', () => {
  auth.clear();
  input.value = '';
  bar.hidden = true;
  syncTokenButton();
  route();
});
document.getElementById('token-close').addEventListener('click', () => { bar.hidden = true; syncTokenButton(); });
openBtn.addEventListener('click', () => {
  label.textContent = auth.get() ? 'A token is in use for this tab.' : 'Enter an access token.';
  bar.hidden = !bar.hidden;
  if (!bar.hidden) input.focus();
});

// ---- server status ------------------------------------------------------------

const server = document.getElementById('server');
async function status() {
  try {
    const s = await api('healthz');
    server.className = 'server server-ok';
    server.replaceChildren(h('span', { class: 'dot' }),
      `dwfd ${s.version || ''} · ${s.workers} worker${s.workers === 1 ? '' : 's'} · ${s.running} running · ${s.queued} queued`);
  } catch (e) {
    server.className = 'server server-down';
    server.replaceChildren(h('span', { class: 'dot' }), e.status === 503 ? 'dwfd shutting down' : 'dwfd unreachable');
  }
  setTimeout(status, document.hidden ? 15000 : 4000);
}

window.addEventListener('hashchange', route);
syncTokenButton();
route();
status();
