'use strict';
// helios-doit dashboard: the queue at "/" and one job at "/jobs/{id}", kept live by /api/events.
// The markup is in index.html's <template>s; every server string reaches the page as text
// (textContent, attributes), never as HTML.

const ACTIONS = { // the job states in which each action means something
  pause: ['pending', 'running'], resume: ['paused'], cancel: ['pending', 'running', 'paused'], retry: ['failed', 'cancelled'],
};

// The one mutable object: what the page shows and the nodes that show it.
const S = {
  jobId: null, // the job page's id; null on the queue page
  filter: 'all', // the queue's state filter
  job: null, // job page: the JobStatus shown
  rows: new Map(), // queue page: job id -> {tr, job}
  cells: new Map(), // job page: chunk id -> {cell, thumb}
  view: null, // <main>, which holds the current page
  seq: 0, // events received so far; touched: job id -> seq of its last event about it
  touched: new Map(),
  es: null, // the EventSource
  locked: false, // the login form is showing
  busy: false, // an action is in flight
  gone: false, // the job page's job was deleted or never existed
};

// ---- small helpers ----
function h(tag, props = {}, ...kids) { // an element; kids are nodes or strings (appended as text)
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined) node.setAttribute(key, String(value));
  }
  node.append(...kids.flat());
  return node;
}

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];
const clone = (id) => document.getElementById(id).content.cloneNode(true);
const enc = encodeURIComponent;
const jobUrl = (id) => `/api/jobs/${enc(id)}`;
const chunkUrl = (cid, what) => `${jobUrl(S.jobId)}/chunks/${enc(cid)}/${what}`;
const clampPct = (value) => Math.min(100, Math.max(0, Number(value) || 0));
const fmtPct = (value) => `${Math.round(clampPct(value) * 10) / 10} %`;
const isNum = (value) => typeof value === 'number' && Number.isFinite(value);
const frames = (job) => `${job.framesDone ?? 0} / ${job.totalFrames ?? '?'}`;

function setText(node, text) { node.textContent = text; return node; }

function fmtEta(sec) { // "37 s", "4 min", "2 h 5 min"
  if (!isNum(sec)) return '—';
  if (sec < 59.5) return `${Math.max(0, Math.round(sec))} s`;
  const min = Math.round(sec / 60);
  if (min < 60) return `${min} min`;
  return min % 60 ? `${Math.floor(min / 60)} h ${min % 60} min` : `${min / 60} h`;
}

const fmtDuration = (sec) => (!isNum(sec) ? '' : sec < 60 ? `${sec.toFixed(1)} s`
  : `${Math.floor(sec / 60)} min ${Math.round(sec % 60)} s`);

function timeEl(iso) { // local time, short: "19:00" today, "Dec 4, 10:05" another day
  const date = iso ? new Date(iso) : null;
  if (!date || Number.isNaN(date.getTime())) return iso || '—';
  const day = date.toDateString() === new Date().toDateString() ? {} : { month: 'short', day: 'numeric' };
  const text = date.toLocaleString([], { ...day, hour: '2-digit', minute: '2-digit' });
  return h('time', { datetime: iso, title: date.toLocaleString() }, text);
}

function pathEl(path) { // a file path that may wrap after any slash
  if (!path) return '—';
  const parts = String(path).split('/').flatMap((part, i) => (i ? [h('wbr'), `/${part}`] : [part]));
  return h('code', { class: 'path', title: path }, parts);
}

function setBar(bar, pct) {
  $('.fill', bar).style.width = `${clampPct(pct)}%`;
  bar.setAttribute('aria-valuenow', String(Math.round(clampPct(pct) * 10) / 10));
}

function notify(text) { // the error line under the top bar; '' hides it
  setText($('#notice .notice-text'), text);
  $('#notice').hidden = !text;
}

function report(err, prefix) {
  if (err.status !== 401) notify(`${prefix}: ${err.message}`); // a 401 shows the login form instead
}

// ---- the API ----
const apiError = (status, message) => Object.assign(new Error(message), { status });

// One API call, JSON or text back; a 401 brings up the login form; any failure throws an Error with a status.
async function api(path, { method = 'GET', body, as = 'json', login = true } = {}) {
  const opts = { method, credentials: 'same-origin' };
  // Every change is sent as JSON: the server refuses others (a form of another site cannot send it).
  if (body !== undefined || method !== 'GET') {
    Object.assign(opts, { body: JSON.stringify(body ?? {}), headers: { 'Content-Type': 'application/json' } });
  }
  const res = await fetch(path, opts).catch(() => { throw apiError(0, 'the server cannot be reached'); });
  if (res.status === 401 && login) showLogin();
  if (!res.ok) { // the server's {"error": "one line"}, or the HTTP status
    const data = await res.json().catch(() => null);
    throw apiError(res.status, typeof data?.error === 'string' ? data.error : `HTTP ${res.status}`);
  }
  if (res.status === 204) return null;
  return as === 'text' ? res.text() : res.json();
}

// ---- the queue page ----
function mountQueue(main) {
  main.replaceChildren(clone('queue-page'));
  for (const b of $$('[data-filter]', main)) b.addEventListener('click', () => setFilter(b.dataset.filter));
  document.title = 'Render queue · helios-doit';
}

const shown = (job) => S.filter === 'all' || job.state === S.filter;

function setFilter(filter) {
  S.filter = filter;
  refreshQueue();
}

function upsertRow(job) { // a row is made once, then updated in place (focus and bar transitions survive)
  if (!S.rows.has(job.id)) S.rows.set(job.id, { tr: $('tr', clone('queue-row')) });
  const { tr } = Object.assign(S.rows.get(job.id), { job });
  const name = job.name || job.id;
  tr.dataset.job = job.id;
  tr.dataset.state = job.state;
  setText($('.badge', tr), job.state).dataset.state = job.state;
  const link = setText($('.c-name a', tr), name);
  link.href = `/jobs/${enc(job.id)}`;
  $('.bar', tr).setAttribute('aria-label', `Progress of ${name}`);
  setBar($('.bar', tr), job.progress);
  setText($('.pct', tr), fmtPct(job.progress));
  const cells = { priority: String(job.priority ?? 0), frames: frames(job),
    eta: fmtEta(job.eta), started: timeEl(job.startedAt), finished: timeEl(job.finishedAt), output: pathEl(job.output) };
  for (const [column, value] of Object.entries(cells)) $(`.c-${column}`, tr).replaceChildren(value);
}

function removeRow(id) {
  S.rows.get(id)?.tr.remove();
  S.rows.delete(id);
}

function refreshQueue() { // row order (newest first) and filtering, the filter buttons, the empty line
  const created = (row) => Date.parse(row.job.createdAt ?? '') || 0;
  const rows = [...S.rows.values()].sort((a, b) => created(b) - created(a) || String(a.job.id).localeCompare(b.job.id));
  const tbody = $('tbody', S.view);
  rows.forEach(({ tr, job }, i) => {
    if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    tr.hidden = !shown(job);
  });
  for (const b of $$('[data-filter]', S.view)) {
    const count = rows.filter((r) => b.dataset.filter === 'all' || r.job.state === b.dataset.filter).length;
    setText($('.count', b), String(count));
    b.setAttribute('aria-pressed', String(b.dataset.filter === S.filter));
  }
  const empty = $('.empty', S.view);
  empty.hidden = rows.some((r) => shown(r.job));
  setText(empty, S.filter === 'all' ? 'No jobs yet.' : `No ${S.filter} jobs.`);
}

function applyList(jobs, since) { // a fresh list, except for jobs an event told about since it was asked for
  const listed = new Set(jobs.map((job) => job.id));
  for (const job of jobs) if (!newer(job.id, since)) upsertRow(job);
  for (const id of [...S.rows.keys()]) if (!listed.has(id) && !newer(id, since)) removeRow(id);
  refreshQueue();
}

// ---- the job page ----
function mountJob(main) {
  main.replaceChildren(clone('job-page'));
  for (const b of $$('[data-action]', main)) b.addEventListener('click', () => act(b.dataset.action));
}

function renderJob(job) {
  const v = S.view;
  const name = job.name || job.id;
  S.job = job;
  document.title = `${name} · helios-doit`;
  $('.job-head', v).dataset.state = job.state; // colors the progress bar
  setText($('.name', v), name);
  setText($('.job-head .badge', v), job.state).dataset.state = job.state;
  setBar($('.job-head .bar', v), job.progress);
  setText($('.job-head .pct', v), fmtPct(job.progress));
  const facts = { frames: frames(job), chunks: `${job.completedChunks ?? 0} / ${job.totalChunks ?? '?'} done`,
    eta: fmtEta(job.eta), priority: String(job.priority ?? 0), started: timeEl(job.startedAt),
    finished: timeEl(job.finishedAt), output: pathEl(job.output), file: pathEl(job.job) };
  for (const [key, value] of Object.entries(facts)) $(`[data-fact="${key}"]`, v).replaceChildren(value);
  updateActions();
  const error = setText($('.job-error', v), job.error ? `Error: ${job.error}` : '');
  error.hidden = !job.error;
  if (Array.isArray(job.chunks)) renderChunks(job.chunks);
  renderMerge(job);
}

function updateActions() {
  for (const b of $$('[data-action]', S.view)) b.disabled = S.busy || !ACTIONS[b.dataset.action].includes(S.job?.state);
}

async function act(action) { // POST the action, then show the job as the reply has it
  S.busy = true;
  updateActions();
  try {
    const job = await api(`${jobUrl(S.jobId)}/${action}`, { method: 'POST' });
    notify('');
    const older = Date.parse(job.updatedAt ?? '') < Date.parse(S.job?.updatedAt ?? ''); // an event was quicker
    if (!S.gone && !S.locked && !older) renderJob(job);
  } catch (err) {
    report(err, `Could not ${action}`);
  } finally {
    S.busy = false;
    if (!S.gone && !S.locked) updateActions();
  }
}

function renderChunks(chunks) { // one cell per chunk, in id order, each kept and updated in place
  const grid = $('.grid', S.view);
  const sorted = [...chunks].sort((a, b) => a.id - b.id);
  sorted.forEach((chunk, i) => {
    if (!S.cells.has(chunk.id)) S.cells.set(chunk.id, makeCell(chunk.id));
    const entry = S.cells.get(chunk.id);
    if (grid.children[i] !== entry.cell) grid.insertBefore(entry.cell, grid.children[i] || null);
    updateCell(entry, chunk);
  });
  const ids = new Set(sorted.map((c) => c.id));
  for (const [id, entry] of S.cells) if (!ids.has(id)) { entry.cell.remove(); S.cells.delete(id); }
  setText($('.summary', S.view), `(${sorted.filter((c) => c.state === 'done').length} of ${sorted.length} done)`);
}

function makeCell(id) {
  const cell = $('.chunk', clone('chunk-cell'));
  cell.dataset.chunk = id;
  setText($('.cid', cell), `#${id}`);
  $('.bar', cell).setAttribute('aria-label', `Chunk ${id}: frames done`);
  $('.log', cell).id = `log-${id}`;
  const button = $('.log-toggle', cell);
  button.setAttribute('aria-controls', `log-${id}`);
  button.addEventListener('click', () => toggleLog(cell, id));
  return { cell, thumb: null };
}

function updateCell(entry, chunk) {
  const { cell } = entry;
  const total = Number(chunk.frames) || 0;
  cell.dataset.state = chunk.state;
  setText($('.cstate', cell), chunk.state);
  setBar($('.bar', cell), total ? (100 * (chunk.framesDone ?? 0)) / total : Number(chunk.state === 'done') * 100);
  setText($('.cframes', cell), `${chunk.framesDone ?? 0}/${chunk.frames ?? '?'} frames`);
  const attempts = chunk.attempts ?? 0;
  setText($('.cattempts', cell), `${attempts} attempt${attempts === 1 ? '' : 's'}`);
  setText($('.cduration', cell), fmtDuration(chunk.duration));
  setThumb(entry, chunk.id, chunk.state === 'done');
  const failed = chunk.state === 'failed';
  const reason = failed && chunk.message ? String(chunk.message).split('\n')[0] : '';
  const line = setText($('.reason', cell), reason);
  line.title = reason;
  line.hidden = !reason;
  $('.log-toggle', cell).hidden = !failed;
  if (!failed) toggleLog(cell, chunk.id, false);
}

function setThumb(entry, cid, show) { // the first frame of a done chunk, requested once
  if (show && !entry.thumb) {
    entry.thumb = h('img', { class: 'thumb', loading: 'lazy', width: 160, height: 90, alt: `First frame of chunk ${cid}`,
      src: chunkUrl(cid, 'thumbnail'), onerror: (e) => { e.target.hidden = true; } });
    entry.cell.insertBefore(entry.thumb, $('.bar', entry.cell));
  } else if (!show && entry.thumb) {
    entry.thumb.remove();
    entry.thumb = null;
  }
}

async function toggleLog(cell, cid, open = $('.log', cell).hidden) { // fetched at each opening: a log grows
  const log = $('.log', cell);
  log.hidden = !open;
  setText($('.log-toggle', cell), open ? 'Hide log' : 'Show log').setAttribute('aria-expanded', String(open));
  if (!open) return;
  setText(log, 'Loading the log…');
  setText(log, await api(chunkUrl(cid, 'log'), { as: 'text' })
    .then((text) => text || '(the log is empty)', (err) => `Could not load the log: ${err.message}`));
}

function renderMerge(job) {
  const state = job.merge?.state ?? 'pending';
  setText($('.merge-state', S.view), state).dataset.state = state;
  setText($('.merge-text', S.view), job.merge?.message ?? '');
  const figure = $('.seams-figure', S.view);
  const img = $('.seams', figure);
  if (job.seams && !img.getAttribute('src')) { // requested once
    img.alt = `Seams of ${job.name || job.id}: the frames on either side of every chunk boundary of the merged video`;
    img.src = `${jobUrl(S.jobId)}/seams`;
  }
  figure.hidden = !job.seams;
}

function showPage(templateId, title) { // the login form, or a job that is not there
  document.title = `${title} · helios-doit`;
  S.view.replaceChildren(clone(templateId));
}

function showGone(text, testid) {
  S.gone = true;
  showPage('gone-page', text);
  setText($('.gone h1', S.view), text).parentNode.dataset.testid = testid;
}

// ---- loading, live events, login ----
const newer = (id, since) => (S.touched.get(id) ?? -1) > since; // an event about it came after `since`

async function load() { // (re)fetch what the page shows
  if (S.locked || S.gone) return;
  const since = S.seq;
  try {
    if (S.jobId === null) {
      applyList((await api('/api/jobs')).jobs ?? [], since);
    } else {
      const job = await api(jobUrl(S.jobId));
      if (!S.gone && !S.locked && !newer(job.id, since)) renderJob(job);
    }
    notify('');
  } catch (err) {
    if (err.status === 404 && S.jobId !== null) showGone('No such job', 'not-found');
    else report(err, 'Could not load');
  }
}

function onEvent(kind, event) {
  const data = (() => { try { return JSON.parse(event.data); } catch { return null; } })();
  if (data?.id === undefined || data.id === null || S.locked) return;
  S.touched.set(data.id, ++S.seq);
  if (S.jobId === null) {
    if (kind === 'job') upsertRow(data); else removeRow(data.id);
    refreshQueue();
  } else if (data.id === S.jobId && !S.gone) {
    if (kind === 'job') renderJob(data); else showGone('This job was deleted', 'deleted');
  }
}

function connect() {
  S.es?.close();
  const es = (S.es = new EventSource('/api/events'));
  es.addEventListener('open', () => { setDown(false); load(); }); // catch up on anything missed while down
  es.addEventListener('error', () => {
    if (S.es !== es) return;
    setDown(true);
    if (es.readyState === EventSource.CLOSED) { // refused (401, 5xx): the browser will not retry by itself
      S.es = null;
      setTimeout(() => { if (!S.es && !S.locked) start(); }, 3000);
    }
  });
  es.addEventListener('job', (e) => onEvent('job', e));
  es.addEventListener('deleted', (e) => onEvent('deleted', e));
}

const setDown = (down) => { $('#conn').hidden = !down; };

function showLogin() {
  if (S.locked) return;
  S.locked = true;
  S.es?.close();
  S.es = null;
  setDown(false);
  notify('');
  showPage('login-page', 'Sign in');
  $('form', S.view).addEventListener('submit', login);
  $('input', S.view).focus();
}

async function login(event) { // POST the token; the server answers with a cookie
  event.preventDefault();
  const [input, button, message] = ['input', 'button', '.login-error'].map((sel) => $(sel, event.target));
  button.disabled = message.hidden = true;
  try {
    await api('/api/login', { method: 'POST', body: { token: input.value }, login: false });
    S.locked = false;
    mount();
    start();
  } catch (err) {
    setText(message, err.status === 401 ? 'That token is not right.' : `Could not sign in: ${err.message}`).hidden = false;
    input.select();
  }
  button.disabled = false;
}

// ---- start: the path says which page this is ----
function route() {
  const match = location.pathname.match(/^\/jobs\/([^/]+)\/?$/);
  const decode = (text) => { try { return decodeURIComponent(text); } catch { return text; } };
  S.jobId = match ? decode(match[1]) : null;
}

function mount() { // an empty page for the route, to be filled by load() and events
  [S.rows, S.cells].forEach((map) => map.clear());
  Object.assign(S, { job: null, view: $('#main') });
  if (S.jobId === null) mountQueue(S.view); else mountJob(S.view);
}

async function start() { // fetch first (which also tells whether a login is needed), then listen
  await load();
  if (!S.locked && !S.gone) connect();
}

route();
$('#notice .dismiss').addEventListener('click', () => notify(''));
mount();
start();
