"""Compaction in a running pipeline: the leader merges every table and its restricted copy
(and copies them into <t>_daily, the change log having a retention), and the latest views
stay equal to the source when the merged change log is gone (as partition expiry would
remove it; the emulator does not expire partitions itself)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import urllib.request
from typing import Any

import pytest
from google.cloud import bigquery

from ctstream.bigquery.compaction import watermark
from ctstream.commands.compact import compact_tables
from ctstream.commands.compact import render as render_merge
from ctstream.commands.status import collect_status, render

pytestmark = pytest.mark.integration

ITEMS = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, secret TEXT)"


async def _expire_merged(h: Any, table: str) -> int:
    """Delete the change-log rows ``table``'s merges covered; how many there were."""
    merged_to = await watermark(h.writer, table)
    assert merged_to is not None
    return await h.writer.execute(
        f"DELETE FROM `{h.writer.ref(table)}` WHERE bigquery_insert_time <= @t",
        [bigquery.ScalarQueryParameter("t", "TIMESTAMP", merged_to)],
        "expiring merged partitions",
    )


async def test_the_leader_merges_and_the_views_outlive_the_change_log(make_harness: Any) -> None:
    h = make_harness(
        {"items": ITEMS},
        sink_extra='request_timeout = "2s"',
        source_extra='restricted = { "items" = ["secret"] }',
        bigquery_extra='compact_interval = "10s"\ncompact_settle = "4s"\n'
        'change_log_retention = "3d"',
    )
    rows = [(i, f"n{i}", f"s{i}") for i in range(200)]
    h.execute("INSERT INTO items VALUES (?, ?, ?)", rows)
    worker = await h.start_worker()
    h.execute("UPDATE items SET name = 'changed' WHERE id < 50")
    h.execute("DELETE FROM items WHERE id >= 150")
    await h.wait_equal()
    started = time.time()

    # The leader's timer merges the table and its restricted copy, past the writes above.
    after = dt.datetime.fromtimestamp(started, dt.UTC)
    deadline = time.monotonic() + 90
    marks: list[dt.datetime | None] = []
    while time.monotonic() < deadline:
        marks = [await watermark(h.writer, t) for t in ("items", "items_restricted")]
        if all(m is not None and m > after for m in marks):
            break
        await asyncio.sleep(1)
    assert all(m is not None and m > after for m in marks), f"no merge past {after}: {marks}"
    merged = h.status(worker)["tables"]["items"]["compaction"]
    assert merged["rows_merged"] >= 150 and merged["error"] is None
    url = f"http://127.0.0.1:{worker.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        metrics = response.read().decode()
    assert 'ctstream_compaction_rows_merged_total{bigquery_table="items_restricted"}' in metrics

    # With a retention, the leader's first round also made the day's copy of each table.
    for table in ("items_daily", "items_restricted_daily"):
        copies = await h.query(f"SELECT COUNT(*) AS n FROM `{h.writer.ref(table)}`")
        assert copies[0]["n"] > 0, table
    summary = await collect_status(h.settings)
    assert summary["tables"]["items"]["compaction"]["last_rows_merged"] is not None
    assert "s ago" in render(summary)

    # Expiry of every merged change-log row: the latest views do not change.
    assert await _expire_merged(h, "items") >= 150
    assert await _expire_merged(h, "items_restricted") >= 150
    await h.wait_equal(timeout=10)
    restricted = await h.query(
        f"SELECT COUNT(*) AS n, COUNTIF(secret IS NOT NULL) AS clear "
        f"FROM `{h.writer.ref('items_restricted_latest')}`"
    )
    assert restricted == [{"n": 150, "clear": 0}]

    # Changes after the merge come through the view's tail, and are merged in turn.
    h.execute("UPDATE items SET name = 'again' WHERE id < 10")
    h.execute("INSERT INTO items VALUES (500, 'new', 'x')")
    await h.wait_equal()
    h.stop_worker(worker)


async def test_ctstream_compact_merges_and_rebuilds(make_harness: Any) -> None:
    """The command merges up to compact_settle ago, so with a settle of 4 s a merge after
    that long covers the rows written; --rebuild gives the same state again."""
    h = make_harness(
        {"items": ITEMS},
        sink_extra='request_timeout = "2s"',
        bigquery_extra='compact_interval = "1h"\ncompact_horizon = "4h"\ncompact_settle = "4s"',
    )
    h.execute("INSERT INTO items VALUES (?, ?, ?)", [(i, f"n{i}", "s") for i in range(30)])
    worker = await h.start_worker()
    h.execute("DELETE FROM items WHERE id < 10")
    await h.wait_equal()
    h.stop_worker(worker)
    written = time.time()
    while time.time() < written + h.settings.bigquery.compact_settle:
        await asyncio.sleep(0.5)  # the settle time is what the command waits out
    (merged,) = await compact_tables(h.settings, ["items"], rebuilt=False)
    assert merged.merged_to.timestamp() > written - 1 and merged.rows_merged >= 30
    current = f"SELECT COUNTIF(changetrack_type != 'D') AS n FROM `{h.writer.ref('items_current')}`"
    assert await h.query(current) == [{"n": 20}]
    (rebuilt,) = await compact_tables(h.settings, ["items"], rebuilt=True)
    assert rebuilt.rows_merged >= 30  # every key again, from the change log
    assert await h.query(current) == [{"n": 20}]
    assert "rebuilt from its change log" in render_merge(rebuilt, rebuilt=True)
    await h.wait_equal(timeout=10)
