// sweeps.js - the sweeps list and one sweep: its sparsity-accuracy plot
// (GET v1/sweeps/{id}/curve: the λ curve with its Pareto front and every
// job's threshold curve), the points as a table, the CSV link, the child
// jobs and, for a λ search, its target, state and runs; polled while
// children run or the search goes on.
import { api, auth, download } from './api.js';
import { sweepChart } from './charts.js';
import { progressCell } from './jobs.js';
import { FINISHED, STATES, badge, errorBox, fmt, h, toast } from './util.js';

function counts(c) {
  return h('div', { class: 'counts' }, STATES.filter((s) => c && c[s] > 0)
    .map((s) => h('span', { class: 'count count-' + s }, h('b', null, c[s]), ' ', s)));
}

export function sweepsPage(ctx) {
  document.title = 'Sweeps · dwf';
  const tbody = h('tbody');
  const table = h('table', { class: 'table', id: 'sweeps-table' },
    h('thead', null, h('tr', null, ['ID', 'Name', 'State', 'Jobs', 'Created'].map((t) => h('th', null, t)))), tbody);
  const empty = h('div', { class: 'empty', hidden: true },
    h('h2', null, 'No sweeps yet'),
    h('p', null, 'A sweep trains one job per combination of λ, depth, method and seed, or searches λ for a target compression ratio. ',
      h('a', { href: '#/new-sweep' }, 'Start one'), '.'));
  ctx.el.append(
    h('div', { class: 'page-head' },
      h('div', null, h('h1', null, 'Sweeps'), h('p', { class: 'sub' }, 'Grids of training runs, λ searches and their sparsity–accuracy curves.')),
      h('div', { class: 'actions' }, h('a', { class: 'btn', href: '#/new-sweep?mode=search' }, 'New λ search'),
        h('a', { class: 'btn btn-primary', href: '#/new-sweep' }, 'New sweep'))),
    h('div', { class: 'card card-flush' }, h('div', { class: 'table-wrap' }, table), empty));
  ctx.every(3000, async () => {
    let data;
    try {
      data = await api('v1/sweeps');
    } catch (e) {
      empty.hidden = false;
      empty.replaceChildren(h('h2', null, 'Cannot list the sweeps'), h('p', null, e.message));
      table.hidden = true;
      return;
    }
    if (!ctx.alive) return;
    const sweeps = data.sweeps || [];
    table.hidden = !sweeps.length;
    empty.hidden = !!sweeps.length;
    tbody.replaceChildren(...sweeps.map((s) => h('tr', null,
      h('td', null, h('a', { href: `#/sweeps/${s.id}`, class: 'id' }, '#' + s.id)),
      h('td', { class: 'col-name' }, h('a', { href: `#/sweeps/${s.id}` }, s.name),
        s.kind === 'search' ? h('span', { class: 'kind-tag', title: 'searches λ for a target compression ratio' }, 'λ search') : ''),
      h('td', null, badge(s.state)),
      h('td', null, h('div', { class: 'jobs-cell' }, h('span', { class: 'num' }, s.n_jobs ?? '—'), counts(s.counts))),
      h('td', { title: fmt.time(s.created_at) }, fmt.ago(s.created_at)))));
  });
}

// Badge classes of a search's states (app.css): searching, reached,
// budget, unreachable, failed, canceled.
const SEARCH_STATES = {
  searching: 'still training runs',
  reached: 'a run reached the target within the tolerance',
  budget: 'the run budget is used without reaching the target',
  unreachable: 'the λ bracket cannot reach the target',
  failed: 'a run failed',
  canceled: 'the search was canceled',
};

function statBox(label, value, sub, key) {
  return h('div', { class: 'stat', dataset: { stat: key } }, h('div', { class: 'stat-label' }, label),
    h('div', { class: 'stat-value' }, value), h('div', { class: 'stat-sub' }, sub || ''));
}

// The λ search of a sweep (GET v1/sweeps/{id} "search"): target, state,
// budget used, best run and the runs in the order they ran.
function searchPanel() {
  const badgeEl = h('span');
  const note = h('span', { class: 'muted small' });
  const stats = h('div', { class: 'stats search-stats' });
  const msg = h('p', { class: 'search-msg muted', hidden: true });
  const body = h('tbody');
  const table = h('table', { class: 'table', id: 'search-runs' },
    h('thead', null, h('tr', null, [['Run', 'num'], ['Job'], ['λ', 'num greek'], ['State'], ['CR', 'num'],
      ['Val acc', 'num'], ['Test acc', 'num'], ['Within', '']].map(([t, c]) => h('th', { class: c }, t)))), body);
  const el = h('section', { class: 'card', id: 'search-panel', hidden: true },
    h('header', { class: 'card-head' }, h('div', { class: 'title-row' }, h('h3', null, 'λ search'), badgeEl), note),
    stats, msg, h('div', { class: 'table-wrap' }, table));

  function set(se) {
    el.hidden = !se;
    if (!se) return;
    el.dataset.state = se.state || '';
    const runs = Array.isArray(se.runs) ? se.runs : [];
    const tol = typeof se.tolerance === 'number' ? se.tolerance : null;
    const best = runs.find((r) => r.job_id != null && r.job_id === se.best_job_id);
    // without a hit the server's best_job_id is the run closest to the target
    const bestWord = se.state === 'reached' || (best && best.within) ? 'best' : 'closest';
    badgeEl.replaceChildren(h('span', { class: 'badge badge-' + (se.state || 'unknown'), title: SEARCH_STATES[se.state] || '' }, se.state || '?'));
    note.textContent = 'λ chosen by bisection on log λ; the best run is the hit with the highest validation accuracy';
    stats.replaceChildren(
      statBox('Target CR', fmt.cr(se.target_cr), tol != null && se.target_cr > 0
        ? `± ${fmt.pct(tol, 0)}: ${fmt.cr(se.target_cr * (1 - tol))} – ${fmt.cr(se.target_cr * (1 + tol))}` : '', 'target'),
      statBox('Runs', `${runs.length} / ${se.budget ?? '?'}`, se.state === 'searching' ? 'budget used, searching' : 'budget used', 'budget'),
      statBox(bestWord === 'best' ? 'Best run' : 'Closest run', best ? h('a', { href: `#/jobs/${best.job_id}` }, '#' + best.job_id) : '—',
        best ? `CR ${fmt.cr(best.cr)} · val ${fmt.pct(best.val_acc, 2)}` : se.state === 'searching' ? 'no hit yet' : 'no run within the tolerance', 'best'),
      statBox('λ bracket', `${fmt.num(se.lambda_min)} – ${fmt.num(se.lambda_max)}`, 'searched on a log scale', 'bracket'));
    msg.hidden = !se.message;
    msg.textContent = se.message || '';
    body.replaceChildren(...runs.map((r, i) => {
      const isBest = best && r.job_id === best.job_id;
      const done = r.state === 'succeeded';
      return h('tr', { class: isBest ? (bestWord === 'best' ? 'best' : 'best closest') : '', dataset: { job: String(r.job_id ?? '') } },
        h('td', { class: 'num' }, i + 1),
        h('td', null, r.job_id != null ? h('a', { href: `#/jobs/${r.job_id}`, class: 'id' }, '#' + r.job_id) : '—',
          isBest ? h('span', { class: 'best-tag' + (bestWord === 'best' ? '' : ' closest') }, bestWord) : ''),
        h('td', { class: 'num' }, fmt.num(r.lambda)),
        h('td', null, badge(r.state)),
        h('td', { class: 'num' }, done && r.cr == null ? h('span', { title: 'every weight is zero' }, '∞') : fmt.cr(r.cr)),
        h('td', { class: 'num' }, fmt.pct(r.val_acc, 2)),
        h('td', { class: 'num' }, fmt.pct(r.test_acc, 2)),
        h('td', { class: 'within' }, r.within ? h('span', { class: 'within-yes', title: 'CR within the tolerance of the target' }, '✓')
          : done ? h('span', { class: 'within-no', title: 'CR outside the tolerance' }, '✗') : ''));
    }));
    if (!runs.length) body.append(h('tr', null, h('td', { colspan: 8, class: 'muted' }, 'The first run is being queued.')));
  }
  return { el, set };
}

export function sweepPage(ctx) {
  const id = Number(ctx.args[0]);
  document.title = `Sweep #${id} · dwf`;
  const title = h('h1', null, `Sweep #${id}`);
  const stateBadge = h('span');
  const meta = h('div', { class: 'meta' });
  const banner = h('div');
  const plot = h('div', { class: 'plot', id: 'sweep-curve', dataset: { chart: 'sweep' } });
  const curveNote = h('span', { class: 'muted small' });
  const legendNote = h('p', { class: 'muted small chart-note' },
    'Two kinds of series. The λ curve: each point is a finished job, the accuracy of its stored sparse model against how many times fewer weights it keeps; ',
    'the shaded band links the Pareto front (no other job is both sparser and more accurate). ',
    'The threshold curves (dashed): each job’s collapsed weights cut at growing magnitude thresholds, one curve per job from a single run. ',
    'Hover a point for its job; click to open it; click a legend entry to hide or show it.');
  const emptyCurve = h('div', { class: 'empty empty-inline', hidden: true }, 'No finished jobs yet: the curve fills in as the jobs succeed.');
  const search = searchPanel();
  const ptBody = h('tbody');
  const ptTable = h('table', { class: 'table', id: 'points-table' },
    h('thead', null, h('tr', null, [['Job'], ['Method'], ['D', 'num'], ['λ', 'num greek'], ['Target CR', 'num'], ['Seed', 'num'],
      ['CR', 'num'], ['Sparse acc', 'num'], ['Dense acc', 'num'], ['Pareto']].map(([t, c]) => h('th', { class: c }, t)))), ptBody);
  const jobBody = h('tbody');
  const jobTable = h('table', { class: 'table', id: 'children-table' },
    h('thead', null, h('tr', null, ['Job', 'Name', 'State', 'Progress'].map((t) => h('th', null, t)))), jobBody);
  const csvHref = `v1/sweeps/${id}/curve.csv`;
  const csv = h('a', { class: 'btn btn-sm', href: csvHref, download: `sweep-${id}-curve.csv`, id: 'curve-csv' }, 'Download CSV');
  csv.addEventListener('click', (ev) => {
    if (!auth.get()) return;
    ev.preventDefault();
    download(csvHref, `sweep-${id}-curve.csv`).catch((e) => toast(`Download: ${e.message}`, 'error'));
  });
  const specSummary = h('summary', null, 'Base spec and grid');
  const gridPre = h('pre', { class: 'code' });

  ctx.el.append(
    h('nav', { class: 'crumbs' }, h('a', { href: '#/sweeps' }, 'Sweeps'), ' / ', `#${id}`),
    h('div', { class: 'page-head' }, h('div', null, h('div', { class: 'title-row' }, title, stateBadge), meta)),
    banner,
    search.el,
    h('section', { class: 'card' },
      h('header', { class: 'card-head' }, h('h3', null, 'Sparsity–accuracy curve'), curveNote), plot, emptyCurve, legendNote),
    h('section', { class: 'card card-flush' },
      h('header', { class: 'card-head card-head-pad' }, h('h3', null, 'Points'), csv),
      h('div', { class: 'table-wrap' }, ptTable)),
    h('section', { class: 'card card-flush' },
      h('header', { class: 'card-head card-head-pad' }, h('h3', null, 'Jobs')),
      h('div', { class: 'table-wrap' }, jobTable)),
    h('details', { class: 'card' }, specSummary, gridPre));

  const chart = sweepChart(plot);
  ctx.onCleanup(() => chart.destroy());
  let stop = () => {};

  async function refresh() {
    let sw;
    let curve;
    try {
      // the curve after the sweep: it has every job the sweep shows finished
      sw = await api(`v1/sweeps/${id}`);
      curve = await api(`v1/sweeps/${id}/curve`);
    } catch (e) {
      if (!ctx.alive) return;
      if (e.status === 404) {
        stop();
        ctx.el.replaceChildren(h('div', { class: 'empty' }, h('h2', null, `Sweep #${id} does not exist`),
          h('p', null, h('a', { href: '#/sweeps' }, 'Back to the sweeps'), '.')));
      } else {
        banner.replaceChildren(errorBox('Cannot read the sweep:', e.message));
      }
      return;
    }
    if (!ctx.alive) return;
    banner.replaceChildren();
    const se = sw.search && typeof sw.search === 'object' ? sw.search : null;
    title.textContent = `#${sw.id} ${sw.name}`;
    stateBadge.replaceChildren(badge(sw.state), se ? h('span', { class: 'kind-tag' }, 'λ search') : '');
    const jobs = sw.jobs || [];
    const done = jobs.filter((j) => FINISHED.has(j.state)).length;
    meta.replaceChildren(h('span', null, se ? `${done} of ${jobs.length} runs finished (budget ${se.budget ?? '?'})` : `${done} of ${jobs.length} jobs finished`),
      h('span', { class: 'sep' }, '·'),
      counts(sw.counts), h('span', { class: 'sep' }, '·'), h('span', { title: fmt.time(sw.created_at) }, `created ${fmt.ago(sw.created_at)}`));
    specSummary.textContent = se ? 'Base spec and search' : 'Base spec and grid';
    gridPre.textContent = JSON.stringify(se ? { base: sw.base } : { base: sw.base, grid: sw.grid }, null, 2);
    search.set(se);

    const pts = curve.points || [];
    chart.set(curve, se);
    plot.dataset.jobs = String(jobs.length);
    plot.dataset.finished = String(jobs.filter((j) => j.state === 'succeeded').length);
    emptyCurve.hidden = pts.length > 0;
    const nThr = Number(plot.dataset.thresholdSeries || 0);
    curveNote.textContent = pts.length ? [`${pts.length} point${pts.length === 1 ? '' : 's'}`, `${pts.filter((p) => p.pareto).length} on the Pareto front`,
      nThr ? `${nThr} threshold curve${nThr === 1 ? '' : 's'}` : ''].filter(Boolean).join(' · ') : '';
    const sorted = [...pts].sort((a, b) => (a.cr ?? 0) - (b.cr ?? 0) || a.job_id - b.job_id);
    ptBody.replaceChildren(...sorted.map((p) => {
      const color = chart.color(`${p.method}|${p.depth}`);
      return h('tr', { class: p.pareto ? 'pareto' : '' },
        h('td', null, h('a', { href: `#/jobs/${p.job_id}`, class: 'id' }, '#' + p.job_id)),
        h('td', null, color ? h('span', { class: 'swatch', style: { background: color } }) : '', p.method),
        h('td', { class: 'num' }, p.depth),
        h('td', { class: 'num' }, fmt.num(p.lambda)),
        h('td', { class: 'num' }, p.target_cr != null ? fmt.num(p.target_cr) : '—'),
        h('td', { class: 'num' }, p.seed ?? '—'),
        h('td', { class: 'num' }, fmt.cr(p.cr)),
        h('td', { class: 'num' }, fmt.pct(p.sparse_test_acc, 2)),
        h('td', { class: 'num' }, fmt.pct(p.test_acc, 2)),
        h('td', null, p.pareto ? h('span', { class: 'star', title: 'on the Pareto front' }, '★') : ''));
    }));
    if (!sorted.length) ptBody.append(h('tr', null, h('td', { colspan: 10, class: 'muted' }, 'No finished jobs yet.')));
    jobBody.replaceChildren(...jobs.map((j) => h('tr', null,
      h('td', null, h('a', { href: `#/jobs/${j.id}`, class: 'id' }, '#' + j.id)),
      h('td', { class: 'col-name' }, h('a', { href: `#/jobs/${j.id}` }, j.name)),
      h('td', null, badge(j.state), j.state === 'failed' && j.error ? h('div', { class: 'small err-text' }, j.error) : ''),
      h('td', { class: 'col-progress' }, progressCell(j)))));
    // A search queues its next run when the last one ends: between the two
    // the sweep may look finished while the search goes on.
    const searching = se && se.state === 'searching';
    if (sw.state !== 'queued' && sw.state !== 'running' && !searching) stop();
  }

  stop = ctx.every(2000, refresh);
}
