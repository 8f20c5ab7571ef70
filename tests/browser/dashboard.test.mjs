// Browser test of the dwfd dashboard (run by tests/browser/run.sh).
// usage: node dashboard.test.mjs MAIN_URL AUTH_URL ARTIFACTS_DIR
//   MAIN_URL: a dwfd with a worker and no tokens; AUTH_URL: a dwfd that
//   needs the token "browser-test-token" for every request.
// Drives Debian's chromium through playwright-core: submits a small sweep
// through the form, watches a job's live curves and its threshold curve,
// checks the sweep plot (λ curve and threshold curves) against the API,
// runs a λ search from the sweep form and follows its runs table, starts
// one from the job form, the server's validation error at its field, the
// token prompt and the narrow layout. Fails on any console error or page
// error (except the HTTP errors a check provokes on purpose).
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [MAIN, AUTH, ARTIFACTS] = process.argv.slice(2);
if (!MAIN || !AUTH || !ARTIFACTS) {
  console.error('usage: node dashboard.test.mjs MAIN_URL AUTH_URL ARTIFACTS_DIR');
  process.exit(2);
}
const T0 = Date.now();
const DEADLINE = T0 + 150_000;
let passed = 0;
let failed = 0;

function ok(cond, name, detail = '') {
  if (cond) {
    passed++;
    console.log(`ok ${passed + failed} - ${name}`);
  } else {
    failed++;
    console.log(`not ok ${passed + failed} - ${name}${detail ? ': ' + detail : ''}`);
  }
  return cond;
}

// HTTP errors a check provokes on purpose; Chromium logs each failed
// request as a console error "Failed to load resource: ... status of N".
const expected = [
  { status: 401, url: new RegExp('^' + AUTH.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) }, // token prompt
];
let expect400 = false; // during the bad-form check: POST /v1/jobs answers 400
const consoleErrors = [];

function watch(page, label) {
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    const url = (msg.location() && msg.location().url) || '';
    const m = /status of (\d+)/.exec(text);
    if (m && text.startsWith('Failed to load resource')) {
      const st = Number(m[1]);
      if (expected.some((e) => e.status === st && e.url.test(url))) return;
      if (st === 400 && expect400 && /\/v1\/jobs$/.test(url)) return;
    }
    consoleErrors.push(`[${label}] console.error: ${text} (${url})`);
  });
  page.on('pageerror', (e) => consoleErrors.push(`[${label}] page error: ${e.message}`));
  page.on('response', (r) => {
    if (r.status() >= 500) consoleErrors.push(`[${label}] HTTP ${r.status()} ${r.url()}`);
  });
}

function left(maxMs) {
  return Math.max(1000, Math.min(maxMs, DEADLINE - Date.now()));
}

// pixels of the chart canvas in el close to rgb
async function countPixels(page, selector, rgb) {
  return page.evaluate(([sel, [r, g, b]]) => {
    const c = document.querySelector(sel + ' canvas');
    if (!c || !c.width || !c.height) return -1;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i + 3] > 200 && Math.abs(d[i] - r) < 40 && Math.abs(d[i + 1] - g) < 40 && Math.abs(d[i + 2] - b) < 40) n++;
    }
    return n;
  }, [selector, rgb]);
}

// The drawable points of a threshold curve as the dashboard draws them:
// by threshold, finite CR > 0 with a test accuracy, one point per CR.
function curvePoints(points) {
  const out = [];
  const pts = points.filter((q) => typeof q.cr === 'number' && q.cr > 0 && Number.isFinite(q.cr) && typeof q.test_acc === 'number')
    .sort((a, b) => a.threshold - b.threshold || a.cr - b.cr);
  for (const q of pts) if (!out.length || out[out.length - 1].cr !== q.cr) out.push(q);
  return out.sort((a, b) => a.cr - b.cr);
}

// canvas pixels of the chart in selector that are neither white nor grey
// grid lines (coloured ink), for comparing a plot with and without a series
async function inkPixels(page, selector) {
  return page.evaluate((sel) => {
    const c = document.querySelector(sel + ' canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
      const mx = Math.max(d[i], d[i + 1], d[i + 2]);
      const mn = Math.min(d[i], d[i + 1], d[i + 2]);
      if (d[i + 3] > 0 && mx - mn > 30) n++;
    }
    return n;
  }, selector);
}

// a fresh profile (playwright passes it to chromium as --user-data-dir)
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'dwf-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.DWF_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

try {
  const page = await context.newPage();
  watch(page, 'main');
  const streams = [];
  page.on('request', (r) => { if (/\/v1\/jobs\/\d+\/events$/.test(r.url())) streams.push(r.url()); });

  // 1. the jobs page
  await page.goto(MAIN + '/');
  await page.waitForSelector('#jobs-table:not([hidden]), .empty:not([hidden]) h2', { timeout: left(15000) });
  ok(/Jobs/.test(await page.title()), 'jobs page is the home page', await page.title());
  ok(await page.locator('#nav a.active').textContent() === 'Jobs', 'the nav marks the jobs page');
  await page.waitForSelector('#server.server-ok', { timeout: left(10000) });
  ok(true, 'the top bar shows the server as up');

  // 2. a bad form value shows the server's error at its field
  await page.click('#nav a[data-nav="new"]');
  await page.waitForSelector('#job-form [data-path="train.lr"] input', { timeout: left(15000) });
  const api = await page.request.post(MAIN + '/v1/jobs', { data: { train: { lr: -1 } } });
  const apiErr = (await api.json()).error || {};
  ok(api.status() === 400 && apiErr.field === 'train.lr', 'the API rejects train.lr = -1', `${api.status()} ${JSON.stringify(apiErr)}`);
  await page.fill('#job-form [data-path="train.lr"] input', '-1');
  expect400 = true;
  await page.click('#job-form button[type="submit"]');
  const lrErr = page.locator('#job-form [data-path="train.lr"] .field-error');
  await lrErr.waitFor({ state: 'visible', timeout: left(10000) });
  const shown = (await lrErr.textContent()).trim();
  expect400 = false;
  ok(shown === apiErr.message, 'the server\'s error is shown next to train.lr', `shown "${shown}", server "${apiErr.message}"`);
  ok(await page.locator('#job-form .field.invalid').count() === 1, 'only that field is marked invalid');
  ok(/#\/new$/.test(page.url()), 'the form stays open after the error', page.url());

  // 3. a small sweep through the form
  await page.click('#nav a[data-nav="new-sweep"]');
  await page.waitForSelector('#sweep-form [data-path="base.train.epochs"] input', { timeout: left(15000) });
  const fill = (p, v) => page.fill(`#sweep-form [data-path="${p}"] input`, v);
  await fill('name', 'browser sweep');
  await fill('grid.lambda', '0.01, 0.05');
  await fill('grid.depth', '2, 3');
  await fill('base.model.hidden', '32');
  await fill('base.train.epochs', '2');
  await fill('base.data.train_subset', '1000');
  await fill('base.data.test_subset', '500');
  ok(/^4 jobs/.test(await page.locator('#sweep-count').textContent()), 'the form counts 4 jobs',
    await page.locator('#sweep-count').textContent());
  const preview = JSON.parse(await page.locator('#request-preview').textContent());
  ok(JSON.stringify(preview.base) === JSON.stringify({ data: { train_subset: 1000, test_subset: 500 }, model: { hidden: [32] }, train: { epochs: 2 } }),
    'only the changed fields are sent', JSON.stringify(preview));
  await page.click('#sweep-form button[type="submit"]');
  await page.waitForURL(/#\/sweeps\/\d+$/, { timeout: left(15000) });
  const sweepId = Number(/#\/sweeps\/(\d+)$/.exec(page.url())[1]);
  ok(sweepId > 0, 'submitting the sweep opens its page', page.url());
  await page.waitForFunction(() => document.querySelectorAll('#children-table tbody tr').length === 4, null, { timeout: left(15000) });
  ok(true, 'the sweep page lists its 4 jobs');

  // 4. the newest child (last in the queue): live curves from its stream
  const lastLink = page.locator('#children-table tbody tr:last-child a.id');
  const jobHref = await lastLink.getAttribute('href');
  const jobId = Number(/(\d+)$/.exec(jobHref)[1]);
  await lastLink.click();
  await page.waitForURL(new RegExp(`#/jobs/${jobId}$`), { timeout: left(10000) });
  await page.waitForSelector('.title-row .badge', { timeout: left(10000) });
  const firstState = (await page.locator('.title-row .badge').textContent()).trim();
  await page.waitForFunction(() => {
    const el = document.querySelector('[data-chart="acc"]');
    return el && el.dataset.epochs === '2' && document.querySelector('.title-row .badge-succeeded');
  }, null, { timeout: left(60000) });
  if (firstState === 'queued' || firstState === 'running')
    ok(streams.some((u) => u.endsWith(`/v1/jobs/${jobId}/events`)), `the job page (job ${firstState}) follows its event stream`);
  else
    ok(true, `the job page filled its curves (job already ${firstState})`);
  for (const [key, rgb, what] of [['acc', [5, 150, 105], 'sparse accuracy'], ['loss', [37, 99, 235], 'train loss'], ['cr', [124, 58, 237], 'CR']]) {
    const n = await countPixels(page, `[data-chart="${key}"]`, rgb);
    ok(n > 30, `the ${what} curve is drawn`, `${n} pixels of its colour`);
  }
  ok(await page.locator('[data-chart="density"]').getAttribute('data-layers') === '2', 'the density chart has one bar per layer');
  ok(await countPixels(page, '[data-chart="density"]', [37, 99, 235]) > 200, 'the density bars are drawn');
  ok(await page.locator('[data-chart="cr"] .u-legend').textContent().then((t) => /weights/.test(t)), 'the CR chart has its legend');
  const formats = await page.locator('#downloads a.dl').evaluateAll((as) => as.map((a) => a.dataset.format));
  ok(JSON.stringify(formats) === JSON.stringify(['dwfm', 'safetensors', 'safetensors-dense', 'npz', 'json']),
    'a download button for every model format', JSON.stringify(formats));
  const npz = await page.request.get(new URL(await page.locator('#downloads a[data-format="npz"]').getAttribute('href'), page.url()).href);
  ok(npz.status() === 200 && (await npz.body()).subarray(0, 2).toString() === 'PK', 'the npz download is a zip file', String(npz.status()));
  const spec = JSON.parse(await page.locator('#spec').textContent());
  ok(spec.train.epochs === 2 && JSON.stringify(spec.model.hidden) === '[32]', 'the spec is shown');
  // the threshold curve of the finished job (GET v1/jobs/{id}/thresholds)
  await page.waitForSelector('#threshold-curve:not([hidden]) [data-chart="thresholds"][data-points]', { timeout: left(10000) });
  const thrApi = (await (await page.request.get(`${MAIN}/v1/jobs/${jobId}/thresholds`)).json()).points || [];
  const thrWant = curvePoints(thrApi);
  const nThr = Number(await page.locator('[data-chart="thresholds"]').getAttribute('data-points'));
  ok(nThr >= 2 && nThr === thrWant.length, 'the job page shows the threshold curve, one point per CR of the API\'s',
    `${nThr} points drawn, ${thrWant.length} distinct CRs in ${thrApi.length} API points`);
  const thrData = await page.evaluate(() => {
    const u = document.querySelector('[data-chart="thresholds"]').uplot;
    return { x: u.data[0], test: u.data[1], val: u.data[2], labels: u.series.map((s) => s.label) };
  });
  const close = (a, b) => a === b || (typeof a === 'number' && typeof b === 'number' && Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b)));
  ok(thrData.x.length === thrWant.length && thrWant.every((q, i) => close(thrData.x[i], q.cr) && close(thrData.test[i], q.test_acc)),
    'the plotted (CR, test accuracy) are the API\'s', JSON.stringify({ x: thrData.x, want: thrWant.map((q) => q.cr) }));
  ok(thrData.labels.includes('test') && thrData.labels.includes('validation'), 'the threshold curve has test and validation series',
    thrData.labels.join(','));
  ok(/test/.test(await page.locator('[data-chart="thresholds"] .u-legend').textContent()), 'the threshold curve has its legend');
  ok(/first point/.test(await page.locator('#threshold-note').textContent()), 'without `select` the note says the stored model is the first point');
  const curveSec = ((await (await page.request.get(`${MAIN}/v1/jobs/${jobId}`)).json()).metrics || {}).curve_seconds;
  const costShown = await page.locator('#threshold-cost').getAttribute('data-seconds').catch(() => null);
  ok(typeof curveSec === 'number' && Number(costShown) === curveSec && /of the last epoch/.test(await page.locator('#threshold-cost').textContent()),
    'the note says what the curve cost (curve_seconds, fraction of the last epoch)', `${costShown} vs ${curveSec}`);
  const thrPx = await countPixels(page, '[data-chart="thresholds"]', [5, 150, 105]);
  ok(thrPx > 30, 'the threshold curve (test accuracy against CR) is drawn', `${thrPx} pixels of its colour`);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.waitForSelector('.toast', { state: 'detached', timeout: left(8000) });
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-job.png'), fullPage: true });

  // 5. the sweep curve: one point per finished job
  await page.goto(`${MAIN}/#/sweeps/${sweepId}`);
  await page.waitForFunction(() => {
    const el = document.getElementById('sweep-curve');
    return el && el.dataset.jobs === '4' && el.dataset.finished === '4' && el.dataset.points != null;
  }, null, { timeout: left(90000) });
  const succeeded = (await (await page.request.get(`${MAIN}/v1/sweeps/${sweepId}`)).json()).jobs.filter((j) => j.state === 'succeeded').length;
  const drawn = await page.evaluate(() => {
    const u = document.getElementById('sweep-curve').uplot;
    let n = 0;
    for (let s = 1; s < u.data.length; s++) if (u.series[s].kind === 'lambda') for (const v of u.data[s]) if (v != null) n++;
    return n;
  });
  ok(succeeded === 4 && drawn === succeeded, 'the curve has one point per finished job', `points ${drawn}, succeeded ${succeeded}`);
  ok(await page.locator('#points-table tbody tr').count() === succeeded, 'the points table has one row per finished job');
  ok(await page.locator('#sweep-curve').getAttribute('data-series') === '2', 'one series per method and depth');
  ok(await page.locator('#points-table .star').count() >= 1, 'the Pareto front is marked');
  // hover the first point
  const pos = await page.evaluate(() => {
    const el = document.getElementById('sweep-curve');
    const u = el.uplot;
    const r = u.over.getBoundingClientRect();
    for (let s = 1; s < u.data.length; s++) {
      if (u.series[s].kind !== 'lambda') continue;
      for (let i = 0; i < u.data[0].length; i++) {
        if (u.data[s][i] != null) return { x: r.left + u.valToPos(u.data[0][i], 'x'), y: r.top + u.valToPos(u.data[s][i], 'y') };
      }
    }
    return null;
  });
  await page.mouse.move(pos.x + 1, pos.y + 1);
  const tip = page.locator('#sweep-curve .chart-tip');
  await tip.waitFor({ state: 'visible', timeout: left(5000) });
  const tipText = await tip.textContent();
  ok(/job #\d+/.test(tipText) && /λ = /.test(tipText), 'hovering a point shows its job and λ', tipText);
  const csvHref = await page.locator('#curve-csv').getAttribute('href');
  const csv = await (await page.request.get(new URL(csvHref, page.url()).href)).text();
  const lines = csv.trim().split('\n');
  ok(/^job_id,/.test(lines[0]) && lines.length === succeeded + 1, 'the CSV link gives the points', `${lines.length} lines`);

  // the threshold curves beside the λ curve
  await page.mouse.move(5, 5);
  const curveApi = await (await page.request.get(`${MAIN}/v1/sweeps/${sweepId}/curve`)).json();
  const tsApi = Array.isArray(curveApi.threshold_series) ? curveApi.threshold_series : [];
  ok(tsApi.length === succeeded, 'the API has a threshold series per finished job', `${tsApi.length} series`);
  const tsPlot = await page.evaluate(() => {
    const u = document.getElementById('sweep-curve').uplot;
    const out = [];
    for (let s = 1; s < u.series.length; s++) {
      const se = u.series[s];
      if (se.kind !== 'threshold') continue;
      out.push({ job_id: se.job_id, label: se.label, dash: se.dash, show: se.show,
        pts: u.data[0].map((x, i) => [x, u.data[s][i]]).filter(([, y]) => y != null) });
    }
    return out;
  });
  ok(await page.locator('#sweep-curve').getAttribute('data-threshold-series') === String(tsApi.length) && tsPlot.length === tsApi.length,
    'the plot has one threshold series per job of the API', `${tsPlot.length} in the plot`);
  const tsOk = tsApi.every((t) => {
    const p = tsPlot.find((q) => q.job_id === t.job_id);
    const want = curvePoints(t.points || []);
    return p && Array.isArray(p.dash) && p.dash.length > 0 && p.pts.length === want.length &&
      want.every((q, i) => close(p.pts[i][0], q.cr) && close(p.pts[i][1], q.test_acc));
  });
  ok(tsOk, 'each threshold series is its job\'s (CR, test accuracy) points, dashed', JSON.stringify(tsPlot.map((p) => [p.job_id, p.pts.length, p.dash])));
  ok(tsPlot.length > 0 && tsPlot.every((p) => p.pts.length >= 2), 'every threshold curve has several points',
    tsPlot.map((p) => p.pts.length).join(','));
  const lgKinds = await page.locator('#sweep-curve .chart-legend [data-kind]').evaluateAll((bs) => bs.map((b) => [b.dataset.kind, b.textContent.trim()]));
  ok(lgKinds.some(([k, t]) => k === 'lambda' && t === 'λ curve') && lgKinds.some(([k, t]) => k === 'threshold' && t === `threshold curves (${tsApi.length})`),
    'the legend tells the λ curve from the threshold curves', JSON.stringify(lgKinds));
  ok(await page.locator('#sweep-curve .chart-legend [data-group]').count() === 2, 'the legend has one entry per method and depth');
  const inkOn = await inkPixels(page, '#sweep-curve');
  await page.click('#sweep-curve .chart-legend [data-kind="threshold"]');
  const hiddenKinds = await page.evaluate(() => {
    const u = document.getElementById('sweep-curve').uplot;
    return u.series.slice(1).map((s) => [s.kind, s.show]);
  });
  const inkOff = await inkPixels(page, '#sweep-curve');
  ok(hiddenKinds.every(([k, sh]) => (k === 'threshold' ? !sh : sh)) && inkOff < inkOn,
    'the legend hides the threshold curves and only them; the plot has less ink', `${inkOn} -> ${inkOff} pixels; ${JSON.stringify(hiddenKinds)}`);
  ok(await page.locator('#sweep-curve .chart-legend [data-kind="threshold"]').getAttribute('aria-pressed') === 'false', 'the legend entry shows it is off');
  await page.click('#sweep-curve .chart-legend [data-kind="threshold"]');
  const inkAgain = await inkPixels(page, '#sweep-curve');
  ok(Math.abs(inkAgain - inkOn) <= inkOn * 0.01, 'the legend shows them again', `${inkOn} -> ${inkAgain} pixels`);
  // hover a threshold point away from every λ point
  const tpos = await page.evaluate(() => {
    const u = document.getElementById('sweep-curve').uplot;
    const r = u.over.getBoundingClientRect();
    const lam = [];
    const thr = [];
    for (let s = 1; s < u.series.length; s++) {
      for (let i = 0; i < u.data[0].length; i++) {
        const y = u.data[s][i];
        if (y == null) continue;
        const p = { x: u.valToPos(u.data[0][i], 'x'), y: u.valToPos(y, 'y') };
        if (u.series[s].kind === 'lambda') lam.push(p);
        else if (u.series[s].kind === 'threshold') thr.push(p);
      }
    }
    const far = thr.find((p) => lam.every((q) => Math.hypot(p.x - q.x, p.y - q.y) > 30));
    return far ? { x: r.left + far.x, y: r.top + far.y } : null;
  });
  if (ok(tpos != null, 'a threshold point lies away from the λ points')) {
    await page.mouse.move(tpos.x + 1, tpos.y);
    await tip.waitFor({ state: 'visible', timeout: left(5000) });
    const tt = await tip.textContent();
    ok(/threshold curve/.test(tt) && /\|w\| </.test(tt) && /job #\d+/.test(tt), 'hovering a threshold point shows its job and threshold', tt);
  }
  await page.mouse.move(5, 5);
  await page.waitForSelector('.toast', { state: 'detached', timeout: left(8000) });
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-sweep.png'), fullPage: true });

  // 6. the jobs table: live rows, filter, links
  await page.goto(`${MAIN}/#/jobs?state=succeeded`);
  await page.waitForFunction(() => document.querySelectorAll('#jobs-table tbody tr').length === 4, null, { timeout: left(10000) });
  const states = await page.locator('#jobs-table tbody tr').evaluateAll((rs) => rs.map((r) => r.dataset.state));
  ok(states.every((s) => s === 'succeeded'), 'the state filter shows only succeeded jobs', states.join(','));
  ok(await page.locator(`#jobs-table a[href="#/sweeps/${sweepId}"]`).count() === 4, 'each row links to its sweep');
  await page.click('.segmented a[data-state="failed"]');
  await page.waitForSelector('.empty h2', { timeout: left(10000) });
  ok(/No failed jobs/.test(await page.locator('.empty h2').textContent()), 'an empty filter says so');

  // 7. a narrow window: nothing wider than the screen
  await page.setViewportSize({ width: 390, height: 800 });
  await page.goto(`${MAIN}/#/jobs`);
  await page.waitForFunction(() => document.querySelectorAll('#jobs-table tbody tr').length === 4, null, { timeout: left(10000) });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  ok(overflow <= 0, 'the jobs page fits a 390 px window', `${overflow} px too wide`);
  await page.goto(`${MAIN}/#/jobs/${jobId}`);
  await page.waitForFunction(() => document.querySelector('[data-chart="acc"]')?.dataset.epochs === '2', null, { timeout: left(10000) });
  const overflow2 = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  ok(overflow2 <= 0, 'the job page fits a 390 px window', `${overflow2} px too wide`);
  await page.close();

  // 8. a λ search from the sweep form: its panel follows the runs
  const ps = await context.newPage();
  watch(ps, 'search');
  await ps.goto(`${MAIN}/#/new-sweep`);
  await ps.waitForSelector('#sweep-form .mode-switch:not([hidden]) button[data-mode="search"]', { timeout: left(15000) });
  await ps.click('#sweep-form .mode-switch button[data-mode="search"]');
  ok(await ps.locator('#sweep-form [data-path="grid.lambda"]').isHidden() && await ps.locator('#sweep-form [data-path="base.search.target_cr"]').isVisible(),
    'the sweep form\'s λ search mode swaps the grid for the search fields');
  const sfill = (p, v) => ps.fill(`#sweep-form [data-path="${p}"] input`, v);
  await sfill('name', 'browser search');
  await sfill('base.search.target_cr', '3');
  await sfill('base.search.budget', '3');
  await sfill('base.search.tolerance', '0.3');
  await sfill('base.model.hidden', '32');
  await sfill('base.model.depth', '2');
  await sfill('base.train.epochs', '2');
  await sfill('base.data.train_subset', '1000');
  await sfill('base.data.test_subset', '300');
  await sfill('base.data.validation', '0.2');
  // select acts by being there: a checkbox turns it on, defaults included
  ok(await ps.locator('#sweep-form [data-path="base.select.max_drop"]').isHidden(),
    'the form leaves `select` off (its fields hidden) until "use select" is ticked');
  await ps.check('#sweep-form input[data-toggle="select"]');
  const withSelect = JSON.parse(await ps.locator('#request-preview').textContent());
  ok(withSelect.base && JSON.stringify(withSelect.base.select) === '{}',
    'ticking "use select" sends select with its defaults', JSON.stringify(withSelect.base && withSelect.base.select));
  await sfill('base.select.max_drop', '0.05');
  await sfill('base.thresholds.every', '1');
  ok(/up to 3 runs/.test(await ps.locator('#sweep-count').textContent()), 'the form says how many runs the search may take',
    await ps.locator('#sweep-count').textContent());
  const sbody = JSON.parse(await ps.locator('#request-preview').textContent());
  ok(!sbody.grid && JSON.stringify(sbody.base.search) === JSON.stringify({ target_cr: 3, tolerance: 0.3, budget: 3 }),
    'the search request has base.search and no grid', JSON.stringify(sbody));
  await ps.click('#sweep-form button[type="submit"]');
  await ps.waitForURL(/#\/sweeps\/\d+$/, { timeout: left(15000) });
  const searchId = Number(/#\/sweeps\/(\d+)$/.exec(ps.url())[1]);
  await ps.waitForSelector('#search-panel:not([hidden]) #search-runs tbody tr', { timeout: left(10000) });
  const early = await ps.evaluate(() => ({
    state: document.getElementById('search-panel').dataset.state,
    rows: document.querySelectorAll('#search-runs tbody tr[data-job]').length,
    states: [...document.querySelectorAll('#search-runs tbody tr[data-job] .badge')].map((b) => b.textContent),
  }));
  ok(early.state === 'searching', 'the sweep page shows the search while it runs', JSON.stringify(early));
  await ps.waitForFunction(() => {
    const el = document.getElementById('search-panel');
    return el && el.dataset.state && el.dataset.state !== 'searching';
  }, null, { timeout: left(60000) });
  // the page may be one poll behind the server: read the API after
  await ps.waitForTimeout(2500);
  const sw = await (await ps.request.get(`${MAIN}/v1/sweeps/${searchId}`)).json();
  const se = sw.search || {};
  const runs = se.runs || [];
  ok(sw.kind === 'search' && runs.length >= 1 && runs.length <= 3, 'the API reports the search and its runs', `${runs.length} runs, state ${se.state}`);
  const rows = await ps.locator('#search-runs tbody tr[data-job]').evaluateAll((trs) => trs.map((tr) => ({
    job: Number(tr.dataset.job),
    href: tr.querySelector('a.id') && tr.querySelector('a.id').getAttribute('href'),
    lambda: tr.children[2].textContent.trim(),
    state: tr.children[3].textContent.trim(),
    within: tr.querySelector('.within-yes') != null,
    best: tr.classList.contains('best'),
  })));
  ok(rows.length === runs.length && rows.every((r, i) => r.job === runs[i].job_id && r.href === `#/jobs/${runs[i].job_id}` && r.state === runs[i].state),
    'the runs table lists every run in order, linked to its job', JSON.stringify(rows));
  const fmtNum = (x) => (x < 1e-3 ? x.toExponential(1).replace(/\.0e/, 'e').replace('e+', 'e') : String(parseFloat(x.toPrecision(4))));
  ok(rows.every((r, i) => r.lambda === fmtNum(runs[i].lambda)), 'the table shows each run\'s λ', rows.map((r) => r.lambda).join(','));
  ok(rows.every((r, i) => r.within === !!runs[i].within), 'the within-tolerance marks follow the API', JSON.stringify(runs.map((r) => r.within)));
  const bestRows = rows.filter((r) => r.best);
  ok(se.best_job_id == null ? bestRows.length === 0 : bestRows.length === 1 && bestRows[0].job === se.best_job_id,
    'the best run is highlighted', `best_job_id ${se.best_job_id}, highlighted ${JSON.stringify(bestRows)}`);
  ok((await ps.locator('#search-panel .card-head .badge').textContent()).trim() === se.state, 'the panel shows the search state', se.state);
  ok((await ps.locator('#search-panel [data-stat="budget"] .stat-value').textContent()).trim() === `${runs.length} / 3`, 'the panel shows the budget used');
  ok((await ps.locator('#search-panel [data-stat="target"] .stat-value').textContent()).trim() === '3.00×', 'the panel shows the target CR');
  ok(early.rows < runs.length || early.states.some((st) => st === 'queued' || st === 'running'),
    'the runs table was refreshed while the search ran', `${JSON.stringify(early)} -> ${rows.map((r) => r.state)}`);
  // the runs on the plot: one λ point per finished run, and the target band
  const okRuns = runs.filter((r) => r.state === 'succeeded' && r.cr > 0 && typeof r.test_acc === 'number');
  const lamPts = await ps.evaluate(() => {
    const u = document.getElementById('sweep-curve').uplot;
    const out = [];
    for (let s = 1; s < u.series.length; s++) {
      if (u.series[s].kind !== 'lambda') continue;
      for (let i = 0; i < u.data[0].length; i++) if (u.data[s][i] != null) out.push([u.data[0][i], u.data[s][i]]);
    }
    return out;
  });
  ok(okRuns.length >= 1 && okRuns.every((r) => lamPts.some(([x, y]) => close(x, r.cr) && close(y, r.test_acc))) && lamPts.length === okRuns.length,
    'every finished run is a point of the plot', JSON.stringify({ lamPts, runs: okRuns.map((r) => [r.cr, r.test_acc]) }));
  ok(await ps.locator('#sweep-curve .chart-legend [data-kind="target"]').count() === 1, 'the plot shows the search target');
  ok(await ps.locator('#sweep-curve').getAttribute('data-threshold-series') === String(okRuns.length), 'the search runs have their threshold curves');
  await ps.waitForSelector('.toast', { state: 'detached', timeout: left(8000) });
  await ps.screenshot({ path: path.join(ARTIFACTS, 'dashboard-search.png'), fullPage: true });
  // a run's job page: the threshold curve marks the model `select` chose
  const runJob = se.best_job_id ?? okRuns[0].job_id;
  await ps.click(`#search-runs a[href="#/jobs/${runJob}"]`);
  await ps.waitForSelector('#threshold-curve:not([hidden]) [data-chart="thresholds"][data-points]', { timeout: left(10000) });
  const selApi = ((await (await ps.request.get(`${MAIN}/v1/jobs/${runJob}/thresholds`)).json()).points || []).find((q) => q.selected);
  const selShown = await ps.locator('[data-chart="thresholds"]').getAttribute('data-selected');
  ok(selApi != null && close(Number(selShown), selApi.cr) && /selected point/.test(await ps.locator('#threshold-note').textContent()),
    'a run\'s job page marks the selected point of its threshold curve', `shown ${selShown}, API ${selApi && selApi.cr}`);
  // thresholds.every = 1: the curves taken during training can be chosen
  const opts = await ps.locator('#threshold-epoch option').evaluateAll((os) => os.map((o) => o.value));
  ok(opts[0] === '' && opts.includes('1'), 'the job page offers the curves taken during training', JSON.stringify(opts));
  if (opts.includes('1')) {
    await ps.selectOption('#threshold-epoch', '1');
    await ps.waitForSelector('[data-chart="thresholds"][data-epoch="1"]', { timeout: left(5000) });
    const e1 = curvePoints((await (await ps.request.get(`${MAIN}/v1/jobs/${runJob}/thresholds?epoch=1`)).json()).points || []);
    const x1 = await ps.evaluate(() => document.querySelector('[data-chart="thresholds"]').uplot.data[0]);
    ok(e1.length > 0 && x1.length === e1.length && e1.every((q, i) => close(x1[i], q.cr)), 'choosing epoch 1 draws that curve',
      JSON.stringify({ x1, want: e1.map((q) => q.cr) }));
  }

  // 9. the sweeps list tells a search from a grid
  await ps.goto(`${MAIN}/#/sweeps`);
  await ps.waitForFunction(() => document.querySelectorAll('#sweeps-table tbody tr').length === 2, null, { timeout: left(10000) });
  const kinds = await ps.locator('#sweeps-table tbody tr').evaluateAll((trs) => trs.map((tr) => [tr.querySelector('a.id').textContent, !!tr.querySelector('.kind-tag')]));
  ok(JSON.stringify(kinds.sort()) === JSON.stringify([[`#${searchId}`, true], [`#${sweepId}`, false]].sort()), 'the sweeps list marks the λ search', JSON.stringify(kinds));

  // 10. the job form with search.target_cr starts a search and opens it
  await ps.goto(`${MAIN}/#/new`);
  await ps.waitForSelector('#job-form [data-path="search.target_cr"] input', { timeout: left(15000) });
  const jfill = (p, v) => ps.fill(`#job-form [data-path="${p}"] input`, v);
  await jfill('search.target_cr', '2');
  await jfill('search.budget', '1');
  await jfill('model.hidden', '16');
  await jfill('train.epochs', '1');
  await jfill('data.train_subset', '500');
  await jfill('data.test_subset', '200');
  ok((await ps.locator('#job-form button[type="submit"]').textContent()) === 'Start λ search', 'the job form\'s button says it starts a search');
  await ps.click('#job-form button[type="submit"]');
  await ps.waitForURL(/#\/sweeps\/\d+$/, { timeout: left(15000) });
  const jsId = Number(/#\/sweeps\/(\d+)$/.exec(ps.url())[1]);
  await ps.waitForSelector('#search-panel:not([hidden])', { timeout: left(10000) });
  ok(jsId > searchId, 'a job spec with search.target_cr opens its λ search', ps.url());
  await ps.waitForFunction(() => {
    const el = document.getElementById('search-panel');
    return el && el.dataset.state && el.dataset.state !== 'searching';
  }, null, { timeout: left(30000) });
  ok(await ps.locator('#search-runs tbody tr[data-job]').count() === 1, 'a budget of one run runs once');
  await ps.close();

  // 11. a server that needs a token
  const p2 = await context.newPage();
  watch(p2, 'auth');
  await p2.goto(AUTH + '/');
  await p2.locator('#tokenbar').waitFor({ state: 'visible', timeout: left(10000) });
  ok(true, 'a 401 shows the token bar');
  await p2.fill('#token-input', 'browser-test-token');
  await p2.click('#token-form button[type="submit"]');
  await p2.waitForSelector('.empty h2', { timeout: left(10000) });
  ok(/No jobs yet/.test(await p2.locator('.empty h2').textContent()) && await p2.locator('#tokenbar').isHidden(),
    'with the token the jobs page loads');
  ok(await p2.evaluate(() => sessionStorage.getItem('dwf.token')) === 'browser-test-token', 'the token is kept in sessionStorage');
  await p2.close();

  ok(consoleErrors.length === 0, 'no console errors and no page errors', '\n  ' + consoleErrors.join('\n  '));
} catch (e) {
  ok(false, 'the test ran to its end', e.stack || String(e));
  if (consoleErrors.length) console.log('console errors so far:\n  ' + consoleErrors.join('\n  '));
} finally {
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
}

console.log(`browser test took ${((Date.now() - T0) / 1000).toFixed(1)} s`);
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
