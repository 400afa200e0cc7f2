// The nomaly serve dashboard: plain JavaScript, no libraries, no requests to other hosts.
// Views are hash routes (#/runs, #/runs/12, #/queue, #/schedules), so every run has a stable URL.
// Live updates come from the server's event stream (/api/events), read with fetch so the token
// travels in a header, never in a URL.
"use strict";

// Served by `nomaly scheduler` itself (data-mode="scheduler"): only the Cluster view, read from
// Ballista's own REST API on this port. Served by `nomaly serve`: everything, the cluster through
// the server's /api/cluster (--scheduler).
const SCHEDULER = document.body.dataset.mode === "scheduler";
const clusterApi = SCHEDULER
  ? { executors: "/api/executors", jobs: "/api/jobs", job: (id) => "/api/job/" + id, stages: (id) => "/api/job/" + id + "/stages",
      dot: (id) => "/api/job/" + id + "/dot", cancel: (id) => ["/api/job/" + id, "PATCH"] }
  : { executors: "/api/cluster/executors", jobs: "/api/cluster/jobs", job: (id) => "/api/cluster/jobs/" + id,
      stages: (id) => "/api/cluster/jobs/" + id + "/stages", dot: (id) => "/api/cluster/jobs/" + id + "/dot",
      cancel: (id) => ["/api/cluster/jobs/" + id + "/cancel", "POST"] };

const state = { token: sessionStorage.getItem("nomaly-token") || "", runs: new Map(), stream: null,
  filters: { pipeline: "", state: "", since: "", offset: 0, page: 20, draft: {} } };

function headers() {
  return state.token ? { Authorization: "Bearer " + state.token } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401) {
    askToken();
    throw new Error("the server needs its token");
  }
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error((body && body.error) || response.statusText);
  return body;
}

function askToken() {
  const dialog = document.getElementById("token-dialog");
  if (!dialog.open) dialog.showModal();
}

document.getElementById("token-form").addEventListener("submit", () => {
  state.token = document.getElementById("token-input").value.trim();
  sessionStorage.setItem("nomaly-token", state.token);
  connect();
  checkCluster();
  route();
});

// ---- formatting -------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const c of children.flat()) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

const when = (ms) => (ms ? new Date(ms).toLocaleString() : "–");
function bytes(b) {
  if (b === null || b === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return (i ? b.toFixed(1) : b) + " " + units[i];
}
function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}
const rate = (r) => (r ? Math.round(r).toLocaleString() + " rows/s" : "–");

function stateBadge(s) {
  return el("span", { class: "state " + s }, s.replace("_", " "));
}

function progressBar(run) {
  const p = run.progress || {};
  const pct = run.state === "succeeded" ? 100 : p.percent ?? 0;
  return el("span", {},
    el("span", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
      "aria-valuenow": String(Math.round(pct)), "aria-label": "run " + run.id + " progress" },
      el("span", { style: "width:" + pct.toFixed(1) + "%" })),
    el("span", { class: "pct" }, Math.round(pct) + "%"));
}

// ---- views ------------------------------------------------------------------------------

const main = document.getElementById("main");
// Replaces the view; nested arrays (optional sections) are flattened.
// The element that had the keyboard focus keeps it across a redraw (found again by its id), so
// live updates never throw a keyboard user back to the top of the page.
// Each route() call counts; a view renders only if no newer route() began while it awaited
// (a slow answer must not draw over the view the user has moved to).
let routeSeq = 0;
function showIf(seq, ...nodes) {
  if (seq === routeSeq) show(...nodes);
}

function show(...nodes) {
  const focused = document.activeElement && main.contains(document.activeElement) ? document.activeElement.id : "";
  main.replaceChildren(...nodes.flat(Infinity));
  if (focused) document.getElementById(focused)?.focus();
}

// The runs list's filters (pipeline, state, since) and page, kept across redraws; what is typed
// but not applied yet (the draft) survives a live redraw too.
function runFilters(total, shown) {
  const f = state.filters;
  const apply = () => {
    f.pipeline = document.getElementById("filter-pipeline").value.trim();
    f.state = document.getElementById("filter-state").value;
    f.since = document.getElementById("filter-since").value;
    f.draft = {};
    f.offset = 0;
    route();
  };
  const states = ["", "queued", "running", "succeeded", "failed", "cancelled", "timed_out", "validation_failed"];
  return el("form", { class: "filters", id: "run-filters", "aria-label": "filter runs", onsubmit: (e) => { e.preventDefault(); apply(); } },
    el("label", {}, "Pipeline ", el("input", { id: "filter-pipeline", value: f.draft.pipeline ?? f.pipeline, placeholder: "any",
      oninput: (e) => { f.draft.pipeline = e.target.value; } })),
    el("label", {}, "State ", el("select", { id: "filter-state", onchange: apply },
      states.map((s) => { const o = el("option", { value: s }, s || "any"); if (s === f.state) o.selected = true; return o; }))),
    el("label", {}, "Submitted since ", el("input", { id: "filter-since", type: "date", value: f.draft.since ?? f.since,
      oninput: (e) => { f.draft.since = e.target.value; } })),
    el("label", {}, "Per page ", el("select", { id: "page-size", onchange: () => { f.page = Number(document.getElementById("page-size").value); f.offset = 0; route(); } },
      [5, 20, 50, 100].map((n) => { const o = el("option", { value: String(n) }, String(n)); if (n === f.page) o.selected = true; return o; }))),
    el("button", { type: "submit", id: "filter-apply" }, "Filter"),
    el("span", { id: "page-info", class: "muted" }, total ? (f.offset + 1) + "–" + (f.offset + shown) + " of " + total : "0 runs"),
    el("button", { type: "button", id: "prev-page", disabled: f.offset === 0 ? "" : null,
      onclick: () => { f.offset = Math.max(0, f.offset - f.page); route(); } }, "← Newer"),
    el("button", { type: "button", id: "next-page", disabled: f.offset + shown >= total ? "" : null,
      onclick: () => { f.offset += f.page; route(); } }, "Older →"));
}

async function viewRuns() {
  const seq = routeSeq;
  const f = state.filters;
  const query = new URLSearchParams({ limit: f.page, offset: f.offset });
  if (f.pipeline) query.set("pipeline", f.pipeline);
  if (f.state) query.set("state", f.state);
  if (f.since) query.set("since_ms", String(Date.parse(f.since + "T00:00:00Z")));
  const { runs, total } = await api("/api/runs?" + query);
  state.runs = new Map(runs.map((r) => [r.id, r]));
  const body = el("tbody", { id: "runs-body" });
  for (const r of runs) body.append(runRow(r));
  showIf(seq,
    el("h1", {}, "Runs"),
    runFilters(total, runs.length),
    runs.length ? el("table", { "aria-label": "runs" },
      el("thead", {}, el("tr", {}, ["Run", "Pipeline", "State", "Progress", "Rows/s", "ETA", "Memory", "Retries", "Submitted", "Trigger"]
        .map((h, i) => el("th", { class: i >= 4 && i <= 7 ? "num" : "" }, h)))),
      body) : el("p", { class: "muted" }, "No runs yet. Submit one with: nomaly submit PIPELINE.toml"));
}

function runRow(r) {
  const p = r.progress || {};
  const running = r.state === "running";
  return el("tr", { id: "run-" + r.id, "data-state": r.state },
    el("td", {}, el("a", { href: "#/runs/" + r.id, id: "open-run-" + r.id }, "#" + r.id)),
    el("td", {}, el("a", { href: "#/pipelines/" + encodeURIComponent(r.pipeline) }, r.pipeline)),
    el("td", {}, stateBadge(r.state)),
    el("td", {}, r.state === "queued" && r.queue ? "#" + r.queue.position + " in queue (" + r.queue.waiting_for + ")" : progressBar(r)),
    el("td", { class: "num" }, running ? rate(p.rows_per_second) : "–"),
    el("td", { class: "num" }, running ? seconds(p.eta_seconds) : "–"),
    el("td", { class: "num" }, bytes(p.memory_bytes ?? null)),
    el("td", { class: "num" }, String(p.retries ?? 0)),
    el("td", {}, when(r.submitted_ms)),
    el("td", {}, r.trigger));
}

async function action(id, verb) {
  try {
    await api("/api/runs/" + id + "/" + verb, { method: "POST" });
    route();
  } catch (e) {
    const out = document.getElementById("action-error");
    if (out) out.textContent = verb + ": " + e.message;
  }
}

async function viewRun(id) {
  const seq = routeSeq;
  const run = await api("/api/runs/" + id);
  const { chunks } = await api("/api/runs/" + id + "/chunks");
  const { events } = await api("/api/runs/" + id + "/history");
  const { lines } = await api("/api/runs/" + id + "/logs");
  let top = null;
  if (run.state === "succeeded") {
    try { top = await api("/api/runs/" + id + "/top?limit=10"); } catch { top = null; }
  }
  let report = null;
  if (!["queued", "running"].includes(run.state)) {
    try { report = await api("/api/runs/" + id + "/report"); } catch { report = null; }
  }
  const p = run.progress || {};
  const total = p.chunks_total || chunks.length;
  const byChunk = new Map(chunks.map((c) => [c.chunk, c]));
  const byTime = [...chunks].sort((a, b) => a.at_ms - b.at_ms);
  const cells = [];
  for (let i = 0; i < total; i++) {
    const c = byChunk.get(i);
    const s = c ? c.state : "pending";
    cells.push(el("span", { class: "cell " + s, role: "listitem", title: "chunk " + i + ": " + s + (c ? ", " + c.rows + " rows, " + c.anomalies + " anomalies" : ""),
      "aria-label": "chunk " + i + " " + s }, s === "committed" ? "✓" : s === "reused" ? "R" : "·"));
  }
  const errors = events.filter((e) => e.kind === "retry" || e.kind === "warning");
  const buttons = [];
  if (["queued", "running"].includes(run.state)) buttons.push(el("button", { class: "danger", id: "cancel", onclick: () => action(id, "cancel") }, "Cancel"));
  if (["failed", "cancelled", "timed_out"].includes(run.state)) buttons.push(el("button", { id: "resume", onclick: () => action(id, "resume") }, "Resume"));
  if (!["queued", "running"].includes(run.state)) buttons.push(el("button", { id: "retry", onclick: () => action(id, "retry") }, "Retry"));
  showIf(seq,
    el("p", {}, el("a", { href: "#/runs" }, "← Runs")),
    el("h1", {}, "Run #" + id + " · ", el("a", { href: "#/pipelines/" + encodeURIComponent(run.pipeline) }, run.pipeline), " ", stateBadge(run.state)),
    el("div", {}, buttons, el("span", { id: "action-error", class: "error", role: "alert" })),
    el("dl", { class: "facts" },
      el("dt", {}, "Progress"), el("dd", { id: "run-progress" }, progressBar(run)),
      el("dt", {}, "Rows"), el("dd", {}, (p.rows_done ?? 0).toLocaleString() + " of " + (p.rows_total ?? "?").toLocaleString()),
      el("dt", {}, "Speed"), el("dd", {}, rate(p.rows_per_second)),
      el("dt", {}, "ETA"), el("dd", {}, run.state === "running" ? seconds(p.eta_seconds) : "–"),
      el("dt", {}, "Memory"), el("dd", {}, bytes(p.memory_bytes ?? null) + " in use of a " + bytes(run.memory_bytes) + " budget"),
      el("dt", {}, "Retries"), el("dd", {}, String(p.retries ?? 0)),
      el("dt", {}, "File"), el("dd", {}, run.file),
      el("dt", {}, "Priority"), el("dd", {}, String(run.priority)),
      el("dt", {}, "Submitted"), el("dd", {}, when(run.submitted_ms)),
      el("dt", {}, "Started"), el("dd", {}, when(run.started_ms)),
      el("dt", {}, "Finished"), el("dd", {}, when(run.finished_ms)),
      el("dt", {}, "Attempts"), el("dd", {}, String(run.attempts)),
      run.interval ? [el("dt", {}, "For"), el("dd", { id: "run-date" }, run.interval.date)] : [],
      run.error ? [el("dt", {}, "Error"), el("dd", { class: "error" }, run.error)] : []),
    el("h2", {}, "Chunks (" + chunks.length + " of " + total + " done)"),
    el("div", { class: "grid", role: "list", "aria-label": "chunks" }, cells),
    el("div", { class: "charts" },
      chart("Rows committed over time", byTime.map((c) => c.at_ms), cumulative(byTime.map((c) => c.rows)), "rows"),
      chart("Anomaly rate per chunk", chunks.map((c) => c.chunk), chunks.map((c) => (c.rows ? (100 * c.anomalies) / c.rows : 0)), "%")),
    errors.length ? [el("h2", {}, "Retries and warnings"),
      el("ul", {}, errors.map((e) => el("li", {}, when(e.at_ms) + " — " + (e.data.place ? e.data.place + ": " : "") + (e.data.error || e.data.warning))))] : [],
    top && top.rows.length ? [el("h2", {}, "Top-scored rows"), topTable(top)] : [],
    el("h2", {}, "Log"),
    el("pre", { id: "log", class: "log", tabindex: "0", "aria-label": "run log" },
      lines.map((l) => when(l.at_ms) + "  " + l.level.padEnd(5) + " " + l.message).join("\n")),
    report ? [el("h2", {}, "Report"), el("pre", { id: "report" }, JSON.stringify(report, null, 2))] : []);
}

function topTable(top) {
  return el("table", { id: "top-rows", "aria-label": "top-scored rows" },
    el("thead", {}, el("tr", {}, top.columns.map((c) => el("th", {}, c)))),
    el("tbody", {}, top.rows.map((r) => el("tr", {}, r.map((v) => el("td", {}, v))))));
}

// A pipeline: its history as charts, its runs, run-now and backfill.
async function viewPipeline(name) {
  const seq = routeSeq;
  const { runs } = await api("/api/pipelines/" + encodeURIComponent(name) + "/history?limit=100");
  const latest = (await api("/api/runs?limit=1&pipeline=" + encodeURIComponent(name))).runs[0];
  const ended = runs.filter((r) => r.seconds !== null && r.seconds !== undefined);
  const out = el("p", { id: "pipeline-action", role: "status" });
  const act = async (path, body, said) => {
    try { const v = await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) }); out.textContent = said(v); }
    catch (e) { out.textContent = e.message; out.className = "error"; }
  };
  const file = latest && latest.file;
  showIf(seq,
    el("p", {}, el("a", { href: "#/runs" }, "← Runs")),
    el("h1", {}, "Pipeline " + name),
    file ? el("div", { class: "actions" },
      el("button", { id: "run-now", onclick: () => act("/api/runs", { path: file }, (v) => "queued run #" + v.id) }, "Run now"),
      el("form", { class: "filters", id: "backfill-form", "aria-label": "backfill", onsubmit: (e) => { e.preventDefault();
        act("/api/backfills", { path: file, from: document.getElementById("backfill-from").value, to: document.getElementById("backfill-to").value },
          (v) => "backfill #" + v.id + ": " + v.total + " run(s) queued"); } },
        el("label", {}, "From ", el("input", { id: "backfill-from", type: "date", required: "" })),
        el("label", {}, "To ", el("input", { id: "backfill-to", type: "date", required: "" })),
        el("button", { type: "submit", id: "backfill-go" }, "Backfill"))) : [],
    out,
    el("div", { class: "charts", id: "history-charts" },
      chart("Duration per run", ended.map((r) => r.run), ended.map((r) => r.seconds), "s"),
      chart("Anomaly rate per run", ended.map((r) => r.run), ended.map((r) => 100 * (r.anomaly_rate || 0)), "%"),
      chart("Rows per run", ended.map((r) => r.run), ended.map((r) => r.rows || 0), "rows")),
    el("table", { "aria-label": "pipeline runs", id: "pipeline-runs" },
      el("thead", {}, el("tr", {}, ["Run", "For", "State", "Duration", "Rows", "Anomaly rate", "Submitted"].map((h) => el("th", {}, h)))),
      el("tbody", {}, [...runs].reverse().map((r) => el("tr", {},
        el("td", {}, el("a", { href: "#/runs/" + r.run }, "#" + r.run)), el("td", {}, r.date || "–"), el("td", {}, stateBadge(r.state)),
        el("td", {}, seconds(r.seconds)), el("td", { class: "num" }, r.rows === null || r.rows === undefined ? "–" : r.rows.toLocaleString()),
        el("td", { class: "num" }, r.anomaly_rate === null || r.anomaly_rate === undefined ? "–" : (100 * r.anomaly_rate).toFixed(2) + "%"),
        el("td", {}, when(r.submitted_ms)))))));
}

function cumulative(xs) {
  let s = 0;
  return xs.map((x) => (s += x));
}

// A line chart as inline SVG (points sorted by x).
function chart(title, xs, ys, unit) {
  const w = 320, h = 120, pad = 24;
  const pts = xs.map((x, i) => [x, ys[i]]).sort((a, b) => a[0] - b[0]);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h); svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  if (pts.length) {
    const [x0, x1] = [pts[0][0], pts[pts.length - 1][0]];
    const ymax = Math.max(...pts.map((p) => p[1]), 1e-9);
    const sx = (x) => pad + ((x - x0) / Math.max(x1 - x0, 1)) * (w - 2 * pad);
    const sy = (y) => h - pad - (y / ymax) * (h - 2 * pad);
    const line = document.createElementNS(svg.namespaceURI, "polyline");
    line.setAttribute("points", pts.map((p) => sx(p[0]) + "," + sy(p[1])).join(" "));
    line.setAttribute("fill", "none"); line.setAttribute("stroke", "#1f5fbf"); line.setAttribute("stroke-width", "2");
    svg.append(line);
    const label = document.createElementNS(svg.namespaceURI, "text");
    label.setAttribute("x", 2); label.setAttribute("y", 12);
    label.textContent = "max " + (Math.round(ymax * 100) / 100).toLocaleString() + " " + unit;
    svg.append(label);
  }
  return el("figure", {}, svg, el("figcaption", {}, title));
}

// Backfills, each as one item: its state, its runs per state, and a bar of those that ended.
async function viewBackfills() {
  const seq = routeSeq;
  const { backfills } = await api("/api/backfills?limit=50");
  showIf(seq,
    el("h1", {}, "Backfills"),
    backfills.length ? el("table", { "aria-label": "backfills", id: "backfills" },
      el("thead", {}, el("tr", {}, ["Backfill", "Pipeline", "Days", "State", "Done", "Runs"].map((h) => el("th", {}, h)))),
      el("tbody", {}, backfills.map((b) => {
        const ended = b.total - (b.counts.queued || 0) - (b.counts.running || 0);
        const pct = b.total ? (100 * ended) / b.total : 0;
        return el("tr", { id: "backfill-" + b.id },
          el("td", {}, "#" + b.id), el("td", {}, el("a", { href: "#/pipelines/" + encodeURIComponent(b.pipeline) }, b.pipeline)),
          el("td", {}, b.from_day + " – " + b.to_day), el("td", {}, stateBadge(b.state)),
          el("td", {}, el("span", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(Math.round(pct)),
            "aria-label": "backfill " + b.id + " progress" }, el("span", { style: "width:" + pct.toFixed(1) + "%" })), " " + ended + " of " + b.total),
          el("td", {}, Object.entries(b.counts).map(([s, n]) => n + " " + s.replace("_", " ")).join(", ")));
      }))) : el("p", { class: "muted" }, "No backfills yet. Start one from a pipeline's page, or: nomaly backfill FILE --from D --to D --submit"));
}

// Registered models, every version.
async function viewModels() {
  const seq = routeSeq;
  const { models } = await api("/api/models");
  const day = (ms) => new Date(ms).toISOString().slice(0, 10);
  showIf(seq,
    el("h1", {}, "Models"),
    models.length ? el("table", { "aria-label": "models", id: "models" },
      el("thead", {}, el("tr", {}, ["Model", "Version", "Algorithm", "Training rows", "Trained for", "By", "Size", "Made"].map((h) => el("th", {}, h)))),
      el("tbody", {}, models.map((m) => el("tr", { id: "model-" + m.name + "-v" + m.version },
        el("td", {}, m.name), el("td", {}, "v" + m.version), el("td", {}, m.algorithm),
        el("td", { class: "num" }, m.training_rows.toLocaleString()), el("td", {}, day(m.interval_start_ms)),
        el("td", {}, el("a", { href: "#/pipelines/" + encodeURIComponent(m.pipeline) }, m.pipeline)),
        el("td", { class: "num" }, bytes(m.size_bytes)), el("td", {}, when(m.created_at_unix_ms)))))) :
      el("p", { class: "muted" }, "No models registered. A run with [detect] model = \"NAME\" and train = \"SELECT ...\" registers one."));
}

async function viewQueue() {
  const seq = routeSeq;
  const q = await api("/api/queue");
  showIf(seq,
    el("h1", {}, "Queue"),
    el("p", {}, bytes(q.memory_reserved_bytes) + " of " + bytes(q.memory_budget_bytes) + " reserved; " + q.running.length + " of " + q.max_concurrent + " runs going"),
    q.queued.length ? el("table", { "aria-label": "queue" },
      el("thead", {}, el("tr", {}, ["Position", "Run", "Pipeline", "Priority", "Effective", "Memory", "Waiting", "Waits for", "Estimated start"].map((h) => el("th", {}, h)))),
      el("tbody", {}, q.queued.map((e) => el("tr", {},
        el("td", {}, String(e.position)), el("td", {}, el("a", { href: "#/runs/" + e.id }, "#" + e.id)), el("td", {}, e.pipeline),
        el("td", {}, String(e.priority)), el("td", {}, String(e.effective_priority)), el("td", {}, bytes(e.memory_bytes)),
        el("td", {}, seconds(e.waiting_seconds)), el("td", {}, e.waiting_for), el("td", {}, when(e.estimated_start_ms))))))
      : el("p", { class: "muted" }, "Nothing is waiting."));
}

async function viewSchedules() {
  const seq = routeSeq;
  const { schedules } = await api("/api/schedules");
  showIf(seq,
    el("h1", {}, "Schedules"),
    schedules.length ? el("table", { "aria-label": "schedules" },
      el("thead", {}, el("tr", {}, ["Pipeline", "Schedule", "Time zone", "Next runs", "After", "On failure", "Catch-up", "Fires", "Skipped"].map((h) => el("th", {}, h)))),
      el("tbody", {}, schedules.map((s) => el("tr", {},
        el("td", {}, s.name), el("td", {}, el("code", {}, s.cron || "–")), el("td", {}, s.timezone || "–"),
        el("td", {}, s.next_fires_ms.slice(0, 3).map(when).join(", ") || "–"),
        el("td", {}, s.after.join(", ") || "–"), el("td", {}, s.on_failure.join(", ") || "–"),
        el("td", {}, s.catch_up), el("td", {}, String(s.fires)), el("td", {}, String(s.skipped))))))
      : el("p", { class: "muted" }, "No registered pipelines. Add one with: nomaly schedule add PIPELINE.toml"),
    schedules.some((s) => s.after.length) ? [el("h2", {}, "Dependencies"), dependencyGraph(schedules)] : []);
}

// Pipelines in columns by depth (longest chain of `after` before them), arrows upstream → downstream.
function dependencyGraph(schedules) {
  const after = new Map(schedules.map((s) => [s.name, s.after]));
  const depth = new Map();
  const depthOf = (n, seen = new Set()) => {
    if (depth.has(n)) return depth.get(n);
    if (seen.has(n)) return 0;
    seen.add(n);
    const d = Math.max(-1, ...(after.get(n) || []).map((u) => depthOf(u, seen))) + 1;
    depth.set(n, d);
    return d;
  };
  const names = new Set(schedules.flatMap((s) => [s.name, ...s.after]));
  names.forEach((n) => depthOf(n));
  const columns = [];
  for (const n of [...names].sort()) (columns[depth.get(n)] ||= []).push(n);
  const pos = new Map();
  columns.forEach((col, d) => col.forEach((n, i) => pos.set(n, [20 + d * 170, 20 + i * 50])));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", 40 + columns.length * 170); svg.setAttribute("height", 40 + Math.max(...columns.map((c) => c.length)) * 50);
  svg.setAttribute("role", "img"); svg.setAttribute("aria-label", "pipeline dependencies");
  for (const [n, ups] of after) for (const u of ups) {
    const [x1, y1] = pos.get(u), [x2, y2] = pos.get(n);
    const line = document.createElementNS(ns, "line");
    Object.entries({ x1: x1 + 130, y1: y1 + 14, x2, y2: y2 + 14, stroke: "#5b6472", "marker-end": "url(#arrow)" }).forEach(([k, v]) => line.setAttribute(k, v));
    svg.append(line);
  }
  svg.insertAdjacentHTML("afterbegin", '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#5b6472"/></marker></defs>');
  for (const [n, [x, y]] of pos) {
    const rect = document.createElementNS(ns, "rect");
    Object.entries({ x, y, width: 130, height: 28, rx: 4, fill: "#f6f7f9", stroke: "#1f5fbf" }).forEach(([k, v]) => rect.setAttribute(k, v));
    const text = document.createElementNS(ns, "text");
    text.setAttribute("x", x + 8); text.setAttribute("y", y + 18); text.setAttribute("style", "font-size:12px;fill:#1d2430");
    text.textContent = n;
    svg.append(rect, text);
  }
  return svg;
}

// ---- the Cluster view: a Ballista scheduler's executors, jobs and stages (via --scheduler) ----

async function viewCluster() {
  const seq = routeSeq;
  const info = SCHEDULER ? { scheduler: location.host, state: await api("/api/state") } : await api("/api/cluster");
  const executors = await api(clusterApi.executors);
  const jobs = await api(clusterApi.jobs);
  showIf(seq,
    el("h1", {}, "Cluster"),
    el("p", {}, "Scheduler " + info.scheduler + " · Ballista " + (info.state.version || "")),
    el("h2", {}, "Executors (" + executors.length + ")"),
    el("table", { "aria-label": "executors" },
      el("thead", {}, el("tr", {}, ["Executor", "Host", "Task slots", "Last seen"].map((h) => el("th", {}, h)))),
      el("tbody", {}, executors.map((e) => el("tr", {},
        el("td", {}, e.id), el("td", {}, e.host + ":" + e.port),
        el("td", {}, String((e.specification && (e.specification.task_slots ?? e.specification.vcores)) ?? "–")),
        el("td", {}, when(e.last_seen)))))),
    el("h2", {}, "Jobs (" + jobs.length + ")"),
    jobs.length ? el("table", { "aria-label": "cluster jobs" },
      el("thead", {}, el("tr", {}, ["Job", "Name", "Status", "Stages", "Progress"].map((h) => el("th", {}, h)))),
      el("tbody", {}, jobs.map((j) => el("tr", { id: "job-" + j.job_id },
        el("td", {}, el("a", { href: "#/cluster/" + j.job_id, id: "open-job-" + j.job_id }, j.job_id)),
        el("td", {}, j.job_name), el("td", {}, j.status),
        el("td", {}, j.completed_stages + " of " + j.num_stages),
        el("td", {}, progressBar({ id: j.job_id, state: j.status === "Completed" ? "succeeded" : "running", progress: { percent: j.percent_complete } }))))))
      : el("p", { class: "muted" }, "No jobs on the scheduler."));
}

const ms = (v) => (v === undefined || v === null ? "–" : v.toLocaleString() + " ms");

async function viewClusterJob(id) {
  const seq = routeSeq;
  const job = await api(clusterApi.job(encodeURIComponent(id)));
  const { stages } = await api(clusterApi.stages(encodeURIComponent(id)));
  const dot = await fetch(clusterApi.dot(encodeURIComponent(id)), { headers: headers() }).then((r) => (r.ok ? r.text() : ""));
  const running = !["Completed", "Failed"].includes(job.status);
  showIf(seq,
    el("p", {}, el("a", { href: "#/cluster" }, "← Cluster")),
    el("h1", {}, "Job " + id + " · " + job.job_name),
    el("p", {}, job.job_status + " — " + job.completed_stages + " of " + job.num_stages + " stages done"),
    running ? el("button", { class: "danger", id: "cancel-job", onclick: async () => { const [path, method] = clusterApi.cancel(encodeURIComponent(id)); await api(path, { method }); route(); } }, "Cancel job") : [],
    el("h2", {}, "Stages"),
    el("table", { "aria-label": "stages" },
      el("thead", {}, el("tr", {}, ["Stage", "Status", "Tasks", "Input rows", "Output rows", "Compute", "Task time min / median / p75 / max"].map((h) => el("th", {}, h)))),
      el("tbody", {}, stages.map((s) => {
        const tasks = (s.tasks || []).filter(Boolean);
        const done = tasks.filter((t) => /success|complet/i.test(JSON.stringify(t.status ?? t.task_status ?? ""))).length;
        const p = s.task_duration_percentiles;
        return el("tr", { class: "stage" },
          el("td", {}, s.stage_id), el("td", {}, s.stage_status),
          el("td", {}, done + " of " + tasks.length + " done"),
          el("td", { class: "num" }, s.input_rows.toLocaleString()), el("td", { class: "num" }, s.output_rows.toLocaleString()),
          el("td", {}, s.elapsed_compute || "–"),
          el("td", {}, p ? [p.min, p.median, p.p75, p.max].map(ms).join(" / ") : "–"));
      }))),
    el("h2", {}, "Plan"),
    dot ? dotGraph(dot) : el("p", { class: "muted" }, "No plan graph."),
    dot ? el("details", {}, el("summary", {}, "DOT source"), el("pre", {}, dot)) : []);
}

// Draws a Graphviz DOT graph: nodes from `id [label="..."]`, edges from `a -> b`, placed in
// columns by their depth (no Graphviz binary, no library).
function dotGraph(dot) {
  const labels = new Map();
  const edges = [];
  // Labels may span lines (Ballista writes each operator's details on the lines after its name).
  for (const m of dot.matchAll(/([\w.]+)\s*\[[^\]"]*label\s*=\s*"((?:[^"\\]|\\.)*)"/g)) {
    labels.set(m[1], m[2].split(/\n|\\n|\\l/)[0].trim());
  }
  for (const m of dot.matchAll(/"?([\w.]+)"?\s*->\s*"?([\w.]+)"?/g)) edges.push([m[1], m[2]]);
  for (const [a, b] of edges) for (const n of [a, b]) if (!labels.has(n)) labels.set(n, n);
  const parents = new Map([...labels.keys()].map((n) => [n, []]));
  for (const [a, b] of edges) parents.get(b).push(a);
  const depth = new Map();
  const depthOf = (n, seen = new Set()) => {
    if (depth.has(n)) return depth.get(n);
    if (seen.has(n)) return 0;
    seen.add(n);
    const d = Math.max(-1, ...parents.get(n).map((p) => depthOf(p, seen))) + 1;
    depth.set(n, d);
    return d;
  };
  [...labels.keys()].forEach((n) => depthOf(n));
  const rows = [];
  for (const n of labels.keys()) (rows[depth.get(n)] ||= []).push(n);
  const pos = new Map();
  const W = 220, H = 46;
  rows.forEach((row, d) => row.forEach((n, i) => pos.set(n, [10 + i * (W + 20), 10 + d * (H + 24)])));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", 20 + Math.max(1, ...rows.map((r) => r.length)) * (W + 20));
  svg.setAttribute("height", 20 + rows.length * (H + 24));
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "stage plan with " + labels.size + " operators");
  svg.setAttribute("id", "plan-graph");
  for (const [a, b] of edges) {
    const [x1, y1] = pos.get(a), [x2, y2] = pos.get(b);
    const line = document.createElementNS(ns, "line");
    Object.entries({ x1: x1 + W / 2, y1: y1 + H, x2: x2 + W / 2, y2, stroke: "#5b6472" }).forEach(([k, v]) => line.setAttribute(k, v));
    svg.append(line);
  }
  for (const [n, [x, y]] of pos) {
    const g = document.createElementNS(ns, "g");
    g.setAttribute("class", "plan-node");
    const rect = document.createElementNS(ns, "rect");
    Object.entries({ x, y, width: W, height: H, rx: 4, fill: "#f6f7f9", stroke: "#1f5fbf" }).forEach(([k, v]) => rect.setAttribute(k, v));
    const text = document.createElementNS(ns, "text");
    text.setAttribute("x", x + 6); text.setAttribute("y", y + 26); text.setAttribute("style", "font-size:11px;fill:#1d2430");
    const label = labels.get(n);
    text.textContent = label.length > 34 ? label.slice(0, 33) + "…" : label;
    const title = document.createElementNS(ns, "title");
    title.textContent = label;
    g.append(rect, text, title);
    svg.append(g);
  }
  return svg;
}

// ---- routing and live updates -----------------------------------------------------------

async function route() {
  const hash = location.hash || (SCHEDULER ? "#/cluster" : "#/runs");
  const [, view, id] = hash.split("/");
  document.querySelectorAll("nav a").forEach((a) => {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  routeSeq++;
  try {
    if (view === "runs" && id) await viewRun(Number(id));
    else if (view === "pipelines" && id) await viewPipeline(decodeURIComponent(id));
    else if (view === "queue") await viewQueue();
    else if (view === "backfills") await viewBackfills();
    else if (view === "models") await viewModels();
    else if (view === "schedules") await viewSchedules();
    else if (view === "cluster" && id) await viewClusterJob(decodeURIComponent(id));
    else if (view === "cluster") await viewCluster();
    else await viewRuns();
  } catch (e) {
    // The view keeps its heading, so a page that could not load still says where it is.
    const title = view === "runs" && id ? "Run " + id : view === "cluster" && id ? "Job " + decodeURIComponent(id)
      : view === "pipelines" && id ? "Pipeline " + decodeURIComponent(id)
      : { queue: "Queue", schedules: "Schedules", cluster: "Cluster", backfills: "Backfills", models: "Models" }[view] || "Runs";
    show(el("h1", {}, title), el("p", { class: "error", role: "alert" }, e.message));
  }
}

let refreshTimer = null;
function refreshSoon() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; route(); }, 300);
}

// Applies one stream event: progress moves bars in place; everything else redraws the view.
function onEvent(e) {
  const hash = location.hash || "#/runs";
  if (e.kind === "progress") {
    const run = state.runs.get(e.run);
    if (hash === "#/runs" && run) {
      run.progress = e.data;
      run.state = "running";
      const row = document.getElementById("run-" + e.run);
      if (row) row.replaceWith(runRow(run));
      else refreshSoon();
    } else if (hash === "#/runs/" + e.run) {
      const cell = document.getElementById("run-progress");
      if (cell) cell.replaceChildren(progressBar({ id: e.run, state: "running", progress: e.data }));
    }
    return;
  }
  if (hash === "#/runs" || hash === "#/runs/" + e.run || hash === "#/queue") refreshSoon();
  else if ((hash.startsWith("#/pipelines/") || hash === "#/backfills") && (e.kind === "queued" || e.kind === "finished")) refreshSoon();
}

async function connect() {
  if (state.stream) state.stream.abort();
  const controller = new AbortController();
  state.stream = controller;
  const live = document.getElementById("live");
  try {
    const response = await fetch("/api/events", { headers: headers(), signal: controller.signal });
    if (response.status === 401) { live.textContent = "needs the token"; askToken(); return; }
    live.textContent = "live";
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        if (data) onEvent(JSON.parse(data));
      }
    }
  } catch (e) {
    if (controller.signal.aborted) return;
  }
  live.textContent = "reconnecting…";
  setTimeout(connect, 2000);
}

window.addEventListener("hashchange", () => { route(); main.focus(); });
// The Cluster tab appears when the server shows a scheduler (--scheduler).
function checkCluster() {
  fetch(SCHEDULER ? "/api/state" : "/api/cluster", { headers: headers() }).then((r) => { document.getElementById("cluster-link").hidden = !r.ok; });
}
if (SCHEDULER) {
  // Only the cluster here: no runs, queue or schedules on a scheduler.
  document.querySelectorAll("nav a:not(#cluster-link)").forEach((a) => a.remove());
  document.querySelector(".brand").setAttribute("href", "#/cluster");
  document.title = "Nomaly · Cluster";
}
checkCluster();
route();
if (SCHEDULER) {
  document.getElementById("live").textContent = "refreshing every 2 s";
  setInterval(() => { if ((location.hash || "#/cluster").startsWith("#/cluster")) route(); }, 2000);
} else {
  connect();
}
