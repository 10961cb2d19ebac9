// The usage and savings dashboard. It asks for the admin key once (kept in this tab's
// sessionStorage, sent only as the X-API-Key header), reads GET /v1/llm/usage (with `interval`,
// for the charts) and GET /v1/llm/providers, and draws totals, charts and tables from them.

import { stackedBars } from "./chart.js";
import * as fmt from "./format.js";

const KEY = "aiEnablerProxy.adminKey";
const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442"];  // Okabe–Ito
const OTHER = "#8c8c8c";
const PRESETS = { hour: ["1h", 3600, "1m"], day: ["24h", 86400, "30m"], week: ["7d", 604800, "6h"],
                  month: ["30d", 2592000, "1d"] };
const INTERVALS = [[60, "1m"], [300, "5m"], [900, "15m"], [1800, "30m"], [3600, "1h"], [10800, "3h"],
                   [21600, "6h"], [43200, "12h"], [86400, "1d"], [604800, "7d"]];
const GROUP_NAMES = { model: "model", provider: "provider", apiKey: "API key", endpoint: "API", tag: "tag" };
const COLUMNS = [["key", null], ["requests", "Requests", fmt.count], ["errors", "Errors", fmt.count],
                 ["inputTokens", "Input tokens", fmt.count], ["outputTokens", "Output tokens", fmt.count],
                 ["costUsd", "Cost", fmt.usd], ["savingsUsd", "Savings", fmt.usd],
                 ["avgLatencyMs", "Avg latency", fmt.ms], ["avgTtftMs", "Avg TTFT", fmt.ms]];
const CHARTS = [["requests", "Requests", (p) => p.requests, fmt.compact],
                ["tokens", "Tokens (input + output)", (p) => p.inputTokens + p.outputTokens, fmt.compact],
                ["cost", "Cost", (p) => p.costUsd, (v) => fmt.usd(v, true)],
                ["savings", "Savings", (p) => p.savingsUsd, (v) => fmt.usd(v, true)]];

const $ = (id) => document.getElementById(id);
const state = { report: null, providers: [], sort: null, ticket: 0 };

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

class Unreachable extends Error {}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

const keyName = (key) => (key === null || key === undefined ? "(none)" : String(key));

// -- the gateway -------------------------------------------------------------------------------

async function getJson(path, params = {}) {
  const url = new URL(path, document.baseURI);  // relative to the page: works behind a path prefix
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
  let response;
  try {
    response = await fetch(url, { headers: { "X-API-Key": sessionStorage.getItem(KEY) || "" },
                                  cache: "no-store" });
  } catch {
    throw new Unreachable(url.origin);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new HttpError(response.status, body?.error?.message || response.statusText);
  return body;
}

function utcInput(date) {
  return date.toISOString().slice(0, 16);
}

function chooseInterval(seconds) {
  const fit = INTERVALS.find(([width]) => seconds / width <= 60);
  return (fit || INTERVALS[INTERVALS.length - 1])[1];
}

/** The window's query parameters, or null (and a message) when the custom one is not valid. */
function windowParams() {
  const choice = $("window").value;
  if (choice !== "custom") {
    const [from, , interval] = PRESETS[choice];
    return { from, interval };
  }
  const from = Date.parse($("from").value + ":00Z");
  const to = Date.parse($("to").value + ":00Z");
  if (!(from < to)) {
    banner("Choose a custom window whose start is before its end.");
    return null;
  }
  return { from: new Date(from).toISOString(), to: new Date(to).toISOString(),
           interval: chooseInterval((to - from) / 1000) };
}

async function load() {
  if (!sessionStorage.getItem(KEY)) return showLogin();
  const params = windowParams();
  if (!params) return;
  const ticket = ++state.ticket;  // a later refresh wins over an earlier one still on its way
  busy(true);
  try {
    const [report, listed] = await Promise.all([
      getJson("v1/llm/usage", { ...params, groupBy: $("group").value }),
      getJson("v1/llm/providers")]);
    if (ticket !== state.ticket) return;
    state.report = report;
    state.providers = listed.providers || [];
    banner(null);
    show("dash");
    render();
    $("updated").textContent = "Updated " + new Date().toISOString().slice(11, 19) + " UTC";
  } catch (error) {
    if (ticket === state.ticket) fail(error);
  } finally {
    if (ticket === state.ticket) busy(false);
  }
}

function fail(error) {
  $("updated").textContent = "Refresh failed at " + new Date().toISOString().slice(11, 19) + " UTC";
  if (error instanceof HttpError && error.status === 401) {
    sessionStorage.removeItem(KEY);
    showLogin("The gateway refused this admin key (401: " + error.message + "). Check the key " +
              "(ADMIN_API_KEY on the gateway) and enter it again.");
  } else if (error instanceof HttpError && error.status === 403) {
    banner("The gateway's control plane is off (403: " + error.message + ").");
  } else if (error instanceof Unreachable) {
    banner(`Cannot reach the gateway at ${error.message}: it may be down or restarting. ` +
           "The figures below, if any, are from the last successful refresh.", true);
  } else if (error instanceof HttpError) {
    banner(`The gateway answered ${error.status}: ${error.message}`, true);
  } else {
    banner("Something went wrong while drawing the dashboard: " + error.message, true);
    console.error(error);
  }
}

// -- page states ---------------------------------------------------------------------------------

function show(section) {
  $("login").hidden = section !== "login";
  $("dash").hidden = section !== "dash";
  $("signout").hidden = section !== "dash";
}

function showLogin(message = null) {
  show("login");
  banner(null);
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
  $("key").focus();
}

function banner(message, retry = false) {
  $("banner").hidden = !message;
  $("banner-text").textContent = message || "";
  $("retry").hidden = !retry;
}

function busy(on) {
  $("refresh").disabled = on;
  document.body.setAttribute("aria-busy", on ? "true" : "false");
  if (on) $("updated").textContent = "Loading…";
}

// -- drawing -------------------------------------------------------------------------------------

function render() {
  const report = state.report;
  const empty = report.totals.requests === 0;
  $("span").textContent = `${fmt.utc(report.from)} → ${fmt.utc(report.to)}`;
  renderTotals(report.totals);
  $("empty").hidden = !empty;
  $("charts-panel").hidden = empty;
  $("groups-panel").hidden = empty;
  if (!empty) {
    renderCharts();
    renderGroups();
  }
  renderProviders();
}

function card(id, label, value, sub, raw) {
  return el("div", { class: "card", id: "total-" + id, "data-value": String(raw ?? "") },
            el("span", { class: "label", text: label }), el("strong", { class: "value", text: value }),
            el("span", { class: "sub", text: sub }));
}

function renderTotals(t) {
  const spent = t.costUsd + t.savingsUsd;
  const full = (n, short) => (short === fmt.count(n) ? "" : fmt.count(n));
  $("totals").replaceChildren(
    card("requests", "Requests", fmt.compact(t.requests), full(t.requests, fmt.compact(t.requests)), t.requests),
    card("errors", "Errors", fmt.compact(t.errors), fmt.percent(t.errors, t.requests) + " of requests", t.errors),
    card("inputTokens", "Input tokens", fmt.compact(t.inputTokens),
         full(t.inputTokens, fmt.compact(t.inputTokens)), t.inputTokens),
    card("outputTokens", "Output tokens", fmt.compact(t.outputTokens),
         full(t.outputTokens, fmt.compact(t.outputTokens)), t.outputTokens),
    card("costUsd", "Cost", fmt.usd(t.costUsd, true),
         fmt.usd(t.costUsd, true) === fmt.usd(t.costUsd) ? "" : fmt.usd(t.costUsd), t.costUsd),
    card("savingsUsd", "Savings", fmt.usd(t.savingsUsd, true),
         fmt.percent(t.savingsUsd, spent) + " below list price", t.savingsUsd),
    card("avgLatencyMs", "Avg latency", fmt.ms(t.avgLatencyMs), "", t.avgLatencyMs),
    card("avgTtftMs", "Avg time to first token", fmt.ms(t.avgTtftMs), "", t.avgTtftMs));
}

/** The series to stack for one figure: the first seven in their own colours, the rest as one. */
function stacks(pick) {
  const all = state.report.series;
  const shown = all.slice(0, PALETTE.length).map((s, i) => ({
    key: keyName(s.key), color: PALETTE[i], values: s.points.map(pick) }));
  const rest = all.slice(PALETTE.length);
  if (rest.length) {
    const values = rest[0].points.map((_, i) => rest.reduce((sum, s) => sum + pick(s.points[i]), 0));
    shown.push({ key: `Other (${rest.length})`, color: OTHER, values });
  }
  return shown;
}

function swatch(color) {
  const box = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  box.setAttribute("width", "12");
  box.setAttribute("height", "12");
  box.setAttribute("aria-hidden", "true");
  const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
  for (const [k, v] of Object.entries({ width: 12, height: 12, rx: 2, fill: color })) rect.setAttribute(k, v);
  box.append(rect);
  return box;
}

function renderCharts() {
  const report = state.report;
  const group = GROUP_NAMES[report.groupBy] || report.groupBy;
  $("charts-note").textContent = `Per ${fmt.every(report.interval)}, stacked by ${group}; times in UTC.` +
    (report.groupBy === "tag" ? " A request with several tags is in each of their stacks; untagged ones in none." : "");
  const legend = stacks((p) => p.requests);
  $("legend").replaceChildren(...legend.map((s) => el("li", {}, swatch(s.color), el("span", { text: s.key }))));
  if (!report.series.length) {
    $("charts").replaceChildren(el("p", { class: "muted", text: `None of these requests has a ${group}.` }));
    return;
  }
  const times = report.series[0].points.map((p) => p.t);
  const daily = report.interval.endsWith("d");
  $("charts").replaceChildren(...CHARTS.map(([id, title]) => el("figure", { class: "chart", id: "chart-" + id },
    el("figcaption", { text: title }), el("div", { class: "plot" }))));
  for (const [id, title, pick, format] of CHARTS) {
    stackedBars($("chart-" + id).querySelector(".plot"),
                { title: `${title} per ${fmt.every(report.interval)} by ${group}`, times, daily,
                  series: stacks(pick), format });
  }
}

function sortedGroups() {
  const groups = [...state.report.groups];
  if (!state.sort) return groups;
  const { column, direction } = state.sort;
  const value = (g) => (column === "key" ? keyName(g.key).toLowerCase() : g[column]);
  return groups.sort((a, b) => {
    const x = value(a);
    const y = value(b);
    if (x === null || x === undefined) return 1;  // no figure: last, whichever the direction
    if (y === null || y === undefined) return -1;
    return (x < y ? -1 : x > y ? 1 : 0) * direction;
  });
}

function sortBy(column) {
  const same = state.sort && state.sort.column === column;
  state.sort = { column, direction: same ? -state.sort.direction : column === "key" ? 1 : -1 };
  renderGroups();
}

function renderGroups() {
  const report = state.report;
  const group = GROUP_NAMES[report.groupBy] || report.groupBy;
  $("group-name").textContent = group;
  const head = el("tr", {}, ...COLUMNS.map(([column, name]) => {
    const label = name ?? group[0].toUpperCase() + group.slice(1);
    const sorted = state.sort && state.sort.column === column;
    const th = el("th", { scope: "col", class: column === "key" ? "" : "num",
                          "aria-sort": sorted ? (state.sort.direction > 0 ? "ascending" : "descending") : "none" },
                  el("button", { type: "button", "data-column": column,
                                 text: label + (sorted ? (state.sort.direction > 0 ? " ▲" : " ▼") : "") }));
    th.querySelector("button").addEventListener("click", () => sortBy(column));
    return th;
  }));
  const row = (g, label) => el("tr", {}, ...COLUMNS.map(([column, , format]) => (column === "key"
    ? el("th", { scope: "row", text: label ?? keyName(g.key) })
    : el("td", { class: "num", text: format(g[column]) }))));
  $("groups").replaceChildren(el("thead", {}, head), el("tbody", {}, ...sortedGroups().map((g) => row(g))),
                              el("tfoot", {}, row(report.totals, "Total")));
}

function downloadCsv() {
  const report = state.report;
  const columns = COLUMNS.slice(1).map(([column]) => column);
  const rows = [[report.groupBy, ...columns],
                ...sortedGroups().map((g) => [g.key ?? "", ...columns.map((c) => g[c])])];
  const stamp = (iso) => iso.replace(/[:-]/g, "").replace(/\.\d+/, "");
  const link = el("a", { download: `usage-by-${report.groupBy}-${stamp(report.from)}-${stamp(report.to)}.csv` });
  link.href = URL.createObjectURL(new Blob([fmt.csv(rows)], { type: "text/csv;charset=utf-8" }));
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
}

function renderProviders() {
  const providers = state.providers;
  if (!providers.length) {
    $("providers").replaceChildren(el("tbody", {}, el("tr", {}, el("td", { text: "No providers registered." }))));
    return;
  }
  const head = el("tr", {}, ...["Name", "Type", "Models", "Key", "Hosted", "Circuit", "In flight"].map(
    (label) => el("th", { scope: "col", class: label === "In flight" ? "num" : "", text: label })));
  const rows = providers.map((p) => el("tr", {},
    el("th", { scope: "row", text: p.name }), el("td", { text: p.supportedProvider || "" }),
    el("td", { class: "models", text: (p.models || []).join(", ") }),
    el("td", { class: "mono", text: p.apiKey || "—" }), el("td", { text: p.isHosted ? "yes" : "no" }),
    el("td", { class: p.circuitOpen ? "bad" : "ok", text: p.circuitOpen ? "✕ open (skipped)" : "✓ closed" }),
    el("td", { class: "num", text: fmt.count(p.inFlight) })));
  $("providers").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
}

// -- wiring --------------------------------------------------------------------------------------

function start() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    $("key").value = "";
    load();
  });
  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    state.report = null;
    showLogin();
  });
  $("window").addEventListener("change", () => {
    const custom = $("window").value === "custom";
    $("custom").hidden = !custom;
    if (!custom) return load();
    const now = Date.now();
    if (!$("from").value) $("from").value = utcInput(new Date(now - 86400000));
    if (!$("to").value) $("to").value = utcInput(new Date(now + 60000));
  });
  $("apply").addEventListener("click", load);
  $("group").addEventListener("change", () => {
    state.sort = null;
    load();
  });
  $("refresh").addEventListener("click", load);
  $("retry").addEventListener("click", load);
  $("csv").addEventListener("click", downloadCsv);
  let pending = null;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(renderChartsIfShown, 150);
  });
  load();
}

function renderChartsIfShown() {
  if (state.report && !$("dash").hidden && !$("charts-panel").hidden) renderCharts();
}

start();
