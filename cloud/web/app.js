// The operations page: sign in, then the caller's unit at a glance (grid map, fleet,
// live alerts, case pipeline, event trends), drilling down unit by unit, and a page per
// edge box. Every figure comes from the API, which answers within the caller's unit only.

import { applyWords, clockTime, duration, lang, named, setLang, setZone, t } from "./i18n.js";
import { caseStates, caseTimes, eventTrends, gridMap, nodeHealth, resizeAll } from "./charts.js";

const API = "/api/v1";
const STATE_ORDER = ["intake", "triage", "dispatch", "handling", "supervision", "feedback", "closed"];
const REFRESH_MS = 10000;
const ALERTS_KEPT = 50;

const session = {
  token: sessionStorage.getItem("gridwatch.token"),
  me: null,
  units: new Map(), // code → {code, name, level, parent_code}
  unit: null, // the unit on screen
  timer: null,
  socket: null,
  lastAlert: null,
  alerts: [], // newest first, at most ALERTS_KEPT
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child ?? "");
  return node;
}

class SignedOut extends Error {}

async function api(path, options = {}) {
  const response = await fetch(API + path, {
    ...options,
    headers: { Authorization: `Bearer ${session.token}`, ...(options.headers || {}) },
  });
  if (response.status === 401) {
    signOut();
    throw new SignedOut();
  }
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error((body && body.detail && JSON.stringify(body.detail)) || response.statusText);
  return body;
}

// ---- sign in and out ------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const form = new URLSearchParams({ username: $("username").value, password: $("password").value });
  const response = await fetch(`${API}/auth/token`, { method: "POST", body: form });
  if (!response.ok) {
    $("login-error").textContent = t("login_failed");
    return;
  }
  session.token = (await response.json()).access_token;
  sessionStorage.setItem("gridwatch.token", session.token);
  $("password").value = "";
  await start();
}

function signOut() {
  session.token = null;
  sessionStorage.removeItem("gridwatch.token");
  clearInterval(session.timer);
  if (session.socket) session.socket.close();
  session.socket = null;
  $("main-view").hidden = true;
  $("login-view").hidden = false;
}

async function start() {
  session.me = await api("/auth/me");
  setZone(session.me.timezone);
  const units = await api("/org/units");
  session.units = new Map(units.map((u) => [u.code, u]));
  $("whoami").textContent = `${session.me.subject} · ${unitName(session.me.unit_code)}`;
  $("login-view").hidden = true;
  $("main-view").hidden = false;
  connectAlerts();
  clearInterval(session.timer);
  session.timer = setInterval(() => refresh().catch(report), REFRESH_MS);
  await route();
}

function unitName(code) {
  return session.units.get(code)?.name || code;
}

// ---- routes: #/unit/<code>, #/node/<id> ---------------------------------------------------

async function route() {
  const [, kind, id] = location.hash.split("/");
  if (kind === "node" && id) {
    $("overview").hidden = true;
    $("node-page").hidden = false;
    session.node = decodeURIComponent(id);
  } else {
    session.node = null;
    session.unit = kind === "unit" && session.units.has(id) ? id : session.me.unit_code;
    $("overview").hidden = false;
    $("node-page").hidden = true;
  }
  renderCrumbs();
  await refresh();
  resizeAll();
}

function renderCrumbs() {
  const nav = $("crumbs");
  nav.replaceChildren();
  const path = [];
  for (let code = session.unit; code; code = session.units.get(code)?.parent_code) {
    path.unshift(code);
    if (code === session.me.unit_code) break;
  }
  path.forEach((code, i) => {
    if (i) nav.append(" › ");
    nav.append(el("a", { href: `#/unit/${code}` }, unitName(code)));
  });
  if (session.node) nav.append(" › ", el("span", {}, session.node));
}

async function refresh() {
  if (!session.token) return;
  $("clock").textContent = clockTime(new Date().toISOString());
  if (session.node) await renderNode(session.node);
  else await renderOverview(session.unit);
}

// ---- the overview -------------------------------------------------------------------------

// Each panel asks for its own data and draws alone: a panel the role may not read is not
// shown, and a request that fails empties its own panel, not the page (one refused request
// left every panel of the technician's and the grid worker's screens blank).
async function renderPanel(selector, permission, load, draw) {
  const panel = document.querySelector(selector);
  panel.hidden = !session.me.permissions.includes(permission);
  if (panel.hidden) return;
  try {
    draw(await load());
    panel.classList.remove("failed");
  } catch (error) {
    if (error instanceof SignedOut) throw error;
    panel.classList.add("failed");
    report(error);
  }
}

async function renderOverview(unit) {
  const q = `unit=${encodeURIComponent(unit)}`;
  const dayAgo = new Date(Date.now() - 24 * 3600e3).toISOString();
  const twoWeeksAgo = new Date(Date.now() - 14 * 86400e3).toISOString();
  await Promise.all([
    renderPanel(".map-panel", "read_fleet",
      () => Promise.all([api(`/fleet/units?${q}`), api(`/fleet/map?${q}`)]),
      ([units, map]) => {
        renderUnits(units);
        if (map.features.length) gridMap("map", map, (child) => { location.hash = `#/unit/${child}`; });
      }),
    renderPanel(".fleet-panel", "read_fleet", () => api(`/fleet/overview?${q}`), renderFleet),
    renderPanel(".cases-panel", "read_cases",
      () => api(`/stats/cases?${q}&from=${encodeURIComponent(twoWeeksAgo)}`),
      (stats) => {
        $("kpi-open").textContent = stats.open;
        $("kpi-overdue").textContent = stats.overdue;
        $("kpi-tta").textContent = duration(stats.acknowledged_p50_s);
        $("kpi-ttr").textContent = duration(stats.resolved_p50_s);
        caseStates("chart-states", stats.by_state, STATE_ORDER);
        caseTimes("chart-times", stats.daily);
      }),
    renderPanel(".trends-panel", "read_events",
      () => api(`/stats/events?${q}&bucket=hour&from=${encodeURIComponent(dayAgo)}`),
      (events) => eventTrends("chart-events", events)),
  ]);
}

function percent(part, whole) {
  return whole ? `${Math.round((100 * part) / whole)}%` : "–";
}

function statusBadge(node) {
  const key = node.flapping ? "flapping" : node.status;
  return el("span", { class: `badge ${key}` }, named("node_status", key));
}

function renderFleet(fleet) {
  $("kpi-nodes-online").textContent = percent(fleet.online, fleet.nodes);
  $("kpi-cameras-online").textContent = percent(fleet.cameras_connected, fleet.cameras);
  $("kpi-offline").textContent = fleet.offline;
  $("kpi-problems").textContent = Object.values(fleet.problems).reduce((a, b) => a + b, 0);
  $("worst-nodes").tBodies[0].replaceChildren(...fleet.worst.map((n) => el("tr", { "data-node": n.node_id },
    el("td", {}, el("a", { href: `#/node/${encodeURIComponent(n.node_id)}` }, n.name || n.node_id)),
    el("td", {}, statusBadge(n)),
    el("td", {}, n.cameras_total === null ? "–" : `${n.cameras_connected}/${n.cameras_total}`),
    el("td", {}, problemsText(n.problems)),
  )));
}

function renderUnits(units) {
  $("units").tBodies[0].replaceChildren(...units.map((u) => el("tr", { "data-unit": u.code },
    el("td", {}, u.own ? `${u.name} ${t("own_level")}` : el("a", { href: `#/unit/${u.code}` }, u.name)),
    el("td", { class: u.open_cases ? "warn" : "" }, u.open_cases),
    el("td", { class: u.overdue_cases ? "bad" : "" }, u.overdue_cases),
    el("td", { class: u.nodes_offline ? "bad" : "" }, `${u.nodes_offline}/${u.nodes}`),
  )));
}

// ---- the live alert feed --------------------------------------------------------------------

function connectAlerts() {
  if (session.socket) session.socket.close();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const after = session.lastAlert ? `?after=${session.lastAlert}` : "";
  // The token travels as a subprotocol, never in the URL (URLs end up in access logs).
  const socket = new WebSocket(`${scheme}://${location.host}${API}/alerts/ws${after}`, [
    "gridwatch.bearer",
    session.token,
  ]);
  session.socket = socket;
  socket.onopen = () => linkState("live");
  socket.onmessage = (message) => {
    const frame = JSON.parse(message.data);
    if (frame.type === "alert") {
      showAlert(frame.alert);
      // The figures behind an alert changed too: refresh once the burst has passed.
      clearTimeout(session.soon);
      session.soon = setTimeout(() => refresh().catch(report), 1000);
    }
  };
  socket.onclose = (closed) => {
    if (closed.code === 4401) {
      // The token expired or was revoked: sign in again; the feed resumes after the last.
      signOut();
      return;
    }
    linkState("reconnecting");
    // Resume after the last alert seen, so none is missed across the gap.
    if (session.token && session.socket === socket) setTimeout(connectAlerts, 2000);
  };
}

function linkState(key) {
  const link = $("alert-link");
  link.dataset.i18n = key;
  link.textContent = t(key);
  link.className = `status-dot ${key}`;
}

function showAlert(alert) {
  session.lastAlert = alert.alert_id;
  session.alerts.unshift(alert);
  session.alerts.length = Math.min(session.alerts.length, ALERTS_KEPT);
  renderFeed();
}

function renderFeed() {
  $("alert-feed").replaceChildren(...session.alerts.map((alert) => {
    const headline = lang() === "zh" ? alert.headline_zh : alert.headline_en;
    const item = el("li", { class: `alert ${alert.severity} ${alert.msg_type}`, "data-alert": alert.alert_id },
      el("time", {}, clockTime(alert.sent_at)),
      el("span", { class: "sev" }, named("severity", alert.severity)),
      el("span", {}, headline),
    );
    if (alert.node_id) {
      // A link only for who may read the box's page (a grid worker's led to an empty page).
      const mayRead = session.me.permissions.includes("read_fleet");
      item.append(" ", mayRead
        ? el("a", { href: `#/node/${encodeURIComponent(alert.node_id)}` }, alert.node_id)
        : el("span", { class: "node" }, alert.node_id));
    }
    return item;
  }));
}

// ---- a node's page ----------------------------------------------------------------------------

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(1)} ${units[i]}`;
}

function driftText(config) {
  if (config.state === "unknown") return t("no_config");
  const since = config.behind_since ? duration((Date.now() - Date.parse(config.behind_since)) / 1000) : null;
  const want = config.desired ? config.desired.version : "–";
  const got = config.reported ? config.reported.version : "–";
  let text = `${t(config.state)} · ${t("drift")({ want, got, since })}`;
  if (config.state === "rejected" && config.reported.errors.length) {
    const e = config.reported.errors[0];
    text += ` · ${e.field}: ${e.message}`;
  }
  return text;
}

// A camera's stream as its box last reported it. From a box that is not online nothing is
// known now: "unknown", with the last report only as the cell's tooltip.
function streamCell(status, boxOnline) {
  if (!status) return el("td", { class: "bad" }, "–");
  const text = named("stream_status", status);
  if (!boxOnline) {
    return el("td", { class: "bad", title: `${t("last_report")}: ${text}` }, named("node_status", "unknown"));
  }
  return el("td", { class: status === "connected" ? "" : "bad" }, text);
}

// "camera offline ×2", not the same word twice: one entry per kind, with how many.
function problemsText(problems) {
  const counts = new Map();
  for (const p of problems) counts.set(p, (counts.get(p) || 0) + 1);
  return [...counts].map(([p, n]) => (n > 1 ? `${named("kind", p)} ×${n}` : named("kind", p))).join("、");
}

async function renderNode(nodeId) {
  const id = encodeURIComponent(nodeId);
  const [node, hours, commands] = await Promise.all([
    api(`/nodes/${id}`), api(`/nodes/${id}/health/hourly`), api(`/nodes/${id}/commands?limit=20`),
  ]);
  $("node-title").textContent = node.name ? `${node.name} (${node.node_id})` : node.node_id;
  $("node-status").replaceChildren(statusBadge(node));
  const facts = [
    [t("unit"), node.unit_name || node.unit_code || "–"],
    [t("last_seen"), node.last_seen_at ? clockTime(node.last_seen_at) : "–"],
    [t("cameras"), node.cameras_total === null ? "–" : `${node.cameras_connected}/${node.cameras_total}`],
    ["CPU", node.cpu_percent === null ? "–" : `${node.cpu_percent.toFixed(0)}%`],
    [t("disk_space"), node.disk_total_bytes ? `${bytes(node.disk_used_bytes)} / ${bytes(node.disk_total_bytes)}` : "–"],
    [t("outbox"), node.outbox_depth ?? "–"],
    [t("agent"), node.agent_version || "–"],
    [t("model"), node.model_profile || "–"],
    [t("config"), node.config_version ? `v${node.config_version}` : "–"],
    [t("problems"), problemsText(node.problems) || t("none")],
  ];
  if (node.suspension) {
    // Shut out of the broker for what it sent: until when, and why.
    facts.push([t("suspended_until"), `${clockTime(node.suspension.until)} · ${node.suspension.reason}`]);
  }
  $("node-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
  $("node-drift").textContent = driftText(node.config);
  $("node-drift").className = `drift ${node.config.state}`;
  $("node-cameras").tBodies[0].replaceChildren(...node.cameras.map((c) => el("tr", { "data-camera": c.camera_id },
    el("td", {}, c.camera_id),
    el("td", {}, c.name || ""),
    streamCell(c.stream_status, node.status === "online"),
    el("td", {}, c.analysed_fps === null ? "–" : `${c.analysed_fps.toFixed(1)} / ${c.input_fps.toFixed(1)}`),
    el("td", {}, (c.problems || []).map((p) => named("kind", p)).join("、")),
  )));
  nodeHealth("chart-health", hours);
  $("node-commands").tBodies[0].replaceChildren(...commands.map((c) => el("tr", { "data-request": c.request_id },
    el("td", {}, clockTime(c.issued_at)),
    el("td", {}, named("command_name", c.command)),
    el("td", { class: `command-${c.status}` },
      c.error ? `${named("command_status", c.status)}: ${c.error}` : named("command_status", c.status)),
    el("td", {}, c.issued_by),
  )));
}

async function sendCommand(event) {
  event.preventDefault();
  const command = $("command").value;
  const camera = $("command-camera").value.trim();
  const args = camera ? { camera_id: camera } : {};
  $("command-error").textContent = "";
  try {
    await api(`/nodes/${encodeURIComponent(session.node)}/commands`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ command, args }),
    });
    await renderNode(session.node);
  } catch (error) {
    if (!(error instanceof SignedOut)) $("command-error").textContent = error.message;
  }
}

// ---- wiring ------------------------------------------------------------------------------------

function report(error) {
  if (!(error instanceof SignedOut)) console.error(error);
}

function toggleLanguage() {
  setLang(lang() === "zh" ? "en" : "zh");
  renderFeed();
  refresh().catch(report);
}

document.addEventListener("DOMContentLoaded", () => {
  setLang(lang());
  $("login").addEventListener("submit", (e) => signIn(e).catch(report));
  $("logout").addEventListener("click", signOut);
  $("command-form").addEventListener("submit", (e) => sendCommand(e));
  for (const button of document.querySelectorAll(".lang-toggle")) button.addEventListener("click", toggleLanguage);
  window.addEventListener("hashchange", () => route().catch(report));
  if (session.token) start().catch((e) => { report(e); signOut(); });
  else signOut();
});
