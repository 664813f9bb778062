// agentkit dashboard: renders the API's documents and applies the event stream (docs/dashboard.md).
"use strict";

const MASCOTS = [
  { name: "Spark", emoji: "⚡" }, { name: "Fizz", emoji: "💧" }, { name: "Octo", emoji: "🐙" },
  { name: "Hoot", emoji: "🦉" }, { name: "Buzz", emoji: "🐝" },
];
const STATUSES = ["in_progress", "failing", "pending", "blocked", "dead", "passing"];
const FEED_KINDS = new Set(["feature_update", "agent_update", "log"]);
const FEED_MAX = 500;

const state = {
  snapshot: null, tasks: [], graph: { tasks: [], edges: [] }, agents: new Map(), worktrees: new Map(),
  taskJob: new Map(), lastEventId: 0, source: null,
};

const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function mascotOf(jobId) {
  const n = parseInt(jobId, 10);
  return Number.isFinite(n) && n > 0 ? MASCOTS[(n - 1) % MASCOTS.length] : null;
}

function mascotEl(jobId) {
  const m = mascotOf(jobId);
  return el("span", { class: "mascot", "data-mascot": m ? m.name : "none", title: m ? m.name : "",
    text: m ? m.emoji : "•" });
}

async function api(path, opts = {}) {
  const res = await fetch(path, { credentials: "same-origin", ...opts });
  const type = res.headers.get("content-type") || "";
  const body = type.includes("json") ? await res.json() : await res.text();
  if (!res.ok) {
    const err = body && body.error ? body.error : { message: String(body) };
    throw Object.assign(new Error(err.message + (err.hint ? ` (${err.hint})` : "")), { status: res.status });
  }
  return body;
}

function notice(text) {
  const n = $("#notice");
  n.textContent = text || "";
  n.hidden = !text;
}

function fmtElapsed(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (h ? `${h}h` : "") + (h || m ? `${String(m).padStart(h ? 2 : 1, "0")}m` : "") + `${String(r).padStart(2, "0")}s`;
}

// ---- header: progress and band ------------------------------------------------------------------------------

function renderProgress() {
  const counts = state.snapshot.tasks.counts || {};
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const passing = counts.passing || 0;
  const p = $("#progress");
  p.dataset.passing = passing;
  p.dataset.total = total;
  $(".text", p).textContent = `${passing} / ${total} passing`;
  $(".fill", p).style.width = total ? `${(100 * passing) / total}%` : "0";
}

function renderBand() {
  const c = state.snapshot.capacity;
  const b = $("#band");
  b.dataset.floor = c.floor; b.dataset.current = c.current; b.dataset.used = c.used;
  b.dataset.ceiling = c.ceiling; b.dataset.physicalMax = c.physical_max;
  const max = Math.max(c.physical_max || 0, c.ceiling || 0, c.current || 0, 1);
  const pct = (n) => `${Math.min(100, (100 * (n || 0)) / max)}%`;
  $(".current", b).style.width = pct(c.current);
  $(".used", b).style.width = pct(c.used);
  $(".floor-mark", b).style.left = pct(c.floor);
  $(".ceiling-mark", b).style.left = `calc(${pct(c.ceiling)} - 2px)`;
  $(".numbers", b).textContent = `${c.used}/${c.current} used · floor ${c.floor} · ceiling ${c.ceiling} · physical ${c.physical_max}`;
}

// ---- agents --------------------------------------------------------------------------------------------------

function taskName(id) {
  const t = state.tasks.find((x) => x.id === id);
  return t ? t.name : "";
}

function actionButton(action, label, target) {
  return el("button", { type: "button", class: `action ${action}`, "data-action": action, "data-target": target,
    text: label });
}

function card(agent) {
  const node = el("div", { class: "agent-card", "data-job-id": agent.job_id },
    el("div", { class: "top" }, mascotEl(agent.job_id), el("span", { class: "kind" }),
      el("span", { class: "task" }), el("span", { class: "state" })),
    el("div", { class: "meta" }, el("span", { class: "elapsed" }), el("span", { class: "attempt" }),
      el("span", { class: "worktree" }), el("span", { class: "redis-db" })),
    el("div", { class: "last-line" }),
    el("div", { class: "actions" }, actionButton("kill", "kill", agent.job_id)));
  node.addEventListener("click", (ev) => { if (!ev.target.closest("button")) openLog(agent.job_id); });
  return node;
}

function fillCard(node, a) {
  $(".kind", node).textContent = a.kind || "job";
  $(".task", node).textContent = a.task_id ? `#${a.task_id} ${taskName(a.task_id) || a.task_name || ""}`.trim() : a.name;
  $(".task", node).title = $(".task", node).textContent;
  $(".state", node).textContent = a.agent_state || a.state;
  node.dataset.state = a.agent_state || a.state;
  $(".attempt", node).textContent = a.attempt ? `attempt ${a.attempt}` : "";
  $(".worktree", node).textContent = a.worktree || "";
  const db = a.worktree ? state.worktrees.get(a.worktree) : undefined;
  $(".redis-db", node).textContent = db !== undefined && db !== null ? `db ${db}` : "";
  $(".last-line", node).textContent = a.last_line || "";
  const actions = $(".actions", node);
  const release = $(".release", actions);
  if (a.claim_id && !release) actions.append(actionButton("release", "release", a.claim_id));
  if (!a.claim_id && release) release.remove();
  tickCard(node, a);
}

function tickCard(node, a) {
  const started = a.started_at;
  $(".elapsed", node).textContent = started ? fmtElapsed(Date.now() / 1000 - started) : "";
}

function renderAgents() {
  const box = $("#agents");
  const want = new Set([...state.agents.keys()].map(String));
  for (const node of [...box.children]) if (!want.has(node.dataset.jobId)) node.remove();
  for (const a of [...state.agents.values()].sort((x, y) => x.job_id - y.job_id)) {
    let node = box.querySelector(`.agent-card[data-job-id="${a.job_id}"]`);
    if (!node) { node = card(a); box.append(node); }
    fillCard(node, a);
    if (a.task_id) state.taskJob.set(String(a.task_id), String(a.job_id));
  }
}

// ---- tasks -----------------------------------------------------------------------------------------------

function renderTasks() {
  const box = $("#tasks");
  box.replaceChildren();
  for (const status of STATUSES) {
    const rows = state.tasks.filter((t) => t.status === status);
    if (!rows.length) continue;
    const ul = el("ul", { "data-status": status });
    for (const t of rows) {
      const actions = el("span", { class: "actions" });
      if (t.claim_id) actions.append(actionButton("release", "release", t.claim_id));
      if (t.status === "failing" || t.status === "dead") actions.append(actionButton("retry", "retry", t.id));
      if (t.status !== "pending") actions.append(actionButton("reset", "reset", t.id));
      ul.append(el("li", { "data-task-id": t.id, "data-status": t.status },
        el("span", { class: "id", text: `#${t.id}` }), el("span", { class: "name", text: t.name }),
        t.attempts ? el("span", { class: "attempts", text: `${t.attempts} attempt(s)` }) : null,
        t.status === "blocked" ? el("span", { class: "cause", text: t.reason || "blocked" }) : null,
        t.status !== "blocked" && t.reason ? el("span", { class: "reason", text: t.reason }) : null, actions));
    }
    box.append(el("div", { class: "group", "data-status": status },
      el("h3", { text: `${status} (${rows.length})` }), ul));
  }
}

// ---- the graph ---------------------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function sv(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

// Layers by longest-path depth (a task sits right of everything it depends on); the bottlenecks are the open
// tasks with the most open tasks downstream; the critical path is the longest chain of open tasks.
function layout(tasks, edges) {
  const deps = new Map(tasks.map((t) => [t.id, []]));
  const dependents = new Map(tasks.map((t) => [t.id, []]));
  for (const [task, dep] of edges) {
    if (deps.has(task) && deps.has(dep)) { deps.get(task).push(dep); dependents.get(dep).push(task); }
  }
  const depth = new Map();
  const depthOf = (id, guard = 0) => {
    if (depth.has(id)) return depth.get(id);
    if (guard > tasks.length) return 0;
    const d = deps.get(id).reduce((m, dep) => Math.max(m, depthOf(dep, guard + 1) + 1), 0);
    depth.set(id, d);
    return d;
  };
  tasks.forEach((t) => depthOf(t.id));
  const open = new Set(tasks.filter((t) => t.status !== "passing").map((t) => t.id));
  const below = new Map();
  const downstream = (id) => {
    if (below.has(id)) return below.get(id);
    const set = new Set();
    for (const d of dependents.get(id)) { set.add(d); for (const x of downstream(d)) set.add(x); }
    below.set(id, set);
    return set;
  };
  const blocking = new Map([...open].map((id) => [id, [...downstream(id)].filter((x) => open.has(x)).length]));
  const most = Math.max(0, ...blocking.values());
  const bottlenecks = new Set(most > 0 ? [...blocking].filter(([, n]) => n === most).map(([id]) => id) : []);
  // longest chain of open tasks, walked in depth order
  const chain = new Map();
  for (const t of [...tasks].sort((a, b) => depth.get(a.id) - depth.get(b.id))) {
    if (!open.has(t.id)) continue;
    let best = { len: 1, prev: null };
    for (const dep of deps.get(t.id)) {
      const c = chain.get(dep);
      if (c && c.len + 1 > best.len) best = { len: c.len + 1, prev: dep };
    }
    chain.set(t.id, best);
  }
  const critical = new Set();
  let end = null;
  for (const [id, c] of chain) if (end === null || c.len > chain.get(end).len) end = id;
  if (end !== null && chain.get(end).len > 1) {
    for (let id = end; id !== null; id = chain.get(id).prev) critical.add(id);
  }
  return { depth, deps, bottlenecks, critical };
}

function renderGraph() {
  const box = $("#graph .scroll");
  const { tasks, edges } = state.graph;
  const { depth, deps, bottlenecks, critical } = layout(tasks, edges);
  const W = 190, H = 26, NW = 160, NH = 20, PAD = 10;
  const columns = new Map();
  for (const t of tasks) {
    const d = depth.get(t.id);
    if (!columns.has(d)) columns.set(d, []);
    columns.get(d).push(t);
  }
  const pos = new Map();
  let rows = 0;
  for (const [d, col] of columns) {
    col.sort((a, b) => a.id - b.id).forEach((t, i) => pos.set(t.id, { x: PAD + d * W, y: PAD + i * H }));
    rows = Math.max(rows, col.length);
  }
  const width = PAD * 2 + Math.max(1, columns.size) * W, height = PAD * 2 + Math.max(1, rows) * H;
  const svg = sv("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  const edgeLayer = sv("g", { class: "edges" });
  for (const t of tasks) {
    for (const dep of deps.get(t.id)) {
      const a = pos.get(dep), b = pos.get(t.id);
      const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x, y2 = b.y + NH / 2, mid = (x1 + x2) / 2;
      const onPath = critical.has(t.id) && critical.has(dep);
      edgeLayer.append(sv("path", { class: onPath ? "edge critical" : "edge", "data-from": dep, "data-to": t.id,
        d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` }));
    }
  }
  svg.append(edgeLayer);
  for (const t of tasks) {
    const p = pos.get(t.id);
    const cls = ["node", bottlenecks.has(t.id) ? "bottleneck" : "", critical.has(t.id) ? "critical" : ""];
    const g = sv("g", { class: cls.filter(Boolean).join(" "), "data-task-id": t.id, "data-status": t.status,
      transform: `translate(${p.x},${p.y})` });
    const title = sv("title");
    title.textContent = `#${t.id} ${t.name} (${t.status})`;
    const label = sv("text", { x: 6, y: 14 });
    const text = `#${t.id} ${t.name}`;
    label.textContent = text.length > 24 ? `${text.slice(0, 23)}…` : text;
    g.append(title, sv("rect", { width: NW, height: NH }), label);
    svg.append(g);
  }
  box.replaceChildren(svg);
}

function toggleGraph(show) {
  const g = $("#graph");
  g.hidden = show === undefined ? !g.hidden : !show;
  document.body.classList.toggle("graph-view", !g.hidden);
  if (!g.hidden) renderGraph();
}

// ---- the feed ----------------------------------------------------------------------------------------------

function describe(e) {
  const d = e.data || {};
  if (e.kind === "log") return d.line || "";
  if (e.kind === "agent_update") {
    return `${d.agent || `job ${e.subject}`} ${d.state || ""}${d.task_id ? ` · task #${d.task_id}` : ""}` +
      `${d.attempt ? ` · attempt ${d.attempt}` : ""}${d.exit_status !== undefined && d.exit_status !== null ? ` · exit ${d.exit_status}` : ""}`;
  }
  if (e.kind === "feature_update") return `task #${e.subject} ${d.name || ""} → ${d.status || ""}`;
  return `${e.kind} ${e.subject || ""}`;
}

function feedJob(e) {
  if (e.kind === "log" || e.kind === "agent_update") return e.subject;
  if (e.kind === "feature_update") return state.taskJob.get(String(e.subject)) || null;
  return null;
}

function addToFeed(e) {
  const feed = $("#feed");
  if (feed.querySelector(`li[data-event-id="${e.id}"]`)) return;
  const li = el("li", { "data-event-id": e.id, "data-kind": e.kind },
    mascotEl(feedJob(e)), el("span", { class: "when", text: new Date(e.ts * 1000).toLocaleTimeString() }),
    el("span", { class: "text", text: describe(e) }));
  // newest first: an event older than the first shown one goes below it (only on a first load out of order)
  let before = feed.firstChild;
  while (before && Number(before.dataset.eventId) > e.id) before = before.nextSibling;
  feed.insertBefore(li, before);
  while (feed.children.length > FEED_MAX) feed.lastChild.remove();
}

// ---- applying events ---------------------------------------------------------------------------------------

// The first change after a quiet spell is fetched at once; a burst is gathered into one refresh per 250 ms.
let refreshTimer = null;
let lastRefresh = 0;
const pending = new Set();
function refreshSoon(...what) {
  what.forEach((w) => pending.add(w));
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    lastRefresh = Date.now();
    const parts = [...pending];
    pending.clear();
    try { await load(parts); } catch (err) { notice(`refresh failed: ${err.message}`); }
  }, Math.max(0, lastRefresh + 250 - Date.now()));
}

function apply(e) {
  // events come in id order (the first load, then the stream from the last id): an id seen is at most the last
  if (e.id <= state.lastEventId) return; // a reconnect or the first load may bring an event twice
  state.lastEventId = e.id;
  $("#feed").dataset.lastEventId = e.id;
  if (FEED_KINDS.has(e.kind)) addToFeed(e);
  const d = e.data || {};
  if (e.kind === "log") {
    const a = state.agents.get(Number(e.subject));
    if (a) { a.last_line = d.line; const n = $(`.agent-card[data-job-id="${a.job_id}"] .last-line`); if (n) n.textContent = d.line; }
    if ($("#log").dataset.jobId === String(e.subject) && !$("#log").hidden) refreshLogSoon();
    return;
  }
  if (e.kind === "agent_update") {
    if (d.task_id) state.taskJob.set(String(d.task_id), String(e.subject));
    const a = state.agents.get(Number(e.subject));
    if (a) Object.assign(a, { agent_state: d.state, kind: d.kind || a.kind, task_id: d.task_id || a.task_id,
      attempt: d.attempt || a.attempt, worktree: d.worktree || a.worktree });
    renderAgents();
    refreshSoon("agents", "snapshot");
    return;
  }
  if (e.kind.startsWith("job.")) refreshSoon("agents", "snapshot");
  else if (e.kind.startsWith("task.") || e.kind.startsWith("claim.") || e.kind === "feature_update") {
    refreshSoon("tasks", "graph", "snapshot", "agents");
  } else if (e.kind.startsWith("band.") || e.kind.startsWith("worktree.") || e.kind === "capacity_update" ||
             e.kind.startsWith("redis.")) refreshSoon("snapshot");
}

function connect() {
  if (state.source) state.source.close();
  const src = new EventSource(`/api/stream?since=${state.lastEventId}`);
  state.source = src;
  const conn = $("#conn");
  src.onopen = () => { conn.dataset.state = "live"; conn.textContent = "live"; };
  src.onerror = () => {
    conn.dataset.state = "reconnecting"; conn.textContent = "reconnecting…";
    // a refused answer (a restart with a new token, a 5xx) closes an EventSource for good: start a new one
    if (src.readyState === EventSource.CLOSED) setTimeout(() => { if (state.source === src) connect(); }, 2000);
  };
  src.onmessage = (msg) => { try { apply(JSON.parse(msg.data)); } catch (err) { console.error(err); } };
}

// ---- the log panel ------------------------------------------------------------------------------------------

let logTimer = null;
async function openLog(jobId) {
  const box = $("#log");
  box.dataset.jobId = jobId;
  box.hidden = false;
  const a = state.agents.get(Number(jobId));
  $(".title", box).textContent = `job ${jobId}${a ? ` · ${a.agent || a.name}` : ""}`;
  await refreshLog();
}

async function refreshLog() {
  const box = $("#log");
  const jobId = box.dataset.jobId;
  if (!jobId || box.hidden) return;
  try {
    const text = await api(`/api/jobs/${jobId}/log?tail=16384`);
    const pre = $(".text", box);
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = text;
    if (atEnd) pre.scrollTop = pre.scrollHeight;
    box.dataset.loaded = "1";
  } catch (err) { $(".text", box).textContent = `could not read the log: ${err.message}`; }
}

function refreshLogSoon() {
  if (logTimer) return;
  logTimer = setTimeout(() => { logTimer = null; refreshLog(); }, 300);
}

// ---- actions ------------------------------------------------------------------------------------------------

const ACTIONS = {
  kill: (id) => [`Kill job ${id} and its whole process tree?`, `/api/jobs/${id}/kill`],
  release: (id) => [`Release claim ${id}? The task goes back to the pool.`, `/api/claims/${encodeURIComponent(id)}/release`],
  reset: (id) => [`Reset task ${id} to pending with attempts 0?`, `/api/tasks/${id}/reset`],
  retry: (id) => [`Retry task ${id} (back to pending with attempts 0)?`, `/api/tasks/${id}/retry`],
};

document.addEventListener("click", async (ev) => {
  const btn = ev.target.closest("button.action");
  if (!btn) return;
  ev.stopPropagation();
  const [question, url] = ACTIONS[btn.dataset.action](btn.dataset.target);
  if (!window.confirm(question)) return;
  btn.disabled = true;
  try {
    await api(url, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    notice("");
    refreshSoon("agents", "tasks", "graph", "snapshot");
  } catch (err) {
    notice(`${btn.dataset.action} failed: ${err.message}`);
  } finally { btn.disabled = false; }
}, true);

// ---- loading ------------------------------------------------------------------------------------------------

async function load(parts) {
  const want = new Set(parts);
  const [snapshot, tasks, graph, agents] = await Promise.all([
    want.has("snapshot") ? api("/api/snapshot") : null, want.has("tasks") ? api("/api/tasks") : null,
    want.has("graph") ? api("/api/graph") : null, want.has("agents") ? api("/api/agents") : null]);
  if (snapshot) {
    state.snapshot = snapshot;
    state.worktrees = new Map(snapshot.worktrees.map((w) => [w.slug, w.redis_db]));
    renderProgress();
    renderBand();
  }
  if (tasks) { state.tasks = tasks.tasks; renderTasks(); }
  if (graph) { state.graph = graph; if (!$("#graph").hidden) renderGraph(); }
  if (agents) {
    const old = state.agents;
    state.agents = new Map(agents.agents.map((a) => [a.job_id, { ...(old.get(a.job_id) || {}), ...a }]));
  }
  if (agents || snapshot || tasks) renderAgents();
}

async function boot() {
  const url = new URL(window.location.href);
  if (url.searchParams.has("token")) { // the cookie carries it from here: keep it out of history and screenshots
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  try {
    const [, recent] = await Promise.all([load(["snapshot", "tasks", "graph", "agents"]), api("/api/events?latest=200")]);
    for (const e of recent.events) apply(e);
  } catch (err) {
    notice(`could not load the dashboard: ${err.message}`);
    return;
  }
  document.body.dataset.ready = "1";
  connect();
  setInterval(() => {
    for (const a of state.agents.values()) {
      const n = $(`.agent-card[data-job-id="${a.job_id}"]`);
      if (n) tickCard(n, a);
    }
  }, 1000);
}

$("#graph-toggle").addEventListener("click", () => toggleGraph());
$("#log .close").addEventListener("click", () => { $("#log").hidden = true; });
document.addEventListener("keydown", (ev) => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.target.closest("input, textarea, select, [contenteditable]")) return;
  if (ev.key === "g" || ev.key === "G") toggleGraph();
  if (ev.key === "Escape") $("#log").hidden = true;
});
boot();
