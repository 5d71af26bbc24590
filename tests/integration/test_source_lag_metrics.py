"""The source lag on /metrics, on the real local stack: none while rows flow; measured
for real while polls fail with the source readable; failed polls counted by reason; and
the pipeline recovers from each failure without losing a row."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client.parser import text_string_to_metric_families

from ctstream.agents.poll import LAG_CHECK_INTERVAL

pytestmark = pytest.mark.integration

ITEMS = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL)"
INSERT = "INSERT INTO items VALUES (?, ?, ?)"
TABLE = (("table", "items"),)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def failures(found: Samples, reason: str) -> float:
    labels = (("reason", reason), ("table", "items"))
    return found.get(("ctstream_poll_failures_total", labels), 0.0)


def lag_of(found: Samples) -> tuple[float | None, float | None, float | None]:
    """(version lag, age of the oldest unsent change, when they were measured)."""
    return (
        found.get(("ctstream_source_version_lag", TABLE)),
        found.get(("ctstream_source_oldest_unsent_change_age_seconds", TABLE)),
        found.get(("ctstream_source_lag_checked_timestamp_seconds", TABLE)),
    )


async def eventually(
    worker: Any,
    check: Callable[[Samples], bool],
    what: str,
    timeout: float,
    logs: Callable[[], str],
) -> Samples:
    """Scrape /metrics until ``check`` holds (return that scrape) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    found: Samples = {}
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(scrape, worker.web_port)
        if check(found):
            return found
        await asyncio.sleep(0.3)
    relevant = {k: v for k, v in found.items() if "source" in k[0] or "failures" in k[0]}
    raise AssertionError(f"{what} within {timeout}s; last: {relevant}\n{logs()}")


async def test_source_lag_and_poll_failures_on_metrics(make_harness: Any) -> None:
    h = make_harness({"items": ITEMS})
    # A rollback journal instead of the harness's WAL, so that a writer holding the
    # database locks the poller's reads out; and a 2 s busy timeout instead of 30 s, so
    # that a locked read fails soon.
    with contextlib.closing(sqlite3.connect(h.db)) as conn:
        assert conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    config = h.workdir / "short-busy-timeout.toml"
    config.write_text(h.config.read_text().replace("Timeout=30000", "Timeout=2000"))
    worker = await h.start_worker(config=config)

    # Rows flow: nothing is left unsent, as of a recent measure.
    h.execute(INSERT, [(i, f"item {i}", 1.0) for i in range(50)])
    await h.wait_equal(timeout=60)
    found = await eventually(
        worker,
        lambda f: lag_of(f)[0] == 0 and lag_of(f)[1] == 0,
        "no source lag once the rows are in BigQuery",
        30,
        h.logs,
    )
    checked = lag_of(found)[2]
    assert checked is not None and abs(time.time() - checked) < 30
    assert found[("ctstream_saved_version", TABLE)] > 0
    assert all(failures(found, reason) == 0 for reason in ("source_error", "source_unavailable"))

    # The source readable, polls failing: a new column that clashes with ctstream's
    # metadata column cannot be carried. The periodic health query measures the lag.
    clashed_at = time.time()
    h.execute("ALTER TABLE items ADD COLUMN changetrack_ver INTEGER")
    h.execute(INSERT.replace("?)", "?, NULL)"), [(i, f"late {i}", 2.0) for i in range(50, 60)])
    found = await eventually(
        worker,
        lambda f: (
            failures(f, "source_error") > 0
            and (lag_of(f)[2] or 0) > clashed_at
            and (lag_of(f)[0] or 0) > 0
            and (lag_of(f)[1] or 0) > 0
        ),
        "polls failing with source_error and the unsent changes measured",
        LAG_CHECK_INTERVAL * 2 + 30,
        h.logs,
    )
    version_lag, age, _ = lag_of(found)
    assert version_lag is not None and age is not None
    assert age < time.time() - clashed_at + 5  # the age of the late rows, not of older ones
    assert failures(found, "source_unavailable") == 0
    h.execute("ALTER TABLE items DROP COLUMN changetrack_ver")
    await h.wait_equal(timeout=60)
    found = await eventually(
        worker, lambda f: lag_of(f)[0] == 0, "no source lag after recovering", 30, h.logs
    )
    source_errors = failures(found, "source_error")

    # The source locked: reads fail after the busy timeout. The rows written under the
    # lock arrive once it is released.
    with contextlib.closing(sqlite3.connect(h.db, timeout=30, isolation_level=None)) as lock:
        lock.execute("BEGIN EXCLUSIVE")
        lock.executemany(INSERT, [(i, f"locked {i}", 3.0) for i in range(60, 80)])
        locked_at = time.time()
        found = await eventually(
            worker,
            lambda f: failures(f, "source_unavailable") >= 2,
            "polls failing with source_unavailable while the database is locked",
            60,
            h.logs,
        )
        lock.execute("COMMIT")
    assert failures(found, "source_error") == source_errors
    await h.wait_equal(timeout=60)
    found = await eventually(
        worker,
        lambda f: lag_of(f)[0] == 0 and (lag_of(f)[2] or 0) > locked_at,
        "no source lag, measured after the lock",
        30,
        h.logs,
    )
    assert failures(found, "source_unavailable") >= 2


def _tick_partition(table: str, partitions: int = 2) -> int:
    every = list(range(partitions))
    return int(DefaultPartitioner()(table.encode("utf-8"), every, every))


async def test_only_the_worker_polling_a_table_reports_its_lag(make_harness: Any) -> None:
    # Two tables whose poll ticks go to different partitions: when a second worker joins,
    # one of them moves to it, and the first worker keeps its now stale measures.
    first_name = "items"
    other = next(
        n
        for n in ("orders", "parts", "stock", "users")
        if _tick_partition(n) != _tick_partition(first_name)
    )
    names = (first_name, other)
    h = make_harness({n: ITEMS.replace("items", n) for n in names})
    first = await h.start_worker()
    second = await h.start_worker(wait=False)
    for n in names:
        h.execute(INSERT.replace("items", n), [(i, f"row {i}", 1.0) for i in range(20)])
    await h.wait_equal(timeout=60)
    deadline = time.monotonic() + 90
    state: list[Any] = []
    while time.monotonic() < deadline:
        try:
            scrapes = [await asyncio.to_thread(scrape, w.web_port) for w in (first, second)]
            statuses = [h.status(w) for w in (first, second)]
        except OSError:  # the second worker's web server is not up yet
            await asyncio.sleep(0.5)
            continue
        reporters = {
            n: [
                i
                for i, f in enumerate(scrapes)
                if ("ctstream_source_version_lag", (("table", n),)) in f
            ]
            for n in names
        }
        polled_by_both = [n for n in names if all(st["tables"][n]["polls"] for st in statuses)]
        state = [reporters, polled_by_both]
        if polled_by_both and all(len(r) == 1 for r in reporters.values()):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"lag reporters per table, tables polled by both: {state}\n{h.logs()}")
