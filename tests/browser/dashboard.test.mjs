// Browser test of the dwfd dashboard (run by tests/browser/run.sh).
// usage: node dashboard.test.mjs MAIN_URL AUTH_URL ARTIFACTS_DIR
//   MAIN_URL: a dwfd with a worker and no tokens; AUTH_URL: a dwfd that
//   needs the token "browser-test-token" for every request.
// Drives Debian's chromium through playwright-core: submits a small sweep
// through the form, watches a job's live curves, checks the sweep curve
// against the finished jobs, the server's validation error at its field,
// the token prompt and the narrow layout. Fails on any console error or
// page error (except the HTTP errors a check provokes on purpose).
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
  { status: 404, url: /\/v1\/jobs\/\d+\/thresholds$/ }, // feature probe of the job page (older servers)
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
  const nThr = Number(await page.locator('[data-chart="thresholds"]').getAttribute('data-points'));
  ok(nThr >= 2, 'the job page shows the threshold curve', `${nThr} points`);
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
    for (let s = 2; s < u.data.length; s++) for (const v of u.data[s]) if (v != null) n++;
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
    for (let s = 2; s < u.data.length; s++) {
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

  // 8. a server that needs a token
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
