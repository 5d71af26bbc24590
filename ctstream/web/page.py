"""``/``: the pipeline at a glance, rendered on the server from every worker's figures.

The page is whole without JavaScript (charts are inline SVG, and a ``<noscript>`` refresh
reloads it); with JavaScript it swaps in a fresh ``<main>`` every few seconds instead.
Every text that comes from a database or a worker is escaped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import quote

from ctstream.web.charts import line_chart, sparkline
from ctstream.web.figures import Figures, chart_window, series_lines, span_text

REFRESH_S = 5
CHART_WIDTH = 340  # four in a row on a 1500-pixel-wide window
NONE = "\u2013"  # shown where there is no figure


@dataclass(frozen=True)
class Thresholds:
    """Beyond these a table is marked as needing attention."""

    latency_p99_s: float
    consumer_lag: int


@dataclass(frozen=True)
class TableLinks:
    """Where to look further: the table's ``ct-versions`` entry and BigQuery names
    (each with a console address, or None where none applies)."""

    ct_versions: str
    bigquery: Sequence[tuple[str, str | None]]


@dataclass
class PageData:
    app: str
    now: float
    workers: list[dict[str, Any]]
    tables: dict[str, dict[str, Any]]
    series: Mapping[str, Any]
    thresholds: Thresholds
    links: dict[str, TableLinks]
    query: str = ""  # "?token=…" carried on every link, or ""
    focus: str | None = None  # the table whose charts are shown, None: the pipeline's
    figures: dict[str, Figures] = field(default_factory=dict)


def attention(row: Mapping[str, Any], figures: Figures, thresholds: Thresholds) -> list[str]:
    """Why a table needs a look, empty when it does not."""
    reasons = []
    if row.get("state") in ("stopped", "untracked"):
        reasons.append(f"{row['state']}: {row.get('reason') or 'see the log'}")
    if row.get("poll_error"):
        reasons.append(f"last poll failed: {row['poll_error']}")
    if figures.latency_p99_s is not None and figures.latency_p99_s > thresholds.latency_p99_s:
        reasons.append(
            f"latency p99 {figures.latency_p99_s:.2f} s > {thresholds.latency_p99_s:g} s"
        )
    merged = row.get("compaction") or {}
    if merged.get("error"):
        reasons.append(f"last merge into its _current table failed: {merged['error']}")
    if figures.lag is not None and figures.lag > thresholds.consumer_lag:
        reasons.append(f"consumer lag {figures.lag:,} > {thresholds.consumer_lag:,}")
    return reasons


def render_page(data: PageData) -> str:
    marked = _marked(data)
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(_title(data, len(marked)))}</title>\n"
        f'<noscript><meta http-equiv="refresh" content="{REFRESH_S}"></noscript>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<main>{render_main(data)}</main>\n"
        f"<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )


def render_main(data: PageData) -> str:
    """The page's ``<main>``: what a refresh replaces."""
    marked = _marked(data)
    up = sum(1 for w in data.workers if w["state"] == "up")
    parts = [
        f'<span id="page-title" hidden>{escape(_title(data, len(marked)))}</span>',
        f'<h1><a href="/{data.query}">ctstream</a> <span class="app">{escape(data.app)}</span>'
        + (f" · {escape(data.focus)}" if data.focus else "")
        + "</h1>",
        '<p class="sub">'
        + f"{up} of {len(data.workers)} worker{'s' if len(data.workers) != 1 else ''} answering"
        + (f' · <b class="err">{len(marked)} table{"s" if len(marked) != 1 else ""} '
           "need attention</b>" if marked else " · all tables within thresholds")
        + f" · updated {time.strftime('%H:%M:%S', time.gmtime(data.now))} UTC</p>",
        _charts(data),
    ]  # fmt: skip
    if data.focus is None or data.focus in data.tables:
        parts.append(_tables(data, marked))
    else:
        parts.insert(3, f'<p class="err">No table {escape(data.focus)!r} in this pipeline.</p>')
    parts.append(_workers(data))
    return "\n".join(parts)


def _title(data: PageData, marked: int) -> str:
    attention_note = f" · {marked} need attention" if marked else ""
    focus = f" · {data.focus}" if data.focus else ""
    return f"ctstream {data.app}{focus}{attention_note}"


def _marked(data: PageData) -> dict[str, list[str]]:
    marked = {}
    for name, row in data.tables.items():
        reasons = attention(row, data.figures.get(name, Figures()), data.thresholds)
        if reasons:
            marked[name] = reasons
    return marked


def _charts(data: PageData) -> str:
    start, end = chart_window(data.series, data.now)

    def lines(*metrics: tuple[str, str]) -> list[tuple[str, list[tuple[float, float | None]]]]:
        return [(label, series_lines(data.series, metric, data.focus)) for label, metric in metrics]

    def chart(title: str, unit: str, drawn: Any, threshold: float | None = None) -> str:
        return line_chart(
            title, unit, drawn, start=start, end=end, width=CHART_WIDTH, threshold=threshold
        )

    charts = [
        chart("rows per second", "rows/s", lines(("in", "rows_in"), ("out", "rows_out"))),
        chart("consumer lag", "messages", lines(("lag", "lag")),
              float(data.thresholds.consumer_lag)),
        chart("latency, change → BigQuery", "s",
              lines(("p50", "latency_p50_s"), ("p99", "latency_p99_s")),
              data.thresholds.latency_p99_s),
        chart("error rows and sink retries", "per step",
              lines(("error rows", "error_rows"))
              + ([] if data.focus else lines(("sink retries", "sink_retries")))),
    ]  # fmt: skip
    what = f"table {escape(data.focus)}" if data.focus else "the pipeline (all workers)"
    return (
        f'<h2>Last {span_text(start, end)}: {what}</h2>\n<div class="charts">'
        + "".join(f"<figure>{chart}</figure>" for chart in charts)
        + "</div>"
    )


def _tables(data: PageData, marked: Mapping[str, list[str]]) -> str:
    start, end = chart_window(data.series, data.now)
    span = escape(span_text(start, end))
    head = (
        "<tr><th>table</th><th>state</th><th>saved version</th><th>in rows/s</th>"
        f"<th>out rows/s</th><th>out, last {span}</th><th>lag</th><th>p50</th><th>p99</th>"
        "<th>duplicates dropped</th><th>rows written</th><th>error rows</th>"
        "<th>snapshot</th><th>compacted</th><th>BigQuery</th></tr>"
    )
    rows = []
    shown = [data.focus] if data.focus else list(data.tables)
    for name in shown:
        row, fig = data.tables[name], data.figures.get(name, Figures())
        links = data.links.get(name)
        reasons = marked.get(name, [])
        state = escape(str(row.get("state", "")))
        why = "\n".join(filter(None, [row.get("reason"), *row.get("schema_notes", [])]))
        cells = [
            f'<a href="/?table={quote(name, safe="")}{_and(data.query)}">{escape(name)}</a>'
            + (f' <span class="mark" title="{escape(chr(10).join(reasons))}">⚠</span>'
               if reasons else ""),
            f'<span class="{state}" title="{escape(why)}">{state}</span>',
            _linked(
                row.get("saved_version"), _join(links.ct_versions, data.query) if links else None
            ),
            _num(fig.rows_in_per_s, 1),
            _num(fig.rows_out_per_s, 1),
            sparkline(series_lines(data.series, "rows_out", name), start=start, end=end),
            _num(fig.lag),
            _secs(fig.latency_p50_s),
            _secs(fig.latency_p99_s),
            _num(row.get("duplicates_dropped")),
            _num(row.get("rows_written")),
            f'<span class="{"err" if row.get("error_rows") else ""}">'
            f"{_num(row.get('error_rows'))}</span>",
            _snapshot(row),
            _compaction(row, data.now),
            _bigquery(links),
        ]  # fmt: skip
        attrs = f' data-table="{escape(name)}"' + (' class="attention"' if reasons else "")
        rows.append(f"<tr{attrs}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    note = "figures of the last minute, all workers combined; lag: the last sample"
    return (
        f'<h2>Tables</h2>\n<p class="note">{note}</p>\n'
        f'<table id="tables"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _workers(data: PageData) -> str:
    head = (
        "<tr><th>worker</th><th>state</th><th>roles</th><th>partitions owned</th>"
        "<th>consumer lag</th><th>last batch</th><th>sink retries</th></tr>"
    )
    rows = []
    for w in data.workers:
        state = escape(w["state"])
        if w["state"] != "up":
            seen = w.get("last_seen")
            detail = escape(w.get("error", "")) + (
                f" · last seen {data.now - seen:.0f} s ago" if seen else ""
            )
            cells = [escape(w["url"]), f'<span class="err">{state}</span>', detail, "", "", "", ""]
        else:
            kinds = ", ".join(f"{escape(k)} {n}" for k, n in w.get("partitions", {}).items())
            last = w.get("last_batch_at")
            cells = [
                escape(w["url"]) + (" (this one)" if w.get("this_worker") else ""),
                state,
                escape(", ".join(w.get("roles", []))),
                kinds or "none",
                _num(w.get("consumer_lag_total")),
                f"{w.get('last_batch_rows', 0)} rows, {data.now - last:.0f} s ago"
                if last
                else NONE,
                _num(w.get("sink_retries")),
            ]
        cls = "" if w["state"] == "up" else ' class="attention"'
        rows.append(
            f'<tr data-worker="{escape(w["url"])}"{cls}>'
            + "".join(f"<td>{c}</td>" for c in cells)
            + "</tr>"
        )
    return (
        f'<h2>Workers</h2>\n<table id="workers"><thead>{head}</thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _snapshot(row: Mapping[str, Any]) -> str:
    p = row.get("snapshot")
    if p:
        rows, estimate = p.get("rows") or 0, p.get("rows_estimate")
        bar = (
            f'<progress value="{rows}" max="{max(estimate, rows)}"></progress> ' if estimate else ""
        )
        text = f"{escape(str(p.get('phase')))}: {rows:,} rows, {p.get('chunks', 0)} chunks"
        if p.get("rows_per_s"):
            text += f", {p['rows_per_s']:,.0f} rows/s"
        if p.get("eta_s") is not None:
            text += f", ETA {_duration(p['eta_s'])}"
        return bar + text
    last = row.get("last_snapshot")
    if last:
        return escape(f"{last.get('rows', '?')} rows @ {last.get('version', '?')}")
    return NONE


def _compaction(row: Mapping[str, Any], now: float) -> str:
    """How far ``<t>_current`` is merged (as the leader last did it)."""
    merged = row.get("compaction")
    if not merged or merged.get("merged_to") is None:
        return NONE
    text = f"up to {_duration(max(0.0, now - merged['merged_to']))} ago"
    if merged.get("last_rows_merged") is not None:
        text += f", {merged['last_rows_merged']:,} rows in {merged.get('last_seconds', 0):.1f} s"
    return escape(text)


def _bigquery(links: TableLinks | None) -> str:
    if links is None:
        return ""
    out = []
    for name, url in links.bigquery:
        text = f"<code>{escape(name)}</code>"
        out.append(f'<a href="{escape(url)}">{text}</a>' if url else text)
    return "<br>".join(out)


def _linked(value: Any, url: str | None) -> str:
    text = NONE if value is None else escape(str(value))
    return f'<a href="{escape(url)}">{text}</a>' if url else text


def _join(url: str, query: str) -> str:
    """``url`` with the page's ``?token=…`` added to its own query, if any."""
    if not query:
        return url
    return url + ("&" + query.removeprefix("?") if "?" in url else query)


def _and(query: str) -> str:
    return "&" + query.removeprefix("?") if query else ""


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return NONE
    return f"{value:,.{digits}f}"


def _secs(value: float | None) -> str:
    return NONE if value is None else f"{value:.2f} s"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1c1c1c; }
h1 { font-size: 1.3em; margin: 0 0 .2em; } h1 a { color: inherit; text-decoration: none; }
h2 { font-size: 1.05em; margin: 1.2em 0 .4em; }
.sub, .note, .app { color: #666; } .note { margin: 0 0 .4em; font-size: .9em; }
.charts { display: flex; flex-wrap: wrap; gap: .5em 1.5em; }
figure { margin: 0; }
table { border-collapse: collapse; margin-bottom: 1em; }
th, td { padding: .3em .6em; border-bottom: 1px solid #ddd; text-align: right;
         vertical-align: middle; white-space: nowrap; }
th { white-space: normal; }
th:first-child, td:first-child, #workers td, #workers th,
#tables td:last-child, #tables th:last-child { text-align: left; }
#workers td { white-space: normal; }
th { background: #f4f4f4; font-weight: 600; }
tr.attention { background: #fdecea; } .mark { color: #b3261e; cursor: help; }
.streaming { color: #17803d; } .stopped, .untracked, .err { color: #b3261e; font-weight: 600; }
.snapshotting { color: #9a6700; } .waiting { color: #666; }
code { background: #f4f4f4; padding: 0 .3em; font-size: .9em; }
progress { width: 7em; vertical-align: middle; }
"""

# Refresh <main> in place (the address, and so a token in it, is kept); the page title
# follows the count of tables needing attention.
SCRIPT = f"""
"use strict";
async function refresh() {{
  try {{
    const url = new URL(location.href); url.searchParams.set("fragment", "main");
    const r = await fetch(url, {{cache: "no-store"}});
    if (!r.ok) return;
    const main = document.querySelector("main");
    main.innerHTML = await r.text();
    const title = document.getElementById("page-title");
    if (title) document.title = title.textContent;
  }} catch (e) {{ /* the next refresh tries again */ }}
}}
setInterval(refresh, {REFRESH_S * 1000});
"""
