"""A column added at the source flows to BigQuery while the pipeline runs, or after a stop."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ITEMS = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL)"


class Writer(threading.Thread):
    """Inserts rows one by one; once ``colour`` exists, every row carries it."""

    def __init__(self, db: Any) -> None:
        super().__init__(daemon=True)
        self.db, self.done, self.colour, self.next_id = db, threading.Event(), False, 0

    def run(self) -> None:
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
            while not self.done.is_set():
                i = self.next_id
                if self.colour:
                    conn.execute(
                        "INSERT INTO items (id, name, price, colour) VALUES (?, ?, ?, ?)",
                        (i, f"item {i}", 1.0, f"c{i}"),
                    )
                else:
                    conn.execute(
                        "INSERT INTO items (id, name, price) VALUES (?, ?, ?)",
                        (i, f"item {i}", 1.0),
                    )
                conn.commit()
                self.next_id += 1
                time.sleep(0.003)


async def test_a_column_added_mid_stream_lands_with_its_values(make_harness: Any) -> None:
    h = make_harness({"items": ITEMS})
    await h.start_worker()
    writer = Writer(h.db)
    writer.start()
    try:
        while writer.next_id < 200:
            time.sleep(0.05)
        h.execute("ALTER TABLE items ADD COLUMN colour TEXT")
        writer.colour = True
        h.execute("UPDATE items SET colour = 'old' WHERE id < 20")  # rows from before, too
        while writer.next_id < 500:
            time.sleep(0.05)
    finally:
        writer.done.set()
        writer.join(timeout=10)
    await h.wait_equal(timeout=90)  # compares every source column, colour included
    coloured = await h.query(
        "SELECT COUNT(*) AS n FROM `{ds}.items_latest` WHERE colour IS NOT NULL"
    )
    assert coloured[0]["n"] >= 300
    assert "BigQuery columns added: colour" in h.full_logs()
    errors = await h.query("SELECT reason FROM `{ds}._error_records`")
    assert errors == []


async def test_a_column_added_while_stopped_is_added_at_start(make_harness: Any) -> None:
    h = make_harness({"items": ITEMS})
    worker = await h.start_worker()
    h.execute("INSERT INTO items VALUES (?, ?, ?)", [(i, f"item {i}", 1.0) for i in range(50)])
    await h.wait_equal(timeout=60)
    h.stop_worker(worker)
    h.execute("ALTER TABLE items ADD COLUMN note TEXT")
    h.execute("UPDATE items SET note = 'noted' WHERE id % 2 = 0")
    await h.start_worker()
    await h.wait_equal(timeout=60)
    assert "added BigQuery columns note" in h.full_logs()
