// charts.js - the dashboard's charts on uPlot (web/vendor/uplot): training
// curves against epoch, the per-layer density bars, and the sweep's
// sparsity-accuracy plot (λ curve, Pareto front, threshold curves, search
// target) with its legend and hover card.
import uPlot from '../vendor/uplot/uPlot.esm.js';
import { fmt, h } from './util.js';

export const COLORS = ['#2563eb', '#dc2626', '#059669', '#d97706', '#7c3aed', '#0891b2',
  '#db2777', '#4d7c0f', '#475569', '#9333ea'];

const AXIS = {
  stroke: '#64748b',
  grid: { stroke: '#e8edf3', width: 1 },
  ticks: { stroke: '#e8edf3', width: 1, size: 4 },
  font: '11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif',
  labelFont: '12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif',
};

// Keeps a chart as wide as its box.
function fit(u, el, height) {
  const ro = new ResizeObserver(() => {
    const w = Math.max(200, Math.floor(el.clientWidth));
    if (w !== u.width) u.setSize({ width: w, height });
  });
  ro.observe(el);
  return () => ro.disconnect();
}

function logRange(min, max) {
  if (min == null || !Number.isFinite(min) || min <= 0) return [0.7, 15];
  if (max / min < 4) { // near-constant: a span of 4x around the middle
    const c = Math.sqrt(min * max);
    return [c / 2, c * 2];
  }
  const pad = Math.pow(max / min, 0.06);
  return [min / pad / 1.05, max * pad * 1.05];
}

// Ticks of a log axis: every m * 10^k inside the range; labels on the
// decades (and on 2 and 5 when the range is short).
function logSplits(u, ai, min, max) {
  const out = [];
  if (!(min > 0) || !(max > min)) return out;
  const decades = Math.log10(max / min);
  const ms = decades < 0.6 ? [1, 2, 3, 4, 5, 6, 7, 8, 9] : decades < 2.3 ? [1, 2, 5] : [1];
  for (let k = Math.floor(Math.log10(min)); k <= Math.ceil(Math.log10(max)); k++) {
    for (const m of ms) {
      const v = parseFloat((m * Math.pow(10, k)).toPrecision(6));
      if (v >= min && v <= max) out.push(v);
    }
  }
  return out;
}

const logTicks = (u, vals) => vals.map((v) => (v == null ? '' : v >= 1 ? fmt.int(v) : String(v)));
// label every split of logSplits (uPlot's log filter would drop some)
const keepAll = (u, splits) => splits;

// x range of a log axis from the data itself (uPlot widens a single
// value to whole decades before the range function sees it)
function dataLogRange(u) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of u.data[0] || []) {
    if (v > 0) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  }
  return lo === Infinity ? logRange(null) : logRange(lo, hi);
}

// Legend value: the hovered point, else the series' last value.
function lastOf(u, si) {
  const d = u.data[si] || [];
  for (let i = d.length - 1; i >= 0; i--) if (d[i] != null) return d[i];
  return null;
}
const legendValue = (f) => (u, v, si, i) => {
  const x = i == null ? lastOf(u, si) : v;
  return x == null ? '—' : f(x);
};

function padRange(min, max, lo, hi) {
  if (min == null || !Number.isFinite(min)) return [lo ?? 0, hi ?? 1];
  const pad = (max - min) * 0.08 || Math.abs(max) * 0.1 || 0.05;
  let a = min - pad;
  let b = max + pad;
  if (lo != null) a = Math.max(lo, a);
  if (hi != null) b = Math.min(hi, b);
  return [a, b];
}

// A chart of series against epoch. spec: {series: [{label, color, dash,
// only (points without a line)}],
// ylog, yfmt, ylo, yhi, ylabel, xlabel, xlog, xfmt, height}. Returns
// {set(data) where data = [xs, ys1, ys2, ...], destroy(), u}.
export function lineChart(el, spec) {
  const height = spec.height || 220;
  const yfmt = spec.yfmt || ((v) => fmt.num(v));
  const xfmt = spec.xfmt || ((v) => String(v));
  const opts = {
    width: Math.max(200, el.clientWidth || 400),
    height,
    cursor: { drag: { x: true, y: false, setScale: true }, points: { size: 7 } },
    scales: {
      x: spec.xlog
        ? { time: false, distr: 3, log: 10, range: (u) => dataLogRange(u) }
        : { time: false, range: (u, mn, mx) => (mn == null ? [0, 1] : mn === mx ? [mn - 1, mx + 1] : [mn, mx]) },
      y: spec.ylog
        ? { distr: 3, log: 10, range: (u, mn, mx) => logRange(mn, mx) }
        : { range: (u, mn, mx) => padRange(mn, mx, spec.ylo, spec.yhi) },
    },
    axes: [
      { ...AXIS, label: spec.xlabel || 'epoch', labelSize: 18, size: 36,
        incrs: spec.xlog ? undefined : [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
        splits: spec.xlog ? logSplits : undefined, filter: spec.xlog ? keepAll : undefined,
        values: spec.xlog ? logTicks : (u, vals) => vals.map((v) => (Number.isInteger(v) ? String(v) : '')) },
      { ...AXIS, label: spec.ylabel, labelSize: spec.ylabel ? 18 : 0, size: 54,
        splits: spec.ylog ? logSplits : undefined, filter: spec.ylog ? keepAll : undefined,
        values: spec.ylog ? logTicks : (u, vals) => vals.map((v) => yfmt(v)) },
    ],
    series: [
      { label: spec.xlabel || 'epoch', value: legendValue(xfmt) },
      ...spec.series.map((s) => (s.only ? {
        label: s.label,
        stroke: s.color,
        width: 2,
        paths: () => null,
        points: { show: true, size: 13, width: 2.5, stroke: s.color, fill: 'rgba(255,255,255,0)' },
        value: legendValue(yfmt),
      } : {
        label: s.label,
        stroke: s.color,
        width: 2,
        dash: s.dash,
        spanGaps: true,
        points: { size: 5, fill: s.color },
        value: legendValue(yfmt),
      })),
    ],
    legend: { live: true },
  };
  const data = [[], ...spec.series.map(() => [])];
  const u = new uPlot(opts, data, el);
  el.uplot = u; // for the browser test and the console
  const unfit = fit(u, el, height);
  return {
    u,
    set(d) {
      u.setData(d);
      if (u.cursor.idx == null) u.setLegend({ idx: null });
    },
    destroy() { unfit(); u.destroy(); },
  };
}

// Bar chart of the non-zero share of each layer's weights.
export function densityChart(el, height = 220) {
  let names = [];
  let counts = [];
  const opts = {
    width: Math.max(200, el.clientWidth || 400),
    height,
    cursor: { drag: { x: false, y: false }, points: { show: false } },
    scales: {
      x: { time: false, range: (u) => [-0.5, Math.max(names.length, 1) - 0.5] },
      y: { range: [0, 1] },
    },
    axes: [
      { ...AXIS, size: 36, incrs: [1], grid: { show: false },
        values: (u, vals) => vals.map((v) => names[v] ?? '') },
      { ...AXIS, size: 54, values: (u, vals) => vals.map((v) => fmt.pct(v, 0)) },
    ],
    series: [
      { label: 'layer', value: (u, v) => (v == null ? '' : names[v] ?? '—') },
      {
        label: 'non-zero share',
        stroke: '#2563eb',
        fill: 'rgba(37, 99, 235, 0.72)',
        width: 1,
        points: { show: false },
        paths: uPlot.paths.bars({ size: [0.62, 90], align: 0 }),
        value: (u, v, si, i) => {
          if (i == null) {
            const nz = counts.reduce((a, c) => a + c[0], 0);
            const tot = counts.reduce((a, c) => a + c[1], 0);
            return tot ? `${fmt.pct(nz / tot, 2)} overall` : '—';
          }
          if (v == null) return '—';
          const c = counts[i];
          return c ? `${fmt.pct(v, 2)} (${fmt.int(c[0])} / ${fmt.int(c[1])})` : fmt.pct(v, 2);
        },
      },
    ],
    hooks: {
      draw: [(u) => {
        // the share above each bar
        const ctx = u.ctx;
        ctx.save();
        ctx.font = `${Math.round(11 * devicePixelRatio)}px system-ui, sans-serif`;
        ctx.textAlign = 'center';
        const ys = u.data[1] || [];
        const pad = 4 * devicePixelRatio;
        for (let i = 0; i < ys.length; i++) {
          if (ys[i] == null) continue;
          const x = u.valToPos(i, 'x', true);
          const y = u.valToPos(ys[i], 'y', true);
          const inside = y - u.bbox.top < 18 * devicePixelRatio;
          ctx.fillStyle = inside ? '#fff' : '#334155';
          ctx.textBaseline = inside ? 'top' : 'bottom';
          ctx.fillText(fmt.pct(ys[i], ys[i] < 0.1 ? 2 : 1), x, inside ? y + pad : y - pad);
        }
        ctx.restore();
      }],
    },
    legend: { live: true },
  };
  const u = new uPlot(opts, [[], []], el);
  const unfit = fit(u, el, height);
  return {
    u,
    // layers: [{name, total, nonzero}]
    set(layers) {
      names = layers.map((l) => l.name);
      counts = layers.map((l) => [l.nonzero, l.total]);
      u.setData([layers.map((l, i) => i), layers.map((l) => (l.total > 0 ? l.nonzero / l.total : null))]);
      if (u.cursor.idx == null) u.setLegend({ idx: null });
    },
    destroy() { unfit(); u.destroy(); },
  };
}

// '#2563eb' -> 'rgba(37, 99, 235, a)'
function rgba(hex, a) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
}

const KINDS = [
  ['lambda', 'λ curve', 'one point per finished job (its stored model), a line per method and depth'],
  ['threshold', 'threshold curves', 'each job’s collapsed weights cut at growing magnitude thresholds'],
  ['pareto', 'Pareto front', 'no other job is both sparser and more accurate'],
  ['target', 'search target', 'target CR of the λ search and its tolerance'],
];

// The sparsity-accuracy plot of a sweep: sparse test accuracy against CR
// (log x) with two kinds of series. The "λ curve": one point per finished
// job, a line per (method, depth), the Pareto front as a wide band under
// them. The "threshold curves": one thin dashed line per job, its
// collapsed weights cut at growing thresholds (GET v1/sweeps/{id}/curve,
// threshold_series), drawn under the λ curve in the colour of its group.
// A λ search adds its target band and numbers its runs in order. The
// legend below the plot toggles kinds and groups. Hovering a point shows
// its job; clicking opens it. el.uplot is the uPlot instance (its series
// carry kind, group and job_id); el.dataset has the counts.
export function sweepChart(el, height = 360) {
  let points = []; // every drawn point: {cr, acc, kind: 'lambda'|'threshold', si (uPlot series), job_id, ...}
  let groups = []; // [{key, method, depth, label}]
  let curves = []; // threshold series: [{job_id, label, key, pts}]
  let search = null; // {target_cr, tolerance, runs, best_job_id}
  let sig = '';
  const hidden = new Set(); // 'kind:threshold', 'group:dwf|3', ...
  let u = null;
  let unfit = () => {};
  const tip = h('div', { class: 'chart-tip', hidden: true });
  const ring = h('div', { class: 'chart-ring', hidden: true });
  const legend = h('div', { class: 'chart-legend', role: 'group', 'aria-label': 'series shown' });
  let hot = null;

  const groupColor = (key) => {
    const i = groups.findIndex((g) => g.key === key);
    return COLORS[(i < 0 ? 0 : i) % COLORS.length];
  };
  const shown = (kind, key) => !hidden.has('kind:' + kind) && !(key && hidden.has('group:' + key));

  // x range: the data and the search's target band
  function xRange(uu) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of uu.data[0] || []) {
      if (v > 0) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    }
    if (search && search.target_cr > 0 && shown('target')) {
      const tol = search.tolerance > 0 ? search.tolerance : 0;
      lo = Math.min(lo, search.target_cr * (1 - tol));
      hi = Math.max(hi, search.target_cr * (1 + tol));
    }
    return lo === Infinity ? logRange(null) : logRange(lo, hi);
  }

  // the target CR of a λ search: its tolerance band and a dashed line
  function drawTarget(uu) {
    if (!search || !(search.target_cr > 0) || !shown('target')) return;
    const c = uu.ctx;
    const { left, top, width, height: ht } = uu.bbox;
    const tol = search.tolerance > 0 ? search.tolerance : 0;
    const x0 = Math.max(left, uu.valToPos(search.target_cr * (1 - tol), 'x', true));
    const x1 = Math.min(left + width, uu.valToPos(search.target_cr * (1 + tol), 'x', true));
    const xt = uu.valToPos(search.target_cr, 'x', true);
    const dpr = devicePixelRatio;
    c.save();
    c.fillStyle = 'rgba(124, 58, 237, 0.08)';
    if (x1 > x0) c.fillRect(x0, top, x1 - x0, ht);
    if (xt >= left && xt <= left + width) {
      c.strokeStyle = 'rgba(124, 58, 237, 0.75)';
      c.lineWidth = 1.5 * dpr;
      c.setLineDash([6 * dpr, 4 * dpr]);
      c.beginPath();
      c.moveTo(xt, top);
      c.lineTo(xt, top + ht);
      c.stroke();
      c.setLineDash([]);
      c.fillStyle = '#6d28d9';
      c.font = `600 ${Math.round(11 * dpr)}px system-ui, sans-serif`;
      c.textAlign = xt > left + width / 2 ? 'right' : 'left';
      c.textBaseline = 'top';
      c.fillText(`target ${fmt.cr(search.target_cr)}`, xt + (c.textAlign === 'left' ? 5 : -5) * dpr, top + 4 * dpr);
    }
    c.restore();
  }

  // the search's runs numbered in the order they ran; the best one ringed
  function drawRuns(uu) {
    if (!search || !Array.isArray(search.runs) || !shown('lambda')) return;
    const c = uu.ctx;
    const dpr = devicePixelRatio;
    c.save();
    c.font = `600 ${Math.round(10 * dpr)}px system-ui, sans-serif`;
    c.textBaseline = 'bottom';
    c.textAlign = 'left';
    search.runs.forEach((r, i) => {
      if (!(r.cr > 0) || typeof r.test_acc !== 'number') return;
      const x = uu.valToPos(r.cr, 'x', true);
      const y = uu.valToPos(r.test_acc, 'y', true);
      if (r.job_id === search.best_job_id) {
        c.strokeStyle = r.within ? '#059669' : '#d97706'; // best hit, or closest run
        c.lineWidth = 2 * dpr;
        c.beginPath();
        c.arc(x, y, 8 * dpr, 0, 2 * Math.PI);
        c.stroke();
      }
      c.fillStyle = '#334155';
      c.fillText(String(i + 1), x + 6 * dpr, y - 4 * dpr);
    });
    c.restore();
  }

  function build() {
    if (u) { unfit(); u.destroy(); }
    const series = [
      { label: 'CR' },
      {
        label: 'Pareto front',
        kind: 'pareto',
        stroke: 'rgba(245, 158, 11, 0.38)',
        width: 9,
        spanGaps: true,
        points: { show: true, size: 15, width: 2, stroke: '#d97706', fill: 'rgba(255,255,255,0)' },
      },
      // under the λ curve: thin dashed lines in the colour of their group
      ...curves.map((c) => {
        const col = groupColor(c.key);
        return {
          label: c.label,
          kind: 'threshold',
          group: c.key,
          job_id: c.job_id,
          stroke: rgba(col, 0.55),
          width: 1.25,
          dash: [5, 4],
          spanGaps: true,
          points: { show: true, size: 4, width: 1, stroke: rgba(col, 0.7), fill: rgba(col, 0.7) },
        };
      }),
      ...groups.map((g) => {
        const col = groupColor(g.key);
        return {
          label: g.label,
          kind: 'lambda',
          group: g.key,
          stroke: col,
          width: 1.5,
          spanGaps: true,
          points: { show: true, size: 8, width: 1, stroke: '#fff', fill: col },
        };
      }),
    ];
    for (const s of series.slice(1)) s.show = shown(s.kind, s.group);
    const opts = {
      width: Math.max(200, el.clientWidth || 600),
      height,
      cursor: { x: false, y: false, points: { show: false }, drag: { x: false, y: false, setScale: false } },
      scales: {
        x: { time: false, distr: 3, log: 10, range: (uu) => xRange(uu) },
        y: { range: (uu, mn, mx) => padRange(mn, mx, 0, 1) },
      },
      axes: [
        { ...AXIS, label: 'compression ratio (weights / non-zero weights, log scale)', labelSize: 18, size: 36, splits: logSplits, filter: keepAll, values: logTicks },
        { ...AXIS, label: 'sparse test accuracy', labelSize: 18, size: 54, values: (uu, vals) => vals.map((v) => fmt.pct(v, 0)) },
      ],
      series,
      legend: { show: false },
      hooks: { drawAxes: [drawTarget], draw: [drawRuns] },
    };
    u = new uPlot(opts, data(), el);
    el.uplot = u; // for the browser test and the console
    u.over.append(ring, tip);
    u.over.addEventListener('mousemove', hover);
    u.over.addEventListener('mouseleave', () => show(null));
    u.over.addEventListener('click', () => { if (hot) location.hash = '#/jobs/' + hot.job_id; });
    el.append(legend); // below the plot
    unfit = fit(u, el, height);
  }

  // aligned columns: x = every point's CR, one column per series
  function data() {
    const xs = points.map((p) => p.cr);
    const cols = [xs, points.map((p) => (p.kind === 'lambda' && p.pareto ? p.acc : null))];
    const n = 2 + curves.length + groups.length;
    for (let s = 2; s < n; s++) cols.push(points.map((p) => (p.si === s ? p.acc : null)));
    return cols;
  }

  function renderLegend() {
    const has = {
      lambda: points.some((p) => p.kind === 'lambda'),
      threshold: curves.length > 0,
      pareto: points.some((p) => p.kind === 'lambda' && p.pareto),
      target: !!(search && search.target_cr > 0),
    };
    const item = (key, glyph, text, title, style) => {
      const on = !hidden.has(key);
      const [type, val] = key.split(':');
      return h('button', {
        type: 'button', class: 'lg-item' + (on ? '' : ' off'), title, 'aria-pressed': on ? 'true' : 'false',
        dataset: { [type]: val }, onclick: () => toggle(key),
      }, h('span', { class: 'lg-glyph ' + glyph, style }), text);
    };
    const kinds = KINDS.filter(([k]) => has[k]).map(([k, label, title]) => {
      const n = k === 'threshold' ? ` (${curves.length})` : '';
      return item('kind:' + k, 'lg-' + k, label + n, title);
    });
    const gs = groups.map((g) => item('group:' + g.key, 'lg-group', g.label, `show or hide ${g.label}`,
      { background: groupColor(g.key) }));
    legend.replaceChildren(h('div', { class: 'lg-row' }, kinds), gs.length > 1 ? h('div', { class: 'lg-row' }, gs) : '');
  }

  function toggle(key) {
    if (hidden.has(key)) hidden.delete(key);
    else hidden.add(key);
    if (u) {
      u.batch(() => {
        for (let i = 1; i < u.series.length; i++) {
          const s = u.series[i];
          const want = shown(s.kind, s.group);
          if (s.show !== want) u.setSeries(i, { show: want });
        }
      });
      u.setData(data()); // new ranges: the target band may widen x
    }
    if (hot) show(null);
    renderLegend();
  }

  function hover(ev) {
    if (!u || !points.length) return show(null);
    const r = u.over.getBoundingClientRect();
    const mx = ev.clientX - r.left;
    const my = ev.clientY - r.top;
    // a job's own point before the threshold points near it
    let best = null;
    for (const [kind, rad] of [['lambda', 18], ['threshold', 10]]) {
      let bd = rad * rad;
      for (const p of points) {
        if (p.kind !== kind || !u.series[p.si].show) continue;
        const dx = u.valToPos(p.cr, 'x') - mx;
        const dy = u.valToPos(p.acc, 'y') - my;
        const d = dx * dx + dy * dy;
        if (d < bd) { bd = d; best = p; }
      }
      if (best) break;
    }
    show(best);
  }

  function show(p) {
    hot = p;
    if (!u) return;
    u.over.style.cursor = p ? 'pointer' : '';
    if (!p) { tip.hidden = true; ring.hidden = true; return; }
    const x = u.valToPos(p.cr, 'x');
    const y = u.valToPos(p.acc, 'y');
    ring.hidden = false;
    ring.style.left = x + 'px';
    ring.style.top = y + 'px';
    if (p.kind === 'threshold') {
      tip.replaceChildren(
        h('div', { class: 'tip-title' }, `job #${p.job_id}`, h('span', { class: 'tip-kind' }, ' · threshold curve')),
        h('div', null, p.label || `${p.method} · D=${p.depth}`),
        h('div', null, '|w| < ', h('b', null, fmt.num(p.threshold)), p.selected ? h('span', { class: 'tip-star' }, ' · selected model') : ''),
        h('div', null, 'CR ', h('b', null, fmt.cr(p.cr)), ' · test ', h('b', null, fmt.pct(p.acc, 2)),
          typeof p.val_acc === 'number' ? ` · val ${fmt.pct(p.val_acc, 2)}` : ''),
        h('div', { class: 'tip-hint' }, 'click to open the job'),
      );
    } else {
      tip.replaceChildren(
        h('div', { class: 'tip-title' }, `job #${p.job_id}`, p.pareto ? h('span', { class: 'tip-star' }, ' ★ Pareto') : ''),
        h('div', null, `${p.method} · D=${p.depth}${p.seed != null ? ' · seed ' + p.seed : ''}`),
        h('div', null, 'λ = ', h('b', null, fmt.num(p.lambda)), p.target_cr != null ? ` · target CR ${fmt.num(p.target_cr)}` : ''),
        h('div', null, 'CR ', h('b', null, fmt.cr(p.cr)), ' · acc ', h('b', null, fmt.pct(p.acc, 2))),
        h('div', { class: 'tip-hint' }, 'click to open the job'),
      );
    }
    tip.hidden = false;
    const w = u.over.clientWidth;
    tip.style.left = (x > w / 2 ? x - 12 - tip.offsetWidth : x + 12) + 'px';
    tip.style.top = Math.max(0, y - tip.offsetHeight / 2) + 'px';
  }

  return {
    get u() { return u; },
    // curve: the body of GET v1/sweeps/{id}/curve; s: the sweep's "search"
    // (null for a grid sweep)
    set(curve, s = null) {
      const keyOf = (p) => `${p.method}|${p.depth}`;
      const gmap = new Map();
      const addGroup = (p) => {
        const k = keyOf(p);
        if (!gmap.has(k)) gmap.set(k, { key: k, method: p.method, depth: p.depth });
        return k;
      };
      const lam = [];
      for (const p of curve.points || []) {
        if (typeof p.cr !== 'number' || !(p.cr > 0) || typeof p.sparse_test_acc !== 'number') continue;
        lam.push({ ...p, kind: 'lambda', acc: p.sparse_test_acc, key: addGroup(p) });
      }
      const cs = [];
      for (const t of Array.isArray(curve.threshold_series) ? curve.threshold_series : []) {
        const pts = (Array.isArray(t.points) ? t.points : [])
          .filter((q) => typeof q.cr === 'number' && q.cr > 0 && Number.isFinite(q.cr) && typeof q.test_acc === 'number')
          .sort((a, b) => (a.threshold ?? 0) - (b.threshold ?? 0) || a.cr - b.cr);
        const kept = [];
        for (const q of pts) { // one point per CR: equal CRs are the same model
          const last = kept[kept.length - 1];
          if (last && last.cr === q.cr) { if (q.selected) last.selected = true; continue; }
          kept.push({ ...q });
        }
        if (!kept.length) continue;
        const key = addGroup(t);
        const label = t.label || `${t.method} D=${t.depth} λ=${fmt.num(t.lambda)}`;
        cs.push({ job_id: t.job_id, key, label, pts: kept.map((q) => ({
          ...q, kind: 'threshold', acc: q.test_acc, job_id: t.job_id, key, label, method: t.method, depth: t.depth, lambda: t.lambda,
        })) });
      }
      const gs = [...gmap.values()].sort((a, b) => (a.method === b.method ? a.depth - b.depth : a.method < b.method ? -1 : 1));
      gs.forEach((g) => { g.label = `${g.method} D=${g.depth}`; });
      const gi = new Map(gs.map((g, i) => [g.key, i]));
      cs.sort((a, b) => gi.get(a.key) - gi.get(b.key) || a.job_id - b.job_id);
      cs.forEach((c, i) => { for (const q of c.pts) q.si = 2 + i; });
      for (const p of lam) p.si = 2 + cs.length + gi.get(p.key);
      const pts = [...lam, ...cs.flatMap((c) => c.pts)];
      pts.sort((a, b) => a.cr - b.cr || a.si - b.si || a.acc - b.acc || a.job_id - b.job_id);
      const nsig = gs.map((g) => g.key).join(',') + ';' + cs.map((c) => c.job_id).join(',');
      points = pts;
      groups = gs;
      curves = cs;
      search = s && typeof s === 'object' ? s : null;
      if (!u || nsig !== sig) build();
      else u.setData(data());
      sig = nsig;
      renderLegend();
      el.dataset.points = String(lam.length);
      el.dataset.series = String(groups.length);
      el.dataset.thresholdSeries = String(curves.length);
      el.dataset.thresholdPoints = String(pts.length - lam.length);
    },
    color(key) {
      const i = groups.findIndex((g) => g.key === key);
      return i < 0 ? null : COLORS[i % COLORS.length];
    },
    destroy() { if (u) { unfit(); u.destroy(); u = null; } },
  };
}
