"""faust's fetch loop, partition by partition (ctstream/streams/faust_compat/fetch_loop.py).

A real faust app, consumer, conductor, topics and queues; nothing is started: the
consumer's fetch (``_wait_next_records``) and aiokafka's ``highwater`` are replaced on the
instance, so each test decides what one fetch returns and what is assigned.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import faust
import pytest
from aiokafka.structs import ConsumerRecord
from faust.transport.consumer import Consumer
from faust.types import TP

from ctstream.streams.faust_compat import apply_patches
from ctstream.streams.faust_compat import fetch_loop as faust_fetch_loop
from ctstream.streams.faust_compat.fetch_loop import NOT_ASSIGNED, _deliver_one_fetch


def record(topic: str, partition: int, offset: int) -> ConsumerRecord[bytes, bytes]:
    value = f"{topic}/{partition}/{offset}".encode()
    return ConsumerRecord(topic, partition, offset, 1_500, 0, b"k", value, None, 1, len(value), [])


class Fetches:
    """The consumer's fetch and assignment, as a test wants them."""

    def __init__(self, consumer: Any, records: dict[TP, Sequence[Any]]) -> None:
        self.records = records
        self.unassigned: set[TP] = set()
        self.failure = NOT_ASSIGNED
        self.highwaters: list[TP] = []
        consumer._wait_next_records = self.wait_next_records
        consumer.highwater = self.highwater

    async def wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        return self.records, None

    def highwater(self, tp: TP) -> int:
        if tp in self.unassigned:
            raise AssertionError(self.failure)
        self.highwaters.append(tp)
        return 1_000


@pytest.fixture
def app() -> Iterator[Any]:
    apply_patches()  # before the conductor is built, as a worker does
    app = faust.App("ctstream-test-fetch-loop", broker="kafka://127.0.0.1:9", web_enabled=False)
    app.flow_control.resume()
    app.consumer.flow_active = True
    yield app


def subscribe(app: Any, name: str, partitions: int = 2) -> Any:
    """A raw topic's stream channel, with its partitions' callbacks as on assignment."""
    channel = aiter(app.topic(name, key_serializer="raw", value_serializer="raw"))
    conductor = app.topics
    for partition in range(partitions):
        tp = TP(name, partition)
        conductor._tp_to_callback[tp] = conductor._build_handler(tp, {channel})
    return channel


def queued(channel: Any) -> list[bytes]:
    values = []
    while not channel.queue.empty():
        values.append(channel.queue.get_nowait().value)
    return values


def test_applied_with_the_other_faust_patches() -> None:
    apply_patches()
    assert Consumer._drain_messages is faust_fetch_loop.drain_messages


async def test_a_fetch_is_delivered_partition_by_partition_in_order(app: Any) -> None:
    raw, other = subscribe(app, "raw"), subscribe(app, "other", 1)
    a, b, c = TP("raw", 0), TP("raw", 1), TP("other", 0)
    fetches = Fetches(app.consumer, {
        a: [record("raw", 0, o) for o in (5, 6, 7)],
        b: [record("raw", 1, o) for o in (0, 1)],
        c: [record("other", 0, 3)],
    })  # fmt: skip
    await _deliver_one_fetch(app.consumer)
    assert queued(raw) == [b"raw/0/5", b"raw/0/6", b"raw/0/7", b"raw/1/0", b"raw/1/1"]
    assert queued(other) == [b"other/0/3"]
    assert (app.consumer._read_offset[a], app.consumer._read_offset[b]) == (7, 1)
    assert fetches.highwaters == [a, b, c]  # the monitor's, once per partition


async def test_messages_below_the_read_offset_are_dropped(app: Any) -> None:
    raw = subscribe(app, "raw", 1)
    tp = TP("raw", 0)
    app.consumer._read_offset[tp] = 6
    Fetches(app.consumer, {tp: [record("raw", 0, o) for o in (5, 6, 7)]})
    await _deliver_one_fetch(app.consumer)
    assert queued(raw) == [b"raw/0/6", b"raw/0/7"]  # as faust's loop: from the read offset


async def test_an_unassigned_partition_ends_the_fetch_without_a_crash(app: Any) -> None:
    raw = subscribe(app, "raw")
    kept, gone = TP("raw", 0), TP("raw", 1)
    fetches = Fetches(app.consumer, {
        kept: [record("raw", 0, 0)],
        gone: [record("raw", 1, 0)],
        TP("raw", 2): [record("raw", 2, 0)],
    })  # fmt: skip
    fetches.unassigned.add(gone)
    await _deliver_one_fetch(app.consumer)
    assert queued(raw) == [b"raw/0/0"]  # the rest is read again by the partition's owner
    assert gone not in app.consumer._read_offset

    fetches.failure = "something else"
    with pytest.raises(AssertionError, match="something else"):  # other failures still raise
        await _deliver_one_fetch(app.consumer)


async def test_a_new_generation_ends_the_fetch(app: Any) -> None:
    raw = subscribe(app, "raw", 1)
    tp = TP("raw", 0)
    fetched = [record("raw", 0, o) for o in range(3)]

    class NewGenerationAfterFirst(list[Any]):
        def __iter__(self) -> Iterator[Any]:
            for i, r in enumerate(fetched):
                if i == 1:
                    app.consumer_generation_id += 1  # a rebalance, from the consumer thread
                yield r

    Fetches(app.consumer, {tp: NewGenerationAfterFirst()})
    await _deliver_one_fetch(app.consumer)
    assert queued(raw) == [b"raw/0/0"]
    assert app.consumer._read_offset[tp] == 0  # offsets 1 and 2 are read again


async def test_a_fetch_while_the_consumer_flow_is_stopped_seeks_back(app: Any) -> None:
    raw = subscribe(app, "raw", 1)
    seeks: list[bool] = []

    async def perform_seek() -> None:
        seeks.append(True)

    app.consumer.perform_seek = perform_seek
    app.consumer.flow_active = False
    Fetches(app.consumer, {TP("raw", 0): [record("raw", 0, 0)]})
    await _deliver_one_fetch(app.consumer)
    assert seeks == [True] and queued(raw) == []


async def test_a_message_that_must_wait_goes_through_fausts_callback(app: Any) -> None:
    raw = subscribe(app, "raw", 1)
    tp = TP("raw", 0)
    Fetches(app.consumer, {tp: [record("raw", 0, 0), record("raw", 0, 1)]})
    waited: list[int] = []
    on_message = app.consumer.callback

    async def callback(message: Any) -> None:
        waited.append(message.offset)
        await on_message(message)

    callback.delivery_for = lambda tp: None  # type: ignore[attr-defined]
    app.consumer.callback = callback
    await _deliver_one_fetch(app.consumer)
    assert waited == [0, 1] and queued(raw) == [b"raw/0/0", b"raw/0/1"]
