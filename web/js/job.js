// job.js - one job: live curves from its event stream (GET
// v1/jobs/{id}/events), per-layer density, the threshold curve (when the
// server has it), model downloads and the spec.
import { api, auth, download, stream } from './api.js';
import { COLORS, densityChart, lineChart } from './charts.js';
import { cancelJob, deleteJob, progressCell } from './jobs.js';
import { FINISHED, badge, confirmButton, errorBox, fmt, h, span, toast } from './util.js';

const FORMATS = [
  ['dwfm', '.dwfm', 'dwf sparse model'],
  ['safetensors', '.safetensors', 'sparse CSR tensors'],
  ['safetensors-dense', '.safetensors', 'dense, PyTorch shapes'],
  ['npz', '.npz', 'NumPy CSR arrays'],
  ['json', '.json', 'layers as JSON'],
];

function chartCard(key, title, sub) {
  const plot = h('div', { class: 'plot', dataset: { chart: key } });
  const empty = h('div', { class: 'plot-empty' }, 'Curves appear after the first epoch.');
  const card = h('section', { class: 'card chart-card' },
    h('header', { class: 'card-head' }, h('h3', null, title), sub ? h('span', { class: 'muted small' }, sub) : ''),
    h('div', { class: 'plot-box' }, plot, empty));
  return { card, plot, empty };
}

function stat(label, id) {
  const v = h('div', { class: 'stat-value', dataset: { stat: id } }, '—');
  const s = h('div', { class: 'stat-sub' });
  return { el: h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, label), v, s), v, s };
}

export function jobPage(ctx) {
  const id = Number(ctx.args[0]);
  document.title = `Job #${id} · dwf`;
  let job = null;
  const metrics = new Map(); // epoch -> metrics object
  let live = null;
  let charts = null;
  let thrShown = false;
  let thrPts = [];
  let thrChecked = false;
  let selLayers = null; // per-layer counts of the selected model (spec `select`)

  const title = h('h1', null, `Job #${id}`);
  const stateBadge = h('span');
  const meta = h('div', { class: 'meta' });
  const actions = h('div', { class: 'actions' });
  const banner = h('div');
  const progress = h('div', { class: 'card progress-card', hidden: true });
  const stats = {
    acc: stat('Sparse test accuracy', 'sparse_test_acc'),
    dense: stat('Dense test accuracy', 'test_acc'),
    cr: stat('Compression ratio', 'cr'),
    nz: stat('Non-zero weights', 'nonzero'),
    epoch: stat('Epoch', 'epoch'),
  };
  const loss = chartCard('loss', 'Loss', 'cross-entropy against epoch');
  const acc = chartCard('acc', 'Test accuracy', 'dense vs. pruned (|w| < ε set to 0)');
  const cr = chartCard('cr', 'Compression ratio', 'weights / non-zero weights, log scale');
  const dens = chartCard('density', 'Per-layer density', 'non-zero share of each layer’s weights');
  // Threshold curve (later feature): accuracy against CR when the collapsed
  // weights are cut at growing thresholds, from GET v1/jobs/{id}/thresholds.
  // Hidden while that route answers 404.
  const thr = chartCard('thresholds', 'Threshold curve', 'accuracy against CR for growing pruning thresholds');
  thr.card.id = 'threshold-curve';
  thr.card.hidden = true;
  const thrNote = h('p', { class: 'muted small chart-note', id: 'threshold-note' });
  thr.card.append(thrNote);
  const downloads = h('div', { class: 'downloads' });
  const dlCard = h('section', { class: 'card', id: 'downloads' },
    h('header', { class: 'card-head' }, h('h3', null, 'Model'), h('span', { class: 'muted small', id: 'model-note' })), downloads);
  const specPre = h('pre', { class: 'code', id: 'spec' }, '…');
  const specCard = h('section', { class: 'card' },
    h('header', { class: 'card-head' }, h('h3', null, 'Spec'),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'btn btn-sm btn-ghost', onclick: () => copySpec() }, 'Copy'),
        h('a', { class: 'btn btn-sm btn-ghost', href: `#/new?from=${id}` }, 'Clone as new job'))),
    specPre);

  ctx.el.append(
    h('nav', { class: 'crumbs' }, h('a', { href: '#/jobs' }, 'Jobs'), ' / ', `#${id}`),
    h('div', { class: 'page-head' }, h('div', null, h('div', { class: 'title-row' }, title, stateBadge), meta), actions),
    banner, progress,
    h('div', { class: 'stats' }, Object.values(stats).map((s) => s.el)),
    h('div', { class: 'chart-grid' }, loss.card, acc.card, cr.card, dens.card),
    thr.card, dlCard, specCard);

  async function copySpec() {
    try {
      await navigator.clipboard.writeText(JSON.stringify(job.spec, null, 2));
      toast('Spec copied');
    } catch {
      toast('The browser did not allow copying', 'error');
    }
  }

  function makeCharts() {
    const hasVal = job && job.spec && job.spec.data && job.spec.data.validation > 0;
    const accSeries = [
      { label: 'dense', color: COLORS[0] },
      { label: 'sparse', color: COLORS[2], dash: [7, 4] },
      { label: 'train', color: '#94a3b8', dash: [2, 3] },
    ];
    if (hasVal) accSeries.push({ label: 'sparse val', color: COLORS[3] });
    charts = {
      hasVal,
      loss: lineChart(loss.plot, {
        series: [{ label: 'train', color: COLORS[0] }, { label: 'test', color: COLORS[1] },
          { label: 'sparse test', color: COLORS[2], dash: [6, 4] }],
        yfmt: (v) => fmt.num(v),
      }),
      acc: lineChart(acc.plot, { series: accSeries, yfmt: (v) => fmt.pct(v, 1), ylo: 0, yhi: 1 }),
      cr: lineChart(cr.plot, {
        series: [{ label: 'weights', color: COLORS[4] }, { label: 'all params', color: COLORS[5], dash: [5, 4] }],
        ylog: true, yfmt: (v) => fmt.cr(v),
      }),
      dens: densityChart(dens.plot),
    };
  }

  let drawTimer = null;
  function scheduleDraw() {
    if (drawTimer) return;
    drawTimer = setTimeout(() => { drawTimer = null; if (ctx.alive) draw(); }, 40);
  }

  function draw() {
    if (!charts) makeCharts();
    const ms = [...metrics.values()].sort((a, b) => a.epoch - b.epoch);
    const x = ms.map((m) => m.epoch);
    const col = (k) => ms.map((m) => (typeof m[k] === 'number' ? m[k] : null));
    charts.loss.set([x, col('train_loss'), col('test_loss'), col('sparse_test_loss')]);
    const accData = [x, col('test_acc'), col('sparse_test_acc'), col('train_acc')];
    if (charts.hasVal) accData.push(col('sparse_val_acc'));
    charts.acc.set(accData);
    charts.cr.set([x, col('cr'), col('cr_params')]);
    const last = ms[ms.length - 1];
    if (selLayers) charts.dens.set(selLayers);
    else if (last && Array.isArray(last.layers)) charts.dens.set(last.layers);
    for (const c of [loss, acc, cr, dens]) {
      c.plot.dataset.epochs = String(ms.length);
      c.empty.hidden = ms.length > 0;
      if (!ms.length && job && FINISHED.has(job.state)) c.empty.textContent = 'No epoch was recorded.';
    }
    if (selLayers) dens.plot.dataset.layers = String(selLayers.length);
    else if (last) dens.plot.dataset.layers = String((last.layers || []).length);
    updateStats();
  }

  function lastMetrics() {
    let best = null;
    for (const m of metrics.values()) if (!best || m.epoch > best.epoch) best = m;
    return best || (job && job.metrics) || null;
  }

  function updateStats() {
    const m = lastMetrics();
    const model = job && job.model;
    stats.acc.v.textContent = fmt.pct(m && m.sparse_test_acc, 2);
    stats.acc.s.textContent = m && m.sparse_val_acc != null ? `val ${fmt.pct(m.sparse_val_acc, 2)}` : '';
    stats.dense.v.textContent = fmt.pct(m && m.test_acc, 2);
    stats.dense.s.textContent = m && m.train_acc != null ? `train ${fmt.pct(m.train_acc, 2)}` : '';
    const crv = (model && model.cr) ?? (m && m.cr);
    stats.cr.v.textContent = fmt.cr(crv);
    stats.cr.s.textContent = m && m.cr_params != null ? `all params ${fmt.cr(m.cr_params)}` : '';
    const nz = (model && model.nonzero) ?? (m && m.nonzero);
    const tot = (model && model.weights) ?? (m && m.weights);
    stats.nz.v.textContent = fmt.int(nz);
    stats.nz.s.textContent = tot != null ? `of ${fmt.int(tot)} (${fmt.pct(nz / tot, 2)})` : '';
    const p = (job && job.progress) || {};
    stats.epoch.v.textContent = `${m ? m.epoch : p.epoch ?? 0} / ${p.epochs ?? (m && m.epochs) ?? '?'}`;
    stats.epoch.s.textContent = m && m.samples_per_sec ? `${fmt.int(m.samples_per_sec)} samples/s` : '';
  }

  function renderHead() {
    const j = job;
    title.textContent = `#${j.id} ${j.name}`;
    title.title = j.name;
    stateBadge.replaceChildren(badge(j.state));
    const bits = [
      h('span', null, j.method), h('span', null, `D = ${j.depth}`), h('span', null, `λ = ${fmt.num(j.lambda)}`),
      j.target_cr != null ? h('span', null, `target CR ${fmt.num(j.target_cr)}`) : null,
      h('span', null, `seed ${j.seed}`),
      j.sweep_id ? h('a', { href: `#/sweeps/${j.sweep_id}` }, `sweep #${j.sweep_id}`) : null,
      h('span', { title: fmt.time(j.created_at) }, `created ${fmt.ago(j.created_at)}`),
      j.started_at ? h('span', null, `${FINISHED.has(j.state) ? 'ran' : 'running for'} ${fmt.dur(span(j.started_at, j.finished_at))}`) : null,
    ].filter(Boolean);
    meta.replaceChildren(...bits.flatMap((b, i) => (i ? [h('span', { class: 'sep' }, '·'), b] : [b])));
    const act = FINISHED.has(j.state) ? 'delete' : 'cancel';
    if (actions.dataset.act !== act) { // kept otherwise: its confirmation survives refreshes
      actions.dataset.act = act;
      actions.replaceChildren(act === 'delete'
        ? confirmButton('Delete', 'Delete?', 'btn btn-danger-outline', async () => {
          if (await deleteJob(j.id)) location.hash = '#/jobs';
        })
        : confirmButton('Cancel job', 'Cancel?', 'btn', async () => { await cancelJob(j.id); refreshJob(); }));
    }
    banner.replaceChildren();
    if (j.state === 'failed') banner.append(errorBox('This job failed.', j.error || 'No error message was recorded.'));
    else if (j.state === 'canceled') banner.append(h('div', { class: 'banner banner-warn' }, h('strong', null, 'Canceled.'), ' ', j.error || ''));
    progress.hidden = FINISHED.has(j.state);
    if (!progress.hidden) {
      progress.replaceChildren(h('div', { class: 'progress-head' }, h('strong', null, j.state === 'queued' ? 'Waiting for a worker' : 'Training'),
        j.progress && j.progress.batches ? h('span', { class: 'muted' }, `batch ${j.progress.batch} / ${j.progress.batches}`) : ''), progressCell(j));
    }
    specPre.textContent = j.spec ? JSON.stringify(j.spec, null, 2) : '(not available)';
    renderDownloads();
    updateStats();
  }

  function renderDownloads() {
    const model = job.model;
    const note = dlCard.querySelector('#model-note');
    downloads.replaceChildren();
    if (!model) {
      note.textContent = '';
      downloads.append(h('p', { class: 'muted' }, job.state === 'succeeded' ? 'No model was stored for this job.'
        : FINISHED.has(job.state) ? 'This job ended without a model.' : 'The model can be downloaded when the job has succeeded.'));
      return;
    }
    note.textContent = `${fmt.int(model.nonzero)} of ${fmt.int(model.weights)} weights non-zero · CR ${fmt.cr(model.cr)} · ${fmt.bytes(model.bytes)} as .dwfm`;
    for (const [f, ext, what] of FORMATS) {
      const href = `v1/jobs/${job.id}/model?format=${f}`;
      const a = h('a', { class: 'dl', href, download: `job-${job.id}${ext}`, dataset: { format: f } },
        h('span', { class: 'dl-name' }, f), h('span', { class: 'dl-what' }, what));
      a.addEventListener('click', (ev) => {
        if (!auth.get()) return; // a plain link works without a token
        ev.preventDefault();
        download(href, `job-${job.id}${ext}`).catch((e) => toast(`Download: ${e.message}`, 'error'));
      });
      downloads.append(a);
    }
  }

  // One threshold curve of GET v1/jobs/{id}/thresholds (the end of the
  // run, or ?epoch=k for a curve taken during training): by threshold, one
  // point per CR (equal CRs are the same model); an all-zero model (cr
  // null) cannot be drawn on the log axis.
  function curveOf(data) {
    const raw = (data && Array.isArray(data.points) ? data.points : [])
      .filter((p) => typeof p.cr === 'number' && p.cr > 0 && Number.isFinite(p.cr))
      .sort((a, b) => (a.threshold ?? 0) - (b.threshold ?? 0) || a.cr - b.cr);
    const pts = [];
    for (const p of raw) {
      const last = pts[pts.length - 1];
      if (last && last.cr === p.cr) { if (p.selected) last.selected = true; continue; }
      pts.push({ ...p });
    }
    return pts.sort((a, b) => a.cr - b.cr);
  }

  async function loadThresholds() {
    if (thrChecked || !job || job.state !== 'succeeded') return;
    thrChecked = true;
    let data;
    try {
      data = await api(`v1/jobs/${id}/thresholds`);
    } catch {
      return; // 404 until the server has the route: keep the section hidden
    }
    const pts = curveOf(data);
    if (!ctx.alive || !pts.length) return;
    thr.card.hidden = false;
    const sel = pts.find((p) => p.selected);
    if (!thrShown) {
      const xfmt = (v) => {
        const p = thrPts.find((q) => q.cr === v);
        return fmt.cr(v) + (p && typeof p.threshold === 'number' ? ` (|w| < ${fmt.num(p.threshold)})` : '');
      };
      const series = [{ label: 'test', color: COLORS[2] }, { label: 'validation', color: COLORS[3], dash: [5, 4] }];
      if (sel) series.push({ label: 'selected model', color: '#0f172a', only: true });
      thrShown = lineChart(thr.plot, {
        xlog: true, xlabel: 'compression ratio', xfmt, ylo: 0, yhi: 1,
        yfmt: (v) => fmt.pct(v, 1),
        series,
      });
      thrShown.hasSel = !!sel;
    }
    drawThresholds(pts, '');
    thrNote.replaceChildren(...thresholdNote(sel, pts[0]));
    // the stored model is the selected one: its layers, not the ε model's
    if (sel && Array.isArray(sel.layers) && sel.layers.length) {
      selLayers = sel.layers.map((l) => ({ name: l.name, total: l.weights ?? l.total, nonzero: l.nonzero }));
      dens.card.querySelector('.card-head .muted').textContent = 'non-zero share of each layer’s weights in the selected model';
      scheduleDraw();
    }
    // curves taken during training (spec thresholds.every): a chooser
    const epochs = Array.isArray(data.epochs) ? data.epochs.filter((e) => Number.isInteger(e)) : [];
    if (epochs.length) {
      const final = pts;
      const pick = h('select', { id: 'threshold-epoch', 'aria-label': 'curve', class: 'select-sm' },
        h('option', { value: '' }, 'end of the run'), epochs.map((e) => h('option', { value: String(e) }, `after epoch ${e}`)));
      pick.addEventListener('change', async () => {
        if (!pick.value) { drawThresholds(final, ''); return; }
        try {
          const d = await api(`v1/jobs/${id}/thresholds?epoch=${pick.value}`);
          if (ctx.alive) drawThresholds(curveOf(d), pick.value);
        } catch (e) {
          toast(`Threshold curve of epoch ${pick.value}: ${e.message}`, 'error');
        }
      });
      thr.card.querySelector('.card-head').append(pick);
    }
  }

  // epoch: '' for the end of the run (the only curve with a selected point)
  function drawThresholds(pts, epoch) {
    thrPts = pts;
    const num = (v) => (typeof v === 'number' ? v : null);
    const cols = [pts.map((p) => p.cr), pts.map((p) => num(p.test_acc)), pts.map((p) => num(p.val_acc))];
    if (thrShown.hasSel) cols.push(pts.map((p) => (p.selected && !epoch ? num(p.test_acc) : null)));
    thrShown.set(cols);
    const sel = epoch ? null : pts.find((p) => p.selected);
    thr.plot.dataset.points = String(pts.length);
    thr.plot.dataset.epoch = epoch;
    thr.plot.dataset.selected = sel ? String(sel.cr) : '';
    thr.empty.hidden = pts.length > 0;
  }

  // What the stored model is: the selected point of the curve (spec
  // `select`, chosen on validation data) or the ε model (its first point).
  function thresholdNote(sel, first) {
    const m = (job && job.metrics) || {};
    // what the end-of-run curve cost (job metrics curve_seconds and
    // curve_epoch_fraction: against the last epoch with its evaluation)
    const cost = typeof m.curve_seconds === 'number'
      ? [' ', h('span', { id: 'threshold-cost', dataset: { seconds: String(m.curve_seconds) } },
        `The curve took ${fmt.num(m.curve_seconds)} s`,
        typeof m.curve_epoch_fraction === 'number' ? `, ${fmt.num(m.curve_epoch_fraction)} of the last epoch` : '', '.')]
      : [];
    if (sel) {
      const drop = typeof m.select_max_drop === 'number' ? ` (validation accuracy at most ${fmt.num(m.select_max_drop * 100)} points below the dense model’s)` : '';
      return [h('span', { class: 'sel-mark' }, '○'), ' The stored model is the selected point', drop, ': |w| < ',
        h('b', null, fmt.num(sel.threshold)), ', CR ', h('b', null, fmt.cr(sel.cr)), ', validation ', h('b', null, fmt.pct(sel.val_acc, 2)),
        ', test ', h('b', null, fmt.pct(sel.test_acc, 2)), '.', ...cost];
    }
    const noSelect = !(job && job.spec && job.spec.select);
    return ['The stored model is the first point (|w| < ', fmt.num(first.threshold), ', CR ', fmt.cr(first.cr), ')',
      noSelect ? [': the spec has no ', h('code', null, 'select'), ' field'] : '',
      '. The rest of the curve is the same run’s weights cut at larger thresholds.', ...cost].flat();
  }

  function setJob(j) {
    const was = job && job.state;
    job = j;
    if (j.metrics && typeof j.metrics.epoch === 'number' && !metrics.has(j.metrics.epoch)) {
      metrics.set(j.metrics.epoch, j.metrics);
      scheduleDraw();
    }
    renderHead();
    if (FINISHED.has(j.state)) {
      if (live) { live.close(); live = null; }
      if (was !== j.state) fillMetrics();
      loadThresholds();
    }
  }

  // Fetches epochs the stream may have missed (fallback and after the end).
  async function fillMetrics() {
    let since = 0; // the epochs 1..since are all here
    while (metrics.has(since + 1)) since++;
    try {
      const r = await api(`v1/jobs/${id}/metrics?since=${since}`);
      let added = false;
      for (const m of r.metrics || []) {
        if (!metrics.has(m.epoch)) { metrics.set(m.epoch, m); added = true; }
      }
      if (added && ctx.alive) scheduleDraw();
    } catch { /* shown elsewhere */ }
  }

  async function refreshJob() {
    try {
      const j = await api(`v1/jobs/${id}`);
      if (ctx.alive) setJob(j);
    } catch (e) {
      if (!ctx.alive) return;
      if (e.status === 404) {
        notFound();
      } else {
        banner.replaceChildren(errorBox('Cannot read the job:', e.message));
      }
      return false;
    }
    return true;
  }

  function notFound() {
    stopPoll();
    if (live) { live.close(); live = null; }
    ctx.el.replaceChildren(h('nav', { class: 'crumbs' }, h('a', { href: '#/jobs' }, 'Jobs'), ' / ', `#${id}`),
      h('div', { class: 'empty' }, h('h2', null, `Job #${id} does not exist`), h('p', null, 'It may have been deleted. ', h('a', { href: '#/jobs' }, 'Back to the jobs'), '.')));
  }

  let polling = false;
  let stopPoll = () => {};
  // progress of running jobs (the stream sends epochs and state changes);
  // also the fallback when the stream cannot be opened
  function startPoll() {
    stopPoll = ctx.every(2000, async () => {
      if (!polling) { polling = true; return; } // first tick: already loaded
      if (job && FINISHED.has(job.state)) { stopPoll(); return; }
      await refreshJob();
      if (!live) await fillMetrics();
    });
  }

  (async () => {
    if (!(await refreshJob()) || !ctx.alive) return;
    // A finished job's epochs came with setJob (GET metrics); a live one
    // streams: its state first, then every epoch so far, then new ones.
    if (!FINISHED.has(job.state)) {
      live = stream(`v1/jobs/${id}/events`, (name, data) => {
        if (!ctx.alive) return;
        if (name === 'epoch' && typeof data.epoch === 'number') {
          metrics.set(data.epoch, data);
          scheduleDraw();
        } else if (name === 'state') {
          setJob(data);
        } else if (name === 'deleted') {
          notFound();
        }
      }, () => { live = null; fillMetrics(); });
    }
    if (!FINISHED.has(job.state)) startPoll();
    scheduleDraw();
  })();

  ctx.onCleanup(() => {
    if (live) live.close();
    clearTimeout(drawTimer);
    if (charts) for (const k of ['loss', 'acc', 'cr', 'dens']) charts[k].destroy();
    if (thrShown) thrShown.destroy();
  });
}
