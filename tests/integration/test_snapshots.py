"""Snapshots, retention overruns, redundant pollers and poller failover, on the local stack."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from ctstream.source.sqlite_tracking import cleanup_database

pytestmark = pytest.mark.integration

ITEMS = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL)"
INSERT = "INSERT INTO items VALUES (?, ?, ?)"
FAR_FUTURE = time.time() + 365 * 86400  # cleanup "a year later": every change is past retention


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 90) -> Any:
    """Until ``check()`` returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.3)


def ctstream(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctstream", *args], capture_output=True, text=True, timeout=120
    )


async def table_status(h: Any, table: str = "items") -> list[dict[str, Any]]:
    statuses = []
    for worker in h.workers:
        with contextlib.suppress(OSError):
            statuses.append((await asyncio.to_thread(h.status, worker))["tables"][table])
    return statuses


async def repeated_keys(h: Any) -> list[dict[str, Any]]:
    return await h.query(
        "SELECT id, COUNT(*) AS n FROM `{ds}.items_latest` GROUP BY id HAVING COUNT(*) > 1"
    )


class Writer(threading.Thread):
    """Random inserts, updates and deletes on ``items`` until stopped."""

    def __init__(self, db: Any, first_id: int) -> None:
        super().__init__(daemon=True)
        self.db, self.next_id, self.done, self.count = db, first_id, threading.Event(), 0

    def run(self) -> None:
        rnd = random.Random(7)
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
            while not self.done.is_set():
                op = rnd.random()
                if op < 0.5:
                    conn.execute(INSERT, (self.next_id, f"new {self.next_id}", 1.0))
                    self.next_id += 1
                elif op < 0.8:
                    conn.execute(
                        "UPDATE items SET price = price + 1 WHERE id = ?", (rnd.randrange(2000),)
                    )
                else:
                    conn.execute("DELETE FROM items WHERE id = ?", (rnd.randrange(2000),))
                conn.commit()
                self.count += 1
                time.sleep(0.002)


async def test_initial_snapshot_then_change_tracking_loses_and_repeats_nothing(
    make_harness: Any,
) -> None:
    # 2,000 rows exist before tracking starts: only a snapshot can carry them.
    seed = [(INSERT, [(i, f"item {i}", i * 0.5) for i in range(2000)])]
    h = make_harness({"items": ITEMS}, seed=seed)
    writer = Writer(h.db, first_id=10_000)
    writer.start()  # writes race the snapshot and the handover to change tracking
    try:
        await h.start_worker()
        await eventually(
            lambda: h.query("SELECT 1 FROM `{ds}._ctstream_snapshots`"), "snapshot recorded"
        )
        await asyncio.sleep(1.0)  # keep writing across a few polls after the handover
    finally:
        writer.done.set()
        writer.join(timeout=10)
    assert writer.count > 50
    await h.wait_equal(timeout=120)
    assert await repeated_keys(h) == []
    snapshots = await h.query(
        "SELECT snapshot_version, row_count, reason FROM `{ds}._ctstream_snapshots`"
    )
    assert len(snapshots) == 1
    assert snapshots[0]["row_count"] >= 1900
    assert "no saved version" in snapshots[0]["reason"]
    rows = await h.query(
        "SELECT changetrack_type AS op, COUNT(*) AS n FROM `{ds}.items` GROUP BY op"
    )
    by_op = {r["op"]: r["n"] for r in rows}
    assert by_op["S"] == snapshots[0]["row_count"]
    assert by_op.get("I", 0) > 0  # change tracking went on after the snapshot
    [status] = await table_status(h)
    assert status["state"] == "streaming"
    assert status["last_snapshot"]["version"] == snapshots[0]["snapshot_version"]


async def test_retention_overrun_is_resnapshotted_when_needed(make_harness: Any) -> None:
    h = make_harness({"items": ITEMS}, snapshot_mode="when_needed")
    worker = await h.start_worker()
    h.execute(INSERT, [(i, f"item {i}", 1.0) for i in range(300)])
    await h.wait_equal(timeout=60)
    h.stop_worker(worker)
    # While no worker runs: deletes, updates and inserts, then cleanup drops them all.
    h.execute("DELETE FROM items WHERE id < 100")
    h.execute("UPDATE items SET name = 'changed' WHERE id >= 250")
    h.execute(INSERT, [(i, f"late {i}", 2.0) for i in range(1000, 1050)])
    assert cleanup_database(h.db, now=FAR_FUTURE)["items"] > 0

    await h.start_worker()
    await h.wait_equal(timeout=90)  # the deleted rows vanished although their 'D' was lost
    assert await repeated_keys(h) == []
    reasons = [r["reason"] for r in await h.query("SELECT reason FROM `{ds}._ctstream_snapshots`")]
    assert len(reasons) == 2
    assert any("below the minimum valid version" in r for r in reasons)
    assert "re-snapshotting (snapshot_mode when_needed)" in h.full_logs()


async def test_retention_overrun_stops_the_table_until_a_snapshot_is_requested(
    make_harness: Any,
) -> None:
    h = make_harness({"items": ITEMS}, snapshot_mode="never")
    worker = await h.start_worker()
    h.execute(INSERT, [(i, f"item {i}", 1.0) for i in range(100)])
    await h.wait_equal(timeout=60)
    assert await h.query("SELECT 1 FROM `{ds}._ctstream_snapshots`") == []  # mode never
    h.stop_worker(worker)
    h.execute("DELETE FROM items WHERE id < 40")
    cleanup_database(h.db, now=FAR_FUTURE)

    doctor = ctstream("doctor", "--config", str(h.config), "--json")
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    assert doctor.stdout, doctor.stderr
    findings = orjson.loads(doctor.stdout)["findings"]
    [bad] = [f for f in findings if f["check"] == "saved_version"]
    assert bad["level"] == "error" and bad["table"] == "items"
    assert "ctstream snapshot" in bad["advice"]

    await h.start_worker(wait=False)
    [status] = await eventually(
        lambda: _stopped(h), "table reported as stopped in /api/status/", timeout=60
    )
    assert "ctstream snapshot --config FILE --table items" in status["stopped_reason"]
    assert "minimum valid version" in h.full_logs()
    assert len(await h.differences("items")) > 0  # the deleted rows are still in BigQuery

    requested = ctstream("snapshot", "--config", str(h.config), "--table", "items")
    assert requested.returncode == 0, requested.stderr
    await h.wait_equal(timeout=90)
    [status] = await table_status(h)
    assert status["state"] == "streaming"
    assert status["last_snapshot"]["reason"] == "requested by ctstream snapshot"
    h.execute(INSERT, [(500, "after", 1.0)])  # and change tracking goes on from there
    await h.wait_equal(timeout=60)
    doctor = ctstream("doctor", "--config", str(h.config))
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "0 error(s)" in doctor.stdout


async def _stopped(h: Any) -> list[dict[str, Any]]:
    return [s for s in await table_status(h) if s["state"] == "stopped"]


def test_snapshot_command_refuses_unknown_tables(make_harness: Any) -> None:
    h = make_harness({"items": ITEMS})
    result = ctstream("snapshot", "--config", str(h.config), "--table", "nope")
    assert result.returncode == 2
    assert "'nope' is not in source.tables" in result.stderr
    result = ctstream("snapshot", "--config", str(h.config))
    assert result.returncode == 2 and "--table" in result.stderr


async def test_a_redundant_poller_app_gives_the_same_result_as_one(make_harness: Any) -> None:
    h = make_harness({"items": ITEMS}, snapshot_mode="never")
    main = await h.start_worker()
    second = h.write_config(h.workdir / "poller-b.toml", f"poller-b-{h.name}", ["poll"])
    await h.start_worker(config=second)
    h.execute(INSERT, [(i, f"item {i}", 1.0) for i in range(400)])
    h.execute("UPDATE items SET price = 9 WHERE id % 4 = 0")
    h.execute("DELETE FROM items WHERE id % 7 = 0")
    await h.wait_equal(timeout=90)
    await h.wait_caught_up(timeout=60)
    dups = await h.query(
        "SELECT message_unique_id FROM `{ds}.items` GROUP BY message_unique_id HAVING COUNT(*) > 1"
    )
    assert dups == []
    status = await asyncio.to_thread(h.status, main)
    assert status["tables"]["items"]["duplicates_dropped"] > 0  # both pollers sent them
    polls = [s["polls"] for s in await table_status(h)]
    assert all(p > 0 for p in polls), polls


async def test_another_worker_takes_over_polling_when_the_poller_dies(make_harness: Any) -> None:
    h = make_harness({"items": ITEMS})
    await h.start_worker()
    await h.start_worker(wait=False)
    h.execute(INSERT, [(i, f"item {i}", 1.0) for i in range(50)])
    await h.wait_equal(timeout=90)

    async def polls(worker: Any) -> int:
        try:
            status = await asyncio.to_thread(h.status, worker)
        except OSError:  # its web server is not up yet
            return -1
        return int(status["tables"]["items"]["polls"])

    async def poller() -> Any:
        before = {w.web_port: await polls(w) for w in h.workers}
        await asyncio.sleep(2.0)
        for w in h.workers:
            if before[w.web_port] >= 0 and await polls(w) > before[w.web_port]:
                return w
        return None

    polling = await eventually(poller, "one worker polling", timeout=60)
    h.stop_worker(polling, signal.SIGKILL)
    killed_at = time.monotonic()
    h.execute(INSERT, [(i, f"after failover {i}", 2.0) for i in range(1000, 1050)])
    # The bound: session timeout (10 s) + rebalance + state recovery + a poll + the sink.
    await h.wait_equal(timeout=60)
    takeover = time.monotonic() - killed_at
    print(f"changes after a SIGKILL of the polling worker in BigQuery after {takeover:.1f}s")
