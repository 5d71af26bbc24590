"""``/``: the dashboard, one page that reads ``/api/status/`` every two seconds.

Plain HTML and a little JavaScript, no assets to serve. Rates (rows/s) are computed in
the page from the counters' change between two reads.
"""

from __future__ import annotations

DASHBOARD_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ctstream</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1c1c1c; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  .sub { color: #666; margin-bottom: 1em; }
  table { border-collapse: collapse; margin-bottom: 1.5em; }
  th, td { padding: .35em .7em; border-bottom: 1px solid #ddd; text-align: right; }
  th:first-child, td:first-child { text-align: left; }
  #worker td { text-align: left; max-width: 70em; }
  th { background: #f4f4f4; font-weight: 600; }
  .streaming { color: #17803d; } .stopped, .untracked { color: #b3261e; font-weight: 600; }
  .snapshotting { color: #9a6700; } .waiting { color: #666; }
  .err { color: #b3261e; font-weight: 600; }
  code { background: #f4f4f4; padding: 0 .3em; }
</style>
</head>
<body>
<h1>ctstream <span id="app"></span></h1>
<div class="sub" id="sub">loading…</div>
<table id="tables">
  <thead><tr>
    <th>table</th><th>state</th><th>saved version</th><th>polls</th>
    <th>in rows/s</th><th>out rows/s</th><th>events</th><th>duplicates dropped</th>
    <th>rows written</th><th>error rows</th><th>latency p50</th><th>latency p99</th>
    <th>last snapshot</th>
  </tr></thead>
  <tbody></tbody>
</table>
<h2 style="font-size:1.05em">This worker</h2>
<table id="worker"><tbody></tbody></table>
<script>
"use strict";
let previous = null;
function snapshotProgress(p) {
  let text = p.phase + ": " + p.rows + " rows, " + p.chunks + " chunks";
  if (p.rows_left_estimate != null) text += ", ~" + p.rows_left_estimate + " left";
  if (p.rows_per_s) text += ", " + p.rows_per_s + " rows/s";
  if (p.eta_s != null) text += ", ETA " + seconds(p.eta_s);
  if (p.phase === "verifying" && p.rows_in_bigquery != null)
    text += ", " + p.rows_in_bigquery + " in BigQuery";
  return text;
}
function cell(row, text, cls) {
  const td = row.insertCell(); td.textContent = text; if (cls) td.className = cls; return td;
}
function seconds(v) { return v === null || v === undefined ? "\\u2013" : v.toFixed(2) + " s"; }
function rate(now, before, key, dt) {
  if (!before || dt <= 0) return "\\u2013";
  return ((now[key] - before[key]) / dt).toFixed(1);
}
async function refresh() {
  let status;
  try {
    // A token given in the address bar (?token=...) goes along with every read.
    const response = await fetch("api/status/" + location.search, {cache: "no-store"});
    status = await response.json();
  } catch (e) {
    document.getElementById("sub").textContent = "cannot reach the worker: " + e;
    return;
  }
  document.getElementById("app").textContent = status.app;
  const when = new Date(status.time * 1000).toLocaleTimeString();
  document.getElementById("sub").textContent =
    "roles " + status.roles.join(", ") + " · updated " + when;
  const dt = previous ? status.time - previous.time : 0;
  const body = document.querySelector("#tables tbody");
  body.innerHTML = "";
  for (const [name, t] of Object.entries(status.tables)) {
    const row = body.insertRow();
    row.dataset.table = name;
    const before = previous && previous.tables[name];
    cell(row, name);
    const notes = (t.schema_notes || []).join("\\n");
    cell(row, t.state + (notes ? " ⚠" : ""), t.state).title =
      [t.stopped_reason || t.snapshot_reason || "", notes].filter(Boolean).join("\\n");
    cell(row, t.saved_version ?? "\\u2013");
    cell(row, t.polls);
    cell(row, rate(t, before, "events_produced", dt));
    cell(row, rate(t, before, "rows_written", dt));
    cell(row, t.events_produced);
    cell(row, t.duplicates_dropped);
    cell(row, t.rows_written);
    cell(row, t.error_rows, t.error_rows ? "err" : "");
    cell(row, seconds(t.latency_p50_s));
    cell(row, seconds(t.latency_p99_s));
    const s = t.last_snapshot, now = t.snapshot;
    cell(row, now ? snapshotProgress(now) : s ? s.rows + " rows @ " + s.version : "\\u2013");
  }
  const worker = document.querySelector("#worker tbody");
  worker.innerHTML = "";
  const lines = [
    ["partitions owned", status.partitions.length
      ? status.partitions.map(p => p.topic + "/" + p.partition).join(", ") : "none"],
    ["consumer lag", status.consumer_lag_total],
    ["sink batches", status.sink.batches],
    ["last batch", status.sink.last_batch_at
      ? status.sink.last_batch_rows + " rows at "
        + new Date(status.sink.last_batch_at * 1000).toLocaleTimeString() : "\\u2013"],
    ["BigQuery retries", status.sink.retries],
    ["write path", status.sink.write_api],
  ];
  for (const [k, v] of lines) { const r = worker.insertRow(); cell(r, k); cell(r, v); }
  previous = status;
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""

# /tables/ and /tables/<name>/: the same page; it reads the table name from its address.
TABLES_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ctstream tables</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; }
  table { border-collapse: collapse; margin: 1em 0; }
  th, td { padding: .3em .7em; border-bottom: 1px solid #ddd; text-align: left; }
  th { background: #f4f4f4; } code { white-space: pre-wrap; }
</style>
</head>
<body>
<h1 style="font-size:1.3em"><a href="/">ctstream</a> · <a href="/tables/">tables</a>
  <span id="name"></span></h1>
<form id="search" hidden>key <input id="key" size="60"> <button>look up</button>
  <button type="button" id="prev">previous page</button>
  <button type="button" id="next">next page</button> <span id="info"></span></form>
<div id="out">loading…</div>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token");
const auth = token ? "&token=" + encodeURIComponent(token) : "";
const name = decodeURIComponent(
  location.pathname.replace(/^\\/tables\\/?/, "").replace(/\\/$/, ""));
let page = 0;
function table(rows, columns) {
  const t = document.createElement("table");
  const head = t.createTHead().insertRow();
  for (const c of columns) {
    const th = document.createElement("th"); th.textContent = c; head.appendChild(th);
  }
  for (const r of rows) {
    const row = t.insertRow();
    for (const c of columns) {
      const v = r[c]; const cell = row.insertCell();
      const code = document.createElement("code");
      code.textContent = typeof v === "object" ? JSON.stringify(v) : String(v);
      cell.appendChild(code);
    }
  }
  return t;
}
async function get(path) {
  const r = await fetch(path + (path.includes("?") ? "" : "?") + auth, {cache: "no-store"});
  return r.json();
}
async function show(key) {
  const out = document.getElementById("out");
  out.textContent = "";
  if (!name) {
    const data = await get("/api/tables/?");
    const rows = data.tables.map(t => ({...t, name: t.name}));
    out.appendChild(table(rows, ["name", "help", "windowed", "changelog_topic", "local_entries"]));
    for (const a of out.querySelectorAll("tr td:first-child code")) {
      const link = document.createElement("a");
      link.href = "/tables/" + a.textContent + "/" + location.search;
      link.textContent = a.textContent; a.replaceWith(link);
    }
    return;
  }
  document.getElementById("name").textContent = "· " + name;
  document.getElementById("search").hidden = false;
  const q = key ? "key=" + encodeURIComponent(key) : "page=" + page;
  const data = await get("/api/tables/" + encodeURIComponent(name) + "/?" + q);
  if (data.error) { out.textContent = data.error; return; }
  document.getElementById("info").textContent = key
    ? (data.found ? "found" : "not found") + " · answered by " + data.answered_by
    : data.total + " entries · page " + (page + 1);
  out.appendChild(table(data.entries, data.entries.length && "window" in data.entries[0]
    ? ["key", "partition", "window"] : ["key", "value"]));
  if (data.windows && data.windows.length) {
    out.appendChild(table(data.windows, ["start", "end", "ids"]));
  }
}
document.getElementById("search").addEventListener("submit", e => {
  e.preventDefault(); show(document.getElementById("key").value.trim());
});
document.getElementById("prev").onclick = () => { page = Math.max(0, page - 1); show(""); };
document.getElementById("next").onclick = () => { page += 1; show(""); };
show("");
</script>
</body>
</html>
"""
