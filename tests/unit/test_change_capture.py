"""change_capture._produce: one source batch in flight, all acknowledged before it returns."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import pytest

from ctstream.models import ChangeEvent, ColumnSpec, TableSpec, encode_key, unique_id
from ctstream.models.change_event import Record
from ctstream.models.values import iso_utc
from ctstream.source.change_capture import _produce
from ctstream.source.changes import SourceChange
from ctstream.streams.acks import Sent
from tests.loop_steps import after_scheduled_callbacks

SPEC = TableSpec(
    name="items",
    schema=None,
    table="items",
    columns=(ColumnSpec("id", "INTEGER", nullable=False, key_ordinal=1), ColumnSpec("n", "TEXT")),
)


class SendFailed(Exception):
    pass


async def source(batches: int, size: int = 3) -> AsyncIterator[list[SourceChange]]:
    for b in range(batches):
        yield [
            SourceChange("I", 10 + b, (b * size + i,), {"id": b * size + i, "n": "x"})
            for i in range(size)
        ]


class RecordingSend:
    """A send whose one future per call the test completes."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls: list[list[Record]] = []
        self.futures: list[asyncio.Future[None]] = []
        self.fail_on_call = fail_on_call
        self.called = asyncio.Condition()

    async def __call__(self, records: list[Record]) -> Sent:
        if self.fail_on_call == len(self.calls) + 1:
            raise SendFailed("producer closed")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.calls.append(records)
        self.futures.append(future)
        async with self.called:
            self.called.notify_all()
        return Sent([future])

    async def until_calls(self, n: int) -> None:
        async with asyncio.timeout(5), self.called:
            await self.called.wait_for(lambda: len(self.calls) >= n)


async def test_the_next_batch_waits_for_the_one_before_and_the_end_for_all() -> None:
    send = RecordingSend()
    task = asyncio.ensure_future(_produce(SPEC, source(3), send, 1_700_000_000.0, 1.0, None))
    await send.until_calls(2)  # batch 2 is sent while batch 1 is unacknowledged
    await after_scheduled_callbacks()
    assert len(send.calls) == 2  # batch 3 waits for batch 1's acknowledgement
    send.futures[0].set_result(None)
    await send.until_calls(3)
    send.futures[1].set_result(None)
    await after_scheduled_callbacks()
    assert not task.done()  # batch 3 not acknowledged yet
    send.futures[2].set_result(None)
    assert await asyncio.wait_for(task, 5) == 9

    key, value, ts = send.calls[1][0]
    assert key == encode_key((3,))
    assert ts == 1_700_000_000.0
    event = ChangeEvent.from_bytes(value)  # type: ignore[arg-type]
    assert (event.table_name, event.changetrack_ver, event.row) == (
        "items",
        11,
        {"id": 3, "n": "x"},
    )


async def test_a_failed_send_raises_and_leaves_no_error_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    unretrieved: list[object] = []
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    send = RecordingSend(fail_on_call=2)
    with pytest.raises(SendFailed):
        await asyncio.wait_for(_produce(SPEC, source(3), send, 1.0, 0.0, None), 5)
    send.futures[0].set_exception(SendFailed("broker gone"))  # batch 1 fails afterwards
    await after_scheduled_callbacks()
    del send
    gc.collect()
    assert unretrieved == []


async def test_a_failed_acknowledgement_raises() -> None:
    send = RecordingSend()
    task = asyncio.ensure_future(_produce(SPEC, source(2), send, 1.0, 0.0, None))
    await send.until_calls(2)
    send.futures[0].set_exception(SendFailed("not leader"))
    with pytest.raises(SendFailed):
        await asyncio.wait_for(task, 5)


async def test_the_payload_is_the_change_events_bytes_with_targets_applied() -> None:
    spec = TableSpec(
        name="items",
        schema=None,
        table="items",
        columns=(
            ColumnSpec("id", "INTEGER", nullable=False, key_ordinal=1),
            ColumnSpec("n", "TEXT", target="n_text"),
        ),
    )

    async def one_batch() -> AsyncIterator[list[SourceChange]]:
        yield [
            SourceChange("U", 12, (7,), {"id": 7, "n": 'say "hi"'}),
            SourceChange("D", 13, (8,), {"id": 8}),
        ]

    send = RecordingSend()
    task = asyncio.ensure_future(_produce(spec, one_batch(), send, 1_700_000_000.0, 2.5, None))
    await send.until_calls(1)
    send.futures[0].set_result(None)
    assert await asyncio.wait_for(task, 5) == 2
    start = iso_utc(1_700_000_000.0)
    expected = [
        ChangeEvent(
            unique_id("items", (7,), 12),
            "items",
            2.5,
            start,
            "U",
            12,
            [7],
            {"id": 7, "n_text": 'say "hi"'},
        ),
        ChangeEvent(unique_id("items", (8,), 13), "items", 2.5, start, "D", 13, [8], {"id": 8}),
    ]
    assert [value for _, value, _ in send.calls[0]] == [e.to_bytes() for e in expected]
    assert [ChangeEvent.from_bytes(value) for _, value, _ in send.calls[0]] == expected
