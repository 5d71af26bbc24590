"""BigQuery failing: the sink retries, acknowledges nothing meanwhile, and catches up.

The emulator cannot fail on demand, so a proxy in front of it (fault_proxy.py) answers
insertAll with errors, drops or delays while told to, and forwards everything else to
the real emulator untouched.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from ctstream.streams.topics import TopicNames
from tests.integration.fault_proxy import FaultProxy
from tests.integration.harness import SECRET

pytestmark = pytest.mark.integration

ITEMS = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL)"


async def test_sink_retries_without_acknowledging_then_catches_up(
    make_harness: Any, bigquery_proxy: tuple[FaultProxy, str]
) -> None:
    proxy, endpoint = bigquery_proxy
    h = make_harness({"items": ITEMS}, bigquery_endpoint=endpoint)
    worker = await h.start_worker()
    h.execute("INSERT INTO items VALUES (?, ?, ?)", [(i, f"before {i}", 1.0) for i in range(50)])
    await h.wait_equal(timeout=60)

    proxy.failing = True
    h.execute(
        "INSERT INTO items VALUES (?, ?, ?)", [(i, f"during {i}", 2.0) for i in range(50, 300)]
    )
    h.execute("UPDATE items SET name = 'changed while down' WHERE id < 10")
    deduped = TopicNames(h.settings.kafka.topic_prefix).deduped(h.spec("items"))
    deadline = time.monotonic() + 60
    while True:  # the sink has met the outage at least a few times ...
        retries = h.status(worker)["sink"]["retries"]
        if proxy.refused >= 3 and retries >= 3:
            break
        assert time.monotonic() < deadline, f"no retries seen: {h.status(worker)}"
        await asyncio.sleep(0.3)
    # ... and has acknowledged none of what it could not write.
    assert await h.lag([deduped]) > 0
    rows = await h.query("SELECT COUNT(*) AS n FROM `{ds}.items` WHERE name LIKE 'during%'")
    assert rows[0]["n"] == 0

    proxy.failing = False
    await h.wait_equal(timeout=120)
    await h.wait_caught_up(timeout=60)
    assert await h.lag([deduped]) == 0
    status = h.status(worker)
    assert status["tables"]["items"]["error_rows"] == 0  # retried, not parked as errors
    logs = h.full_logs()
    assert "retry" in logs
    assert SECRET not in logs and SECRET not in str(status)


async def test_stopping_a_worker_while_bigquery_is_down_loses_nothing(
    make_harness: Any, bigquery_proxy: tuple[FaultProxy, str]
) -> None:
    """A clean stop (SIGTERM) in the middle of retrying must not commit the unwritten batch:
    faust acknowledges the events of a batch whose agent is cancelled."""
    proxy, endpoint = bigquery_proxy
    h = make_harness({"items": ITEMS}, bigquery_endpoint=endpoint)
    worker = await h.start_worker()
    h.execute("INSERT INTO items VALUES (?, ?, ?)", [(i, f"before {i}", 1.0) for i in range(20)])
    await h.wait_equal(timeout=60)

    proxy.failing = True
    h.execute(
        "INSERT INTO items VALUES (?, ?, ?)", [(i, f"during {i}", 2.0) for i in range(20, 220)]
    )
    deadline = time.monotonic() + 60
    while h.status(worker)["sink"]["retries"] < 2:
        assert time.monotonic() < deadline, "the sink never met the outage"
        await asyncio.sleep(0.3)
    assert h.stop_worker(worker) == 0  # SIGTERM: a clean stop while the sink retries

    proxy.failing = False
    await h.start_worker()
    await h.wait_equal(timeout=120)


async def repeated_keys(h: Any) -> list[dict[str, Any]]:
    return await h.query(
        "SELECT id, COUNT(*) AS n FROM `{ds}.items_latest` GROUP BY id HAVING COUNT(*) > 1"
    )


async def test_a_storm_of_faults_pauses_the_sink_and_loses_nothing(
    make_harness: Any, bigquery_proxy: tuple[FaultProxy, str]
) -> None:
    """429s, 403 quotaExceeded, dropped connections and answers slower than the request
    timeout, one after another while the source keeps changing."""
    proxy, endpoint = bigquery_proxy
    h = make_harness(
        {"items": ITEMS}, bigquery_endpoint=endpoint, sink_extra='request_timeout = "1s"'
    )
    worker = await h.start_worker()
    h.execute("INSERT INTO items VALUES (?, ?, ?)", [(i, f"before {i}", 1.0) for i in range(50)])
    await h.wait_equal(timeout=60)
    next_id = 1000
    for mode in ("429", "403", "drop", "slow"):
        proxy.mode, proxy.delay = mode, 3.0  # slow: longer than the 1 s request timeout
        retries = h.status(worker)["sink"]["retries"]
        forwarded = proxy.forwarded_inserts
        rows = [(i, f"during {mode} {i}", 2.0) for i in range(next_id, next_id + 100)]
        h.execute("INSERT INTO items VALUES (?, ?, ?)", rows)
        h.execute("UPDATE items SET price = price + 1 WHERE id < 10")
        next_id += 100
        deadline = time.monotonic() + 60
        while h.status(worker)["sink"]["retries"] < retries + 2:
            assert time.monotonic() < deadline, f"no retries during {mode}: {h.status(worker)}"
            await asyncio.sleep(0.3)
        if mode != "slow":  # slow requests do reach the emulator, after the client gave up
            assert proxy.forwarded_inserts == forwarded, mode
            written = await h.query(
                f"SELECT COUNT(*) AS n FROM `{{ds}}.items` WHERE name LIKE 'during {mode}%'"
            )
            assert written[0]["n"] == 0, mode
    proxy.mode = None
    await h.wait_equal(timeout=120)
    await h.wait_caught_up(timeout=60)
    assert await repeated_keys(h) == []
    assert h.status(worker)["tables"]["items"]["error_rows"] == 0


async def test_requests_too_large_are_split_and_an_oversized_row_is_parked(
    make_harness: Any, bigquery_proxy: tuple[FaultProxy, str]
) -> None:
    proxy, endpoint = bigquery_proxy
    proxy.max_body = 40_000  # the emulator itself has no limit; real BigQuery: 10 MB
    h = make_harness({"items": ITEMS}, bigquery_endpoint=endpoint)
    worker = await h.start_worker()
    h.execute(
        "INSERT INTO items VALUES (?, ?, ?)", [(i, f"{i} " + "x" * 400, 1.0) for i in range(400)]
    )
    h.execute("INSERT INTO items VALUES (?, ?, ?)", [(9999, "y" * 60_000, 1.0)])
    deadline = time.monotonic() + 90
    while h.status(worker)["tables"]["items"]["error_rows"] < 1:
        assert time.monotonic() < deadline, h.status(worker)
        await asyncio.sleep(0.3)
    assert proxy.too_large > 0
    errors = await h.query("SELECT reason, message_unique_id FROM `{ds}._error_records`")
    assert len(errors) == 1 and "row too large" in errors[0]["reason"]
    assert "payload left in Kafka" in errors[0]["reason"]
    assert "9999" in errors[0]["message_unique_id"]
    h.execute("DELETE FROM items WHERE id = 9999")  # then the source and BigQuery agree
    await h.wait_equal(timeout=90)
    assert await repeated_keys(h) == []
