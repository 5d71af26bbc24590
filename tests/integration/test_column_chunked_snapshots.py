"""Snapshots chunked by a column's values (``source.chunk_columns``) on the local stack: a
table whose nullable key cannot bound chunks is read in chunks of a tied column, every
row lands in BigQuery once, also while the column's values move under the chunks; a
column that cannot bound chunks stops the table and says why."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import sqlite3
import threading
import time
from typing import Any

import pytest

from tests.integration.test_chunked_snapshots import snapshots
from tests.integration.test_snapshots import eventually, repeated_keys, table_status

pytestmark = pytest.mark.integration

# INT, not INTEGER: no rowid alias, so SQLite lets the key hold NULL and the key alone
# cannot bound chunks (the snapshot would read the table whole).
ITEMS = (
    "CREATE TABLE items (id INT PRIMARY KEY, grp INTEGER NOT NULL, name TEXT NOT NULL, "
    "price REAL, note INTEGER)"
)
INSERT = "INSERT INTO items VALUES (?, ?, ?, ?, ?)"
ROWS = 2000
# grp: runs of 7 rows sharing a value, and one value shared by 300 rows (more than a chunk).
SEED = [
    (
        INSERT,
        [(i, 1000 if 700 <= i < 1000 else i // 7, f"item {i}", i * 0.5, None) for i in range(ROWS)],
    )
]
CHUNKS = 'snapshot_chunk_rows = 40\nchunk_columns = { "items" = "grp" }'


class GroupMover(threading.Thread):
    """Moves rows to other groups (also into groups not read yet), inserts and deletes,
    until stopped: a row read before and moved up must not be sent twice."""

    def __init__(self, db: Any) -> None:
        super().__init__(daemon=True)
        self.db, self.done, self.count = db, threading.Event(), 0

    def run(self) -> None:
        rnd, next_id = random.Random(11), 10_000
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
            while not self.done.is_set():
                op = rnd.random()
                if op < 0.6:
                    conn.execute(
                        "UPDATE items SET grp = ?, price = price + 1 WHERE id = ?",
                        (rnd.randrange(1100), rnd.randrange(ROWS)),
                    )
                elif op < 0.85:
                    conn.execute(INSERT, (next_id, rnd.randrange(1100), f"new {next_id}", 1.0, 7))
                    next_id += 1
                else:
                    conn.execute("DELETE FROM items WHERE id = ?", (rnd.randrange(ROWS),))
                conn.commit()
                self.count += 1
                time.sleep(0.003)


def chunk_counts(log: str) -> list[tuple[int, int]]:
    """(rows, chunks) of every completed snapshot in the worker log."""
    found = re.findall(r"snapshot \S+ done: (\d+) rows in (\d+) chunks", log)
    return [(int(rows), int(chunks)) for rows, chunks in found]


async def test_a_nullable_key_is_chunked_by_its_chunk_column(make_harness: Any) -> None:
    h = make_harness({"items": ITEMS}, seed=SEED, source_extra=CHUNKS)
    await h.start_worker()
    [first] = await eventually(lambda: snapshots(h), "initial snapshot recorded", timeout=180)
    assert first["row_count"] == ROWS
    await h.wait_equal()
    rows = await h.query(
        "SELECT COUNT(*) AS n, COUNT(DISTINCT message_unique_id) AS ids FROM `{ds}.items` "
        "WHERE changetrack_type = 'S'"
    )
    assert rows == [{"n": ROWS, "ids": ROWS}]  # every row once
    assert await repeated_keys(h) == []
    log = h.full_logs()
    assert "snapshot chunks are ranges of column 'grp' (source.chunk_columns)" in log
    assert "whole table in one transaction" not in log
    [(read, chunks)] = chunk_counts(log)
    # 40 rows a chunk, but the 300 rows of group 1000 in one: far more than one chunk,
    # fewer than rows / 40.
    assert read == ROWS and 10 < chunks < ROWS // 40


async def test_values_moving_under_the_chunks_lose_and_repeat_nothing(make_harness: Any) -> None:
    """Rows move between groups (into groups read and not read yet) while the chunks are
    read: the snapshot still completes (no row counted twice), the latest view is right."""
    h = make_harness({"items": ITEMS}, seed=SEED, source_extra=CHUNKS)
    mover = GroupMover(h.db)
    mover.start()
    try:
        await h.start_worker()
        await eventually(lambda: snapshots(h), "snapshot recorded under moving rows", 180)
    finally:
        mover.done.set()
        mover.join(timeout=10)
    assert mover.count > 50
    await h.wait_equal()
    assert await repeated_keys(h) == []
    rows = await h.query(
        "SELECT COUNT(*) AS n, COUNT(DISTINCT message_unique_id) AS ids FROM `{ds}.items` "
        "WHERE changetrack_type = 'S'"
    )
    [snapshot] = await snapshots(h)
    assert rows[0]["ids"] == snapshot["row_count"] <= rows[0]["n"]
    [(_, chunks)] = chunk_counts(h.full_logs())
    assert chunks > 1


async def test_a_chunk_column_that_may_hold_null_stops_the_table(make_harness: Any) -> None:
    h = make_harness(
        {"items": ITEMS},
        seed=SEED[:1],
        source_extra='chunk_columns = { "items" = "note" }',
    )
    await h.start_worker(wait=False)

    async def stopped() -> dict[str, Any] | None:
        for status in await table_status(h):
            if status.get("state") == "stopped":
                return dict(status)
        return None

    status = await eventually(stopped, "the table stopped", timeout=120)
    reason = status["stopped_reason"]
    assert reason.startswith("source.chunk_columns.\"items\" = 'note': column 'note' may hold")
    assert "the snapshot of 'items' is refused" in reason
    await asyncio.sleep(2)  # a few more ticks: still stopped, logged once, nothing sent
    log = h.full_logs()
    assert log.count("the snapshot of 'items' is refused") == 1, log
    assert await snapshots(h) == []
