"""The exactly-once write path on the local stack: a kill between BigQuery's acceptance and
the commit, or between the dedup stage's forward and its record, writes no change twice.

``bigquery.write_api = "storage_write_committed"`` (agents/exactly_once.py). A worker is
armed to SIGKILL itself at a crash point the first time it passes it; an unarmed worker
then carries on from the committed offsets. With the at-least-once paths both kills leave
repeated ``message_unique_id``s in the change table (the fault suite counts them); here
there must be none, and the latest view must equal the source.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

WRITE_API = "storage_write_committed"
ITEMS = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL)"


def armed_config(h: Any, point: str) -> Path:
    path = h.workdir / f"armed-{point}.toml"
    h.write_config(path, h.settings.app.id, ["poll", "dedup", "sink"])
    with path.open("a", encoding="utf-8") as f:
        f.write(f'\n[faults]\ncrash_points = {{ "{point}" = 1.0 }}\n')
    return path


async def wait_dead(worker: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while worker.proc.poll() is None:
        assert time.monotonic() < deadline, f"the armed worker is still alive after {timeout}s"
        await asyncio.sleep(0.2)


async def repeated_ids(h: Any) -> list[dict[str, Any]]:
    return await h.query(
        "SELECT message_unique_id, COUNT(*) AS n FROM `{ds}.items` "
        "GROUP BY message_unique_id HAVING COUNT(*) > 1"
    )


@pytest.mark.parametrize("point", ["sink.written", "dedup.forwarded"])
async def test_a_kill_at_a_crash_point_writes_no_change_twice(
    make_harness: Any, point: str
) -> None:
    h = make_harness({"items": ITEMS}, write_api=WRITE_API, partitions=2)
    armed = await h.start_worker(config=armed_config(h, point))
    h.execute("INSERT INTO items VALUES (?, ?, ?)", [(i, f"item {i}", 1.5) for i in range(300)])
    await wait_dead(armed)
    h.workers.remove(armed)
    assert f"crash point {point}" in h.full_logs(), h.logs()

    await h.start_worker()
    h.execute("UPDATE items SET price = price + 1 WHERE id % 3 = 0")
    await h.wait_equal(timeout=180)
    await h.wait_caught_up(timeout=120)
    assert await repeated_ids(h) == []
    [row] = await h.query("SELECT COUNT(*) AS n FROM `{ds}.items`")
    assert row["n"] == 300 + 100, h.logs()


async def test_rows_written_but_not_recorded_are_found_and_not_written_again(
    make_harness: Any,
) -> None:
    """The worker dies after appending and before its record of the rows reached Kafka:
    the next owner finalizes the stream, finds more rows than recorded, and looks the
    re-read rows up instead of writing them."""
    h = make_harness({"items": ITEMS}, write_api="storage_write_committed", partitions=1)
    armed = await h.start_worker(config=armed_config(h, "sink.appended"))
    h.execute("INSERT INTO items VALUES (?, ?, ?)", [(i, f"item {i}", 1.5) for i in range(50)])
    await wait_dead(armed)
    h.workers.remove(armed)
    [row] = await h.query("SELECT COUNT(*) AS n FROM `{ds}.items`")
    assert row["n"] > 0, "the armed worker died before appending"

    worker = await h.start_worker()
    await h.wait_equal(timeout=180)
    await h.wait_caught_up(timeout=120)
    assert await repeated_ids(h) == []
    sink = h.status(worker)["sink"]
    assert sink["rows_looked_up"] > 0, sink
    assert "were written but not recorded before a crash" in h.full_logs()
