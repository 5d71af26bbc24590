"""Tables chosen by patterns, found and lost while running, spread over workers."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import pytest

from ctstream.errors import SinkError
from ctstream.source.sqlite_tracking import disable_tracking, track_database

pytestmark = pytest.mark.integration


def orders(name: str) -> str:
    return f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, item TEXT NOT NULL, qty INTEGER)"


async def wait_for(what: str, check: Callable[[], Any], timeout: float, h: Any) -> Any:
    """Until ``check()`` returns something true (awaiting it if need be); its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s\n--- logs ---\n{h.logs()}")
        await asyncio.sleep(0.3)


def changes(h: Any, table: str, start: int, count: int) -> None:
    """Inserts, then updates of every third row and deletes of every fifth."""
    ids = range(start, start + count)
    h.execute(f"INSERT INTO {table} VALUES (?, ?, ?)", [(i, f"item {i}", i) for i in ids])
    h.execute(f"UPDATE {table} SET qty = qty + 100 WHERE id % 3 = 0 AND id >= ?", [(start,)])
    h.execute(f"DELETE FROM {table} WHERE id % 5 = 0 AND id >= ?", [(start,)])


async def bq_tables(h: Any) -> set[str]:
    rows = await h.query("SELECT table_name FROM `{ds}.INFORMATION_SCHEMA.TABLES`")
    return {r["table_name"] for r in rows}


async def test_patterns_new_and_untracked_tables(make_harness: Any) -> None:
    tables = {t: orders(t) for t in ("orders_a", "orders_b", "orders_tmp1", "other")}
    h = make_harness(
        tables,
        selection=["orders_*", "!orders_tmp*"],
        source_extra='discover_interval = "1s"\n'
        'table_snapshot_mode = { "orders_b" = "when_needed" }',
    )
    h.tables = ["orders_a", "orders_b"]
    worker = await h.start_worker()
    status = h.status(worker)
    # The pattern picked the right tables: the excluded and the unmatched are not carried.
    assert set(status["tables"]) == {"orders_a", "orders_b"}
    assert "orders_tmp1_latest" not in await bq_tables(h)
    for table in ("orders_a", "orders_b", "orders_tmp1", "other"):
        changes(h, table, 0, 40)
    await h.wait_equal(timeout=60)

    # A table created and tracked while running, with rows from before its tracking.
    h.execute(orders("orders_c"))
    h.execute("INSERT INTO orders_c VALUES (?, ?, ?)", [(i, f"old {i}", i) for i in range(30)])
    h.execute(orders("orders_tmp2"))
    track_database(h.db, ["orders_c", "orders_tmp2"])
    h.tables.append("orders_c")
    found = await wait_for(
        "orders_c carried", lambda: "orders_c" in h.status(worker)["tables"], 60, h
    )
    assert found
    await h.wait_equal(timeout=90)  # its 30 existing rows, from the initial snapshot
    snapshot = await h.query(
        "SELECT COUNT(*) AS n FROM `{ds}.orders_c` WHERE changetrack_type = 'S'"
    )
    assert snapshot[0]["n"] == 30
    changes(h, "orders_c", 100, 40)  # and its later changes
    changes(h, "orders_a", 100, 40)
    await h.wait_equal(timeout=60)
    # Two more looks at the catalog later, the excluded new table is still not carried.
    rounds = h.status(worker)["discovery"]["rounds"]
    await wait_for(
        "two discovery rounds", lambda: h.status(worker)["discovery"]["rounds"] >= rounds + 2, 30, h
    )
    assert "orders_tmp2" not in h.status(worker)["tables"]
    assert "orders_tmp2_latest" not in await bq_tables(h)

    # A table no longer tracked stops cleanly; its data in BigQuery stays.
    before = await h.query("SELECT COUNT(*) AS n FROM `{ds}.orders_b_latest`")
    with contextlib.closing(sqlite3.connect(h.db, isolation_level=None)) as conn:
        assert disable_tracking(conn, "orders_b")
    h.tables.remove("orders_b")
    entry = await wait_for(
        "orders_b untracked",
        lambda: (t := h.status(worker)["tables"]["orders_b"])["state"] == "untracked" and t,
        30,
        h,
    )
    assert "no longer change-tracked" in entry["stopped_reason"]
    assert "orders_b: no longer change-tracked" in h.full_logs()
    h.execute("INSERT INTO orders_b VALUES (?, ?, ?)", [(i, "late", i) for i in range(500, 510)])
    changes(h, "orders_c", 200, 20)
    await h.wait_equal(timeout=60)  # the others keep flowing
    after = await h.query("SELECT COUNT(*) AS n FROM `{ds}.orders_b_latest`")
    assert after == before

    # Tracked again: it resumes — its saved version is older than the new minimum valid
    # version, so (snapshot_mode when_needed) it is read whole, late rows included.
    track_database(h.db, ["orders_b"])
    h.tables.append("orders_b")
    await wait_for(
        "orders_b carried again",
        lambda: h.status(worker)["tables"]["orders_b"]["state"] != "untracked",
        30,
        h,
    )
    await h.wait_equal(timeout=60)
    assert "orders_b: change-tracked again" in h.full_logs()
    assert worker.proc.poll() is None
    assert await h.query("SELECT reason FROM `{ds}._error_records`") == []


async def test_twenty_tables_spread_over_two_workers(make_harness: Any) -> None:
    names = [f"t{i:02d}" for i in range(20)]
    h = make_harness(
        {n: orders(n) for n in names}, selection=["t*"], source_extra='discover_interval = "2s"'
    )
    first = await h.start_worker(wait=False)
    second = await h.start_worker(wait=False)
    for n in names:
        changes(h, n, 0, 20)

    def polled_by(worker: Any) -> set[str]:
        try:
            tables = h.status(worker)["tables"]
        except OSError:  # its web server is not up yet
            return set()
        return {n for n, t in tables.items() if t["polls"]}

    async def spread() -> bool:
        a, b = polled_by(first), polled_by(second)
        return bool(a) and bool(b) and a | b == set(names)

    await wait_for("both workers polling", spread, 120, h)
    a, b = polled_by(first), polled_by(second)
    await h.wait_equal(timeout=120)

    # A table tracked while both run: each worker finds it, one polls it, and its
    # topics join both workers' subscriptions (a rebalance) without losing anything.
    h.execute(orders("t20"))
    h.execute("INSERT INTO t20 VALUES (?, ?, ?)", [(i, f"old {i}", i) for i in range(25)])
    track_database(h.db, ["t20"])
    names.append("t20")
    h.tables = list(names)
    changes(h, "t20", 500, 20)
    changes(h, "t03", 200, 20)
    await h.wait_equal(timeout=120)
    for worker in (first, second):
        await wait_for(
            "both workers know t20", lambda w=worker: "t20" in h.status(w)["tables"], 30, h
        )

    # One worker leaves: the other takes over every table.
    h.stop_worker(first)
    polls = {n: t["polls"] for n, t in h.status(second)["tables"].items()}
    for n in names:
        changes(h, n, 100, 10)

    def all_on_second() -> bool:
        now = h.status(second)["tables"]
        return all(now[n]["polls"] > polls[n] for n in names)

    await wait_for("the remaining worker polls every table", all_on_second, 120, h)
    await h.wait_equal(timeout=120)
    assert a and b, (a, b)
    assert await h.query("SELECT reason FROM `{ds}._error_records`") == []


async def test_dropped_and_retyped_columns_are_reported_and_the_rest_flows(
    make_harness: Any,
) -> None:
    ddl = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, note TEXT)"
    h = make_harness({"items": ddl})
    worker = await h.start_worker()
    h.execute("INSERT INTO items VALUES (?, ?, ?, ?)", [(i, f"n{i}", i, "x") for i in range(20)])
    await h.wait_equal(timeout=60)

    h.execute("ALTER TABLE items DROP COLUMN note")
    h.execute("ALTER TABLE items DROP COLUMN qty")
    h.execute("ALTER TABLE items ADD COLUMN qty TEXT")  # qty: INTEGER → TEXT
    h.execute("UPDATE items SET qty = 'many', name = 'renamed' WHERE id < 10")
    h.execute("INSERT INTO items VALUES (?, ?, ?)", [(i, f"n{i}", "some") for i in range(20, 30)])

    async def landed() -> bool:
        try:
            rows = await h.query(
                "SELECT COUNT(*) AS n FROM `{ds}.items_latest` WHERE qty__string IS NOT NULL "
                "AND name IS NOT NULL"
            )
        except SinkError:  # no qty__string column yet
            return False
        return bool(rows[0]["n"] == 20)

    await wait_for("retyped values in qty__string", landed, 60, h)
    rows = await h.query("SELECT id, name, qty, qty__string, note FROM `{ds}.items_latest`")
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == 30
    assert by_id[3] == {"id": 3, "name": "renamed", "qty": None, "qty__string": "many",
                        "note": None}  # fmt: skip
    assert by_id[15]["qty"] == 15 and by_id[15]["note"] == "x"  # old values stay
    assert by_id[25]["qty__string"] == "some"
    notes = h.status(worker)["tables"]["items"]["schema_notes"]
    assert any("'note' is no longer in the source table" in n for n in notes), notes
    assert any("'qty' changed type" in n and "items.qty__string" in n for n in notes), notes
    logs = h.full_logs()
    assert "'qty' changed type" in logs and "ctstream snapshot --table items" in logs
    assert await h.query("SELECT reason FROM `{ds}._error_records`") == []
