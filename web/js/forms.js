// forms.js - the new-job and new-sweep forms, generated from the job
// spec's JSON Schema (GET v1/schema): nested objects as fieldsets, enums as
// selects, booleans as checkboxes, numbers with their bounds, arrays of
// numbers as comma-separated text, other arrays as JSON. Only the fields
// that differ from their default are sent; the server validates and its
// error ({"error": {"field": "train.lr", ...}}) is shown at that field.
// A spec with `search` (a target CR) makes dwfd search λ over a sweep of
// runs: the new-job form then opens that sweep, and the new-sweep form has
// a "λ search" mode beside the grid.
import { api } from './api.js';
import { errorBox, h, toast } from './util.js';

let schemaPromise = null;
function loadSchema() {
  if (!schemaPromise) schemaPromise = api('v1/schema').catch((e) => { schemaPromise = null; throw e; });
  return schemaPromise;
}

let uid = 0;
// equal values; numbers within 1e-12 (the server prints 15 digits)
const same = (a, b) => (typeof a === 'number' && typeof b === 'number'
  ? Math.abs(a - b) <= 1e-12 * Math.max(Math.abs(a), Math.abs(b))
  : JSON.stringify(a) === JSON.stringify(b));

// the text up to the first '.' or ';' (outside parentheses) before a space
function firstSentence(text, max = 120) {
  if (!text) return '';
  let s = text;
  let depth = 0;
  for (let i = 0; i < text.length - 1; i++) {
    const c = text[i];
    if (c === '(') depth++;
    else if (c === ')') depth = Math.max(0, depth - 1);
    else if ((c === '.' || c === ';') && depth === 0 && /\s/.test(text[i + 1])) { s = text.slice(0, i + 1); break; }
  }
  if (s.length > max) s = s.slice(0, max - 1).replace(/\s+\S*$/, '') + '…';
  return s;
}

function boundsHint(p) {
  const lo = p.minimum != null ? `≥ ${p.minimum}` : p.exclusiveMinimum != null ? `> ${p.exclusiveMinimum}` : '';
  const hi = p.maximum != null ? `≤ ${p.maximum}` : p.exclusiveMaximum != null ? `< ${p.exclusiveMaximum}` : '';
  if (p.minimum != null && p.maximum != null && p.maximum < 1e9) return `${p.minimum} – ${p.maximum}`;
  return [lo, hi && !(p.maximum >= 1e9) ? hi : ''].filter(Boolean).join(', ');
}

function kindOf(p) {
  if (Array.isArray(p.enum)) return 'enum';
  if (p.type === 'boolean') return 'bool';
  if (p.type === 'integer') return 'int';
  if (p.type === 'number') return 'num';
  if (p.type === 'string') return 'str';
  if (p.type === 'array' && p.items && (p.items.type === 'integer' || p.items.type === 'number')) return 'list';
  return 'json';
}

// A condition of an allOf entry on sibling values: {properties: {k: {const}
// | {enum}}, required} or {not: ...}. null when it is of another shape.
function evalCond(cond, values) {
  if (!cond || typeof cond !== 'object') return null;
  if (cond.not) {
    const r = evalCond(cond.not, values);
    return r == null ? null : !r;
  }
  for (const k of cond.required || []) if (values[k] === undefined) return false;
  for (const [k, s] of Object.entries(cond.properties || {})) {
    if (!s || (!('const' in s) && !Array.isArray(s.enum))) return null;
    const v = values[k];
    if (v === undefined) continue;
    if ('const' in s && v !== s.const) return false;
    if (Array.isArray(s.enum) && !s.enum.includes(v)) return false;
  }
  return true;
}

// The generated form of one object schema. prefix: path prefix of the
// error fields ("base." in the sweep form); exclude: spec paths left out.
export class SchemaForm {
  constructor(schema, { prefix = '', exclude = [], onChange = () => {} } = {}) {
    this.prefix = prefix;
    this.exclude = new Set(exclude);
    this.onChange = onChange;
    this.fields = [];
    this.objects = [];
    this.el = h('div', { class: 'schema-form' });
    const general = h('div', { class: 'field-grid' });
    const root = { path: '', schema, keys: new Map() };
    this.objects.push(root);
    const sections = [];
    for (const [k, p] of Object.entries(schema.properties || {})) {
      if (this.exclude.has(k)) continue;
      if (p.type === 'object' && p.properties) sections.push(this.section(k, p, k));
      else general.append(this.field(root, k, p, k));
    }
    if (general.childElementCount) {
      this.el.append(h('fieldset', { class: 'section', dataset: { section: 'general' } },
        h('legend', null, 'general'), general));
    }
    this.el.append(...sections);
    this.el.addEventListener('input', () => this.changed());
    this.el.addEventListener('change', () => this.changed());
    this.applyVisibility();
  }

  section(key, p, path) {
    const node = { path, schema: p, keys: new Map(), toggle: null };
    this.objects.push(node);
    // an object that acts by being there (select) and needs no value of
    // its own: a checkbox turns it on, with its defaults or changed fields
    const onByPresence = /enabled when present/i.test(p.description || '') &&
      !(Array.isArray(p.required) && p.required.length);
    if (onByPresence) {
      node.toggle = h('input', { id: `f${++uid}`, type: 'checkbox', name: `${this.prefix}${path}?`, dataset: { toggle: path } });
    }
    const grid = h('div', { class: 'field-grid' });
    const nested = [];
    for (const [k, c] of Object.entries(p.properties)) {
      const cp = `${path}.${k}`;
      if (this.exclude.has(cp)) continue;
      if (c.type === 'object' && c.properties) nested.push(this.section(k, c, cp));
      else grid.append(this.field(node, k, c, cp));
    }
    return h('fieldset', { class: 'section', dataset: { section: path } },
      h('legend', { title: p.description || '' }, key),
      p.description ? h('p', { class: 'section-help' }, firstSentence(p.description, 160)) : '',
      node.toggle ? h('label', { for: node.toggle.id, class: 'check section-toggle' }, node.toggle,
        h('span', null, `use ${key}`)) : '',
      grid, nested);
  }

  // the toggle of f's object or of one around it is off
  switchedOff(f) {
    return this.objects.some((o) => o.toggle && !o.toggle.checked &&
      (f.path === o.path || f.path.startsWith(o.path + '.')));
  }

  field(node, key, p, path) {
    const kind = kindOf(p);
    const id = `f${++uid}`;
    const def = p.default;
    const full = this.prefix + path;
    // required in its object (search.target_cr): no "optional" tag, no "auto"
    const req = Array.isArray(node.schema.required) && node.schema.required.includes(key);
    let input;
    if (kind === 'enum') {
      input = h('select', { id, name: full }, p.enum.map((v) => h('option', { value: String(v) }, String(v))));
      if (def !== undefined) input.value = String(def);
    } else if (kind === 'bool') {
      input = h('input', { id, name: full, type: 'checkbox', checked: !!def });
    } else if (kind === 'int' || kind === 'num') {
      input = h('input', {
        id, name: full, type: 'number', step: kind === 'int' ? '1' : 'any', inputmode: kind === 'int' ? 'numeric' : 'decimal',
        min: p.minimum, max: p.maximum, value: def !== undefined ? String(def) : '', placeholder: def === undefined && !req ? 'auto' : null,
      });
    } else if (kind === 'str') {
      input = h('input', { id, name: full, type: 'text', maxlength: p.maxLength, value: def ?? '', spellcheck: 'false' });
    } else if (kind === 'list') {
      input = h('input', {
        id, name: full, type: 'text', value: Array.isArray(def) ? def.join(', ') : '',
        placeholder: p.items.type === 'integer' ? 'e.g. 300, 100' : 'e.g. 0.1, 0.5', spellcheck: 'false',
      });
    } else {
      input = h('textarea', {
        id, name: full, rows: 3, spellcheck: 'false', value: def !== undefined ? JSON.stringify(def) : '',
        placeholder: 'JSON, e.g. [{"type": "dense", "units": 100}, {"type": "relu"}, {"type": "dense"}]',
      });
    }
    const hint = [firstSentence(p.description), kind === 'list' ? 'Comma-separated.' : '', boundsHint(p)].filter(Boolean).join(' ');
    const err = h('div', { class: 'field-error', role: 'alert', hidden: true });
    const wrap = kind === 'bool'
      ? h('div', { class: 'field field-bool', dataset: { path: full } },
        h('label', { for: id, class: 'check' }, input, h('span', { class: 'field-label' }, key)),
        h('div', { class: 'field-help', title: p.description || '' }, hint), err)
      : h('div', { class: 'field' + (kind === 'json' ? ' field-wide' : ''), dataset: { path: full } },
        h('label', { for: id, class: 'field-label', title: p.description || '' }, key,
          def === undefined && !req ? h('span', { class: 'opt-tag' }, 'optional') : ''),
        input,
        h('div', { class: 'field-help', title: p.description || '' }, hint), err);
    const f = { key, path, full, kind, def, schema: p, input, wrap, err, node };
    node.keys.set(key, f);
    this.fields.push(f);
    return wrap;
  }

  // {set, value, error}: the field's value as the spec needs it
  read(f) {
    const inp = f.input;
    switch (f.kind) {
      case 'enum': return { set: true, value: inp.value };
      case 'bool': return { set: true, value: inp.checked };
      case 'int':
      case 'num': {
        if (inp.validity && inp.validity.badInput) return { error: 'not a number' };
        const raw = inp.value.trim();
        if (raw === '') return { set: false };
        const n = Number(raw);
        return Number.isFinite(n) ? { set: true, value: n } : { error: 'not a number' };
      }
      case 'str':
        return inp.value === '' && f.def === undefined ? { set: false } : { set: true, value: inp.value };
      case 'list': {
        const raw = inp.value.trim();
        if (raw === '') return f.def === undefined ? { set: false } : { set: true, value: [] };
        const parts = raw.split(/[\s,;]+/).filter(Boolean);
        const nums = parts.map(Number);
        if (nums.some((n) => !Number.isFinite(n))) return { error: 'expected comma-separated numbers' };
        return { set: true, value: nums };
      }
      default: {
        const raw = inp.value.trim();
        if (raw === '') return { set: false };
        try { return { set: true, value: JSON.parse(raw) }; } catch (e) { return { error: 'invalid JSON: ' + e.message }; }
      }
    }
  }

  // values of one object's fields (defaults where unset), for conditions
  valuesOf(node) {
    const out = {};
    for (const [k, f] of node.keys) {
      const r = this.read(f);
      out[k] = r.set ? r.value : f.def;
    }
    return out;
  }

  applyVisibility() {
    for (const f of this.fields) f.hidden = this.switchedOff(f);
    for (const node of this.objects) {
      const rules = node.schema.allOf || [];
      if (!rules.length) continue;
      const vals = this.valuesOf(node);
      for (const rule of rules) {
        const r = evalCond(rule.if, vals);
        if (r == null) continue;
        const branch = r ? rule.then : rule.else;
        for (const [k, s] of Object.entries((branch && branch.properties) || {})) {
          const f = node.keys.get(k);
          if (f && s === false) f.hidden = true;
        }
      }
    }
    for (const f of this.fields) f.wrap.hidden = !!f.hidden;
  }

  changed() {
    this.applyVisibility();
    this.onChange();
  }

  // {spec, errors}: the visible fields that differ from their defaults
  collect() {
    const spec = {};
    const errors = [];
    for (const f of this.fields) {
      if (f.hidden) continue;
      const r = this.read(f);
      if (r.error) { errors.push([f.full, r.error]); continue; }
      if (!r.set || (f.def !== undefined && same(r.value, f.def))) continue;
      const parts = f.path.split('.');
      let o = spec;
      for (const p of parts.slice(0, -1)) o = o[p] || (o[p] = {});
      o[parts[parts.length - 1]] = r.value;
    }
    for (const node of this.objects) {
      if (!node.toggle || !node.toggle.checked) continue;
      let o = spec;
      for (const p of node.path.split('.')) o = o[p] || (o[p] = {});
    }
    return { spec, errors };
  }

  // Fills the inputs from a spec object (clone of a job).
  setValues(spec) {
    for (const node of this.objects) {
      if (!node.toggle) continue;
      let v = spec;
      for (const p of node.path.split('.')) v = v && typeof v === 'object' ? v[p] : undefined;
      node.toggle.checked = v !== undefined;
    }
    for (const f of this.fields) {
      let v = spec;
      for (const p of f.path.split('.')) v = v && typeof v === 'object' ? v[p] : undefined;
      if (v === undefined) continue;
      if (f.kind === 'bool') f.input.checked = !!v;
      else if (f.kind === 'list') f.input.value = Array.isArray(v) ? v.join(', ') : '';
      else if (f.kind === 'json') f.input.value = JSON.stringify(v);
      else f.input.value = String(v);
    }
    this.changed();
  }

  clearErrors() {
    for (const f of this.fields) { f.err.hidden = true; f.err.textContent = ''; f.wrap.classList.remove('invalid'); f.input.removeAttribute('aria-invalid'); }
  }

  // Shows msg at the field named by an error path ("train.lr",
  // "model.layers[1].kernel" goes to model.layers); false when none fits.
  showError(path, msg) {
    return showAt(this.fields, path, msg);
  }
}

function showAt(fields, path, msg) {
  if (!path) return false;
  let p = path;
  for (;;) {
    const f = fields.find((x) => x.full === p);
    if (f) {
      f.wrap.hidden = false;
      f.err.textContent = msg;
      f.err.hidden = false;
      f.wrap.classList.add('invalid');
      f.input.setAttribute('aria-invalid', 'true');
      if (f.wrap.closest('details')) f.wrap.closest('details').open = true;
      f.wrap.scrollIntoView({ block: 'center', behavior: 'smooth' });
      f.input.focus({ preventScroll: true });
      return true;
    }
    const cut = Math.max(p.lastIndexOf('['), p.lastIndexOf('.'));
    if (cut <= 0) return false;
    p = p.slice(0, cut);
  }
}

function preview() {
  const pre = h('pre', { class: 'code code-sm', id: 'request-preview' });
  return { pre, el: h('details', { class: 'preview' }, h('summary', null, 'Request body'), pre) };
}

function formShell(ctx, titleText, sub) {
  document.title = `${titleText} · dwf`;
  const body = h('div', { class: 'card form-card' }, h('p', { class: 'muted' }, 'Loading the job schema…'));
  ctx.el.append(h('div', { class: 'page-head' }, h('div', null, h('h1', null, titleText), h('p', { class: 'sub' }, sub))), body);
  return body;
}

function submitBar(label) {
  const btn = h('button', { type: 'submit', class: 'btn btn-primary', id: 'submit' }, label);
  const msg = h('div', { class: 'form-msg', role: 'status', id: 'form-msg' });
  const reset = h('button', { type: 'reset', class: 'btn btn-ghost' }, 'Reset to defaults');
  return { btn, msg, reset, el: h('div', { class: 'submit-bar' }, btn, reset, msg) };
}

// ---- new job -------------------------------------------------------------

export function newJobPage(ctx) {
  const body = formShell(ctx, 'New job', 'One training run. Every field starts at its default; only the fields you change are sent.');
  (async () => {
    let schema;
    try {
      schema = await loadSchema();
    } catch (e) {
      body.replaceChildren(errorBox('Cannot load the schema:', e.message));
      return;
    }
    if (!ctx.alive) return;
    const pv = preview();
    const update = () => {
      const { spec, errors } = sf.collect();
      pv.pre.textContent = errors.length ? errors.map(([p, m]) => `${p}: ${m}`).join('\n') : JSON.stringify(spec, null, 2);
      bar.btn.textContent = spec.search ? 'Start λ search' : 'Start job';
    };
    const sf = new SchemaForm(schema, { onChange: update });
    const bar = submitBar('Start job');
    const form = h('form', { novalidate: true, id: 'job-form', class: 'spec-form' }, sf.el, bar.el, pv.el);
    form.addEventListener('reset', () => setTimeout(() => { sf.clearErrors(); sf.changed(); bar.msg.textContent = ''; }, 0));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      sf.clearErrors();
      bar.msg.className = 'form-msg';
      bar.msg.textContent = '';
      const { spec, errors } = sf.collect();
      if (errors.length) {
        for (const [p, m] of errors) sf.showError(p, m);
        bar.msg.className = 'form-msg form-msg-error';
        bar.msg.textContent = 'Fix the marked fields.';
        return;
      }
      bar.btn.disabled = true;
      try {
        const r = await api('v1/jobs', { method: 'POST', body: spec });
        if (Array.isArray(r.jobs) || r.search) { // a λ search: dwfd answers with its sweep
          toast(`λ search #${r.id} started`);
          location.hash = `#/sweeps/${r.id}`;
        } else {
          toast(`Job #${r.id} created`);
          location.hash = `#/jobs/${r.id}`;
        }
      } catch (e) {
        const at = sf.showError(e.field, e.message);
        bar.msg.className = 'form-msg form-msg-error';
        bar.msg.textContent = at ? `The server rejected ${e.field}.` : `The server rejected the job: ${e.message}`;
      } finally {
        bar.btn.disabled = false;
      }
    });
    body.replaceChildren(form);
    const from = Number(ctx.params.get('from'));
    if (from > 0) {
      try {
        const j = await api(`v1/jobs/${from}`);
        if (ctx.alive && j.spec) {
          sf.setValues(j.spec);
          bar.msg.textContent = `Filled in from job #${from}.`;
        }
      } catch (e) {
        toast(`Cannot read job #${from}: ${e.message}`, 'error');
      }
    }
    update();
  })();
}

// ---- new sweep -----------------------------------------------------------

const GRID = [
  ['lambda', 'num', 'Penalty strengths λ (train.lambda), one job each.', '0.0001, 0.001, 0.01'],
  ['depth', 'int', 'Factorization depths D (model.depth).', ''],
  ['method', 'enum', 'Methods; none checked = the base spec’s method.', ''],
  ['seed', 'int', 'Seeds (repeat runs).', ''],
  ['target_cr', 'num', 'Target compression ratios of the baselines (prune.target_cr); DWF ignores it.', ''],
];

export function newSweepPage(ctx) {
  const body = formShell(ctx, 'New sweep', 'One job per combination of the grid values, or a search of λ for a target compression ratio, each run from the base spec.');
  (async () => {
    let schema;
    try {
      schema = await loadSchema();
    } catch (e) {
      body.replaceChildren(errorBox('Cannot load the schema:', e.message));
      return;
    }
    if (!ctx.alive) return;
    const gridFields = [];
    const nameIn = h('input', { type: 'text', id: 'sweep-name', name: 'name', value: 'sweep', maxlength: 100 });
    const nameErr = h('div', { class: 'field-error', role: 'alert', hidden: true });
    const nameWrap = h('div', { class: 'field', dataset: { path: 'name' } },
      h('label', { for: 'sweep-name', class: 'field-label' }, 'name'), nameIn,
      h('div', { class: 'field-help' }, 'Name of the sweep; each job is named after it and its grid values.'), nameErr);
    gridFields.push({ full: 'name', input: nameIn, wrap: nameWrap, err: nameErr });
    const gridGrid = h('div', { class: 'field-grid' }, nameWrap);
    const methods = (schema.properties && schema.properties.method && schema.properties.method.enum) || ['dwf'];
    for (const [key, kind, help, def] of GRID) {
      const full = `grid.${key}`;
      const err = h('div', { class: 'field-error', role: 'alert', hidden: true });
      let input;
      if (kind === 'enum') {
        input = h('div', { class: 'checks', id: 'grid-method', tabindex: -1 },
          methods.map((m) => h('label', { class: 'check' }, h('input', { type: 'checkbox', value: m, name: full }), h('span', null, m))));
      } else {
        input = h('input', { type: 'text', name: full, id: `grid-${key}`, value: def, placeholder: kind === 'int' ? 'e.g. 2, 3, 4' : 'e.g. 10, 30, 100', spellcheck: 'false' });
      }
      const wrap = h('div', { class: 'field' + (kind === 'enum' ? ' field-wide' : ''), dataset: { path: full } },
        h('label', { for: kind === 'enum' ? null : `grid-${key}`, class: 'field-label' }, key, h('span', { class: 'opt-tag' }, 'list')),
        input, h('div', { class: 'field-help' }, help, kind === 'enum' ? '' : ' Comma-separated; empty = the base value.'), err);
      gridFields.push({ key, kind, full, input, wrap, err });
      gridGrid.append(wrap);
    }
    const count = h('div', { class: 'sweep-count', id: 'sweep-count' });
    const pv = preview();
    // λ search: the spec's `search` object, shown in "search" mode only
    const searchSchema = schema.properties && schema.properties.search;
    const hasSearch = !!(searchSchema && searchSchema.properties);
    const sf = new SchemaForm(schema, { prefix: 'base.', exclude: ['name', 'search'], onChange: () => update() });
    const searchForm = hasSearch ? new SchemaForm({ properties: { search: searchSchema } }, { prefix: 'base.', onChange: () => update() }) : null;
    let mode = hasSearch && ctx.params.get('mode') === 'search' ? 'search' : 'grid';
    const gridHelp = h('p', { class: 'section-help' });
    const modeSwitch = h('div', { class: 'segmented mode-switch', role: 'tablist', 'aria-label': 'kind of sweep', hidden: !hasSearch },
      [['grid', 'Grid of runs'], ['search', 'λ search (target CR)']].map(([m, label]) => h('button', {
        type: 'button', class: 'seg', role: 'tab', dataset: { mode: m }, onclick: () => setMode(m),
      }, label)));

    function setMode(m) {
      mode = m;
      for (const b of modeSwitch.querySelectorAll('button')) {
        b.classList.toggle('active', b.dataset.mode === m);
        b.setAttribute('aria-selected', b.dataset.mode === m ? 'true' : 'false');
      }
      for (const f of gridFields) if (f.key) f.wrap.hidden = m === 'search';
      if (searchForm) searchForm.el.hidden = m !== 'search';
      gridHelp.textContent = m === 'search'
        ? 'dwfd trains DWF runs one after another, choosing each λ from the runs before, until the selected model reaches the target CR within the tolerance or the budget is used.'
        : 'The values to combine. Each job takes the base spec below with one value of every list.';
      bar.btn.textContent = m === 'search' ? 'Start λ search' : 'Start sweep';
      form.dataset.mode = m;
      if (ctx.alive) update();
    }

    function readGrid() {
      const grid = {};
      const errors = [];
      for (const f of gridFields) {
        if (!f.key) continue;
        if (f.kind === 'enum') {
          const v = [...f.input.querySelectorAll('input:checked')].map((c) => c.value);
          if (v.length) grid[f.key] = v;
          continue;
        }
        const raw = f.input.value.trim();
        if (!raw) continue;
        const nums = raw.split(/[\s,;]+/).filter(Boolean).map(Number);
        if (nums.some((n) => !Number.isFinite(n))) errors.push([f.full, 'expected comma-separated numbers']);
        else grid[f.key] = nums;
      }
      return { grid, errors };
    }

    function build() {
      const { spec, errors } = sf.collect();
      if (mode === 'search') {
        const se = searchForm.collect();
        const search = se.spec.search || {};
        const errs = [...errors, ...se.errors];
        if (search.target_cr === undefined && !se.errors.some(([p]) => p === 'base.search.target_cr'))
          errs.push(['base.search.target_cr', 'the compression ratio to reach is required']);
        return { body: { name: nameIn.value, base: { ...spec, search } }, errors: errs };
      }
      const g = readGrid();
      const out = { name: nameIn.value, base: spec, grid: g.grid };
      return { body: out, errors: [...errors, ...g.errors] };
    }

    function jobsCount(grid, base) {
      const ms = grid.method || [base.method || 'dwf'];
      const n = (k) => (grid[k] ? grid[k].length : 1);
      let total = 0;
      for (const m of ms) total += n('lambda') * n('depth') * n('seed') * (m === 'dwf' ? 1 : n('target_cr'));
      return total;
    }

    function update() {
      const { body: b, errors } = build();
      pv.pre.textContent = errors.length ? errors.map(([p, m]) => `${p}: ${m}`).join('\n') : JSON.stringify(b, null, 2);
      if (mode === 'search') {
        const budget = b.base.search.budget ?? (searchSchema.properties.budget || {}).default;
        count.textContent = errors.length ? '' : `up to ${budget ?? '?'} runs, one after another`;
        return;
      }
      const n = jobsCount(b.grid, b.base);
      count.textContent = errors.length ? '' : `${n} job${n === 1 ? '' : 's'} will be queued`;
    }

    const bar = submitBar('Start sweep');
    bar.el.append(count);
    const form = h('form', { novalidate: true, id: 'sweep-form', class: 'spec-form' },
      modeSwitch,
      h('fieldset', { class: 'section', dataset: { section: 'grid' } }, h('legend', null, 'sweep'),
        gridHelp, gridGrid),
      searchForm ? searchForm.el : '',
      h('h2', { class: 'form-sub' }, 'Base spec'), sf.el, bar.el, pv.el);
    form.addEventListener('input', update);
    form.addEventListener('change', update);
    form.addEventListener('reset', () => setTimeout(() => {
      sf.clearErrors();
      if (searchForm) { searchForm.clearErrors(); searchForm.changed(); }
      clear(); sf.changed(); update();
    }, 0));
    const clear = () => {
      for (const f of gridFields) { f.err.hidden = true; f.wrap.classList.remove('invalid'); }
      bar.msg.textContent = '';
      bar.msg.className = 'form-msg';
    };
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      sf.clearErrors();
      if (searchForm) searchForm.clearErrors();
      clear();
      const { body: b, errors } = build();
      const show = (path, msg) => (path && path.startsWith('base.search') && searchForm ? searchForm.showError(path, msg)
        : path && path.startsWith('base.') ? sf.showError(path, msg) : showAt(gridFields, path, msg));
      if (errors.length) {
        for (const [p, m] of errors) show(p, m);
        bar.msg.className = 'form-msg form-msg-error';
        bar.msg.textContent = 'Fix the marked fields.';
        return;
      }
      bar.btn.disabled = true;
      try {
        const sw = await api('v1/sweeps', { method: 'POST', body: b });
        toast(mode === 'search' ? `λ search #${sw.id} started` : `Sweep #${sw.id} created with ${(sw.jobs || []).length} jobs`);
        location.hash = `#/sweeps/${sw.id}`;
      } catch (e) {
        const at = show(e.field, e.message);
        bar.msg.className = 'form-msg form-msg-error';
        bar.msg.textContent = at ? `The server rejected ${e.field}.` : `The server rejected the sweep: ${e.message}`;
      } finally {
        bar.btn.disabled = false;
      }
    });
    body.replaceChildren(form);
    setMode(mode);
  })();
}
