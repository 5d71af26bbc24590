"""The dashboard in a real browser: headless Chromium shows the whole pipeline — every
worker, each table's figures combined over them, charts with points — and a worker
killed shows as not answering."""

from __future__ import annotations

import asyncio
import html.parser
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("chromium") is None,
        reason="no chromium on PATH (scripts/setup.sh --dev installs Debian's chromium)",
    ),
]

ITEMS = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL)"
KV = "CREATE TABLE kv (a TEXT NOT NULL, b TEXT NOT NULL, v TEXT, PRIMARY KEY (a, b))"
ARTIFACTS = Path(os.environ.get("CTSTREAM_TEST_ARTIFACTS", "test-artifacts"))


def chromium(url: str, *args: str) -> str:
    result = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",  # tests may run as root
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=6000",  # let the page's script fetch and draw
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class Page(html.parser.HTMLParser):
    """The dashboard's rows (cells by table and by worker), its title and charts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[str]] = {}
        self.workers: dict[str, list[str]] = {}
        self.title = ""
        self.charts: list[str] = []  # the text of each chart's legend and labels
        self.polyline_points: list[int] = []  # points of each drawn line
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_title = False
        self._in_svg = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and (a.get("data-table") or a.get("data-worker")):
            self._row = []
            if a.get("data-table"):
                self.tables[str(a["data-table"])] = self._row
            else:
                self.workers[str(a["data-worker"])] = self._row
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "title" and not self._in_svg:
            self._in_title = True
        elif tag == "svg":
            self._in_svg += 1
            self.charts.append("")
        elif tag in ("polyline", "path") and self._in_svg:
            drawn = a.get("points") or a.get("d") or ""
            self.polyline_points.append(drawn.count(",") if "points" in a else drawn.count("L") + 1)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "title":
            self._in_title = False
        elif tag == "svg":
            self._in_svg -= 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_title:
            self.title += data
        if self._in_svg and self.charts:
            self.charts[-1] += data


def api(worker: Any, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}{path}", timeout=20) as r:
        return orjson.loads(r.read())


def page_of(worker: Any, query: str = "") -> Page:
    page = Page()
    page.feed(chromium(f"http://127.0.0.1:{worker.web_port}/{query}", "--dump-dom"))
    return page


COUNTERS = ("events_produced", "duplicates_dropped", "rows_written")
# A sample every second, so a short test has points to draw (the window: at most 720 points).
WEB_SECTION = '[web]\nchart_step = "1s"\nchart_window = "5m"'


async def settled_counts(workers: list[Any], timeout: float = 60) -> dict[str, dict[str, int]]:
    """Per table, the workers' own counters summed, once two reads a second apart agree."""
    deadline = time.monotonic() + timeout
    previous = None
    while True:
        statuses = [await asyncio.to_thread(api, w, "/api/status/") for w in workers]
        counts = {
            name: {c: sum(s["tables"][name][c] for s in statuses) for c in COUNTERS}
            for name in statuses[0]["tables"]
        }
        if counts == previous:
            return counts
        assert time.monotonic() < deadline, (previous, counts)
        previous = counts
        await asyncio.sleep(1.0)


async def test_the_dashboard_shows_the_whole_pipeline(make_harness: Any) -> None:
    h = make_harness(
        {"items": ITEMS, "kv": KV},
        partitions=4,
        bigquery_extra=WEB_SECTION,
    )
    first = await h.start_worker()
    second = await h.start_worker(wait=False)
    await h.wait_all_own_partitions([first, second], timeout=120)
    for round_ in range(4):  # changes over several chart steps
        h.execute(
            "INSERT INTO items VALUES (?, ?, ?)",
            [(i, f"item {i}", 1.0) for i in range(round_ * 30, round_ * 30 + 30)],
        )
        h.execute(
            "INSERT INTO kv VALUES (?, ?, ?)", [(f"{round_}-{i}", "b", "v") for i in range(10)]
        )
        await asyncio.sleep(1.5)  # spread the changes over chart steps, not a wait for a result
    await h.wait_equal(timeout=90)
    counts = await settled_counts([first, second])
    assert counts["items"]["rows_written"] >= 120 and counts["kv"]["rows_written"] >= 36, counts

    # Either worker shows the same pipeline: the counts of both, combined.
    for worker in (first, second):
        combined = await asyncio.to_thread(api, worker, "/api/pipeline/")
        for name, expected in counts.items():
            got = {c: combined["tables"][name][c] for c in COUNTERS}
            assert got == expected, (name, got, expected)
        assert [w["state"] for w in combined["workers"]] == ["up", "up"], combined["workers"]

    page = await asyncio.to_thread(page_of, first)
    assert set(page.tables) == {"items", "kv"}, page.tables
    assert len(page.workers) == 2 and all(
        cells[1].startswith("up") for cells in page.workers.values()
    )
    for name, cells in page.tables.items():
        # table, state, saved version, in/s, out/s, sparkline, lag, p50, p99, dup, written …
        assert cells[1] == "streaming", cells
        assert int(cells[10].replace(",", "")) == counts[name]["rows_written"], cells
    assert any(n >= 2 for n in page.polyline_points), "no chart drew a line of points"
    assert "rows per second" in " ".join(page.charts)
    assert "need attention" not in page.title, page.title

    one = await asyncio.to_thread(page_of, second, "?table=kv")  # one table, from the other
    assert set(one.tables) == {"kv"} and one.tables["kv"][10] == page.tables["kv"][10]
    assert one.title.endswith("· kv"), one.title
    assert any(n >= 2 for n in one.polyline_points), "the table's charts drew no line"

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = (ARTIFACTS / "dashboard.png").resolve()
    await asyncio.to_thread(chromium, f"http://127.0.0.1:{first.web_port}/",
                            f"--screenshot={shot}", "--window-size=1500,700")  # fmt: skip
    assert shot.stat().st_size > 10_000

    h.stop_worker(second, signal.SIGKILL)
    page = await asyncio.to_thread(page_of, first)
    states = {url: cells[1] for url, cells in page.workers.items()}
    assert len(states) == 2, states
    dead = [url for url, state in states.items() if str(second.web_port) in url]
    assert dead and states[dead[0]] == "not answering", states
