"""Storage Write API faults on the exactly-once path: worker → gRPC fault proxy → emulator.

``bigquery.write_api = "storage_write_committed"`` appends with offsets
(bigquery/committed_streams.py): a request sent again after a failure lands at most once.
The emulator cannot fail on demand, so ``GrpcFaultProxy`` (grpc_fault_proxy.py) stands in
front of its gRPC port and fails requests as Google's service does. Whatever fails, every
change must land once: the latest view equals the source, no ``message_unique_id`` is
repeated in the change table and it holds one row per change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from ctstream.devstack.local_stack import StackInfo
from tests.integration.grpc_fault_proxy import GrpcFaultProxy

pytestmark = pytest.mark.integration

COMMITTED = "storage_write_committed"
ITEMS = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL)"
INSERT = "INSERT INTO items VALUES (?, ?, ?)"
# Retries of a failed request come at most this far apart, so an outage's refusals add up
# in seconds.
SINK = 'retry_max = "1s"'


@pytest.fixture
async def grpc_proxy(stack: StackInfo) -> AsyncIterator[GrpcFaultProxy]:
    # Asked for before make_harness, so that it outlives the workers.
    with GrpcFaultProxy(stack.bigquery_grpc) as proxy:
        yield proxy


def proxied(h: Any, proxy: GrpcFaultProxy) -> Path:
    """The harness's config with the Storage Write API reached through ``proxy``."""
    config: Path = h.write_config(
        h.workdir / "proxied.toml", h.settings.app.id, ["poll", "dedup", "sink"]
    )
    text = config.read_text("utf-8")
    direct = f'storage_endpoint = "{h.settings.bigquery.storage_endpoint}"'
    assert direct in text
    config.write_text(text.replace(direct, f'storage_endpoint = "{proxy.endpoint}"'), "utf-8")
    return config


def rows(ids: range) -> list[tuple[int, str, float]]:
    return [(i, f"item {i}", 1.5) for i in ids]


def problems(h: Any) -> str:
    """The workers' last error and warning lines (their logs are mostly heartbeats)."""
    lines = [line for line in h.full_logs().splitlines() if "[ERROR]" in line or "WARN" in line]
    return "\n".join(lines[-20:])


async def wait_until(condition: Callable[[], bool], timeout: float, what: str, h: Any) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not {what} after {timeout}s\n{problems(h)}"
        await asyncio.sleep(0.2)


async def refusing(proxy: GrpcFaultProxy, mode: str, h: Any, ids: range) -> None:
    """``mode`` set while ``ids`` are inserted, until it refused 3 more appends."""
    refused = proxy.refused
    proxy.mode = mode
    h.execute(INSERT, rows(ids))
    await wait_until(lambda: proxy.refused >= refused + 3, 120, f"3 appends refused ({mode})", h)


async def assert_each_change_once(h: Any, changes: int) -> None:
    await h.wait_equal(timeout=180)
    await h.wait_caught_up(timeout=120)
    repeated = await h.query(
        "SELECT message_unique_id, COUNT(*) AS n FROM `{ds}.items` "
        "GROUP BY message_unique_id HAVING COUNT(*) > 1"
    )
    assert repeated == [], f"{len(repeated)} changes written more than once: {repeated[:5]}"
    [row] = await h.query("SELECT COUNT(*) AS n FROM `{ds}.items`")
    assert row["n"] == changes, h.logs()


async def test_a_lost_answer_is_sent_again_at_its_offset_and_lands_once(
    grpc_proxy: GrpcFaultProxy, make_harness: Any
) -> None:
    """The emulator appends the first requests, their answers are lost (UNAVAILABLE): the
    sink sends each again at the same offset, BigQuery answers ALREADY_EXISTS and appends
    nothing."""
    lost = 3
    h = make_harness({"items": ITEMS}, write_api=COMMITTED, partitions=2, sink_extra=SINK)
    await h.start_worker(config=proxied(h, grpc_proxy))
    grpc_proxy.mode, grpc_proxy.budget = "lost_answer", lost
    h.execute(INSERT, rows(range(200)))

    await assert_each_change_once(h, 200)
    assert grpc_proxy.lost_answers == lost
    assert grpc_proxy.mode is None  # the budget ran out: every later request was answered
    assert grpc_proxy.already_exists >= 1, "no request was sent again at its offset"


async def test_an_outage_of_the_storage_write_api_loses_and_repeats_no_change(
    grpc_proxy: GrpcFaultProxy, make_harness: Any
) -> None:
    """Appends refused for quota, then unavailable, then dropped, while changes come in;
    then the service is back. The streams are open before the outage (the first rows are
    written), so it is the appends that fail."""
    h = make_harness({"items": ITEMS}, write_api=COMMITTED, partitions=2, sink_extra=SINK)
    await h.start_worker(config=proxied(h, grpc_proxy))
    h.execute(INSERT, rows(range(50)))
    await h.wait_equal(timeout=120)

    for mode, ids in (("429", range(50, 100)), ("503", range(100, 150)), ("drop", range(150, 200))):
        await refusing(grpc_proxy, mode, h, ids)
    grpc_proxy.mode = None
    h.execute("UPDATE items SET price = price + 1 WHERE id % 4 = 0")  # 50 changes

    await assert_each_change_once(h, 250)
    assert grpc_proxy.refused >= 9


async def test_control_the_default_stream_writes_a_lost_answer_twice(
    grpc_proxy: GrpcFaultProxy, make_harness: Any
) -> None:
    """Without offsets (the default stream) the same lost answers leave repeated ids."""
    lost = 3
    h = make_harness({"items": ITEMS}, write_api="storage_write", partitions=2, sink_extra=SINK)
    await h.start_worker(config=proxied(h, grpc_proxy))
    grpc_proxy.mode, grpc_proxy.budget = "lost_answer", lost
    h.execute(INSERT, rows(range(200)))

    await h.wait_equal(timeout=180)
    await h.wait_caught_up(timeout=120)
    repeated = await h.query(
        "SELECT message_unique_id, COUNT(*) AS n FROM `{ds}.items` "
        "GROUP BY message_unique_id HAVING COUNT(*) > 1"
    )
    [row] = await h.query("SELECT COUNT(*) AS n FROM `{ds}.items`")
    figures = f"{grpc_proxy.lost_answers} lost answers, {len(repeated)} ids repeated"
    assert repeated and row["n"] > 200, f"{figures}, {row['n']} rows"
