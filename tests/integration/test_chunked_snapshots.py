"""Chunked snapshots on the local stack: every snapshot writes its rows, the latest view
never loses a key while one runs, deletes racing the chunks, pause / resume / cancel."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from typing import Any

import pytest

from ctstream.source.sqlite_tracking import track_database, untrack_database
from tests.integration.test_snapshots import (
    INSERT,
    ITEMS,
    Writer,
    ctstream,
    eventually,
    repeated_keys,
    table_status,
)

pytestmark = pytest.mark.integration

ROWS = 3000
SEED = [(INSERT, [(i, f"item {i}", i * 0.5) for i in range(ROWS)])]
# Small chunks: a snapshot of ROWS rows takes many ticks, so it can be watched.
CHUNKS = "snapshot_chunk_rows = 40"


async def snapshots(h: Any) -> list[dict[str, Any]]:
    return await h.query(
        "SELECT snapshot_version, row_count, reason FROM `{ds}._ctstream_snapshots` "
        "ORDER BY completed_at"
    )


async def latest_count(h: Any) -> int:
    [row] = await h.query("SELECT COUNT(*) AS n FROM `{ds}.items_latest`")
    return int(row["n"])


async def snapshot_under_way(h: Any) -> dict[str, Any] | None:
    for status in await table_status(h):
        if status.get("snapshot"):
            return dict(status["snapshot"])
    return None


async def test_a_requested_snapshot_writes_every_row_and_never_hides_one(
    make_harness: Any,
) -> None:
    """Right after the initial snapshot nothing changed: the second snapshot's rows equal
    the first's in everything but their snapshot, and must all be written; while it runs,
    the latest view never counts fewer rows than the source holds."""
    h = make_harness({"items": ITEMS}, seed=SEED, source_extra=CHUNKS)
    await h.start_worker()
    await eventually(lambda: snapshots(h), "initial snapshot recorded", timeout=120)
    await h.wait_equal()
    assert await latest_count(h) == ROWS
    # --wait follows the snapshot until it is recorded, printing its progress.
    waiting = asyncio.create_task(
        asyncio.to_thread(ctstream, "snapshot", "--config", str(h.config), "-t", "items", "--wait")
    )
    counts: list[int] = []
    deadline = time.monotonic() + 120
    while len(await snapshots(h)) < 2:
        counts.append(await latest_count(h))
        assert time.monotonic() < deadline, "the requested snapshot did not complete"
        await asyncio.sleep(0.1)
    requested = await asyncio.wait_for(waiting, timeout=60)
    assert requested.returncode == 0, requested.stderr
    assert f"chunks, {ROWS} rows of ~{ROWS}, " in requested.stdout, requested.stdout
    assert "items: done, recorded with start version" in requested.stdout.splitlines()[-1]
    assert min(counts) == ROWS, f"the latest view lost keys during the snapshot: {min(counts)}"
    assert len(counts) > 5  # it was watched while it ran
    first, second = await snapshots(h)
    assert second["row_count"] == ROWS and second["reason"] == "requested by ctstream snapshot"
    # Every row of each snapshot is in the change table once.
    rows = await h.query(
        "SELECT COUNT(*) AS n, COUNT(DISTINCT message_unique_id) AS ids FROM `{ds}.items` "
        "WHERE changetrack_type = 'S'"
    )
    assert rows == [{"n": 2 * ROWS, "ids": 2 * ROWS}]
    assert second["snapshot_version"] >= first["snapshot_version"]
    await h.wait_equal()
    assert await repeated_keys(h) == []
    log = h.full_logs()
    assert "snapshot r" in log and f"done: {ROWS} rows in" in log


async def test_changes_racing_the_chunks_leave_the_latest_state_right(make_harness: Any) -> None:
    """Inserts, updates and deletes (also of keys not yet read, and above the upper key)
    while the chunks are read; then a retention overrun's lost delete is hidden."""
    h = make_harness({"items": ITEMS}, seed=SEED, source_extra=CHUNKS)
    writer = Writer(h.db, first_id=10_000)
    writer.start()
    try:
        await h.start_worker()
        await eventually(lambda: snapshot_under_way(h), "initial snapshot under way")
        await eventually(lambda: snapshots(h), "initial snapshot recorded", timeout=120)
    finally:
        writer.done.set()
        writer.join(timeout=10)
    assert writer.count > 50
    await h.wait_equal()
    assert await repeated_keys(h) == []


async def test_pause_resume_and_cancel(make_harness: Any) -> None:
    h = make_harness(
        {"items": ITEMS}, seed=SEED, source_extra="snapshot_chunk_rows = 5", poll_interval="1s"
    )
    await h.start_worker()
    await eventually(lambda: snapshot_under_way(h), "initial snapshot under way")
    paused = ctstream("snapshot", "--config", str(h.config), "--table", "items", "--pause")
    assert paused.returncode == 0, paused.stderr
    assert "pause of the snapshot of 'items' requested" in paused.stdout

    async def is_paused() -> dict[str, Any] | None:
        shown = await snapshot_under_way(h)
        return shown if shown and shown["phase"] == "paused" else None

    before = await eventually(is_paused, "snapshot paused")
    await asyncio.sleep(2.5)  # a few ticks: polls go on, no chunk is read
    after = await snapshot_under_way(h)
    assert after is not None and after["rows"] == before["rows"] < ROWS
    assert await snapshots(h) == []
    resumed = ctstream("snapshot", "--config", str(h.config), "--table", "items", "--resume")
    assert resumed.returncode == 0, resumed.stderr

    async def reading_on() -> bool:
        shown = await snapshot_under_way(h)
        return bool(shown and shown["phase"] == "reading" and shown["rows"] > before["rows"])

    await eventually(reading_on, "snapshot reading again")
    cancelled = ctstream("snapshot", "--config", str(h.config), "--table", "items", "--cancel")
    assert cancelled.returncode == 0, cancelled.stderr
    await eventually(lambda: _no_snapshot(h), "snapshot cancelled", timeout=30)
    assert await snapshots(h) == []  # nothing recorded: the view hides nothing for it
    assert "snapshot cancelled" in h.full_logs()


async def _no_snapshot(h: Any) -> bool:
    statuses = await table_status(h)
    return bool(statuses) and all(not s.get("snapshot") for s in statuses)


async def test_a_recreated_table_is_re_resolved_and_follows_its_snapshot_mode(
    make_harness: Any,
) -> None:
    """Dropped and created again under the same name, then tracked again: a new tracking
    identity (SQL Server: a new object id). No restart: the worker finds the new table,
    re-snapshots it (when_needed), and the latest view holds exactly its rows."""
    h = make_harness(
        {"items": ITEMS},
        seed=SEED,
        snapshot_mode="when_needed",
        source_extra=f'{CHUNKS}\ndiscover_interval = "1s"',
    )
    await h.start_worker()
    await eventually(lambda: snapshots(h), "initial snapshot recorded", timeout=120)
    await h.wait_equal()
    untrack_database(h.db, ["items"])
    with contextlib.closing(sqlite3.connect(h.db)) as conn:
        conn.execute("DROP TABLE items")
        conn.execute(ITEMS)
        conn.executemany(INSERT, [(i, f"new {i}", 2.0) for i in range(ROWS // 2, ROWS + 500)])
        conn.commit()
    track_database(h.db, ["items"])
    await eventually(lambda: _snapshot_count(h, 2), "the recreated table re-snapshotted", 180)
    await h.wait_equal()
    assert await repeated_keys(h) == []
    assert "was dropped and created again" in h.full_logs()


async def _snapshot_count(h: Any, count: int) -> bool:
    return len(await snapshots(h)) >= count
