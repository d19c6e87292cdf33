// aiosched dashboard: polls the management API every 2 s; no framework, no build step.
// Every URL is relative, so the page works at "/" and mounted under a prefix ("/aiosched/").
// Values from the server are always set with textContent (never innerHTML).
"use strict";

const POLL_MS = 2000;
const TOKEN_KEY = "aiosched.token";
const openDetails = new Set();
let timer = null;
let busy = false;
let again = false;

const $ = (id) => document.getElementById(id);

function token() {
  try { return localStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
}

async function api(method, path) {
  const headers = { "Accept": "application/json" };
  const t = token();
  if (t) headers["Authorization"] = "Bearer " + t;
  const response = await fetch(path, { method, headers, cache: "no-store" });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const error = new Error((body && body.error) || response.status + " " + response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function cell(label, ...children) {
  const td = el("td");
  td.dataset.label = label;
  const box = el("div");
  for (const child of children) if (child) box.append(child);
  td.append(box);
  return td;
}

function badge(state) {
  return el("span", state.replace("_", " "), "badge s-" + state);
}

function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  const seconds = Math.round((date.getTime() - Date.now()) / 1000);
  const span = Math.abs(seconds);
  const rel = span < 90 ? span + "s" : span < 5400 ? Math.round(span / 60) + "m" :
    span < 129600 ? Math.round(span / 3600) + "h" : Math.round(span / 86400) + "d";
  return date.toLocaleString() + (seconds >= 0 ? " (in " + rel + ")" : " (" + rel + " ago)");
}

// A time shown relative to now: its text is refreshed in place (see updateTimes), so a row
// whose data did not change is never rebuilt just because time passed.
function timeEl(iso, className) {
  const span = el("span", when(iso), className);
  if (iso) { span.dataset.ts = iso; span.classList.add("when"); }
  return span;
}

function updateTimes() {
  for (const span of document.querySelectorAll("span.when")) span.textContent = when(span.dataset.ts);
}

// Rows are keyed; a row is rebuilt only when its item changed, so buttons under the pointer
// survive the 2 s refresh (a click is never lost to a re-render).
const signatures = new WeakMap();

function syncRows(body, items, keyOf, build) {
  const old = new Map([...body.rows].map((row) => [row.dataset.key, row]));
  let index = 0;
  for (const item of items) {
    const key = keyOf(item);
    const signature = JSON.stringify(item);
    let row = old.get(key);
    if (!row || signatures.get(row) !== signature) {
      const fresh = build(item);
      fresh.dataset.key = key;
      signatures.set(fresh, signature);
      if (row) row.replaceWith(fresh);
      row = fresh;
    }
    old.delete(key);
    if (body.rows[index] !== row) body.insertBefore(row, body.rows[index] || null);
    index++;
  }
  for (const row of old.values()) row.remove();
}

function seconds(value) {
  return value === null || value === undefined ? "—" : value < 1 ? (value * 1000).toFixed(0) + " ms" : value.toFixed(2) + " s";
}

function showBanner(message) {
  const banner = $("banner");
  banner.textContent = message || "";
  banner.hidden = !message;
}

function actionButton(job, action, label) {
  const button = el("button", label);
  button.type = "button";
  button.dataset.action = action;
  button.dataset.job = job.id;
  button.addEventListener("click", () => act(button, job.id, action));
  return button;
}

async function act(button, id, action) {
  button.disabled = true;
  try {
    await api("POST", "scheduler/jobs/" + encodeURIComponent(id) + "/" + action);
    showBanner("");
  } catch (error) {
    if (error.status === 401) {
      $("token-form").hidden = false;
      $("token").focus();
      showBanner("This scheduler needs a token for changes: enter it above.");
    } else {
      showBanner(action + " " + id + ": " + error.message);
    }
  } finally {
    button.disabled = false;
    refresh();
  }
}

function lastResult(run) {
  if (!run) return el("span", "—", "meta");
  const box = el("span");
  box.append(badge(run.state));
  box.append(timeEl(run.ended_at || run.started_at || run.fire_time, "sub"));
  if (run.error) box.append(el("span", run.error, "sub"));
  return box;
}

function jobRow(job) {
  const row = el("tr");
  row.dataset.job = job.id;
  const name = el("span");
  name.append(el("strong", job.name));
  if (job.name !== job.id) name.append(el("span", job.id, "sub"));
  const state = cell("State", badge(job.state));
  state.dataset.field = "state";
  const zone = job.trigger.includes(job.timezone) ? null : el("span", job.timezone, "sub");
  row.append(
    cell("Job", name),
    state,
    cell("Trigger", el("span", job.trigger), zone),
    cell("Next fire", job.paused ? el("span", "paused") : timeEl(job.next_fire_time)),
    cell("Last result", lastResult(job.last_run)),
    cell("Actions",
      job.paused ? actionButton(job, "resume", "Resume") : actionButton(job, "pause", "Pause"),
      actionButton(job, "run", "Run now")),
  );
  return row;
}

function renderJobs(jobs) {
  syncRows($("jobs").tBodies[0], jobs, (job) => job.id, jobRow);
  $("jobs-empty").hidden = jobs.length > 0;
  $("jobs-count").textContent = "(" + jobs.length + ")";
}

function details(run) {
  const text = [run.error, run.reason, run.result ? "result: " + run.result : null].filter(Boolean);
  if (!text.length) return el("span", "—", "meta");
  const box = el("details");
  box.open = openDetails.has(run.run_id);
  box.addEventListener("toggle", () => {
    if (box.open) openDetails.add(run.run_id); else openDetails.delete(run.run_id);
  });
  box.append(el("summary", run.error ? "error" : run.reason ? "reason" : "result"));
  box.append(el("pre", text.join("\n")));
  return box;
}

function runRow(run) {
  const row = el("tr");
  row.dataset.run = run.run_id;
  row.append(
    cell("Fire time", timeEl(run.fire_time), run.manual ? el("span", "manual", "sub") : null),
    cell("Job", el("span", run.schedule_id)),
    cell("State", badge(run.state)),
    cell("Attempt", el("span", run.attempt)),
    cell("Duration", el("span", seconds(run.duration))),
    cell("Late", el("span", seconds(run.lateness))),
    cell("Details", details(run)),
  );
  return row;
}

function renderRuns(runs) {
  syncRows($("runs").tBodies[0], runs, (run) => run.run_id, runRow);
  $("runs-empty").hidden = runs.length > 0;
}

function renderStatus(status) {
  const state = $("sched-state");
  state.textContent = status.state;
  state.className = "badge s-" + status.state;
  $("sched-meta").textContent = [status.node_id, status.timezone, status.store, "v" + status.version].join(" · ");
}

async function refresh() {
  if (busy) { again = true; return; }
  busy = true;
  again = false;
  clearTimeout(timer);
  try {
    const [status, jobs, runs] = await Promise.all([
      api("GET", "scheduler/status"), api("GET", "scheduler/jobs"), api("GET", "scheduler/runs?limit=30"),
    ]);
    renderStatus(status);
    renderJobs(jobs.jobs);
    renderRuns(runs.runs);
    updateTimes();
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    if ($("banner").dataset.kind === "poll") { showBanner(""); delete $("banner").dataset.kind; }
  } catch (error) {
    if (error.status === 401) $("token-form").hidden = false;
    showBanner("Cannot load: " + error.message);
    $("banner").dataset.kind = "poll";
  } finally {
    busy = false;
    timer = setTimeout(refresh, again ? 0 : POLL_MS);
  }
}

function setupToken() {
  const form = $("token-form");
  $("token").value = token();
  $("token-toggle").addEventListener("click", () => { form.hidden = !form.hidden; });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    try { localStorage.setItem(TOKEN_KEY, $("token").value.trim()); } catch (e) { /* private mode */ }
    form.hidden = true;
    showBanner("");
    refresh();
  });
  $("token-clear").addEventListener("click", () => {
    try { localStorage.removeItem(TOKEN_KEY); } catch (e) { /* private mode */ }
    $("token").value = "";
    refresh();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupToken();
  refresh();
});
