// sweeps.js - the sweeps list and one sweep: its sparsity-accuracy curve
// (GET v1/sweeps/{id}/curve) with the Pareto front, the points as a table,
// the CSV link and the child jobs; polled while children run.
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
    h('p', null, 'A sweep trains one job per combination of λ, depth, method and seed. ', h('a', { href: '#/new-sweep' }, 'Start one'), '.'));
  ctx.el.append(
    h('div', { class: 'page-head' },
      h('div', null, h('h1', null, 'Sweeps'), h('p', { class: 'sub' }, 'Grids of training runs and their sparsity–accuracy curves.')),
      h('div', { class: 'actions' }, h('a', { class: 'btn btn-primary', href: '#/new-sweep' }, 'New sweep'))),
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
      h('td', { class: 'col-name' }, h('a', { href: `#/sweeps/${s.id}` }, s.name)),
      h('td', null, badge(s.state)),
      h('td', null, h('div', { class: 'jobs-cell' }, h('span', { class: 'num' }, s.n_jobs ?? '—'), counts(s.counts))),
      h('td', { title: fmt.time(s.created_at) }, fmt.ago(s.created_at)))));
  });
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
    'Each point is a finished job: the accuracy of its pruned network against how many times fewer weights it keeps. ',
    'The shaded band links the Pareto front (no other run is both sparser and more accurate). Hover a point for its λ and job; click to open it.');
  const emptyCurve = h('div', { class: 'empty empty-inline', hidden: true }, 'No finished jobs yet: the curve fills in as the jobs succeed.');
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
  const gridPre = h('pre', { class: 'code' });

  ctx.el.append(
    h('nav', { class: 'crumbs' }, h('a', { href: '#/sweeps' }, 'Sweeps'), ' / ', `#${id}`),
    h('div', { class: 'page-head' }, h('div', null, h('div', { class: 'title-row' }, title, stateBadge), meta)),
    banner,
    h('section', { class: 'card' },
      h('header', { class: 'card-head' }, h('h3', null, 'Sparsity–accuracy curve'), curveNote), plot, emptyCurve, legendNote),
    h('section', { class: 'card card-flush' },
      h('header', { class: 'card-head card-head-pad' }, h('h3', null, 'Points'), csv),
      h('div', { class: 'table-wrap' }, ptTable)),
    h('section', { class: 'card card-flush' },
      h('header', { class: 'card-head card-head-pad' }, h('h3', null, 'Jobs')),
      h('div', { class: 'table-wrap' }, jobTable)),
    h('details', { class: 'card' }, h('summary', null, 'Base spec and grid'), gridPre));

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
    title.textContent = `#${sw.id} ${sw.name}`;
    stateBadge.replaceChildren(badge(sw.state));
    const jobs = sw.jobs || [];
    const done = jobs.filter((j) => FINISHED.has(j.state)).length;
    meta.replaceChildren(h('span', null, `${done} of ${jobs.length} jobs finished`), h('span', { class: 'sep' }, '·'),
      counts(sw.counts), h('span', { class: 'sep' }, '·'), h('span', { title: fmt.time(sw.created_at) }, `created ${fmt.ago(sw.created_at)}`));
    gridPre.textContent = JSON.stringify({ base: sw.base, grid: sw.grid }, null, 2);

    const pts = curve.points || [];
    chart.set(curve);
    plot.dataset.jobs = String(jobs.length);
    plot.dataset.finished = String(jobs.filter((j) => j.state === 'succeeded').length);
    emptyCurve.hidden = pts.length > 0;
    curveNote.textContent = pts.length ? `${pts.length} point${pts.length === 1 ? '' : 's'} · ${pts.filter((p) => p.pareto).length} on the Pareto front` : '';
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
    if (sw.state !== 'queued' && sw.state !== 'running') stop();
  }

  stop = ctx.every(2000, refresh);
}
