'use strict';
/*
 * Warren's management UI: one page served from the broker binary, talking only to /api
 * (RabbitMQ's management API shapes). No framework, no build step, nothing fetched from
 * elsewhere.
 *
 * Two rules shape the code:
 *  - The DOM is built with createElement and textContent only (the `h` helper), never from
 *    HTML strings: queue names, client properties and message payloads come from whoever can
 *    reach the broker.
 *  - The UI decides nothing about access. Every page and button is there for every user; the
 *    API refuses what a user may not do, and its `reason` is shown as it comes.
 *
 * Sections: 1 DOM and formatting helpers · 2 API and session · 3 toasts and dialogs ·
 * 4 router and page lifecycle · 5 charts · 6 tables and server-paged lists · 7 forms ·
 * 8 shared page parts · 9 pages · 10 start-up.
 */

// ---------------------------------------------------------------------------------------------
// 1. DOM and formatting helpers

const SVG_NS = 'http://www.w3.org/2000/svg';

/**
 * Creates an element. `props`: `class`, `text`, `dataset`, `on<event>` handlers, `value` /
 * `checked` / `selected` (set as properties), anything else as an attribute (never parsed as
 * markup). Children: nodes, strings and numbers (as text nodes), arrays; null/false skipped.
 */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value == null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'value' || key === 'checked' || key === 'selected') el[key] = value;
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  return append(el, children);
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/**
 * Replaces an element's children (same rules as `h`), unless they would come out the same:
 * pages refill their parts on every 5-s poll, and one that changed nothing must leave the
 * DOM alone, or the user's text selection, hover and a half-done click would be lost.
 */
function fill(el, ...children) {
  const next = append(el.cloneNode(false), children);
  if (!next.isEqualNode(el)) el.replaceChildren(...next.childNodes);
  return el;
}

/** An SVG element (charts). */
function svg(tag, attrs) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  return el;
}

/** A value at a dotted path: at(queue, 'message_stats.publish_details.rate'). */
function at(obj, path) {
  return path.split('.').reduce((o, key) => (o == null ? undefined : o[key]), obj);
}

const numbers = new Intl.NumberFormat('en-US');
const decimals = new Intl.NumberFormat('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });

const fmt = {
  int: n => (n == null ? '' : numbers.format(n)),
  rate: r => (r == null ? '' : (Math.abs(r) >= 100 ? numbers.format(Math.round(r)) : decimals.format(r)) + '/s'),
  bytes(n) {
    if (n == null) return '';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? numbers.format(n) : decimals.format(n)) + ' ' + units[i];
  },
  bytesRate: n => (n == null ? '' : fmt.bytes(n) + '/s'),
  duration(ms) {
    if (ms == null) return '';
    const s = Math.floor(ms / 1000), d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    return d ? `${d}d ${hr}h` : hr ? `${hr}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
  },
  date: ms => (ms == null ? '' : new Date(ms).toLocaleString()),
  /** Any JSON value as one line of text. */
  value: v => (v == null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v)),
};

/** The address of a page: href('queues', vhost, name) → '#/queues/%2F/name'. */
function href(...segments) {
  return '#/' + segments.map(encodeURIComponent).join('/');
}

function link(text, ...segments) {
  return h('a', { href: href(...segments) }, text);
}

/** The default exchange has no name; show and address it the way RabbitMQ does. */
const exchangeLabel = name => (name === '' ? '(AMQP default)' : name);
const exchangeSegment = name => (name === '' ? 'amq.default' : name);

function badge(text, title, kind) {
  return h('span', { class: 'badge' + (kind ? ' ' + kind : ''), title }, text);
}

const muted = text => h('span', { class: 'muted' }, text);

/** A key/value object (arguments, policy definitions, properties) as a small table. */
function kvTable(obj, empty = 'none') {
  const entries = Object.entries(obj || {});
  if (!entries.length) return muted(empty);
  return h('table', { class: 'kv-table' }, h('tbody', null, entries.map(([k, v]) =>
    h('tr', null, h('th', { scope: 'row' }, k), h('td', null, fmt.value(v))))));
}

/** Label/value pairs (a details panel). Values may be nodes. */
function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([label, value]) =>
    h('div', null, h('dt', null, label), h('dd', null, value == null || value === '' ? muted('—') : value))));
}

function section(title, ...children) {
  return h('section', { class: 'panel' }, h('h2', null, title), children);
}

/** A collapsible panel (forms that are not needed on every visit). */
function collapsible(title, open, ...children) {
  return h('details', { class: 'panel', open }, h('summary', null, title), h('div', { class: 'panel-body' }, children));
}

// ---------------------------------------------------------------------------------------------
// 2. API and session

/**
 * Credentials live in sessionStorage: they last as long as the tab and are gone when it
 * closes, and the API sees them as ordinary HTTP Basic on every request.
 */
const session = {
  get auth() { return sessionStorage.getItem('warren.auth'); },
  get user() {
    try { return JSON.parse(sessionStorage.getItem('warren.user')); } catch { return null; }
  },
  /** The vhost selector: '' means all virtual hosts. */
  get vhost() { return sessionStorage.getItem('warren.vhost') || ''; },
  set vhost(v) {
    if (v) sessionStorage.setItem('warren.vhost', v); else sessionStorage.removeItem('warren.vhost');
  },
  start(auth, user) {
    sessionStorage.setItem('warren.auth', auth);
    sessionStorage.setItem('warren.user', JSON.stringify(user));
  },
  end() {
    sessionStorage.removeItem('warren.auth');
    sessionStorage.removeItem('warren.user');
  },
};

class ApiError extends Error {
  constructor(status, error, reason) {
    super(reason);
    this.status = status;
    this.error = error;
    this.reason = reason;
  }
}

/** Basic credentials; UTF-8 first, as btoa only takes Latin-1. */
function basic(user, password) {
  let binary = '';
  for (const byte of new TextEncoder().encode(`${user}:${password}`)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/**
 * A path with percent-encoded values: path`/api/queues/${vhost}/${name}` turns the default
 * vhost into %2F and keeps a queue named "a/b" one segment.
 */
function path(strings, ...values) {
  return strings.reduce((out, s, i) => out + s + (i < values.length ? encodeURIComponent(values[i]) : ''), '');
}

/** A query string from the defined, non-empty values. */
function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value != null && value !== '') q.set(key, String(value));
  }
  const text = q.toString();
  return text ? '?' + text : '';
}

/**
 * The one way this UI talks to the broker. Returns the parsed JSON (null for empty bodies);
 * throws ApiError with the API's `reason` (or the status line when the body is empty, as for
 * 405 and 415). A string body is sent as is (definitions upload), anything else as JSON.
 */
async function api(method, url, body, options = {}) {
  const headers = { accept: 'application/json', ...options.headers };
  const auth = options.auth || session.auth;
  if (auth) headers.authorization = 'Basic ' + auth;
  const init = {
    method,
    headers,
    cache: 'no-store',
    // 'omit': the browser adds no credentials of its own and does not pop up its login
    // dialog on the API's `401 WWW-Authenticate: Basic`; the 401 reaches this code instead.
    credentials: 'omit',
  };
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, 'network', `The request did not complete: ${e.message}`);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (res.ok) return data;
  let reason;
  if (data && typeof data === 'object' && data.reason != null) {
    reason = typeof data.reason === 'string' ? data.reason : JSON.stringify(data.reason);
  } else if (typeof data === 'string' && data.trim()) {
    reason = data.trim();
  } else {
    reason = `${res.status} ${res.statusText}`.trim();
  }
  const error = new ApiError(res.status, data && data.error, reason);
  // The session's credentials stopped working (password changed, user deleted, management
  // tag removed): back to the login form, with the API's words. Other 401s are refusals of
  // one action and stay on the page.
  const loginFailed = res.status === 401 &&
    (data == null || data.error === 'not_authorized' || reason === 'Not management user');
  if (loginFailed && !options.auth && session.auth) {
    error.sessionEnded = true;
    logout(reason);
  }
  throw error;
}

/** Vhost names for the selector and the forms; refreshed at login and when vhosts change. */
let vhostNames = [];

async function refreshVhosts() {
  try {
    const list = await api('GET', '/api/vhosts?columns=name');
    vhostNames = list.map(v => v.name).sort();
  } catch (e) {
    vhostNames = [];
    showError(e);
  }
  fillVhostSelect();
}

/** The vhost new objects go to: the selected one, else the default. */
const defaultVhost = () => session.vhost || (vhostNames.includes('/') ? '/' : vhostNames[0] || '/');

// ---------------------------------------------------------------------------------------------
// 3. Toasts and dialogs

/** A message in the corner: errors stay 15 s (or until dismissed), others 5 s. */
function toast(message, kind = 'error') {
  const box = document.getElementById('toasts');
  for (const old of [...box.children]) if (old.dataset.message === message) old.remove();
  const item = h('div', { class: 'toast ' + kind, role: kind === 'error' ? 'alert' : 'status', dataset: { message } },
    h('span', { class: 'toast-text' }, message),
    h('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss', onclick: () => item.remove() }, '×'));
  box.append(item);
  setTimeout(() => item.remove(), kind === 'error' ? 15000 : 5000);
}

function showError(e) {
  if (e && e.sessionEnded) return; // the login form already says why
  toast(e instanceof ApiError ? e.reason : String((e && e.message) || e), 'error');
  if (!(e instanceof ApiError)) console.error(e);
}

/**
 * A modal form; resolves with its values, or null when cancelled. With no fields it is a
 * confirmation.
 */
function ask({ title, text, fields = [], ok = 'OK', danger = false }) {
  return new Promise(resolve => {
    let answer = null;
    const dialog = h('dialog', { class: 'dialog' });
    const f = form({
      id: 'dialog', fields, submit: ok, danger, reset: false,
      onSubmit: values => { answer = values; dialog.close(); },
    });
    f.querySelector('.form-actions').append(
      h('button', { type: 'button', class: 'btn', onclick: () => dialog.close() }, 'Cancel'));
    append(dialog, [h('h2', null, title), text && h('p', null, text), f]);
    dialog.addEventListener('close', () => { dialog.remove(); resolve(answer); });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** Asks, then runs `action`; reports its error or says `done`. */
async function confirmThen(question, okLabel, action, done) {
  if (!(await ask({ title: question, ok: okLabel, danger: true }))) return false;
  try {
    await action();
    if (done) toast(done, 'ok');
    return true;
  } catch (e) {
    showError(e);
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// 4. Router and page lifecycle

const ROUTES = [
  ['', overviewPage, 'overview'],
  ['connections', connectionsPage, 'connections'],
  ['connections/:name', connectionPage, 'connections'],
  ['channels', channelsPage, 'channels'],
  ['channels/:name', channelPage, 'channels'],
  ['exchanges', exchangesPage, 'exchanges'],
  ['exchanges/:vhost/:name', exchangePage, 'exchanges'],
  ['queues', queuesPage, 'queues'],
  ['queues/:vhost/:name', queuePage, 'queues'],
  ['users', usersPage, 'users'],
  ['users/:name', userPage, 'users'],
  ['vhosts', vhostsPage, 'vhosts'],
  ['vhosts/:name', vhostPage, 'vhosts'],
  ['permissions', permissionsPage, 'permissions'],
  ['policies', policiesPage, 'policies'],
  ['limits', limitsPage, 'limits'],
  ['definitions', definitionsPage, 'definitions'],
];

/** The route for a hash: '#/queues/%2F/q1' → queuePage with {vhost: '/', name: 'q1'}. */
function resolve(hash) {
  let segments;
  try {
    segments = hash.replace(/^#\/?/, '').split('?')[0].split('/').filter(s => s !== '').map(decodeURIComponent);
  } catch {
    return null; // a malformed %-escape
  }
  for (const [pattern, handler, nav] of ROUTES) {
    const parts = pattern ? pattern.split('/') : [];
    if (parts.length !== segments.length) continue;
    const params = {};
    if (parts.every((part, i) => (part.startsWith(':') ? ((params[part.slice(1)] = segments[i]), true) : part === segments[i]))) {
      return { handler, nav, params };
    }
  }
  return null;
}

/**
 * What is on screen. Pages poll through `every`, which stops when the page is left or the tab
 * is hidden: only the page on screen costs the broker anything.
 */
class Page {
  constructor(root) {
    this.root = root;
    this.alive = true;
    this.timers = [];
    this.ticks = [];
    this.errors = new Map(); // poller → its last error, while it keeps failing
    this.banner = h('div', { class: 'banner error', role: 'alert', hidden: true });
  }

  header(title, subtitle, ...actions) {
    document.title = `${title} · Warren`;
    this.root.append(
      h('div', { class: 'page-head' },
        h('div', { class: 'page-title' }, h('h1', null, title), subtitle && h('p', { class: 'subtitle' }, subtitle)),
        h('div', { class: 'page-actions' }, actions)),
      this.banner);
  }

  add(...children) { append(this.root, children); }

  /**
   * Runs `fn` now and every `ms`. Returns a function that runs it again at once (after an
   * action); a run asked for while one is under way happens right after it. Errors go to the
   * page's banner, which shows what is failing now, rather than to a toast every 5 s.
   */
  every(ms, fn) {
    let busy = false;
    let again = false;
    const tick = async () => {
      if (!this.alive || document.hidden) return;
      if (busy) { again = true; return; }
      busy = true;
      try {
        await fn();
        this.errors.delete(tick);
      } catch (e) {
        if (!e || !e.sessionEnded) this.errors.set(tick, e);
        if (!(e instanceof ApiError)) console.error(e);
      } finally {
        busy = false;
      }
      if (this.alive) this.showErrors();
      if (again) { again = false; tick(); }
    };
    this.ticks.push(tick);
    this.timers.push(setInterval(tick, ms));
    tick();
    return tick;
  }

  /** A failure outside the pollers (building the page). */
  fail(e) {
    if (e && e.sessionEnded) return;
    this.errors.set(this, e);
    this.showErrors();
    if (!(e instanceof ApiError)) console.error(e);
  }

  showErrors() {
    const reasons = new Set([...this.errors.values()].map(e => (e instanceof ApiError ? e.reason : String((e && e.message) || e))));
    this.banner.textContent = [...reasons].join('\n');
    this.banner.hidden = !reasons.size;
  }

  refresh() { for (const tick of this.ticks) tick(); }

  leave() {
    this.alive = false;
    for (const timer of this.timers) clearInterval(timer);
  }
}

let current = null;

function route() {
  if (current) current.leave();
  current = null;
  const root = document.getElementById('main');
  root.replaceChildren();
  closeNav();
  if (!session.auth) {
    showLogin();
    return;
  }
  if (/^#\/?login/.test(location.hash)) {
    location.replace('#/');
    return;
  }
  showChrome(true);
  const found = resolve(location.hash);
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', !!found && a.dataset.nav === found.nav);
  }
  const page = (current = new Page(root));
  if (!found) {
    page.header('Not found');
    page.add(h('p', null, 'There is no page at this address. ', link('Overview')));
    return;
  }
  Promise.resolve()
    .then(() => found.handler(page, found.params))
    .catch(e => page.fail(e));
}

// ---------------------------------------------------------------------------------------------
// 5. Charts

const SAMPLE_MS = 5000;
const HISTORY = 60; // points kept per chart: five minutes at one sample every 5 s

/**
 * Samples per chart key, kept for the whole session so that a page visited again shows what
 * was seen before (with a gap for the time away). Rates come from the API already per second;
 * the UI only remembers them.
 */
const histories = new Map();

function record(key, values) {
  let points = histories.get(key);
  if (!points) histories.set(key, (points = []));
  points.push({ t: Date.now(), v: values });
  if (points.length > HISTORY) points.splice(0, points.length - HISTORY);
  return points;
}

/**
 * The top of the y axis: the smallest 1, 2 or 5 × 10^n at or above `x`, so the axis reads in
 * round numbers; for counts, 2, 4 or 10 × 10^n, so that the middle line is a whole number too.
 */
function niceCeil(x, integer) {
  if (!(x > 0)) return integer ? 2 : 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of integer ? [2, 4, 10] : [1, 2, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

/**
 * A line chart drawn in SVG. `series`: [{key, label}]; `format` formats values (axis, legend);
 * `integer` for counts. Returns {el, draw(points)}; draw with the points from `record`.
 */
function chart(title, series, format, integer = false) {
  const W = 600, H = 160;
  const plot = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', class: 'chart-plot', role: 'img', 'aria-label': title });
  for (const y of [0, H / 2, H]) {
    plot.append(svg('line', { x1: 0, x2: W, y1: y, y2: y, class: 'grid', 'vector-effect': 'non-scaling-stroke' }));
  }
  const lines = series.map((s, i) => svg('path', { class: `line s${i}`, 'vector-effect': 'non-scaling-stroke', fill: 'none' }));
  // Drawn last-first, so that the first series (ready, publish) stays visible where lines meet.
  for (const line of [...lines].reverse()) plot.append(line);
  const axis = [h('span'), h('span'), h('span')];
  const since = h('span');
  const values = series.map(() => h('span', { class: 'legend-value' }));
  const legend = h('ul', { class: 'legend' }, series.map((s, i) =>
    h('li', null, h('span', { class: `swatch s${i}` }), h('span', { class: 'legend-label' }, s.label), values[i])));
  const el = h('figure', { class: 'chart', dataset: { chart: title } },
    h('figcaption', null, title),
    h('div', { class: 'chart-area' }, h('div', { class: 'chart-axis' }, axis), plot),
    h('div', { class: 'chart-time' }, since, h('span', null, 'now')),
    legend);

  function draw(points) {
    const end = Date.now();
    const shown = points.filter(p => p.t >= end - HISTORY * SAMPLE_MS);
    // The x axis spans the samples there are (at least a minute, at most the history), so a
    // page opened a minute ago already draws across the whole width.
    const start = Math.min(end - 60000, shown.length ? shown[0].t : end);
    const span = Math.round((end - start) / 1000);
    since.textContent = span < 120 ? `−${span} s` : `−${Math.round(span / 60)} min`;
    let max = 0;
    for (const p of shown) for (const s of series) max = Math.max(max, p.v[s.key] || 0);
    const top = niceCeil(max, integer);
    axis[0].textContent = format(top);
    axis[1].textContent = format(top / 2);
    axis[2].textContent = format(0);
    series.forEach((s, i) => {
      let d = '';
      let previous = null;
      for (const p of shown) {
        const x = ((p.t - start) / (end - start)) * W;
        const y = H - ((p.v[s.key] || 0) / top) * H;
        // Break the line where samples are missing (the page was not on screen).
        const gap = !previous || p.t - previous.t > 2.5 * SAMPLE_MS;
        d += `${gap ? 'M' : 'L'}${x.toFixed(1)},${y.toFixed(1)}`;
        previous = p;
      }
      // A lone point still shows: a zero-length segment drawn with a round cap.
      if (shown.length === 1) d += 'h0.1';
      lines[i].setAttribute('d', d);
      const last = shown.length ? shown[shown.length - 1].v[s.key] : null;
      values[i].textContent = last == null ? '' : format(last);
    });
  }

  return { el, draw };
}

/** The rates a message_stats object carries, by chart series key. */
function rates(stats, keys) {
  const out = {};
  for (const key of keys) out[key] = at(stats || {}, `${key}_details.rate`) || 0;
  return out;
}

// ---------------------------------------------------------------------------------------------
// 6. Tables and server-paged lists

/**
 * A table. columns: [{label, value: row => node|string, num, sort: the API's sort key}].
 * opts: {sort: {key, reverse}, onSort(key), empty, rowKey: row => string (data-key)}.
 * Wrapped so that wide tables scroll sideways on a phone instead of widening the page.
 */
function table(columns, rows, opts = {}) {
  const head = h('tr', null, columns.map(c => {
    const th = h('th', { scope: 'col', class: c.num ? 'num' : null });
    if (c.sort && opts.onSort) {
      const active = opts.sort && opts.sort.key === c.sort;
      th.setAttribute('aria-sort', active ? (opts.sort.reverse ? 'descending' : 'ascending') : 'none');
      th.append(h('button', { type: 'button', class: 'sort' + (active ? ' active' : ''), onclick: () => opts.onSort(c.sort) },
        c.label, active ? (opts.sort.reverse ? ' ↓' : ' ↑') : ''));
    } else {
      th.textContent = c.label;
    }
    return th;
  }));
  const body = h('tbody');
  if (!rows.length) {
    body.append(h('tr', { class: 'empty' }, h('td', { colspan: columns.length }, opts.empty || 'Nothing here.')));
  }
  for (const row of rows) {
    body.append(h('tr', { dataset: opts.rowKey ? { key: opts.rowKey(row) } : null },
      columns.map(c => h('td', { class: c.num ? 'num' : c.class }, c.value(row)))));
  }
  return h('div', { class: 'table-wrap' }, h('table', { class: 'data', dataset: { table: opts.name } }, h('thead', null, head), body));
}

/** Where lists keep their page, filter and sort between visits. */
const listStates = new Map();

/**
 * A list that sorts, filters and pages on the server: one page is fetched and one page of
 * rows is in the DOM, whatever the total (the queue list stays quick at 10,000 queues).
 * spec: {key, noun, url() (reads the vhost selector), columns, fields (the `columns=`
 * projection: only what the table shows), rowKey, sort (default key)}.
 * Endpoints that answer a plain array (they do not page) are paged here instead.
 */
function pagedList(page, spec) {
  if (!listStates.has(spec.key)) {
    listStates.set(spec.key, { page: 1, page_size: 100, name: '', use_regex: false, sort: spec.sort || '', sort_reverse: false });
  }
  const state = listStates.get(spec.key);

  const filter = h('input', { type: 'search', name: 'filter', value: state.name, placeholder: `Filter ${spec.noun} by name`, 'aria-label': 'Filter by name' });
  const regex = h('input', { type: 'checkbox', name: 'use_regex', checked: state.use_regex });
  const size = h('select', { name: 'page_size', 'aria-label': 'Rows per page' },
    [20, 50, 100, 500].map(n => h('option', { value: n, selected: n === state.page_size }, `${n} per page`)));
  const summary = h('span', { class: 'list-summary', 'aria-live': 'polite' });
  const pageInput = h('input', { type: 'number', name: 'page', min: 1, value: state.page, class: 'page-input', 'aria-label': 'Page' });
  const pageCount = h('span', { class: 'page-count' });
  const prev = h('button', { type: 'button', class: 'btn small', dataset: { page: 'prev' } }, '‹ Previous');
  const next = h('button', { type: 'button', class: 'btn small', dataset: { page: 'next' } }, 'Next ›');
  const rows = h('div', { class: 'list-rows' });
  const el = h('div', { class: 'paged-list', dataset: { list: spec.key } },
    h('div', { class: 'list-tools' },
      filter,
      h('label', { class: 'check' }, regex, 'Regex'),
      size,
      summary),
    rows,
    h('div', { class: 'pager' }, prev, h('label', { class: 'page-of' }, 'Page ', pageInput, ' ', pageCount), next));

  let timer;
  filter.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => { state.name = filter.value; state.page = 1; reload(); }, 250);
  });
  regex.addEventListener('change', () => { state.use_regex = regex.checked; state.page = 1; reload(); });
  size.addEventListener('change', () => { state.page_size = Number(size.value); state.page = 1; reload(); });
  prev.addEventListener('click', () => { state.page = Math.max(1, state.page - 1); reload(); });
  next.addEventListener('click', () => { state.page += 1; reload(); });
  pageInput.addEventListener('change', () => { state.page = Math.max(1, Math.floor(Number(pageInput.value)) || 1); reload(); });

  const onSort = key => {
    state.sort_reverse = state.sort === key ? !state.sort_reverse : false;
    state.sort = key;
    reload();
  };

  let loaded = 0; // answers older than the newest shown are dropped
  let marked = false;
  async function load() {
    const asked = Date.now();
    let data;
    try {
      data = await api('GET', spec.url() + query({
        page: state.page, page_size: state.page_size, name: state.name,
        use_regex: String(state.use_regex), sort: state.sort, sort_reverse: String(state.sort_reverse),
        pagination: 'true', columns: spec.fields,
      }));
    } catch (e) {
      // The page is gone (rows deleted, filter narrowed): show the first one.
      if (e.error === 'page_out_of_range' && state.page > 1) {
        state.page = 1;
        return load();
      }
      throw e;
    }
    if (asked < loaded) return;
    loaded = asked;
    if (Array.isArray(data)) data = pageHere(data, state);
    const first = data.item_count ? (data.page - 1) * data.page_size + 1 : 0;
    summary.textContent = `${fmt.int(first)}–${fmt.int(first ? first + data.item_count - 1 : 0)} of ${fmt.int(data.filtered_count)} ${spec.noun}` +
      (data.filtered_count !== data.total_count ? ` (filtered from ${fmt.int(data.total_count)})` : '');
    state.page = data.page;
    pageInput.value = data.page;
    pageCount.textContent = `of ${fmt.int(Math.max(1, data.page_count))}`;
    prev.disabled = data.page <= 1;
    next.disabled = data.page >= data.page_count;
    fill(rows, table(spec.columns, data.items, {
      name: spec.key, sort: { key: state.sort, reverse: state.sort_reverse }, onSort, rowKey: spec.rowKey, empty: `No ${spec.noun}.`,
    }));
    // When the first rows of this visit were on screen, for the browser tests' timing (and
    // anyone profiling in the developer tools).
    if (!marked) { performance.mark(`warren:list:${spec.key}`); marked = true; }
  }

  const reload = page.every(SAMPLE_MS, load);
  return { el, reload };
}

/** The pagination envelope, made here for endpoints that answer a whole array. */
function pageHere(items, state) {
  let match = () => true;
  if (state.name) {
    if (state.use_regex) {
      let re;
      try { re = new RegExp(state.name); } catch (e) { throw new ApiError(400, 'bad_request', e.message); }
      match = item => re.test(item.name);
    } else {
      const needle = state.name.toLowerCase();
      match = item => String(item.name).toLowerCase().includes(needle);
    }
  }
  const filtered = items.filter(match);
  if (state.sort) {
    filtered.sort((a, b) => {
      const x = at(a, state.sort), y = at(b, state.sort);
      const c = typeof x === 'number' && typeof y === 'number' ? x - y : String(x ?? '').localeCompare(String(y ?? ''));
      return state.sort_reverse ? -c : c;
    });
  }
  const pageCount = Math.ceil(filtered.length / state.page_size);
  const number = Math.min(Math.max(1, state.page), Math.max(1, pageCount));
  const slice = filtered.slice((number - 1) * state.page_size, number * state.page_size);
  return {
    items: slice, item_count: slice.length, filtered_count: filtered.length, total_count: items.length,
    page: number, page_count: pageCount, page_size: state.page_size,
  };
}

/** A whole (short) list refreshed with the page: policies, permissions, limits. */
function liveTable(page, load, columns, opts) {
  const box = h('div', { class: 'live-table' });
  const reload = page.every(SAMPLE_MS, async () => {
    const rows = await load();
    fill(box, table(columns, rows, opts));
  });
  return { el: box, reload };
}

/** The URL of a list, scoped to the selected vhost when there is one. */
function scoped(all, inVhost) {
  const vhost = session.vhost;
  return () => (vhost ? inVhost(vhost) : all);
}

// ---------------------------------------------------------------------------------------------
// 7. Forms

/** Argument and policy keys with the type their value takes, offered as suggestions. */
const QUEUE_ARGUMENTS = {
  'x-max-length': 'number', 'x-max-length-bytes': 'number', 'x-overflow': 'string',
  'x-message-ttl': 'number', 'x-expires': 'number', 'x-dead-letter-exchange': 'string',
  'x-dead-letter-routing-key': 'string', 'x-dead-letter-strategy': 'string', 'x-max-priority': 'number',
  'x-single-active-consumer': 'boolean', 'x-queue-mode': 'string', 'x-queue-master-locator': 'string',
  'x-queue-leader-locator': 'string', 'x-delivery-limit': 'number', 'x-quorum-initial-group-size': 'number',
  'x-max-age': 'string', 'x-stream-max-segment-size-bytes': 'number', 'x-initial-cluster-size': 'number',
};
const EXCHANGE_ARGUMENTS = { 'alternate-exchange': 'string', 'x-delayed-type': 'string' };
const POLICY_KEYS = {
  'max-length': 'number', 'max-length-bytes': 'number', overflow: 'string', 'message-ttl': 'number',
  expires: 'number', 'dead-letter-exchange': 'string', 'dead-letter-routing-key': 'string',
  'dead-letter-strategy': 'string', 'delivery-limit': 'number', 'max-in-memory-length': 'number',
  'max-in-memory-bytes': 'number', 'consumer-timeout': 'number', 'queue-mode': 'string',
  'queue-master-locator': 'string', 'queue-leader-locator': 'string', 'alternate-exchange': 'string',
  'max-age': 'string', 'stream-max-segment-size-bytes': 'number', 'ha-mode': 'string', 'ha-params': 'number',
  'ha-sync-mode': 'string',
};
const MESSAGE_PROPERTIES = {
  content_type: 'string', content_encoding: 'string', priority: 'number', correlation_id: 'string',
  reply_to: 'string', expiration: 'string', message_id: 'string', timestamp: 'number', type: 'string',
  user_id: 'string', app_id: 'string',
};

let uid = 0;
const nextId = prefix => `${prefix}-${++uid}`;

/**
 * Key/value rows with a type per value, as RabbitMQ's forms have for arguments, headers and
 * policy definitions. A new empty row appears when the last one is used.
 * Returns {el, get() → object (throws on a bad number or boolean), set(object), reset()}.
 */
function kvEditor(name, known = {}, typed = true) {
  const listId = nextId('keys');
  const datalist = h('datalist', { id: listId }, Object.keys(known).map(k => h('option', { value: k })));
  const rows = h('div', { class: 'kv-rows' });
  const el = h('div', { class: 'kv-editor', dataset: { kv: name } }, rows, datalist);

  function addRow(key = '', value = '', type = 'string') {
    const keyInput = h('input', { type: 'text', class: 'kv-key', placeholder: 'key', value: key, list: listId, 'aria-label': 'Key' });
    const valueInput = h('input', { type: 'text', class: 'kv-value', placeholder: 'value', value, 'aria-label': 'Value' });
    const typeSelect = typed && h('select', { class: 'kv-type', 'aria-label': 'Type' },
      ['string', 'number', 'boolean'].map(t => h('option', { value: t, selected: t === type }, t)));
    const remove = h('button', { type: 'button', class: 'btn small ghost', 'aria-label': 'Remove row', title: 'Remove row' }, '×');
    const row = h('div', { class: 'kv-row' }, keyInput, h('span', { class: 'kv-eq' }, '='), valueInput, typeSelect, remove);
    keyInput.addEventListener('input', () => {
      // A known key brings its type, so "x-max-length" is sent as a number without thinking.
      if (typeSelect && known[keyInput.value]) typeSelect.value = known[keyInput.value];
      if (row === rows.lastElementChild && keyInput.value) addRow();
    });
    remove.addEventListener('click', () => {
      row.remove();
      if (!rows.children.length) addRow();
    });
    rows.append(row);
  }

  function get() {
    const out = {};
    for (const row of rows.children) {
      const key = row.querySelector('.kv-key').value.trim();
      if (!key) continue;
      const raw = row.querySelector('.kv-value').value;
      const type = typed ? row.querySelector('.kv-type').value : 'string';
      if (type === 'number') {
        const n = Number(raw);
        if (raw.trim() === '' || !Number.isFinite(n)) throw new Error(`"${key}" needs a number, not "${raw}"`);
        out[key] = n;
      } else if (type === 'boolean') {
        if (!['true', 'false'].includes(raw.trim())) throw new Error(`"${key}" needs true or false, not "${raw}"`);
        out[key] = raw.trim() === 'true';
      } else {
        out[key] = raw;
      }
    }
    return out;
  }

  function set(obj) {
    rows.replaceChildren();
    for (const [k, v] of Object.entries(obj || {})) {
      const type = typeof v === 'number' ? 'number' : typeof v === 'boolean' ? 'boolean' : 'string';
      addRow(k, typeof v === 'object' ? JSON.stringify(v) : String(v), type);
    }
    addRow();
  }

  addRow();
  return { el, get, set, reset: () => set({}) };
}

/**
 * A form. spec: {id (data-form), fields, submit (label), onSubmit(values, form) → optional
 * message, reset (default true), danger}. Field: {name, label, type (text, password, number,
 * select, checkbox, textarea, kv, file), options ([value, label] or value; may be a function),
 * value, required, placeholder, hint, known (kv suggestions), typed (kv)}.
 * The values object holds strings, numbers (empty → undefined), booleans, objects (kv), Files.
 */
function form(spec) {
  const controls = {};
  const f = h('form', { class: 'form', dataset: { form: spec.id } });
  for (const field of spec.fields) f.append(formField(field, controls));
  const status = h('span', { class: 'form-status', 'aria-live': 'polite' });
  const button = h('button', { type: 'submit', class: 'btn ' + (spec.danger ? 'danger' : 'primary') }, spec.submit);
  f.append(h('div', { class: 'form-actions' }, button, status));

  f.addEventListener('submit', async event => {
    event.preventDefault();
    status.textContent = '';
    status.className = 'form-status';
    let values;
    try {
      values = {};
      for (const [name, control] of Object.entries(controls)) values[name] = control.get();
    } catch (e) {
      toast(e.message);
      return;
    }
    button.disabled = true;
    try {
      const message = await spec.onSubmit(values, f);
      if (spec.reset !== false) for (const control of Object.values(controls)) control.reset();
      if (message) {
        status.textContent = message;
        status.classList.add('ok');
      }
    } catch (e) {
      showError(e);
    } finally {
      button.disabled = false;
    }
  });
  f.controls = controls;
  f.status = status;
  return f;
}

function formField(field, controls) {
  const id = nextId('f');
  const label = h('label', { for: id, class: 'field-label' }, field.label);
  const hint = field.hint && h('small', { class: 'hint' }, field.hint);
  let input;
  let control;
  switch (field.type || 'text') {
    case 'checkbox':
      input = h('input', { type: 'checkbox', id, name: field.name, checked: !!field.value });
      control = { get: () => input.checked, set: v => { input.checked = !!v; }, reset: () => { input.checked = !!field.value; } };
      controls[field.name] = control;
      return h('div', { class: 'field field-check' }, h('span'), h('label', { class: 'check', for: id }, input, field.label), hint);
    case 'kv': {
      const editor = kvEditor(field.name, field.known, field.typed !== false);
      controls[field.name] = editor;
      return h('div', { class: 'field' }, h('span', { class: 'field-label' }, field.label), h('div', null, editor.el, hint));
    }
    case 'select': {
      const options = typeof field.options === 'function' ? field.options() : field.options;
      input = h('select', { id, name: field.name }, options.map(o => {
        const [value, text] = Array.isArray(o) ? o : [o, o];
        return h('option', { value }, text);
      }));
      break;
    }
    case 'textarea':
      input = h('textarea', { id, name: field.name, rows: field.rows || 4, placeholder: field.placeholder, required: field.required });
      break;
    case 'file':
      input = h('input', { type: 'file', id, name: field.name, accept: field.accept, required: field.required });
      control = { get: () => input.files[0] || null, set: () => {}, reset: () => { input.value = ''; } };
      break;
    default:
      input = h('input', {
        type: field.type || 'text', id, name: field.name, placeholder: field.placeholder, required: field.required,
        autocomplete: field.autocomplete || 'off', min: field.min, step: field.type === 'number' ? 'any' : null,
      });
  }
  let initial = field.value == null ? '' : String(field.value);
  if (field.type === 'select') {
    // A value that is not among the options (a vhost created since): keep it selectable.
    if (initial && ![...input.options].some(o => o.value === initial)) input.append(h('option', { value: initial }, initial));
    // An empty value would leave the select blank: the first option is the default.
    if (!initial && input.options.length) initial = input.options[0].value;
  }
  input.value = initial;
  controls[field.name] = control || {
    get: () => (field.type === 'number' ? (input.value.trim() === '' ? undefined : Number(input.value)) : input.value),
    set: v => { input.value = v == null ? '' : String(v); },
    reset: () => { input.value = initial; },
  };
  return h('div', { class: 'field' }, label, h('div', null, input, hint));
}

/** Field shortcuts used by several forms. */
const vhostField = (extra = {}) => ({ name: 'vhost', label: 'Virtual host', type: 'select', options: () => vhostNames, value: defaultVhost(), ...extra });
const nameField = (label = 'Name') => ({ name: 'name', label, required: true });

// ---------------------------------------------------------------------------------------------
// 8. Shared page parts

/** Queue features as badges, as RabbitMQ's list shows them (D, AD, Excl, argument shorthands). */
const ARGUMENT_BADGES = {
  'x-max-length': 'Lim', 'x-max-length-bytes': 'Lim B', 'x-message-ttl': 'TTL', 'x-expires': 'Exp',
  'x-dead-letter-exchange': 'DLX', 'x-dead-letter-routing-key': 'DLK', 'x-max-priority': 'Pri',
  'x-single-active-consumer': 'SAC', 'x-overflow': 'Ovfl', 'x-queue-mode': 'Mode', 'x-delivery-limit': 'DLim',
  'x-max-age': 'Age', 'alternate-exchange': 'AE',
};

function features(item) {
  const out = [];
  if (item.durable) out.push(badge('D', 'durable'));
  if (item.auto_delete) out.push(badge('AD', 'auto-delete'));
  if (item.exclusive) out.push(badge('Excl', 'exclusive'));
  if (item.internal) out.push(badge('I', 'internal'));
  const other = [];
  for (const [key, value] of Object.entries(item.arguments || {})) {
    if (key === 'x-queue-type') continue;
    if (ARGUMENT_BADGES[key]) out.push(badge(ARGUMENT_BADGES[key], `${key}: ${fmt.value(value)}`));
    else other.push(`${key}: ${fmt.value(value)}`);
  }
  if (other.length) out.push(badge('Args', other.join('\n')));
  return out;
}

function policyBadges(item) {
  return [
    item.policy && badge(item.policy, 'policy', 'policy'),
    item.operator_policy && badge(item.operator_policy, 'operator policy', 'op-policy'),
  ];
}

/** A column only shown when the list covers every vhost. */
const vhostColumn = () => (session.vhost ? [] : [{ label: 'Virtual host', value: r => r.vhost, sort: 'vhost' }]);

/**
 * The publish form for an exchange, or for a queue through the default exchange.
 * Shows the API's {"routed": bool} as words.
 */
function publishForm(vhost, exchange, fixedRoutingKey) {
  const fields = [
    fixedRoutingKey == null && { name: 'routing_key', label: 'Routing key' },
    { name: 'delivery_mode', label: 'Delivery mode', type: 'select', options: [['1', '1 - non-persistent'], ['2', '2 - persistent']] },
    { name: 'headers', label: 'Headers', type: 'kv' },
    { name: 'properties', label: 'Properties', type: 'kv', known: MESSAGE_PROPERTIES, hint: 'content_type, correlation_id, reply_to, expiration, message_id, priority …' },
    { name: 'payload', label: 'Payload', type: 'textarea', rows: 5 },
    { name: 'payload_encoding', label: 'Payload encoding', type: 'select', options: [['string', 'String'], ['base64', 'Base64']] },
  ].filter(Boolean);
  return form({
    id: 'publish', fields, submit: 'Publish message', reset: false,
    async onSubmit(v) {
      const properties = { ...v.properties, delivery_mode: Number(v.delivery_mode) };
      if (Object.keys(v.headers).length) properties.headers = v.headers;
      const answer = await api('POST', path`/api/exchanges/${vhost}/${exchangeSegment(exchange)}/publish`, {
        properties,
        routing_key: fixedRoutingKey == null ? v.routing_key : fixedRoutingKey,
        payload: v.payload,
        payload_encoding: v.payload_encoding,
      });
      const message = answer && answer.routed ? 'Message published and routed.' : 'Message published, but not routed.';
      toast(message, answer && answer.routed ? 'ok' : 'warn');
      return message;
    },
  });
}

/** The arguments of a binding as text (key=value), for the bindings tables. */
const bindingArguments = b => (Object.keys(b.arguments || {}).length ? kvTable(b.arguments) : '');

function unbindButton(b, after) {
  // The default exchange's implicit bindings cannot be removed; RabbitMQ's UI does not offer it.
  if (b.source === '') return muted('(default binding)');
  return h('button', {
    type: 'button', class: 'btn small', onclick: () => confirmThen(
      `Remove the binding from ${b.source} to ${b.destination}?`, 'Unbind',
      () => api('DELETE', path`/api/bindings/${b.vhost}/e/${b.source}/${b.destination_type === 'queue' ? 'q' : 'e'}/${b.destination}/${b.properties_key}`),
      'Binding removed.').then(after),
  }, 'Unbind');
}

function bindingForm(onAdd, fields, submit = 'Bind') {
  return form({
    id: 'add-binding', submit,
    fields: [...fields, { name: 'routing_key', label: 'Routing key' }, { name: 'arguments', label: 'Arguments', type: 'kv' }],
    async onSubmit(v) {
      await onAdd(v);
      return 'Binding added.';
    },
  });
}

/** Close a connection, with the reason its client will see (X-Reason → 320 CONNECTION_FORCED). */
async function closeConnection(name) {
  const answer = await ask({
    title: 'Close this connection?',
    text: name,
    fields: [{ name: 'reason', label: 'Reason', value: 'Closed via management plugin', hint: 'Sent to the client with code 320.' }],
    ok: 'Force close',
    danger: true,
  });
  if (!answer) return false;
  // A header value must be one line of Latin-1 (fetch refuses anything else).
  if (!/^[\x20-\x7e\xa0-\xff]*$/.test(answer.reason)) {
    toast('The reason must be one line of Latin-1 text.');
    return false;
  }
  try {
    await api('DELETE', path`/api/connections/${name}`, undefined, { headers: { 'x-reason': answer.reason } });
  } catch (e) {
    showError(e);
    return false;
  }
  toast('Connection closed.', 'ok');
  return true;
}

/** The permission rows and the form that sets one, filtered by user or vhost. */
function permissionsPanel(page, { url, user, vhost }) {
  const list = liveTable(page, () => api('GET', url()), [
    { label: 'User', value: p => link(p.user, 'users', p.user) },
    { label: 'Virtual host', value: p => link(p.vhost, 'vhosts', p.vhost) },
    { label: 'Configure', value: p => h('code', null, p.configure) },
    { label: 'Write', value: p => h('code', null, p.write) },
    { label: 'Read', value: p => h('code', null, p.read) },
    {
      label: '', value: p => h('button', {
        type: 'button', class: 'btn small', onclick: () => confirmThen(
          `Clear ${p.user}'s permissions in ${p.vhost}?`, 'Clear',
          () => api('DELETE', path`/api/permissions/${p.vhost}/${p.user}`), 'Permissions cleared.').then(() => list.reload()),
      }, 'Clear'),
    },
  ], { name: 'permissions', empty: 'No permissions.', rowKey: p => `${p.vhost} ${p.user}` });
  const setForm = form({
    id: 'set-permission', submit: 'Set permission', reset: false,
    fields: [
      user == null ? { name: 'user', label: 'User', required: true } : null,
      vhost == null ? vhostField() : null,
      { name: 'configure', label: 'Configure regexp', value: '.*' },
      { name: 'write', label: 'Write regexp', value: '.*' },
      { name: 'read', label: 'Read regexp', value: '.*' },
    ].filter(Boolean),
    async onSubmit(v) {
      const u = user == null ? v.user : user, vh = vhost == null ? v.vhost : vhost;
      await api('PUT', path`/api/permissions/${vh}/${u}`, { configure: v.configure, write: v.write, read: v.read });
      list.reload();
      return `Permissions of ${u} in ${vh} set.`;
    },
  });
  return [list.el, collapsible('Set permissions', false, setForm)];
}

/** Limits (vhost or user) as rows of one limit each, with remove buttons and a form to set one. */
function limitsPanel(page, { kind, subject }) {
  const isVhost = kind === 'vhost';
  const base = isVhost ? '/api/vhost-limits' : '/api/user-limits';
  const names = isVhost ? ['max-connections', 'max-queues'] : ['max-connections', 'max-channels'];
  const url = () => (subject != null ? base + '/' + encodeURIComponent(subject)
    : isVhost && session.vhost ? base + '/' + encodeURIComponent(session.vhost) : base);
  const owner = r => (isVhost ? r.vhost : r.user);
  const list = liveTable(page, async () => {
    const rows = [];
    for (const entry of await api('GET', url())) {
      for (const [name, value] of Object.entries(entry.value || {})) rows.push({ owner: owner(entry), name, value });
    }
    return rows;
  }, [
    { label: isVhost ? 'Virtual host' : 'User', value: r => link(r.owner, isVhost ? 'vhosts' : 'users', r.owner) },
    { label: 'Limit', value: r => r.name },
    { label: 'Value', value: r => fmt.int(r.value), num: true },
    {
      label: '', value: r => h('button', {
        type: 'button', class: 'btn small', onclick: () => confirmThen(`Remove ${r.name} of ${r.owner}?`, 'Remove',
          () => api('DELETE', `${base}/${encodeURIComponent(r.owner)}/${encodeURIComponent(r.name)}`), 'Limit removed.').then(() => list.reload()),
      }, 'Remove'),
    },
  ], { name: `${kind}-limits`, empty: 'No limits.', rowKey: r => `${r.owner} ${r.name}` });
  const setForm = form({
    id: `set-${kind}-limit`, submit: 'Set limit', reset: false,
    fields: [
      subject == null && (isVhost ? vhostField() : { name: 'user', label: 'User', required: true }),
      { name: 'name', label: 'Limit', type: 'select', options: names },
      { name: 'value', label: 'Value', type: 'number', required: true, hint: 'A negative value removes the limit; 0 allows nothing.' },
    ].filter(Boolean),
    async onSubmit(v) {
      const who = subject != null ? subject : isVhost ? v.vhost : v.user;
      await api('PUT', `${base}/${encodeURIComponent(who)}/${encodeURIComponent(v.name)}`, { value: v.value });
      list.reload();
      return `${v.name} of ${who} set.`;
    },
  });
  return [list.el, collapsible(isVhost ? 'Set a virtual host limit' : 'Set a user limit', false, setForm)];
}

// ---------------------------------------------------------------------------------------------
// 9. Pages

// --- Login

function showChrome(on) {
  document.getElementById('session').hidden = !on;
  document.getElementById('nav').hidden = !on;
  document.getElementById('nav-toggle').hidden = !on;
  document.body.classList.toggle('signed-in', on);
  if (on) {
    const user = session.user;
    document.getElementById('whoami').textContent = user ? `${user.name}${user.tags && user.tags.length ? ' · ' + user.tags.join(', ') : ''}` : '';
  }
}

let loginMessage = '';

function showLogin() {
  showChrome(false);
  document.title = 'Log in · Warren';
  const error = h('p', { class: 'banner error', role: 'alert', hidden: !loginMessage }, loginMessage);
  loginMessage = '';
  const f = form({
    id: 'login', submit: 'Log in', reset: false,
    fields: [
      { name: 'username', label: 'Username', required: true, autocomplete: 'username' },
      { name: 'password', label: 'Password', type: 'password', autocomplete: 'current-password' },
    ],
    async onSubmit(v) {
      const auth = basic(v.username, v.password);
      try {
        // whoami answers 401 "Login failed" or "Not management user": the API decides who may in.
        const me = await api('GET', '/api/whoami', undefined, { auth });
        session.start(auth, me);
      } catch (e) {
        error.textContent = e instanceof ApiError ? e.reason : String(e.message || e);
        error.hidden = false;
        return;
      }
      await refreshVhosts();
      route();
    },
  });
  document.getElementById('main').append(h('div', { class: 'login' },
    h('h1', null, 'Log in to Warren'),
    h('p', { class: 'subtitle' }, 'Any broker user with a management tag.'),
    error, f));
  f.querySelector('input').focus();
}

function logout(reason) {
  session.end();
  loginMessage = reason || '';
  histories.clear();
  listStates.clear();
  route();
}

// --- Overview

const RATE_SERIES = [
  { key: 'publish', label: 'Publish' },
  { key: 'confirm', label: 'Confirm' },
  { key: 'deliver_get', label: 'Deliver / get' },
  { key: 'ack', label: 'Ack' },
  { key: 'redeliver', label: 'Redeliver' },
  { key: 'return_unroutable', label: 'Return' },
];
const QUEUED_SERIES = [
  { key: 'ready', label: 'Ready' },
  { key: 'unacked', label: 'Unacked' },
  { key: 'total', label: 'Total' },
];

function queuedValues(obj) {
  return { ready: obj.messages_ready || 0, unacked: obj.messages_unacknowledged || 0, total: obj.messages || 0 };
}

function overviewPage(page) {
  page.header('Overview');
  const node = h('div', { class: 'node-summary' });
  const totals = h('div', { class: 'cards' });
  const queued = chart('Queued messages', QUEUED_SERIES, fmt.int, true);
  const rateChart = chart('Message rates', RATE_SERIES, fmt.rate);
  const alarms = h('div', { class: 'alarms' });
  const nodes = h('div');
  const listeners = h('div');
  page.add(node, alarms, totals, h('div', { class: 'charts' }, queued.el, rateChart.el),
    section('Nodes', nodes), section('Listeners', listeners));

  page.every(SAMPLE_MS, async () => {
    const o = await api('GET', '/api/overview');
    fill(node, facts([
      ['Node', o.node],
      ['Version', `${o.product_name || 'Warren'} ${o.product_version || ''}`.trim()],
      ['Management API', `RabbitMQ ${o.management_version || o.rabbitmq_version}`],
      ['Cluster', o.cluster_name],
    ]));
    const t = o.object_totals || {};
    fill(totals, [
      ['Connections', t.connections, 'connections'], ['Channels', t.channels, 'channels'],
      ['Exchanges', t.exchanges, 'exchanges'], ['Queues', t.queues, 'queues'], ['Consumers', t.consumers, 'queues'],
    ].map(([label, n, to]) => h('a', { class: 'card', href: href(to), dataset: { total: label.toLowerCase() } },
      h('span', { class: 'card-value' }, fmt.int(n || 0)), h('span', { class: 'card-label' }, label))));
    queued.draw(record('overview:queued', queuedValues(o.queue_totals || {})));
    rateChart.draw(record('overview:rates', rates(o.message_stats, RATE_SERIES.map(s => s.key))));
    fill(listeners, table([
      { label: 'Protocol', value: l => l.protocol },
      { label: 'Address', value: l => l.ip_address },
      { label: 'Port', value: l => String(l.port), num: true },
      { label: 'Node', value: l => l.node },
    ], o.listeners || [], { name: 'listeners', empty: 'No listeners.' }));

    // Nodes need the monitoring tag on RabbitMQ; a refusal is shown in place, not as a failure.
    let list;
    try {
      list = await api('GET', '/api/nodes');
    } catch (e) {
      if (e.sessionEnded) throw e;
      fill(nodes, muted(e.reason || String(e)));
      alarms.replaceChildren();
      return;
    }
    const raised = [];
    for (const n of list) {
      if (n.mem_alarm) raised.push(`Memory alarm on ${n.name}: ${fmt.bytes(n.mem_used)} used, limit ${fmt.bytes(n.mem_limit)}. Publishers are blocked.`);
      if (n.disk_free_alarm) raised.push(`Disk alarm on ${n.name}: free space below ${fmt.bytes(n.disk_free_limit)}. Publishers are blocked.`);
    }
    fill(alarms, raised.length
      ? h('div', { class: 'banner error', role: 'alert' }, raised.map(r => h('div', null, r)))
      : h('div', { class: 'banner ok' }, 'No alarms: memory and disk are within their limits.'));
    fill(nodes, table([
      { label: 'Name', value: n => n.name },
      { label: 'Uptime', value: n => fmt.duration(n.uptime) },
      { label: 'Memory', value: n => usage(n.mem_used, n.mem_limit, fmt.bytes, n.mem_alarm) },
      { label: 'File descriptors', value: n => usage(n.fd_used, n.fd_total, fmt.int) },
      { label: 'Sockets', value: n => usage(n.sockets_used, n.sockets_total, fmt.int) },
      { label: 'Disk free', value: n => [n.disk_free == null ? '' : `${fmt.bytes(n.disk_free)} (limit ${fmt.bytes(n.disk_free_limit)})`, n.disk_free_alarm ? badge('alarm', 'disk alarm', 'alarm') : ''] },
      { label: 'Cores', value: n => fmt.int(n.processors), num: true },
    ], list, { name: 'nodes' }));
  });
}

/** "used of total" with a bar. */
function usage(used, total, format, alarm) {
  const share = total ? Math.min(1, (used || 0) / total) : 0;
  const bar = h('span', { class: 'meter-bar' + (alarm ? ' alarm' : '') });
  bar.style.width = `${(share * 100).toFixed(1)}%`;
  return h('div', { class: 'meter' }, h('span', null, `${format(used || 0)} of ${format(total || 0)}`), h('span', { class: 'meter-track' }, bar));
}

// --- Queues

const QUEUE_FIELDS = ['name', 'vhost', 'type', 'state', 'durable', 'auto_delete', 'exclusive', 'arguments', 'policy',
  'operator_policy', 'messages_ready', 'messages_unacknowledged', 'messages',
  'message_stats.publish_details.rate', 'message_stats.deliver_get_details.rate', 'message_stats.ack_details.rate'].join(',');

function queuesPage(page) {
  page.header('Queues', session.vhost ? `In virtual host ${session.vhost}` : 'All virtual hosts');
  const list = pagedList(page, {
    key: 'queues', noun: 'queues', fields: QUEUE_FIELDS, rowKey: q => `${q.vhost} ${q.name}`,
    url: scoped('/api/queues', v => path`/api/queues/${v}`),
    columns: [
      ...vhostColumn(),
      { label: 'Name', value: q => link(q.name, 'queues', q.vhost, q.name), sort: 'name' },
      { label: 'Type', value: q => q.type, sort: 'type' },
      { label: 'Features', value: features },
      { label: 'Policy', value: policyBadges, sort: 'policy' },
      { label: 'State', value: q => stateBadge(q.state), sort: 'state' },
      { label: 'Ready', value: q => fmt.int(q.messages_ready), num: true, sort: 'messages_ready' },
      { label: 'Unacked', value: q => fmt.int(q.messages_unacknowledged), num: true, sort: 'messages_unacknowledged' },
      { label: 'Total', value: q => fmt.int(q.messages), num: true, sort: 'messages' },
      { label: 'Incoming', value: q => fmt.rate(at(q, 'message_stats.publish_details.rate') || 0), num: true, sort: 'message_stats.publish_details.rate' },
      { label: 'Deliver / get', value: q => fmt.rate(at(q, 'message_stats.deliver_get_details.rate') || 0), num: true, sort: 'message_stats.deliver_get_details.rate' },
      { label: 'Ack', value: q => fmt.rate(at(q, 'message_stats.ack_details.rate') || 0), num: true, sort: 'message_stats.ack_details.rate' },
    ],
  });
  page.add(list.el, collapsible('Add a new queue', false, addQueueForm(list.reload)));
}

function stateBadge(state) {
  return state ? badge(state, null, state === 'running' ? 'ok' : 'warn') : '';
}

function addQueueForm(after) {
  return form({
    id: 'add-queue', submit: 'Add queue',
    fields: [
      vhostField(),
      nameField(),
      { name: 'type', label: 'Type', type: 'select', options: [['classic', 'Classic'], ['quorum', 'Quorum'], ['stream', 'Stream']] },
      { name: 'durable', label: 'Durable', type: 'checkbox', value: true },
      { name: 'auto_delete', label: 'Auto delete', type: 'checkbox' },
      { name: 'arguments', label: 'Arguments', type: 'kv', known: QUEUE_ARGUMENTS, hint: 'Suggested keys bring their type (x-max-length is a number).' },
    ],
    async onSubmit(v) {
      await api('PUT', path`/api/queues/${v.vhost}/${v.name}`, {
        durable: v.durable, auto_delete: v.auto_delete, arguments: { ...v.arguments, 'x-queue-type': v.type },
      });
      after();
      toast(`Queue ${v.name} added.`, 'ok');
      return `Queue ${v.name} added.`;
    },
  });
}

function queuePage(page, { vhost, name }) {
  const url = path`/api/queues/${vhost}/${name}`;
  page.header(name, h('span', null, 'Queue in virtual host ', link(vhost, 'vhosts', vhost)));
  const queued = chart('Queued messages', QUEUED_SERIES, fmt.int, true);
  const rateChart = chart('Message rates', [
    { key: 'publish', label: 'Publish' }, { key: 'deliver_get', label: 'Deliver / get' },
    { key: 'ack', label: 'Ack' }, { key: 'redeliver', label: 'Redeliver' },
  ], fmt.rate);
  const details = h('div');
  const consumers = h('div');
  const bindings = h('div');
  const got = h('div', { class: 'messages' });
  const key = `queue:${vhost}:${name}`;

  const loadBindings = async () => {
    const list = await api('GET', `${url}/bindings`);
    fill(bindings, table([
      { label: 'From', value: b => (b.source === '' ? exchangeLabel('') : link(b.source, 'exchanges', vhost, b.source)) },
      { label: 'Routing key', value: b => h('code', null, b.routing_key) },
      { label: 'Arguments', value: bindingArguments },
      { label: '', value: b => unbindButton(b, reload) },
    ], list, { name: 'bindings', empty: 'No bindings.', rowKey: b => `${b.source} ${b.routing_key}` }));
  };

  const reload = page.every(SAMPLE_MS, async () => {
    const q = await api('GET', url);
    queued.draw(record(`${key}:queued`, queuedValues(q)));
    rateChart.draw(record(`${key}:rates`, rates(q.message_stats, ['publish', 'deliver_get', 'ack', 'redeliver'])));
    fill(details, facts([
      ['Type', q.type],
      ['Features', features({ ...q, arguments: {} })],
      ['State', stateBadge(q.state)],
      ['Node', q.node],
      ['Consumers', fmt.int(q.consumers)],
      ['Consumer utilisation', q.consumer_utilisation == null ? '' : `${Math.round(q.consumer_utilisation * 100)}%`],
      ['Messages', `${fmt.int(q.messages)} (${fmt.int(q.messages_ready)} ready, ${fmt.int(q.messages_unacknowledged)} unacked)`],
      ['Message bytes', fmt.bytes(q.message_bytes)],
      ['Policy', q.policy ? link(q.policy, 'policies') : ''],
      ['Operator policy', q.operator_policy ? link(q.operator_policy, 'policies') : ''],
      ['Effective policy definition', kvTable(q.effective_policy_definition)],
      ['Arguments', kvTable(q.arguments)],
    ]));
    // A single queue carries its consumers (consumer_details), as RabbitMQ's does.
    fill(consumers, table([
      { label: 'Channel', value: c => (c.channel_details && c.channel_details.name ? link(c.channel_details.name, 'channels', c.channel_details.name) : '') },
      { label: 'Consumer tag', value: c => c.consumer_tag },
      { label: 'Ack required', value: c => (c.ack_required ? 'yes' : 'no') },
      { label: 'Exclusive', value: c => (c.exclusive ? 'yes' : 'no') },
      { label: 'Prefetch', value: c => fmt.int(c.prefetch_count), num: true },
      { label: 'Active', value: c => (c.active ? 'yes' : 'no') },
      { label: 'Arguments', value: c => kvTable(c.arguments, '') },
    ], q.consumer_details || [], { name: 'consumers', empty: 'No consumers.' }));
    await loadBindings();
  });

  const getForm = form({
    id: 'get-messages', submit: 'Get messages', reset: false,
    fields: [
      { name: 'ackmode', label: 'Ack mode', type: 'select', options: [
        ['ack_requeue_true', 'Nack message requeue true'], ['ack_requeue_false', 'Automatic ack'],
        ['reject_requeue_true', 'Reject requeue true'], ['reject_requeue_false', 'Reject requeue false']] },
      { name: 'encoding', label: 'Encoding', type: 'select', options: [['auto', 'Auto string / base64'], ['base64', 'Base64']] },
      { name: 'count', label: 'Messages', type: 'number', value: 1, min: 1 },
      { name: 'truncate', label: 'Truncate to', type: 'number', value: 50000, hint: 'bytes of payload' },
    ],
    async onSubmit(v) {
      const messages = await api('POST', `${url}/get`, { count: v.count || 1, ackmode: v.ackmode, encoding: v.encoding, truncate: v.truncate });
      fill(got, (messages.length ? messages.map((m, i) => messageView(m, i + 1)) : [muted('Queue is empty.')]));
      reload();
      return `${messages.length} message${messages.length === 1 ? '' : 's'} fetched.`;
    },
  });

  page.add(
    h('div', { class: 'charts' }, queued.el, rateChart.el),
    section('Details', details),
    section('Consumers', consumers),
    section('Bindings', bindings, collapsible('Add binding to this queue', false, bindingForm(async v => {
      await api('POST', path`/api/bindings/${vhost}/e/${v.source}/q/${name}`, { routing_key: v.routing_key, arguments: v.arguments });
      loadBindings();
    }, [{ name: 'source', label: 'From exchange', required: true }]))),
    collapsible('Publish message', false,
      h('p', { class: 'hint' }, 'To the default exchange with this queue\'s name as routing key.'),
      publishForm(vhost, '', name)),
    collapsible('Get messages', false,
      h('p', { class: 'hint' }, 'Getting messages is destructive with the ack modes that do not requeue.'),
      getForm, got),
    section('Actions', h('div', { class: 'button-row' },
      h('button', { type: 'button', class: 'btn', dataset: { action: 'purge' }, onclick: () => confirmThen(
        `Purge every ready message of ${name}?`, 'Purge', () => api('DELETE', `${url}/contents`), 'Queue purged.').then(reload) }, 'Purge messages'),
      h('button', { type: 'button', class: 'btn danger', dataset: { action: 'delete' }, onclick: async () => {
        if (await confirmThen(`Delete queue ${name}?`, 'Delete', () => api('DELETE', url), `Queue ${name} deleted.`)) location.hash = '#/queues';
      } }, 'Delete queue'))));
}

/** One fetched message: metadata, properties, payload (text only, never markup). */
function messageView(m, n) {
  return h('article', { class: 'message', dataset: { message: n } },
    h('h3', null, `Message ${n}`),
    facts([
      ['Exchange', exchangeLabel(m.exchange)],
      ['Routing key', m.routing_key],
      ['Redelivered', m.redelivered ? 'yes' : 'no'],
      ['Remaining in queue', fmt.int(m.message_count)],
      ['Properties', kvTable(Array.isArray(m.properties) ? {} : m.properties)],
      ['Payload', `${fmt.int(m.payload_bytes)} bytes, encoded as ${m.payload_encoding}`],
    ]),
    h('pre', { class: 'payload' }, m.payload));
}

// --- Exchanges

const EXCHANGE_FIELDS = 'name,vhost,type,durable,auto_delete,internal,arguments,policy,message_stats.publish_in_details.rate,message_stats.publish_out_details.rate';

function exchangesPage(page) {
  page.header('Exchanges', session.vhost ? `In virtual host ${session.vhost}` : 'All virtual hosts');
  const list = pagedList(page, {
    key: 'exchanges', noun: 'exchanges', fields: EXCHANGE_FIELDS, rowKey: x => `${x.vhost} ${x.name}`,
    url: scoped('/api/exchanges', v => path`/api/exchanges/${v}`),
    columns: [
      ...vhostColumn(),
      { label: 'Name', value: x => link(exchangeLabel(x.name), 'exchanges', x.vhost, exchangeSegment(x.name)), sort: 'name' },
      { label: 'Type', value: x => x.type, sort: 'type' },
      { label: 'Features', value: features },
      { label: 'Policy', value: policyBadges, sort: 'policy' },
      { label: 'Rate in', value: x => fmt.rate(at(x, 'message_stats.publish_in_details.rate') || 0), num: true, sort: 'message_stats.publish_in_details.rate' },
      { label: 'Rate out', value: x => fmt.rate(at(x, 'message_stats.publish_out_details.rate') || 0), num: true, sort: 'message_stats.publish_out_details.rate' },
    ],
  });
  const add = form({
    id: 'add-exchange', submit: 'Add exchange',
    fields: [
      vhostField(),
      nameField(),
      { name: 'type', label: 'Type', type: 'select', options: ['direct', 'fanout', 'topic', 'headers'] },
      { name: 'durable', label: 'Durable', type: 'checkbox', value: true },
      { name: 'auto_delete', label: 'Auto delete', type: 'checkbox' },
      { name: 'internal', label: 'Internal', type: 'checkbox' },
      { name: 'arguments', label: 'Arguments', type: 'kv', known: EXCHANGE_ARGUMENTS },
    ],
    async onSubmit(v) {
      await api('PUT', path`/api/exchanges/${v.vhost}/${v.name}`, {
        type: v.type, durable: v.durable, auto_delete: v.auto_delete, internal: v.internal, arguments: v.arguments,
      });
      list.reload();
      toast(`Exchange ${v.name} added.`, 'ok');
      return `Exchange ${v.name} added.`;
    },
  });
  page.add(list.el, collapsible('Add a new exchange', false, add));
}

function exchangePage(page, { vhost, name: segment }) {
  const name = segment === 'amq.default' ? '' : segment;
  const url = path`/api/exchanges/${vhost}/${exchangeSegment(name)}`;
  page.header(exchangeLabel(name), h('span', null, 'Exchange in virtual host ', link(vhost, 'vhosts', vhost)));
  const rateChart = chart('Message rates', [{ key: 'publish_in', label: 'Publish in' }, { key: 'publish_out', label: 'Publish out' }], fmt.rate);
  const details = h('div');
  const outgoing = h('div');
  const incoming = h('div');
  const key = `exchange:${vhost}:${name}`;
  const destination = b => (b.destination_type === 'queue'
    ? h('span', null, badge('queue', null), ' ', link(b.destination, 'queues', vhost, b.destination))
    : h('span', null, badge('exchange', null), ' ', link(b.destination, 'exchanges', vhost, b.destination)));

  const loadBindings = async () => {
    const [from, to] = await Promise.all([api('GET', `${url}/bindings/source`), api('GET', `${url}/bindings/destination`)]);
    fill(outgoing, table([
      { label: 'To', value: destination },
      { label: 'Routing key', value: b => h('code', null, b.routing_key) },
      { label: 'Arguments', value: bindingArguments },
      { label: '', value: b => unbindButton(b, reload) },
    ], from, { name: 'bindings-source', empty: 'No bindings from this exchange.' }));
    fill(incoming, table([
      { label: 'From', value: b => link(exchangeLabel(b.source), 'exchanges', vhost, exchangeSegment(b.source)) },
      { label: 'Routing key', value: b => h('code', null, b.routing_key) },
      { label: 'Arguments', value: bindingArguments },
      { label: '', value: b => unbindButton(b, reload) },
    ], to, { name: 'bindings-destination', empty: 'No bindings to this exchange.' }));
  };

  const reload = page.every(SAMPLE_MS, async () => {
    const x = await api('GET', url);
    rateChart.draw(record(key, rates(x.message_stats, ['publish_in', 'publish_out'])));
    fill(details, facts([
      ['Type', x.type],
      ['Features', features({ ...x, arguments: {} })],
      ['Policy', x.policy ? link(x.policy, 'policies') : ''],
      ['Arguments', kvTable(x.arguments)],
    ]));
    await loadBindings();
  });

  const sections = [rateChart.el, section('Details', details)];
  if (name !== '') {
    sections.push(
      section('Bindings from this exchange', outgoing, collapsible('Add binding from this exchange', false, bindingForm(async v => {
        await api('POST', path`/api/bindings/${vhost}/e/${name}/${v.destination_type}/${v.destination}`, { routing_key: v.routing_key, arguments: v.arguments });
        loadBindings();
      }, [
        { name: 'destination_type', label: 'To', type: 'select', options: [['q', 'Queue'], ['e', 'Exchange']] },
        { name: 'destination', label: 'Destination name', required: true },
      ]))),
      section('Bindings to this exchange', incoming));
  } else {
    sections.push(h('p', { class: 'hint' }, 'The default exchange is bound to every queue by its name; it takes no other bindings.'));
  }
  sections.push(collapsible('Publish message', false, publishForm(vhost, name)));
  if (name !== '') {
    sections.push(section('Actions', h('div', { class: 'button-row' },
      h('button', { type: 'button', class: 'btn danger', dataset: { action: 'delete' }, onclick: async () => {
        if (await confirmThen(`Delete exchange ${name}?`, 'Delete', () => api('DELETE', url), `Exchange ${name} deleted.`)) location.hash = '#/exchanges';
      } }, 'Delete exchange'))));
  }
  page.add(...sections);
}

// --- Connections and channels

const CONNECTION_FIELDS = 'name,vhost,user,state,protocol,channels,client_properties,user_provided_name,peer_host,peer_port,connected_at,recv_oct_details.rate,send_oct_details.rate';

function clientName(c) {
  const p = c.client_properties || {};
  return [p.product, p.version].filter(Boolean).join(' ');
}

function connectionsPage(page) {
  page.header('Connections', session.vhost ? `In virtual host ${session.vhost}` : 'All virtual hosts');
  const list = pagedList(page, {
    key: 'connections', noun: 'connections', fields: CONNECTION_FIELDS, rowKey: c => c.name,
    url: scoped('/api/connections', v => path`/api/vhosts/${v}/connections`),
    columns: [
      ...vhostColumn(),
      { label: 'Name', value: c => h('div', null, link(c.name, 'connections', c.name), c.user_provided_name && h('div', { class: 'sub' }, c.user_provided_name)), sort: 'name' },
      { label: 'User', value: c => c.user, sort: 'user' },
      { label: 'State', value: c => stateBadge(c.state), sort: 'state' },
      { label: 'Client', value: clientName },
      { label: 'Protocol', value: c => c.protocol, sort: 'protocol' },
      { label: 'Channels', value: c => fmt.int(c.channels), num: true, sort: 'channels' },
      { label: 'From client', value: c => fmt.bytesRate(at(c, 'recv_oct_details.rate') || 0), num: true, sort: 'recv_oct_details.rate' },
      { label: 'To client', value: c => fmt.bytesRate(at(c, 'send_oct_details.rate') || 0), num: true, sort: 'send_oct_details.rate' },
      { label: 'Connected', value: c => fmt.date(c.connected_at), sort: 'connected_at' },
      { label: '', value: c => h('button', { type: 'button', class: 'btn small', dataset: { action: 'close' }, onclick: () => closeConnection(c.name).then(done => done && list.reload()) }, 'Close') },
    ],
  });
  page.add(list.el);
}

function connectionPage(page, { name }) {
  const url = path`/api/connections/${name}`;
  page.header(name, 'Connection',
    h('button', { type: 'button', class: 'btn danger', dataset: { action: 'close' }, onclick: () => closeConnection(name).then(done => done && page.refresh()) }, 'Close connection'));
  const traffic = chart('Data rates', [{ key: 'recv', label: 'From client' }, { key: 'send', label: 'To client' }], fmt.bytesRate);
  const details = h('div');
  const client = h('div');
  const channels = h('div');
  page.add(traffic.el, section('Details', details), section('Client properties', client), section('Channels', channels));
  page.every(SAMPLE_MS, async () => {
    const c = await api('GET', url);
    traffic.draw(record(`connection:${name}`, { recv: at(c, 'recv_oct_details.rate') || 0, send: at(c, 'send_oct_details.rate') || 0 }));
    fill(details, facts([
      ['Virtual host', link(c.vhost, 'vhosts', c.vhost)],
      ['User', c.user],
      ['State', stateBadge(c.state)],
      ['Protocol', c.protocol],
      ['Client address', `${c.peer_host}:${c.peer_port}`],
      ['Server address', `${c.host}:${c.port}`],
      ['Connected', fmt.date(c.connected_at)],
      ['Authentication', c.auth_mechanism],
      ['TLS', c.ssl ? c.ssl_protocol || 'yes' : 'no'],
      ['Channel max', fmt.int(c.channel_max)],
      ['Frame max', fmt.int(c.frame_max)],
      ['Heartbeat', c.timeout != null ? `${c.timeout} s` : ''],
      ['Received', fmt.bytes(c.recv_oct)],
      ['Sent', fmt.bytes(c.send_oct)],
    ]));
    const props = { ...(c.client_properties || {}) };
    const capabilities = props.capabilities;
    delete props.capabilities;
    fill(client, kvTable(props), capabilities && h('div', null, h('h3', null, 'Capabilities'), kvTable(capabilities)));
    fill(channels, table(channelColumns(false), await api('GET', `${url}/channels`), { name: 'channels', empty: 'No channels.' }));
  });
}

function channelColumns(withVhost) {
  return [
    ...(withVhost ? vhostColumn() : []),
    { label: 'Channel', value: c => link(c.name, 'channels', c.name), sort: 'name' },
    { label: 'User', value: c => c.user, sort: 'user' },
    { label: 'Mode', value: c => [c.confirm && badge('C', 'confirm'), c.transactional && badge('T', 'transactional')] },
    { label: 'Prefetch', value: c => fmt.int(c.prefetch_count), num: true, sort: 'prefetch_count' },
    { label: 'Consumers', value: c => fmt.int(c.consumer_count), num: true, sort: 'consumer_count' },
    { label: 'Unacked', value: c => fmt.int(c.messages_unacknowledged), num: true, sort: 'messages_unacknowledged' },
    { label: 'Unconfirmed', value: c => fmt.int(c.messages_unconfirmed), num: true, sort: 'messages_unconfirmed' },
    { label: 'Publish', value: c => fmt.rate(at(c, 'message_stats.publish_details.rate') || 0), num: true, sort: 'message_stats.publish_details.rate' },
    { label: 'Confirm', value: c => fmt.rate(at(c, 'message_stats.confirm_details.rate') || 0), num: true, sort: 'message_stats.confirm_details.rate' },
    { label: 'Deliver / get', value: c => fmt.rate(at(c, 'message_stats.deliver_get_details.rate') || 0), num: true, sort: 'message_stats.deliver_get_details.rate' },
    { label: 'Ack', value: c => fmt.rate(at(c, 'message_stats.ack_details.rate') || 0), num: true, sort: 'message_stats.ack_details.rate' },
  ];
}

const CHANNEL_FIELDS = 'name,vhost,user,confirm,transactional,state,prefetch_count,consumer_count,messages_unacknowledged,messages_unconfirmed,' +
  'message_stats.publish_details.rate,message_stats.confirm_details.rate,message_stats.deliver_get_details.rate,message_stats.ack_details.rate';

function channelsPage(page) {
  page.header('Channels', session.vhost ? `In virtual host ${session.vhost}` : 'All virtual hosts');
  const list = pagedList(page, {
    key: 'channels', noun: 'channels', fields: CHANNEL_FIELDS, rowKey: c => c.name,
    url: scoped('/api/channels', v => path`/api/vhosts/${v}/channels`),
    columns: channelColumns(true),
  });
  page.add(list.el);
}

function channelPage(page, { name }) {
  page.header(name, 'Channel');
  const rateChart = chart('Message rates', RATE_SERIES.slice(0, 5), fmt.rate);
  const details = h('div');
  const consumers = h('div');
  page.add(rateChart.el, section('Details', details), section('Consumers', consumers));
  page.every(SAMPLE_MS, async () => {
    const c = await api('GET', path`/api/channels/${name}`);
    rateChart.draw(record(`channel:${name}`, rates(c.message_stats, RATE_SERIES.map(s => s.key))));
    const connection = c.connection_details && c.connection_details.name;
    fill(details, facts([
      ['Connection', connection ? link(connection, 'connections', connection) : ''],
      ['Virtual host', link(c.vhost, 'vhosts', c.vhost)],
      ['User', c.user],
      ['State', stateBadge(c.state)],
      ['Mode', [c.confirm ? 'confirm' : '', c.transactional ? 'transactional' : ''].filter(Boolean).join(', ') || 'plain'],
      ['Prefetch (per consumer)', fmt.int(c.prefetch_count)],
      ['Prefetch (channel)', fmt.int(c.global_prefetch_count)],
      ['Unacked', fmt.int(c.messages_unacknowledged)],
      ['Unconfirmed', fmt.int(c.messages_unconfirmed)],
    ]));
    // A single channel carries its consumers too.
    fill(consumers, table([
      { label: 'Queue', value: x => link(x.queue.name, 'queues', x.queue.vhost, x.queue.name) },
      { label: 'Consumer tag', value: x => x.consumer_tag },
      { label: 'Ack required', value: x => (x.ack_required ? 'yes' : 'no') },
      { label: 'Prefetch', value: x => fmt.int(x.prefetch_count), num: true },
    ], c.consumer_details || [], { name: 'consumers', empty: 'No consumers.' }));
  });
}

// --- Users

const TAGS = ['administrator', 'monitoring', 'policymaker', 'management', 'impersonator'];

function usersPage(page) {
  page.header('Users');
  const list = pagedList(page, {
    key: 'users', noun: 'users', fields: 'name,tags,password_hash,limits', rowKey: u => u.name, sort: 'name',
    url: () => '/api/users',
    columns: [
      { label: 'Name', value: u => link(u.name, 'users', u.name), sort: 'name' },
      { label: 'Tags', value: u => (u.tags || []).map(t => badge(t)) },
      { label: 'Password', value: u => (u.password_hash ? 'set' : muted('none (cannot log in with a password)')) },
      { label: 'Limits', value: u => kvTable(u.limits, '') },
    ],
  });
  const add = form({
    id: 'add-user', submit: 'Add user',
    fields: [
      { name: 'name', label: 'Username', required: true },
      { name: 'password', label: 'Password', type: 'password', autocomplete: 'new-password', hint: 'Empty: the user cannot log in with a password.' },
      { name: 'tags', label: 'Tags', placeholder: 'management, monitoring', hint: `Comma-separated: ${TAGS.join(', ')}.` },
    ],
    async onSubmit(v) {
      const body = { tags: v.tags };
      if (v.password) body.password = v.password; else body.password_hash = '';
      await api('PUT', path`/api/users/${v.name}`, body);
      list.reload();
      toast(`User ${v.name} added.`, 'ok');
      return `User ${v.name} added.`;
    },
  });
  page.add(list.el, collapsible('Add a user', false, add));
}

function userPage(page, { name }) {
  const details = h('div');
  page.header(name, 'User');
  const edit = form({
    id: 'edit-user', submit: 'Update user', reset: false,
    fields: [
      { name: 'tags', label: 'Tags', hint: `Comma-separated: ${TAGS.join(', ')}.` },
      { name: 'password', label: 'New password', type: 'password', autocomplete: 'new-password', hint: 'Empty keeps the current password.' },
      { name: 'remove_password', label: 'Remove the password (the user can no longer log in with one)', type: 'checkbox' },
    ],
    async onSubmit(v) {
      const body = { tags: v.tags };
      if (v.remove_password) body.password_hash = '';
      else if (v.password) body.password = v.password;
      await api('PUT', path`/api/users/${name}`, body);
      edit.controls.password.reset();
      page.refresh();
      return 'User updated.';
    },
  });
  let filled = false;
  page.every(SAMPLE_MS, async () => {
    const u = await api('GET', path`/api/users/${name}`);
    fill(details, facts([
      ['Tags', (u.tags || []).map(t => badge(t))],
      ['Password', u.password_hash ? 'set' : 'none'],
      ['Hashing', u.hashing_algorithm],
    ]));
    // Fill the form once: later refreshes must not overwrite what is being typed.
    if (!filled) { edit.controls.tags.set((u.tags || []).join(', ')); filled = true; }
  });
  page.add(
    section('Details', details),
    collapsible('Change tags or password', false, edit),
    section('Permissions', permissionsPanel(page, { url: () => path`/api/users/${name}/permissions`, user: name })),
    section('Limits', limitsPanel(page, { kind: 'user', subject: name })),
    section('Actions', h('div', { class: 'button-row' }, h('button', {
      type: 'button', class: 'btn danger', dataset: { action: 'delete' }, onclick: async () => {
        if (await confirmThen(`Delete user ${name}?`, 'Delete', () => api('DELETE', path`/api/users/${name}`), `User ${name} deleted.`)) location.hash = '#/users';
      },
    }, 'Delete user'))));
}

// --- Virtual hosts

const VHOST_FIELDS = 'name,description,tags,default_queue_type,messages_ready,messages_unacknowledged,messages,message_stats.publish_details.rate,message_stats.deliver_get_details.rate';

function vhostsPage(page) {
  page.header('Virtual hosts');
  const list = pagedList(page, {
    key: 'vhosts', noun: 'virtual hosts', fields: VHOST_FIELDS, rowKey: v => v.name, sort: 'name',
    url: () => '/api/vhosts',
    columns: [
      { label: 'Name', value: v => link(v.name, 'vhosts', v.name), sort: 'name' },
      { label: 'Description', value: v => v.description },
      { label: 'Tags', value: v => (v.tags || []).map(t => badge(t)) },
      { label: 'Default queue type', value: v => v.default_queue_type },
      { label: 'Ready', value: v => fmt.int(v.messages_ready), num: true, sort: 'messages_ready' },
      { label: 'Unacked', value: v => fmt.int(v.messages_unacknowledged), num: true, sort: 'messages_unacknowledged' },
      { label: 'Total', value: v => fmt.int(v.messages), num: true, sort: 'messages' },
      { label: 'Publish', value: v => fmt.rate(at(v, 'message_stats.publish_details.rate') || 0), num: true },
      { label: 'Deliver / get', value: v => fmt.rate(at(v, 'message_stats.deliver_get_details.rate') || 0), num: true },
    ],
  });
  page.add(list.el, collapsible('Add a virtual host', false, vhostForm('add-vhost', null, () => { list.reload(); refreshVhosts(); })));
}

function vhostForm(id, name, after) {
  return form({
    id, submit: name == null ? 'Add virtual host' : 'Update virtual host', reset: name == null,
    fields: [
      name == null && nameField(),
      { name: 'description', label: 'Description' },
      { name: 'tags', label: 'Tags', placeholder: 'comma-separated' },
      { name: 'default_queue_type', label: 'Default queue type', type: 'select', options: ['classic', 'quorum', 'stream'] },
    ].filter(Boolean),
    async onSubmit(v) {
      const vhost = name == null ? v.name : name;
      await api('PUT', path`/api/vhosts/${vhost}`, {
        description: v.description, tags: v.tags, default_queue_type: v.default_queue_type,
      });
      after();
      // Say so when the broker accepted the request but did not keep a field.
      const saved = await api('GET', path`/api/vhosts/${vhost}`);
      const tags = v.tags.split(',').map(t => t.trim()).filter(Boolean);
      const lost = [
        (saved.description || '') !== v.description && 'description',
        JSON.stringify(saved.tags || []) !== JSON.stringify(tags) && 'tags',
        (saved.default_queue_type || 'classic') !== v.default_queue_type && 'default queue type',
      ].filter(Boolean);
      if (lost.length) toast(`The broker accepted the virtual host but did not keep its ${lost.join(', ')}.`, 'warn');
      const message = name == null ? `Virtual host ${vhost} added.` : 'Virtual host updated.';
      if (name == null) toast(message, 'ok');
      return message;
    },
  });
}

function vhostPage(page, { name }) {
  page.header(name, 'Virtual host');
  const queued = chart('Queued messages', QUEUED_SERIES, fmt.int, true);
  const rateChart = chart('Message rates', RATE_SERIES, fmt.rate);
  const details = h('div');
  const edit = vhostForm('edit-vhost', name, () => page.refresh());
  let filled = false;
  page.every(SAMPLE_MS, async () => {
    const v = await api('GET', path`/api/vhosts/${name}`);
    queued.draw(record(`vhost:${name}:queued`, queuedValues(v)));
    rateChart.draw(record(`vhost:${name}:rates`, rates(v.message_stats, RATE_SERIES.map(s => s.key))));
    fill(details, facts([
      ['Description', v.description],
      ['Tags', (v.tags || []).map(t => badge(t))],
      ['Default queue type', v.default_queue_type],
      ['Tracing', v.tracing ? 'on' : 'off'],
    ]));
    if (!filled) {
      edit.controls.description.set(v.description);
      edit.controls.tags.set((v.tags || []).join(', '));
      edit.controls.default_queue_type.set(v.default_queue_type || 'classic');
      filled = true;
    }
  });
  page.add(
    h('div', { class: 'charts' }, queued.el, rateChart.el),
    section('Details', details),
    collapsible('Change description, tags or default queue type', false, edit),
    section('Permissions', permissionsPanel(page, { url: () => path`/api/vhosts/${name}/permissions`, vhost: name })),
    section('Limits', limitsPanel(page, { kind: 'vhost', subject: name })),
    section('Actions', h('div', { class: 'button-row' }, h('button', {
      type: 'button', class: 'btn danger', dataset: { action: 'delete' }, onclick: async () => {
        const done = await confirmThen(`Delete virtual host ${name} and everything in it?`, 'Delete',
          () => api('DELETE', path`/api/vhosts/${name}`), `Virtual host ${name} deleted.`);
        if (done) {
          if (session.vhost === name) session.vhost = '';
          await refreshVhosts();
          location.hash = '#/vhosts';
        }
      },
    }, 'Delete virtual host'))));
}

// --- Permissions

function permissionsPage(page) {
  page.header('Permissions', session.vhost ? `In virtual host ${session.vhost}` : 'All virtual hosts');
  page.add(...permissionsPanel(page, { url: scoped('/api/permissions', v => path`/api/vhosts/${v}/permissions`) }));
}

// --- Policies

const APPLY_TO = ['all', 'queues', 'exchanges', 'classic_queues', 'quorum_queues', 'streams'];

/** Policies or operator policies: the table, and a form that adds or (same name) changes one. */
function policyPanel(page, kind) {
  const base = kind === 'operator' ? '/api/operator-policies' : '/api/policies';
  const noun = kind === 'operator' ? 'operator policy' : 'policy';
  const editForm = form({
    id: kind === 'operator' ? 'operator-policy' : 'policy', submit: `Add / update ${noun}`,
    fields: [
      vhostField(),
      nameField(),
      { name: 'pattern', label: 'Pattern', required: true, placeholder: '^amq\\.', hint: 'A regular expression matched against queue or exchange names.' },
      { name: 'apply-to', label: 'Apply to', type: 'select', options: kind === 'operator' ? ['queues', 'classic_queues', 'quorum_queues', 'streams'] : APPLY_TO },
      { name: 'priority', label: 'Priority', type: 'number', value: 0 },
      { name: 'definition', label: 'Definition', type: 'kv', known: POLICY_KEYS, hint: 'Suggested keys bring their type (max-length is a number).' },
    ],
    async onSubmit(v) {
      await api('PUT', `${base}/${encodeURIComponent(v.vhost)}/${encodeURIComponent(v.name)}`, {
        pattern: v.pattern, 'apply-to': v['apply-to'], priority: v.priority || 0, definition: v.definition,
      });
      list.reload();
      toast(`${noun[0].toUpperCase() + noun.slice(1)} ${v.name} set.`, 'ok');
      return `${noun} ${v.name} set.`;
    },
  });
  const panel = collapsible(`Add or update ${kind === 'operator' ? 'an operator policy' : 'a policy'}`, false, editForm);
  const list = liveTable(page, () => api('GET', session.vhost ? `${base}/${encodeURIComponent(session.vhost)}` : base), [
    ...vhostColumn(),
    { label: 'Name', value: p => p.name },
    { label: 'Pattern', value: p => h('code', null, p.pattern) },
    { label: 'Apply to', value: p => p['apply-to'] },
    { label: 'Definition', value: p => kvTable(p.definition) },
    { label: 'Priority', value: p => String(p.priority), num: true },
    {
      label: '', value: p => h('div', { class: 'button-row' },
        h('button', {
          type: 'button', class: 'btn small', onclick: () => {
            // Edit = the add form filled in; PUT with the same name replaces the policy.
            for (const key of ['vhost', 'name', 'pattern', 'apply-to', 'priority', 'definition']) editForm.controls[key].set(p[key]);
            panel.open = true;
            panel.scrollIntoView({ block: 'nearest' });
          },
        }, 'Edit'),
        h('button', {
          type: 'button', class: 'btn small', onclick: () => confirmThen(`Delete ${noun} ${p.name}?`, 'Delete',
            () => api('DELETE', `${base}/${encodeURIComponent(p.vhost)}/${encodeURIComponent(p.name)}`), `${noun} ${p.name} deleted.`).then(() => list.reload()),
        }, 'Delete')),
    },
  ], { name: kind === 'operator' ? 'operator-policies' : 'policies', empty: `No ${kind === 'operator' ? 'operator policies' : 'policies'}.`, rowKey: p => `${p.vhost} ${p.name}` });
  return [list.el, panel];
}

function policiesPage(page) {
  page.header('Policies', session.vhost ? `In virtual host ${session.vhost}` : 'All virtual hosts');
  page.add(
    section('User policies', policyPanel(page, 'user')),
    section('Operator policies', h('p', { class: 'hint' }, 'Operator policies cap what user policies and arguments may set; the smaller value wins.'), policyPanel(page, 'operator')));
}

// --- Limits

function limitsPage(page) {
  page.header('Limits', session.vhost ? `In virtual host ${session.vhost}` : 'All virtual hosts');
  page.add(
    section('Virtual host limits', limitsPanel(page, { kind: 'vhost' })),
    section('User limits', limitsPanel(page, { kind: 'user' })));
}

// --- Definitions

function definitionsPage(page) {
  const vhost = session.vhost;
  page.header('Definitions', vhost ? `Of virtual host ${vhost} (choose "All" above for the whole broker)` : 'Of the whole broker');
  const download = form({
    id: 'download-definitions', submit: 'Download definitions', reset: false, fields: [],
    async onSubmit() {
      const data = await api('GET', vhost ? path`/api/definitions/${vhost}` : '/api/definitions');
      const blob = new Blob([JSON.stringify(data, null, 2) + '\n'], { type: 'application/json' });
      const stamp = new Date().toISOString().slice(0, 10);
      const a = h('a', { href: URL.createObjectURL(blob), download: `warren-definitions${vhost ? '-' + vhost.replace(/[^\w.-]+/g, '_') : ''}-${stamp}.json` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
      return 'Saved.';
    },
  });
  const upload = form({
    id: 'upload-definitions', submit: 'Upload definitions', reset: false,
    fields: [{ name: 'file', label: 'Definitions file', type: 'file', accept: '.json,application/json', required: true }],
    async onSubmit(v) {
      if (!v.file) throw new Error('Choose a file first.');
      const text = await v.file.text();
      // Sent as the file's text, not re-encoded: the API reads RabbitMQ's format as it is.
      await api('POST', vhost ? path`/api/definitions/${vhost}` : '/api/definitions', text);
      await refreshVhosts();
      toast('Definitions imported.', 'ok');
      return 'Definitions imported.';
    },
  });
  page.add(
    section('Export', h('p', null, 'Users, virtual hosts, permissions, policies, limits, queues, exchanges and bindings, as JSON in RabbitMQ\'s format.'), download),
    section('Import', h('p', null, 'Adds or updates what the file defines; nothing else is deleted.'), upload));
}

// ---------------------------------------------------------------------------------------------
// 10. Start-up

function fillVhostSelect() {
  const select = document.getElementById('vhost-select');
  const chosen = session.vhost;
  fill(select, h('option', { value: '' }, 'All'), vhostNames.map(v => h('option', { value: v }, v)));
  if (chosen && !vhostNames.includes(chosen)) select.append(h('option', { value: chosen }, chosen));
  select.value = chosen;
}

function closeNav() {
  document.body.classList.remove('nav-open');
  document.getElementById('nav-toggle').setAttribute('aria-expanded', 'false');
}

function start() {
  document.getElementById('vhost-select').addEventListener('change', event => {
    session.vhost = event.target.value;
    route(); // lists read the selector when they load
  });
  document.getElementById('logout').addEventListener('click', () => {
    logout('');
    location.hash = '#/';
  });
  const toggle = document.getElementById('nav-toggle');
  toggle.addEventListener('click', () => {
    const open = document.body.classList.toggle('nav-open');
    toggle.setAttribute('aria-expanded', String(open));
  });
  // On a phone the menu covers the page: any choice in it closes it (even the current page).
  document.getElementById('nav').addEventListener('click', event => { if (event.target.closest('a')) closeNav(); });
  window.addEventListener('hashchange', route);
  // Back on the tab: refresh now rather than at the next tick.
  document.addEventListener('visibilitychange', () => { if (!document.hidden && current) current.refresh(); });
  if (session.auth) refreshVhosts();
  route();
}

start();
