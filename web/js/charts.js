// charts.js - the dashboard's charts on uPlot (web/vendor/uplot): training
// curves against epoch, the per-layer density bars, and the sweep's
// sparsity-accuracy scatter with its Pareto front and hover card.
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

// A chart of series against epoch. spec: {series: [{label, color, dash}],
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
      ...spec.series.map((s) => ({
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

// The sparsity-accuracy curve of a sweep: sparse test accuracy against CR
// (log x), one series per (method, depth), the Pareto front as a wide band
// under them. Hovering a point shows its job, λ, CR and accuracy; clicking
// opens the job. el.dataset.points is the number of points drawn.
export function sweepChart(el, height = 340) {
  let points = []; // sorted by cr: {cr, acc, job_id, lambda, method, depth, seed, target_cr, pareto, s}
  let groups = [];
  let u = null;
  let unfit = () => {};
  const tip = h('div', { class: 'chart-tip', hidden: true });
  const ring = h('div', { class: 'chart-ring', hidden: true });
  let hot = null;

  function build() {
    if (u) { unfit(); u.destroy(); }
    const series = [
      { label: 'CR' },
      {
        label: 'Pareto front',
        stroke: 'rgba(245, 158, 11, 0.38)',
        width: 9,
        spanGaps: true,
        points: { show: true, size: 15, width: 2, stroke: '#d97706', fill: 'rgba(255,255,255,0)' },
      },
      ...groups.map((g, i) => ({
        label: g.label,
        stroke: COLORS[i % COLORS.length],
        width: 1.5,
        spanGaps: true,
        points: { show: true, size: 8, width: 1, stroke: '#fff', fill: COLORS[i % COLORS.length] },
      })),
    ];
    const opts = {
      width: Math.max(200, el.clientWidth || 600),
      height,
      cursor: { x: false, y: false, points: { show: false }, drag: { x: false, y: false, setScale: false } },
      scales: {
        x: { time: false, distr: 3, log: 10, range: (uu) => dataLogRange(uu) },
        y: { range: (uu, mn, mx) => padRange(mn, mx, 0, 1) },
      },
      axes: [
        { ...AXIS, label: 'compression ratio (weights / non-zero weights, log scale)', labelSize: 18, size: 36, splits: logSplits, filter: keepAll, values: logTicks },
        { ...AXIS, label: 'sparse test accuracy', labelSize: 18, size: 54, values: (uu, vals) => vals.map((v) => fmt.pct(v, 0)) },
      ],
      series,
      legend: { live: false },
    };
    u = new uPlot(opts, data(), el);
    el.uplot = u; // for the browser test and the console
    u.over.append(ring, tip);
    u.over.addEventListener('mousemove', hover);
    u.over.addEventListener('mouseleave', () => show(null));
    u.over.addEventListener('click', () => { if (hot) location.hash = '#/jobs/' + hot.job_id; });
    unfit = fit(u, el, height);
  }

  function data() {
    const xs = points.map((p) => p.cr);
    const front = points.map((p) => (p.pareto ? p.acc : null));
    const ys = groups.map((g, gi) => points.map((p) => (p.s === gi ? p.acc : null)));
    return [xs, front, ...ys];
  }

  function hover(ev) {
    if (!u || !points.length) return show(null);
    const r = u.over.getBoundingClientRect();
    const mx = ev.clientX - r.left;
    const my = ev.clientY - r.top;
    let best = null;
    let bd = 18 * 18;
    for (const p of points) {
      if (!u.series[p.s + 2].show) continue;
      const dx = u.valToPos(p.cr, 'x') - mx;
      const dy = u.valToPos(p.acc, 'y') - my;
      const d = dx * dx + dy * dy;
      if (d < bd) { bd = d; best = p; }
    }
    show(best);
  }

  function show(p) {
    hot = p;
    u.over.style.cursor = p ? 'pointer' : '';
    if (!p) { tip.hidden = true; ring.hidden = true; return; }
    const x = u.valToPos(p.cr, 'x');
    const y = u.valToPos(p.acc, 'y');
    ring.hidden = false;
    ring.style.left = x + 'px';
    ring.style.top = y + 'px';
    tip.replaceChildren(
      h('div', { class: 'tip-title' }, `job #${p.job_id}`, p.pareto ? h('span', { class: 'tip-star' }, ' ★ Pareto') : ''),
      h('div', null, `${p.method} · D=${p.depth}${p.seed != null ? ' · seed ' + p.seed : ''}`),
      h('div', null, 'λ = ', h('b', null, fmt.num(p.lambda)), p.target_cr != null ? ` · target CR ${fmt.num(p.target_cr)}` : ''),
      h('div', null, 'CR ', h('b', null, fmt.cr(p.cr)), ' · acc ', h('b', null, fmt.pct(p.acc, 2))),
      h('div', { class: 'tip-hint' }, 'click to open the job'),
    );
    tip.hidden = false;
    const w = u.over.clientWidth;
    tip.style.left = (x > w / 2 ? x - 12 - tip.offsetWidth : x + 12) + 'px';
    tip.style.top = Math.max(0, y - tip.offsetHeight / 2) + 'px';
  }

  return {
    get u() { return u; },
    // curve: the body of GET v1/sweeps/{id}/curve
    set(curve) {
      const keyOf = (p) => `${p.method}|${p.depth}`;
      const gmap = new Map();
      const pts = [];
      for (const p of curve.points || []) {
        if (typeof p.cr !== 'number' || typeof p.sparse_test_acc !== 'number') continue;
        const k = keyOf(p);
        if (!gmap.has(k)) gmap.set(k, { key: k, method: p.method, depth: p.depth });
        pts.push({ ...p, acc: p.sparse_test_acc, k });
      }
      const gs = [...gmap.values()].sort((a, b) => (a.method === b.method ? a.depth - b.depth : a.method < b.method ? -1 : 1));
      gs.forEach((g, i) => { g.label = `${g.method} D=${g.depth}`; g.i = i; });
      for (const p of pts) p.s = gs.findIndex((g) => g.key === p.k);
      pts.sort((a, b) => a.cr - b.cr || a.acc - b.acc || a.job_id - b.job_id);
      const same = gs.length === groups.length && gs.every((g, i) => g.key === groups[i].key);
      points = pts;
      groups = gs;
      if (!u || !same) build();
      else u.setData(data());
      el.dataset.points = String(points.length);
      el.dataset.series = String(groups.length);
    },
    color(key) {
      const i = groups.findIndex((g) => g.key === key);
      return i < 0 ? null : COLORS[i % COLORS.length];
    },
    destroy() { if (u) { unfit(); u.destroy(); u = null; } },
  };
}
