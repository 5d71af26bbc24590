"""The dashboard in a real browser: headless Chromium shows each table with its counts."""

from __future__ import annotations

import asyncio
import html.parser
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

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


class Rows(html.parser.HTMLParser):
    """Cells of the dashboard's rows, by the table they are about."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self._current: str | None = None
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self._current = dict(attrs).get("data-table")
            if self._current:
                self.rows[self._current] = []
        self._in_cell = tag == "td" and self._current is not None

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._current = None
        if tag == "td":
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_cell and self._current:
            self.rows[self._current].append(data)


async def test_the_dashboard_shows_every_table_with_counts(make_harness: Any) -> None:
    h = make_harness({"items": ITEMS, "kv": KV})
    worker = await h.start_worker()
    h.execute("INSERT INTO items VALUES (?, ?, ?)", [(i, f"item {i}", 1.0) for i in range(60)])
    h.execute("INSERT INTO kv VALUES (?, ?, ?)", [(str(i), "b", "v") for i in range(25)])
    await h.wait_equal(timeout=90)
    url = f"http://127.0.0.1:{worker.web_port}/"
    dom = await asyncio.to_thread(chromium, url, "--dump-dom")
    parser = Rows()
    parser.feed(dom)
    assert set(parser.rows) == {"items", "kv"}, dom[-3000:]
    for table, minimum in (("items", 60), ("kv", 25)):
        cells = parser.rows[table]
        # table, state, saved version, polls, in/s, out/s, events, duplicates, rows written …
        assert cells[1] == "streaming", cells
        assert int(cells[6]) >= minimum and int(cells[8]) >= minimum, cells
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = (ARTIFACTS / "dashboard.png").resolve()
    await asyncio.to_thread(chromium, url, f"--screenshot={shot}", "--window-size=1500,520")
    assert shot.stat().st_size > 10_000
