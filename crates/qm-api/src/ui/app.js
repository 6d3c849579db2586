// quartermaster's dashboard: plain JavaScript, no framework, no network but this daemon.
// Data comes from the API with the token the user gave (kept in sessionStorage, for this tab);
// the event stream is read with fetch (EventSource cannot send a token) and refreshes what
// changed; the node, pressure, metrics and agents are also polled every second or two.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  token: null, role: null, node: null, pressure: null, agents: [], allocs: [], pools: [],
  fleets: [], alerts: [], sort: { key: "name", asc: true }, filter: "", series: null,
  stream: null, dirty: new Set(), seen: 0,
};

// ---- tokens ------------------------------------------------------------------------------
function takeTokenFromUrl() {
  const url = new URL(location.href);
  const t = url.searchParams.get("token");
  if (t) {
    sessionStorage.setItem("qm-token", t);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
}

async function api(path, opts = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + state.token }, opts.headers || {});
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  if (r.status === 401) { logout("the token was refused"); throw new Error("unauthorized"); }
  const text = await r.text();
  const body = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error((body && (body.detail || body.title)) || r.statusText);
  return body;
}

function logout(why) {
  sessionStorage.removeItem("qm-token");
  state.token = null;
  if (state.stream) state.stream.abort();
  $("app").hidden = true; $("logout").hidden = true; $("who").textContent = "";
  $("pressure-badge").hidden = true; $("node-name").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = why || "";
}

async function login(token) {
  state.token = token;
  try {
    const me = await api("/v1/whoami");
    state.role = me.role;
    sessionStorage.setItem("qm-token", token);
    $("who").textContent = me.name + " (" + me.role + ")";
    $("login").hidden = true; $("app").hidden = false; $("logout").hidden = false;
    start();
  } catch (e) {
    if (state.token) logout("cannot sign in: " + e.message);
  }
}

const mayAct = () => state.role === "admin" || state.role === "operator";

// ---- quantities --------------------------------------------------------------------------
const SUFFIX = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
  k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18, m: 1e-3 };
function qty(s) {
  if (s === undefined || s === null) return null;
  if (typeof s === "number") return s;
  const m = /^([0-9.]+)([A-Za-z]*)$/.exec(String(s));
  if (!m) return null;
  return parseFloat(m[1]) * (SUFFIX[m[2]] || 1);
}
function bytes(n) {
  if (n === null || n === undefined) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(n < 10 ? 1 : 0) : n.toFixed(0)) + " " + u[i];
}
function cores(n) {
  if (n === null || n === undefined) return "–";
  return n < 1 ? Math.round(n * 1000) + "m" : n.toFixed(2).replace(/\.?0+$/, "");
}
const fmt = (res, v) => res === "cpu" ? cores(v) : res === "memory" || res.endsWith("storage") ? bytes(v) : (v ?? "–");
function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  if (s < 90) return Math.round(s) + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  if (s < 172800) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
function bar(frac, used) {
  const a = Math.max(0, Math.min(1, frac || 0)) * 100;
  const u = used === null || used === undefined ? null : Math.max(0, Math.min(1, used)) * 100;
  return `<div class="bar" title="allocated ${a.toFixed(0)}%${u === null ? "" : ", used " + u.toFixed(0) + "%"}">` +
    `<span class="alloc" style="width:${a}%"></span>` +
    (u === null ? "" : `<span class="use" style="width:${u}%"></span>`) + "</div>";
}

// ---- panels ------------------------------------------------------------------------------
function renderNode() {
  const n = state.node; if (!n) return;
  $("node-name").textContent = n.name;
  $("node-kind").textContent = n.kind + (n.ready ? "" : " · not ready");
  const names = Object.keys(n.capacity || {});
  $("node-rows").innerHTML = names.map((r) => {
    const cap = qty(n.capacity[r]), al = qty((n.allocatable || {})[r]) ?? cap;
    const alloc = qty((n.allocated || {})[r]) || 0, used = qty((n.usage || {})[r]);
    return `<tr><td>${esc(r)}</td><td class="num">${fmt(r, cap)}</td><td class="num">${fmt(r, al)}</td>` +
      `<td class="num">${fmt(r, alloc)}</td><td class="num">${used === null ? "–" : fmt(r, used)}</td>` +
      `<td>${bar(al ? alloc / al : 0, used === null || !cap ? null : used / cap)}</td></tr>`;
  }).join("");
}

function renderPressure() {
  const p = state.pressure; if (!p) return;
  const badge = $("pressure-badge");
  badge.hidden = false; badge.textContent = p.level; badge.className = "badge lvl-" + p.level;
  $("admission").textContent = "admission " + p.admission;
  $("signals").innerHTML = Object.entries(p.signals || {}).map(([name, s]) => {
    const trend = s.trend_per_s === null || s.trend_per_s === undefined ? "" :
      (name === "cpu" || name === "pids" ? s.trend_per_s.toFixed(3) : bytes(s.trend_per_s)) + "/s";
    const eta = s.exhaustion_in_s !== null && s.exhaustion_in_s !== undefined && s.confidence >= 0.5
      ? "runs out in " + duration(s.exhaustion_in_s) : "no exhaustion forecast";
    return `<div class="signal" data-signal="${esc(name)}" title="confidence ${(s.confidence * 100).toFixed(0)}%">` +
      `<b class="lvl-${s.level}">${esc(name)} · ${s.level}</b>` +
      `<div class="big">${(s.utilization * 100).toFixed(0)}%</div>` +
      `<div class="muted">trend ${trend || "–"} · ${eta}${s.anomaly ? " · anomaly" : ""}</div>` +
      `<div class="muted">PSI some ${s.psi_some_avg10 === null || s.psi_some_avg10 === undefined ? "–" : Number(s.psi_some_avg10).toFixed(2)}</div></div>`;
  }).join("");
}

function agentRow(a) {
  const spec = a.spec || {}, req = spec.resources || {}, lim = spec.limits || {}, use = a.usage || {};
  const col = (r) => `${fmt(r, qty(use[r]))} / ${fmt(r, qty(req[r]))} / ${lim[r] ? fmt(r, qty(lim[r])) : "∞"}`;
  const stop = mayAct() && ["running", "pending", "starting", "backoff"].includes(a.state)
    ? `<button class="danger" data-stop="${esc(a.name)}">stop</button>` : "";
  return `<tr data-agent="${esc(a.name)}"><td>${esc(a.name)}</td><td class="state-${a.state}">${a.state}</td>` +
    `<td>${esc(a.node ?? "")}</td><td>${esc(a.qos ?? "")}</td><td class="num">${col("cpu")}</td>` +
    `<td class="num">${col("memory")}</td><td class="num">${a.restarts}</td><td>${esc(a.health)}</td><td>${stop}</td></tr>`;
}

function sortValue(a, key) {
  if (key === "cpu" || key === "memory") return qty((a.usage || {})[key]) ?? -1;
  if (key === "restarts") return a.restarts;
  return String(a[key] ?? "");
}

function renderAgents() {
  const f = state.filter.toLowerCase();
  const rows = state.agents.filter((a) => !f || [a.name, a.state, a.node ?? ""].some((v) => v.toLowerCase().includes(f)));
  const { key, asc } = state.sort;
  rows.sort((x, y) => {
    const a = sortValue(x, key), b = sortValue(y, key);
    return (a < b ? -1 : a > b ? 1 : 0) * (asc ? 1 : -1);
  });
  $("agent-count").textContent = `${rows.length} of ${state.agents.length}`;
  $("agent-rows").innerHTML = rows.map(agentRow).join("");
  for (const th of document.querySelectorAll("#agents th[data-key]")) {
    th.classList.toggle("sorted", th.dataset.key === key);
    th.classList.toggle("asc", th.dataset.key === key && asc);
  }
}

function renderPools() {
  $("pool-rows").innerHTML = state.pools.map((p) =>
    `<tr><td>${esc(p.name)}</td><td class="num">${p.weight}</td>` +
    `<td class="num">${esc(Object.entries(p.allocated || {}).map(([k, v]) => k + " " + v).join(", ") || "–")}</td>` +
    `<td class="num">${p.queued}</td><td>${bar(p.dominant_share)} ${(p.dominant_share * 100).toFixed(0)}%</td></tr>`).join("");
  const live = state.allocs.filter((a) => a.state === "granted" || a.state === "queued");
  $("alloc-count").textContent = `${live.length} live`;
  $("alloc-rows").innerHTML = live.slice(0, 500).map((a) =>
    `<tr><td>${esc(a.id)}</td><td>${esc(a.agent)}</td><td>${esc(a.pool)}</td><td>${esc(a.node ?? "")}</td>` +
    `<td class="state-${a.state === "granted" ? "running" : "pending"}">${a.state}</td>` +
    `<td class="num">${esc(Object.entries(a.resources || {}).map(([k, v]) => k + " " + v).join(", "))}</td>` +
    `<td>${mayAct() ? `<button class="danger" data-release="${esc(a.id)}">release</button>` : ""}</td></tr>`).join("");
}

function renderFleets() {
  $("fleet-rows").innerHTML = state.fleets.map((f) =>
    `<tr><td>${esc(f.name)}</td><td class="num">${f.ready} / ${f.replicas}</td>` +
    `<td class="num">${f.metric === null || f.metric === undefined ? "–" : Number(f.metric).toFixed(2)}</td>` +
    `<td>${mayAct() ? `<button data-scale="${esc(f.name)}" data-by="-1">−</button> <button data-scale="${esc(f.name)}" data-by="1">+</button>` : ""}</td></tr>`).join("")
    || `<tr><td colspan="4" class="muted">no fleets</td></tr>`;
  $("alerts").innerHTML = state.alerts.map((a) =>
    `<li class="lvl-${a.severity === "critical" ? "critical" : "warning"}">${esc(a.name)}: ${esc(a.summary || a.state || "")}</li>`).join("")
    || `<li class="muted">none firing</li>`;
}

function addEvent(e) {
  const li = document.createElement("li");
  const t = (e.at || "").slice(11, 19);
  const what = [e.agent, e.allocation, e.node, e.pool, e.reason].filter(Boolean).join(" · ");
  li.innerHTML = `<time>${esc(t)}</time><b>${esc(e.type)}</b> ${esc(what)}`;
  const list = $("events");
  list.insertBefore(li, list.firstChild);
  while (list.children.length > 200) list.removeChild(list.lastChild);
}

// ---- the chart ---------------------------------------------------------------------------
async function loadSeriesList() {
  const s = await api("/v1/metrics/series");
  const sel = $("series");
  const names = s.items.map((i) => i.name);
  const preferred = ["qm_pressure_utilization_ratio", "qm_host_memory_used_ratio", "qm_host_cpu_utilization_ratio"];
  const want = state.series || preferred.find((n) => names.includes(n)) || names[0];
  sel.innerHTML = names.map((n) => `<option${n === want ? " selected" : ""}>${esc(n)}</option>`).join("");
  state.series = want;
}

let chartData = null;
async function loadChart() {
  if (!state.series) return;
  const since = Number($("range").value);
  const q = await api(`/v1/metrics/query?name=${encodeURIComponent(state.series)}&since_s=${since}`);
  chartData = { items: q.items, since };
  drawChart();
}

function drawChart() {
  const c = $("chart"); if (!chartData) return;
  const dpr = window.devicePixelRatio || 1, w = c.clientWidth, h = 220;
  c.width = w * dpr; c.height = h * dpr;
  const g = c.getContext("2d"); g.setTransform(dpr, 0, 0, dpr, 0, 0); g.clearRect(0, 0, w, h);
  const css = getComputedStyle(document.documentElement);
  const colors = [css.getPropertyValue("--accent"), css.getPropertyValue("--used"), css.getPropertyValue("--ok"), css.getPropertyValue("--warning")];
  const pts = chartData.items.flatMap((s) => s.points);
  const now = Date.now() / 1000, t0 = now - chartData.since;
  // each series' pressure forecast, drawn on to exhaustion (the signal by label or by name)
  const ratio = (state.series || "").endsWith("_ratio");
  const forecastFor = (item) => {
    const p = state.pressure; if (!p || !ratio) return null;
    let sig = item.labels && item.labels.signal;
    if (!sig) { const m = /^qm_host_(memory|cpu|disk)_/.exec(state.series || ""); sig = m && m[1]; }
    const f = sig && p.signals[sig];
    return f && f.exhaustion_in_s && f.confidence >= 0.5 ? f : null;
  };
  const forecasts = chartData.items.map(forecastFor);
  const reach = Math.max(0, ...forecasts.filter(Boolean).map((f) => f.exhaustion_in_s));
  const t1 = now + Math.min(reach, chartData.since);
  let lo = Math.min(...pts.map((p) => p[1]), 0), hi = Math.max(...pts.map((p) => p[1]), ratio ? 1 : 1e-9);
  if (!isFinite(lo)) lo = 0; if (!isFinite(hi)) hi = 1;
  const L = 56, R = 8, T = 8, B = 20;
  const X = (t) => L + (t - t0) / (t1 - t0) * (w - L - R);
  const Y = (v) => T + (1 - (v - lo) / (hi - lo || 1)) * (h - T - B);
  g.strokeStyle = css.getPropertyValue("--line"); g.fillStyle = css.getPropertyValue("--muted");
  g.font = "11px system-ui"; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4, y = Y(v);
    g.beginPath(); g.moveTo(L, y); g.lineTo(w - R, y); g.stroke();
    g.fillText(ratio ? (v * 100).toFixed(0) + "%" : v.toPrecision(3), 4, y + 4);
  }
  g.fillText(new Date(t0 * 1000).toLocaleTimeString(), L, h - 4);
  g.fillText("now", X(now) - 20, h - 4);
  const legend = [];
  chartData.items.forEach((s, i) => {
    const color = colors[i % colors.length];
    g.strokeStyle = color; g.lineWidth = 1.5; g.beginPath();
    s.points.forEach(([t, v], j) => (j ? g.lineTo(X(t), Y(v)) : g.moveTo(X(t), Y(v))));
    g.stroke();
    if (s.points.length < 60) {
      g.fillStyle = color;
      for (const [t, v] of s.points) { g.beginPath(); g.arc(X(t), Y(v), 2.5, 0, 7); g.fill(); }
    }
    const f = forecasts[i], last = s.points[s.points.length - 1];
    const label = Object.values(s.labels || {}).join(",") || s.name;
    if (f && last) {
      g.setLineDash([5, 4]); g.beginPath();
      g.moveTo(X(last[0]), Y(last[1])); g.lineTo(X(now + f.exhaustion_in_s), Y(1)); g.stroke();
      g.setLineDash([]);
      legend.push(`${label} full in ${duration(f.exhaustion_in_s)}`);
    } else if (chartData.items.length > 1) {
      legend.push(label);
    }
  });
  $("chart-info").textContent = `${chartData.items.length} series, ${pts.length} points` +
    (legend.length ? " · " + legend.join(" · ") : "");
  c.dataset.points = String(pts.length);
}

// ---- loading -----------------------------------------------------------------------------
const loaders = {
  node: async () => { state.node = await api("/v1/node"); renderNode(); },
  pressure: async () => { state.pressure = await api("/v1/pressure"); renderPressure(); },
  agents: async () => { state.agents = (await api("/v1/agents")).items; renderAgents(); },
  pools: async () => {
    const [p, a] = await Promise.all([api("/v1/pools"), api("/v1/allocations?limit=1000")]);
    state.pools = p.items; state.allocs = a.items; renderPools();
  },
  fleets: async () => {
    const [f, al] = await Promise.all([api("/v1/fleets").catch(() => ({ items: [] })), api("/v1/alerts")]);
    state.fleets = f.items; state.alerts = (al.items || []).filter((x) => x.state !== "inactive"); renderFleets();
  },
  chart: loadChart,
  cluster: async () => {
    const c = await api("/v1/cluster");
    const members = (c.members || []).map((m) => esc(m.name) + (m.leader ? " (leader)" : "") + (m.ready ? "" : " (not ready)"));
    $("cluster").innerHTML = c.store === "etcd"
      ? `cluster on etcd · ${members.length} members: ${members.join(", ")}`
      : `a cluster of one (${esc(c.store)})`;
  },
};

async function refresh(names) {
  await Promise.all(names.map((n) => loaders[n]().catch((e) => console.warn(n, e.message))));
}

function markDirty(e) {
  const t = e.type || "";
  if (t.startsWith("agent")) state.dirty.add("agents");
  if (t.startsWith("allocation")) { state.dirty.add("pools"); state.dirty.add("node"); }
  if (t.startsWith("node")) state.dirty.add("node");
  if (t.startsWith("pressure")) state.dirty.add("pressure");
  if (t.startsWith("fleet")) state.dirty.add("fleets");
  if (t.startsWith("alert")) state.dirty.add("fleets");
}

async function stream() {
  const ctl = new AbortController(); state.stream = ctl;
  let last = null;
  while (state.token && !ctl.signal.aborted) {
    try {
      const headers = { Authorization: "Bearer " + state.token };
      if (last) headers["Last-Event-ID"] = last;
      // the first time, the events the daemon still keeps; then from the last one seen
      const r = await fetch(last ? "/v1/events" : "/v1/events?since=0", { headers, signal: ctl.signal });
      if (!r.ok) throw new Error(r.statusText);
      $("live").textContent = "● live"; $("live").className = "lvl-ok";
      const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          const id = block.split("\n").find((l) => l.startsWith("id: "));
          if (id) last = id.slice(4);
          if (data) { const e = JSON.parse(data); state.seen++; addEvent(e); markDirty(e); }
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    $("live").textContent = "○ reconnecting"; $("live").className = "lvl-warning";
    await new Promise((r) => setTimeout(r, 1000));
  }
}

let timers = [];
async function start() {
  timers.forEach(clearInterval); timers = [];
  await refresh(["node", "pressure", "agents", "pools", "fleets", "cluster"]);
  await loadSeriesList().catch(() => {});
  await loadChart().catch(() => {});
  stream();
  // what changed, within a quarter second of its event; the rest on a steady beat
  timers.push(setInterval(() => {
    if (!state.dirty.size) return;
    const names = [...state.dirty]; state.dirty.clear(); refresh(names);
  }, 250));
  // a tab out of sight polls nothing (the stream still marks what changed)
  const every = (ms, f) => timers.push(setInterval(() => { if (!document.hidden) f(); }, ms));
  every(1000, () => refresh(["node", "pressure"]));
  every(2000, () => refresh(["agents"]));
  every(5000, () => refresh(["pools", "fleets", "cluster"]));
  every(5000, () => loadChart().catch(() => {}));
}
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && state.token) refresh(["node", "pressure", "agents", "pools", "fleets", "cluster", "chart"]);
});

// ---- actions -----------------------------------------------------------------------------
function confirmed(text) {
  return new Promise((resolve) => {
    const d = $("confirm"); $("confirm-text").textContent = text;
    d.onclose = () => resolve(d.returnValue === "yes"); d.showModal();
  });
}

document.addEventListener("click", async (ev) => {
  const b = ev.target.closest("button"); if (!b) return;
  try {
    if (b.dataset.stop && await confirmed(`Stop agent ${b.dataset.stop}?`)) {
      await api(`/v1/agents/${encodeURIComponent(b.dataset.stop)}`, { method: "DELETE" });
      refresh(["agents", "pools", "node"]);
    } else if (b.dataset.release && await confirmed(`Release allocation ${b.dataset.release}?`)) {
      await api(`/v1/allocations/${encodeURIComponent(b.dataset.release)}`, { method: "DELETE" });
      refresh(["pools", "node"]);
    } else if (b.dataset.scale) {
      const f = state.fleets.find((x) => x.name === b.dataset.scale); if (!f) return;
      const replicas = Math.max(0, f.replicas + Number(b.dataset.by));
      if (await confirmed(`Scale fleet ${f.name} to ${replicas}?`)) {
        await api(`/v1/fleets/${encodeURIComponent(f.name)}`, {
          method: "PUT", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ name: f.name, replicas, template: f.template, autoscale: f.autoscale ?? undefined, vertical: f.vertical ?? undefined }),
        });
        refresh(["fleets"]);
      }
    }
  } catch (e) { alert(e.message); }
});

for (const th of document.querySelectorAll("#agents th[data-key]")) {
  th.addEventListener("click", () => {
    const key = th.dataset.key;
    state.sort = { key, asc: state.sort.key === key ? !state.sort.asc : key === "name" };
    renderAgents();
  });
}
$("agent-filter").addEventListener("input", (e) => { state.filter = e.target.value; renderAgents(); });
$("series").addEventListener("change", (e) => { state.series = e.target.value; loadChart(); });
$("range").addEventListener("change", () => loadChart());
$("signals").addEventListener("click", (e) => {
  const s = e.target.closest("[data-signal]"); if (!s) return;
  const name = `qm_host_${s.dataset.signal}_utilization_ratio`;
  if ([...$("series").options].some((o) => o.value === name)) { $("series").value = name; state.series = name; loadChart(); }
});
window.addEventListener("resize", drawChart);
$("logout").addEventListener("click", () => logout());
$("theme").addEventListener("click", () => {
  document.documentElement.classList.toggle("light");
  localStorage.setItem("qm-theme", document.documentElement.classList.contains("light") ? "light" : "dark");
  drawChart();
});
$("login-form").addEventListener("submit", (e) => { e.preventDefault(); login($("token").value.trim()); });

if (localStorage.getItem("qm-theme") === "light" ||
  (!localStorage.getItem("qm-theme") && matchMedia("(prefers-color-scheme: light)").matches)) {
  document.documentElement.classList.add("light");
}
takeTokenFromUrl();
const saved = sessionStorage.getItem("qm-token");
if (saved) login(saved); else logout();
