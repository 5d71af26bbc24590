"""A Storage Write request with row errors, end to end: worker → gRPC proxy → emulator.

Google appends nothing of a request with row errors and names its bad rows
(``AppendRowsResponse.row_errors``). The emulator never gives that answer: it fails a whole
request on a value it cannot convert, and appends every row otherwise (docs/architecture.md,
"Seen only on the local stack"). So a proxy in front of its gRPC port gives Google's answer
to a request holding a marked row, appending nothing of it, and forwards every other request
to the emulator untouched, as ``fault_proxy.py`` does for insertAll.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import orjson
import pytest
from google.cloud.bigquery_storage_v1 import types
from google.rpc import status_pb2

from ctstream.devstack.local_stack import StackInfo

pytestmark = pytest.mark.integration

SERVICE = "google.cloud.bigquery.storage.v1.BigQueryWrite"
ITEMS = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL)"
BAD = "<bad>"


class RowErrorProxy:
    """AppendRows in front of the emulator: a request with a row holding ``bad`` is answered
    as Google answers a request with row errors (``error`` INVALID_ARGUMENT and a row error
    naming each such row; nothing appended); every other request goes to the emulator."""

    def __init__(self, upstream: str, bad: bytes) -> None:
        self.bad = bad
        self.refused_requests = 0
        self.held_rows = 0  # good rows of refused requests: to be sent again by the writer
        self._lock = threading.Lock()
        self._channel = grpc.insecure_channel(upstream)
        self._append = self._channel.stream_stream(f"/{SERVICE}/AppendRows")
        self._server = grpc.server(ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {"AppendRows": grpc.stream_stream_rpc_method_handler(self._append_rows)}
        )
        self._server.add_generic_rpc_handlers((handler,))
        self.endpoint = f"127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        self._server.start()

    def _append_rows(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        for raw in requests:
            request = types.AppendRowsRequest.deserialize(raw)
            rows = list(request.proto_rows.rows.serialized_rows)
            named = [i for i, row in enumerate(rows) if self.bad in row]
            if not named:
                yield from self._append(iter([raw]), timeout=60)
                continue
            with self._lock:
                self.refused_requests += 1
                self.held_rows += len(rows) - len(named)
            answer = types.AppendRowsResponse(
                error=status_pb2.Status(code=3, message="Errors found while processing rows."),
                row_errors=[
                    types.RowError(
                        index=i,
                        code=types.RowError.RowErrorCode.FIELDS_ERROR,
                        message="Field name: injected bad value",
                    )
                    for i in named
                ],
            )
            yield types.AppendRowsResponse.serialize(answer)

    def close(self) -> None:
        self._server.stop(grace=None)
        self._channel.close()


@pytest.fixture
async def row_error_proxy(stack: StackInfo) -> AsyncIterator[RowErrorProxy]:
    proxy = RowErrorProxy(stack.bigquery_grpc, BAD.encode())
    yield proxy
    proxy.close()


async def test_a_bad_row_is_parked_and_the_good_rows_of_its_request_are_written(
    row_error_proxy: RowErrorProxy, make_harness: Any
) -> None:
    # The proxy is set up first so that it outlives the worker.
    h = make_harness({"items": ITEMS}, write_api="storage_write", partitions=1)
    config = h.write_config(
        h.workdir / "proxied.toml", h.settings.app.id, ["poll", "dedup", "sink"]
    )
    text = config.read_text("utf-8")
    direct = f'storage_endpoint = "{h.settings.bigquery.storage_endpoint}"'
    assert direct in text
    config.write_text(text.replace(direct, f'storage_endpoint = "{row_error_proxy.endpoint}"'))
    await h.start_worker(config=config)
    h.execute(
        "INSERT INTO items VALUES (?, ?, ?)",
        [(i, BAD if i == 3 else f"item {i}", 1.5) for i in range(8)],
    )
    deadline = time.monotonic() + 90
    while True:
        parked = await h.query("SELECT message_unique_id, reason FROM `{ds}._error_records`")
        written = await h.query("SELECT id, COUNT(*) AS n FROM `{ds}.items` GROUP BY id")
        if parked and len(written) >= 7:
            break
        assert time.monotonic() < deadline, f"{parked} and {written}\n{h.logs()}"
        await asyncio.sleep(0.5)
    await h.wait_caught_up(timeout=60)  # the batch is finished: nothing more will come

    [record] = await h.query(
        "SELECT source_table, message_unique_id, reason FROM `{ds}._error_records`"
    )
    assert record["source_table"] == "items"
    assert orjson.loads(record["message_unique_id"])[:2] == ["items", [3]]
    assert "rejected by BigQuery: Field name: injected bad value" in record["reason"]
    written = await h.query("SELECT id, COUNT(*) AS n FROM `{ds}.items` GROUP BY id")
    # Once each: the emulator never saw the refused request, only the good rows sent again.
    assert {r["id"]: r["n"] for r in written} == {i: 1 for i in range(8) if i != 3}
    assert row_error_proxy.refused_requests >= 1
    assert row_error_proxy.held_rows >= 1  # good rows were held back, and sent again
