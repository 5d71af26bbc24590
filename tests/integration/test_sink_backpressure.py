"""BigQuery failing: the sink retries, acknowledges nothing meanwhile, and catches up.

The emulator cannot fail on demand, so a small HTTP proxy in front of it answers
insertAll with 503 while ``failing`` is set and forwards everything else to the real
emulator untouched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession, web

from ctstream.streams.local_stack import StackInfo
from ctstream.streams.topics import TopicNames
from tests.integration.harness import SECRET

pytestmark = pytest.mark.integration

ITEMS = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL)"


class FlakyBigQuery:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.failing = False
        self.refused = 0
        self.forwarded_inserts = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        is_insert = request.path.endswith("/insertAll")
        if is_insert and self.failing:
            self.refused += 1
            return web.json_response(
                {
                    "error": {
                        "code": 503,
                        "message": "injected: backend unavailable",
                        "errors": [{"reason": "backendError"}],
                    }
                },
                status=503,
            )
        if is_insert:
            self.forwarded_inserts += 1
        body = await request.read()
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in {"host", "content-length", "transfer-encoding"}
        }
        async with (
            ClientSession() as session,
            session.request(
                request.method, self.upstream + request.path_qs, data=body, headers=headers
            ) as upstream,
        ):
            payload = await upstream.read()
            return web.Response(
                status=upstream.status,
                body=payload,
                content_type=upstream.content_type if payload else None,
            )


@pytest.fixture
async def flaky(stack: StackInfo) -> AsyncIterator[tuple[FlakyBigQuery, str]]:
    proxy = FlakyBigQuery(stack.bigquery_endpoint)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield proxy, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_sink_retries_without_acknowledging_then_catches_up(
    make_harness: Any, flaky: tuple[FlakyBigQuery, str]
) -> None:
    proxy, endpoint = flaky
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
    make_harness: Any, flaky: tuple[FlakyBigQuery, str]
) -> None:
    """A clean stop (SIGTERM) in the middle of retrying must not commit the unwritten batch:
    faust acknowledges the events of a batch whose agent is cancelled."""
    proxy, endpoint = flaky
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
