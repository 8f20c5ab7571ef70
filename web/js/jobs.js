// jobs.js - the jobs page: a live table of GET v1/jobs (polled every 2 s),
// filtered by state, with cancel and delete.
import { api } from './api.js';
import { FINISHED, STATES, badge, confirmButton, fmt, h, progressBar, span, toast } from './util.js';

const COLS = [
  ['ID', ''], ['Name', 'col-name'], ['State', ''], ['Method', 'opt'], ['D', 'opt num'], ['λ', 'num greek'],
  ['Progress', 'col-progress'], ['Test acc', 'num'], ['CR', 'num'], ['Sweep', ''], ['', 'col-actions'],
];

export async function cancelJob(id) {
  try {
    const j = await api(`v1/jobs/${id}/cancel`, { method: 'POST' });
    toast(j.state === 'canceled' ? `Job #${id} canceled` : `Job #${id}: cancel requested`);
  } catch (e) {
    toast(`Cancel #${id}: ${e.message}`, 'error');
  }
}

export async function deleteJob(id) {
  try {
    await api(`v1/jobs/${id}`, { method: 'DELETE' });
    toast(`Job #${id} deleted`);
    return true;
  } catch (e) {
    toast(`Delete #${id}: ${e.message}`, 'error');
    return false;
  }
}

export function progressCell(j) {
  const p = j.progress || {};
  const ep = `${p.epoch ?? 0}/${p.epochs ?? '?'}`;
  let note = '';
  if (j.state === 'running') note = p.eta_seconds != null ? `ETA ${fmt.dur(p.eta_seconds)}` : 'starting…';
  else if (j.state === 'succeeded') note = fmt.dur(span(j.started_at, j.finished_at));
  else if (j.state === 'queued') note = 'waiting';
  return h('div', { class: 'progress-cell' }, progressBar(j.state === 'succeeded' ? { fraction: 1 } : p, j.state),
    h('div', { class: 'progress-text' }, h('span', null, 'epoch ', ep), note ? h('span', { class: 'muted' }, note) : ''));
}

export function jobAcc(j) {
  const m = j.metrics || {};
  return m.sparse_test_acc ?? m.test_acc ?? null;
}

export function jobCR(j) {
  return (j.model && j.model.cr) ?? (j.metrics && j.metrics.cr) ?? null;
}

function actionButton(j, refresh) {
  return FINISHED.has(j.state)
    ? confirmButton('Delete', 'Delete?', 'btn btn-sm btn-ghost btn-danger', async () => { await deleteJob(j.id); refresh(); })
    : confirmButton('Cancel', 'Cancel?', 'btn btn-sm btn-ghost', async () => { await cancelJob(j.id); refresh(); });
}

// The cells of a row but the last (the action button, kept across
// refreshes so that its two-click confirmation survives them).
function cells(j) {
  return [
    h('td', { class: 'c-id' }, h('a', { href: `#/jobs/${j.id}`, class: 'id' }, '#' + j.id)),
    h('td', { class: 'col-name c-name' }, h('a', { href: `#/jobs/${j.id}`, title: j.name }, j.name)),
    h('td', { class: 'c-state' }, badge(j.state)),
    h('td', { class: 'opt' }, j.method),
    h('td', { class: 'opt num' }, j.depth ?? '—'),
    h('td', { class: 'num c-lambda', dataset: { label: 'λ' } }, fmt.num(j.lambda)),
    h('td', { class: 'col-progress c-progress' }, progressCell(j)),
    h('td', { class: 'num c-acc', dataset: { label: 'acc' }, title: 'sparse test accuracy (after pruning)' }, fmt.pct(jobAcc(j))),
    h('td', { class: 'num c-cr', dataset: { label: 'CR' } }, fmt.cr(jobCR(j))),
    h('td', { class: 'c-sweep' }, j.sweep_id ? h('a', { href: `#/sweeps/${j.sweep_id}` }, 'sweep #' + j.sweep_id) : h('span', { class: 'muted' }, '—')),
  ];
}

function signature(j) {
  const p = j.progress || {};
  return [j.state, j.name, p.epoch, p.epochs, p.fraction, p.eta_seconds, jobAcc(j), jobCR(j), j.started_at, j.finished_at].join('|');
}

export function jobsPage(ctx) {
  document.title = 'Jobs · dwf';
  const state = STATES.includes(ctx.params.get('state')) ? ctx.params.get('state') : '';
  let limit = 100;

  const filters = h('div', { class: 'segmented', role: 'tablist', 'aria-label': 'filter by state' },
    ['', ...STATES].map((s) => h('a', {
      href: s ? `#/jobs?state=${s}` : '#/jobs',
      class: s === state ? 'seg active' : 'seg',
      role: 'tab', 'aria-selected': s === state ? 'true' : 'false', dataset: { state: s || 'all' },
    }, s || 'all')));
  const tbody = h('tbody');
  const table = h('table', { class: 'table jobs-table', id: 'jobs-table' },
    h('thead', null, h('tr', null, COLS.map(([t, c]) => h('th', { class: c }, t)))), tbody);
  const empty = h('div', { class: 'empty', hidden: true });
  const more = h('button', { type: 'button', class: 'btn btn-ghost', hidden: true, onclick: () => { limit = Math.min(1000, limit * 2); refresh(); } }, 'Show more');
  const note = h('div', { class: 'muted small' });

  ctx.el.append(
    h('div', { class: 'page-head' },
      h('div', null, h('h1', null, 'Jobs'), h('p', { class: 'sub' }, 'Training runs, newest first. Updates every 2 seconds.')),
      h('div', { class: 'actions' },
        h('a', { class: 'btn btn-primary', href: '#/new' }, 'New job'),
        h('a', { class: 'btn', href: '#/new-sweep' }, 'New sweep'))),
    filters,
    h('div', { class: 'card card-flush' }, h('div', { class: 'table-wrap' }, table), empty),
    h('div', { class: 'table-foot' }, note, more));

  const rows = new Map();
  async function refresh() {
    const q = new URLSearchParams({ limit: String(limit) });
    if (state) q.set('state', state);
    let data;
    try {
      data = await api('v1/jobs?' + q);
    } catch (e) {
      if (!ctx.alive) return;
      empty.hidden = false;
      empty.replaceChildren(h('h2', null, 'Cannot list the jobs'),
        h('p', null, e.status === 401 ? 'This server needs an access token: enter it in the bar above.' : e.message));
      table.hidden = true;
      return;
    }
    if (!ctx.alive) return;
    const jobs = data.jobs || [];
    table.hidden = jobs.length === 0;
    empty.hidden = jobs.length > 0;
    if (!jobs.length) {
      empty.replaceChildren(
        h('h2', null, state ? `No ${state} jobs` : 'No jobs yet'),
        h('p', null, 'Start a training run with ', h('a', { href: '#/new' }, 'New job'),
          ' or a grid of runs with ', h('a', { href: '#/new-sweep' }, 'New sweep'), '.'));
    }
    const seen = new Set();
    let prev = null;
    for (const j of jobs) {
      seen.add(j.id);
      let tr = rows.get(j.id);
      const sig = signature(j);
      if (!tr) {
        tr = h('tr', { dataset: { id: String(j.id) } });
        tr.actions = h('td', { class: 'col-actions c-actions' });
        rows.set(j.id, tr);
      }
      if (tr.dataset.sig !== sig) {
        tr.replaceChildren(...cells(j), tr.actions);
        tr.dataset.sig = sig;
        tr.dataset.state = j.state;
      }
      const act = FINISHED.has(j.state) ? 'delete' : 'cancel';
      if (tr.dataset.act !== act) {
        tr.actions.replaceChildren(actionButton(j, refresh));
        tr.dataset.act = act;
      }
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== tr) tbody.insertBefore(tr, want);
      prev = tr;
    }
    for (const [id, tr] of rows) {
      if (!seen.has(id)) { tr.remove(); rows.delete(id); }
    }
    more.hidden = !data.next_cursor || limit >= 1000;
    note.textContent = jobs.length ? `${jobs.length} job${jobs.length === 1 ? '' : 's'}${data.next_cursor ? ' shown' : ''}` : '';
  }

  ctx.every(2000, refresh);
}
