"""``/tables/`` and ``/tables/<name>/``: the pipeline's Faust tables, one page that reads
``/api/tables/``. Plain HTML and a little JavaScript, no assets to serve."""

from __future__ import annotations

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
// A key in the address (?key=...) is looked up at once: the dashboard links to them.
const wanted = new URLSearchParams(location.search).get("key");
if (wanted && name) document.getElementById("key").value = wanted;
show(name ? wanted || "" : "");
</script>
</body>
</html>
"""
