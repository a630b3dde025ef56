// The status page: polls the daemon's API and renders what it says. Every value is set as
// text (never as HTML), so nothing a plugin or an event holds can run in the page.
"use strict";

const REFRESH_MS = 1000;
const TOKEN_KEY = "eventhost-token";
let token = sessionStorage.getItem(TOKEN_KEY) || "";
let nextAfter = null;

const $ = (selector) => document.querySelector(selector);

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = {};
  if (token) headers.Authorization = "Bearer " + token;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = body.error ? body.error.message : response.statusText;
    if (response.status === 401) $("#login").hidden = false;
    throw new ApiError(response.status, message);
  }
  return body;
}

function say(text) {
  const message = $("#message");
  message.textContent = text || "";
  message.hidden = !text;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "-" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function fill(table, items, render) {
  const body = $(table + " tbody");
  const rows = items.map((item) => {
    const row = document.createElement("tr");
    render(row, item);
    return row;
  });
  body.replaceChildren(...rows);
}

function age(seconds) {
  if (!seconds) return "0";
  if (seconds < 60) return seconds.toFixed(1) + " s";
  if (seconds < 3600) return (seconds / 60).toFixed(1) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

function renderSubscriptions(subscriptions) {
  fill("#subscriptions", subscriptions, (row, s) => {
    row.dataset.subscription = s.name;
    cell(row, s.name);
    cell(row, s.lag, "num lag");
    cell(row, age(s.lag_seconds), "num lag-age");
    const rate = s.progress && s.progress.events_per_second;
    cell(row, rate ? Math.round(rate) + " ev/s" : "-", "num rate");
    cell(row, s.status, "status status-" + s.status);
    cell(row, s.position, "num position");
    cell(row, s.plugin);
    cell(row, s.last_error, "wrap");
  });
}

function renderParked(parked) {
  fill("#parked", parked, (row, p) => {
    row.dataset.parkedId = p.id;
    cell(row, p.id, "num");
    cell(row, p.subscription);
    const actions = cell(row, "");
    if (p.replay_requested) {
      actions.textContent = "replay pending";
    } else {
      actions.append(button("Replay", "replay", () => act(`/v1/parked/${p.id}/replay`)));
      actions.append(" ");
      actions.append(button("Skip", "skip", () => act(`/v1/parked/${p.id}/skip`)));
    }
    cell(row, p.error, "wrap error");
    cell(row, p.position, "num");
    cell(row, p.event_id);
    cell(row, p.attempts, "num");
  });
  $("#parked-none").hidden = parked.length > 0;
}

function button(label, className, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = className;
  b.addEventListener("click", onClick);
  return b;
}

async function act(path) {
  try {
    await api(path, { method: "POST" });
    say("");
    await refresh();
  } catch (error) {
    say(error.message);
  }
}

function renderPlugins(plugins) {
  fill("#plugins", plugins, (row, p) => {
    row.dataset.file = p.file;
    cell(row, p.name);
    cell(row, p.version);
    cell(row, p.file);
    cell(row, p.status, "status status-" + p.status);
    cell(row, p.error, "wrap");
  });
}

async function refreshHealth() {
  const badge = $("#health");
  const response = await fetch("/health/ready").catch(() => null);
  const ready = response !== null && response.ok;
  badge.textContent = ready ? "ready" : response === null ? "unreachable" : "not ready";
  badge.className = "badge " + (ready ? "ready" : "not-ready");
}

async function refresh() {
  await refreshHealth();
  try {
    const [subscriptions, parked, plugins] = await Promise.all([
      api("/v1/subscriptions"),
      api("/v1/parked"),
      api("/v1/plugins"),
    ]);
    renderSubscriptions(subscriptions.subscriptions);
    renderParked(parked.parked);
    renderPlugins(plugins.plugins);
    $("#updated").textContent = "updated " + new Date().toLocaleTimeString();
    if ($("#message").textContent.startsWith("cannot refresh")) say("");
  } catch (error) {
    if (error.status !== 401) say("cannot refresh: " + error.message);
  }
}

function eventsPath(after) {
  const scope = $("#scope").value;
  const type = encodeURIComponent($("#aggregate-type").value.trim());
  const id = encodeURIComponent($("#aggregate-id").value.trim());
  const page = `?after=${after}&limit=50`;
  if (scope === "category") return `/v1/categories/${type}/events${page}`;
  if (scope === "stream") return `/v1/streams/${type}/${id}/events${page}`;
  return `/v1/events${page}`;
}

async function browse(after) {
  try {
    const page = await api(eventsPath(after));
    fill("#events", page.events, (row, e) => {
      row.dataset.position = e.position;
      cell(row, e.position, "num");
      cell(row, e.aggregate_type + "/" + e.aggregate_id);
      cell(row, e.version, "num");
      cell(row, e.event_type);
      cell(row, JSON.stringify(e.payload), "wrap");
      cell(row, new Date(e.recorded_at).toLocaleString());
    });
    nextAfter = page.events.length > 0 ? page.next_after : null;
    $("#next-page").disabled = nextAfter === null;
    say("");
  } catch (error) {
    say(error.message);
  }
}

function showScopeInputs() {
  const scope = $("#scope").value;
  $("#aggregate-type").hidden = scope === "all";
  $("#aggregate-id").hidden = scope !== "stream";
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("#token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    $("#login").hidden = true;
    refresh();
  });
  $("#scope").addEventListener("change", showScopeInputs);
  $("#browse").addEventListener("submit", (event) => {
    event.preventDefault();
    browse(0);
  });
  $("#next-page").addEventListener("click", () => {
    if (nextAfter !== null) browse(nextAfter);
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
});
