"""Delivering raw-bytes messages without coroutines (ctstream/streams/faust_compat/raw_delivery.py).

A real faust app, conductor, topics, queues and flow control; nothing is started, so
messages are handed to the conductor as its consumer would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.transport.conductor import Conductor
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from ctstream.settings import load_settings
from ctstream.streams.app import create_app
from ctstream.streams.faust_compat import apply_patches
from ctstream.streams.faust_compat.patching import applied_patch
from ctstream.streams.faust_compat.raw_delivery import RawDelivery


def make_app(**conf: Any) -> Any:
    apply_patches()  # before the conductor is built, as a worker does
    app = faust.App(
        "ctstream-test-raw-delivery", broker="kafka://127.0.0.1:9", web_enabled=False, **conf
    )
    app.flow_control.resume()
    return app


@pytest.fixture
def app() -> Iterator[Any]:
    yield make_app()


def attach(app: Any, topic: Any, partition: int = 0) -> RawDelivery:
    """The partition's callback, as the conductor builds it on assignment."""
    tp = TP(topic.get_topic_name(), partition)
    conductor = app.topics
    callback = conductor._build_handler(tp, {topic})
    conductor._tp_to_callback[tp] = callback
    assert isinstance(callback, RawDelivery)
    return callback


def message(topic: str, offset: int = 0, value: bytes | None = b'{"a": 1}') -> Any:
    return ConsumerMessage(
        topic, 0, offset, 1.5, 0, [("h", b"1")], b"key", value, None, tp=TP(topic, 0)
    )


def raw_topic(app: Any, name: str = "raw") -> Any:
    """The topic as an agent's stream subscribes to it (the conductor's channel)."""
    return aiter(app.topic(name, key_serializer="raw", value_serializer="raw"))


def run_at_once(coro: Any) -> None:
    """Step a coroutine once; it must finish there (it never suspended)."""
    with pytest.raises(StopIteration):
        coro.send(None)


def test_applied_with_the_other_faust_patches() -> None:
    apply_patches()
    for name in ("_build_handler", "_compile_message_handler"):
        mark = applied_patch(Conductor, name)
        assert mark is not None and mark.patch.number == 13


async def test_a_raw_message_is_queued_without_suspending(app: Any) -> None:
    topic = raw_topic(app)
    attach(app, topic)
    fetched = message("raw")
    run_at_once(app.topics.on_message(fetched))
    event = topic.queue.get_nowait()
    assert (event.key, event.value, event.message) == (b"key", b'{"a": 1}', fetched)
    assert event.headers == {"h": b"1"}
    assert fetched.refcount == 1  # acknowledged once, by the one stream


async def test_the_event_is_the_one_fausts_own_path_builds(app: Any) -> None:
    topic = raw_topic(app)
    delivery = attach(app, topic)
    for value in (b"payload", None):
        ours, fausts = message("raw", 1, value), message("raw", 2, value)
        assert delivery.deliver_now(ours)
        await delivery.callback(fausts)  # faust's compiled callback, decode and all
        a, b = topic.queue.get_nowait(), topic.queue.get_nowait()
        assert (a.key, a.value, a.headers) == (b.key, b.value, b.headers)
        assert (ours.refcount, type(a)) == (fausts.refcount, type(b))


async def test_while_flow_control_is_suspended_faust_path_waits(app: Any) -> None:
    topic = raw_topic(app)
    delivery = attach(app, topic)
    app.flow_control.suspend()
    fetched = message("raw")
    assert not delivery.deliver_now(fetched)
    delivering = app.topics.on_message(fetched)
    waits_on = delivering.send(None)  # suspends: faust's callback awaits the flow
    assert isinstance(waits_on, asyncio.Future) and topic.queue.empty()
    app.flow_control.resume()
    assert waits_on.done()
    run_at_once(delivering)
    assert topic.queue.get_nowait().message is fetched


async def test_a_topic_with_a_value_type_is_decoded_by_faust(app: Any) -> None:
    topic = aiter(app.topic("typed", key_serializer="raw", value_serializer="json"))
    delivery = attach(app, topic)
    fetched = message("typed")
    assert not delivery.deliver_now(fetched)
    await app.topics.on_message(fetched)
    assert topic.queue.get_nowait().value == {"a": 1}


async def test_a_producer_buffer_over_its_limit_goes_to_fausts_callback(app: Any) -> None:
    topic = raw_topic(app)
    delivery = attach(app, topic)
    buffer = app.producer.buffer
    assert delivery.deliver_now(message("raw", 1))
    for _ in range(buffer.max_messages + 1):
        buffer.pending.put_nowait(None)  # messages waiting to be produced
    assert buffer.size > buffer.max_messages
    assert not delivery.deliver_now(message("raw", 2))  # faust flushes the buffer first
    while not buffer.pending.empty():
        buffer.pending.get_nowait()
    assert delivery.deliver_now(message("raw", 3))


async def test_a_partition_whose_channel_changes_is_judged_by_the_new_one(app: Any) -> None:
    raw, typed = raw_topic(app), aiter(app.topic("raw", value_serializer="json"))
    delivery = attach(app, raw)
    assert delivery.deliver_now(message("raw", 1))
    delivery._channels.clear()
    delivery._channels.add(typed)  # what the conductor does when subscriptions change
    assert not delivery.deliver_now(message("raw", 2))
    delivery._channels.clear()
    delivery._channels.add(raw)
    assert delivery.deliver_now(message("raw", 3))


async def test_a_full_queue_is_waited_for_in_the_delivery_itself() -> None:
    app = make_app(stream_buffer_maxsize=2)
    topic = raw_topic(app)
    full: list[Any] = []
    app.sensors.on_topic_buffer_full = full.append
    delivery = attach(app, topic)
    assert delivery.deliver_now(message("raw", 0))
    assert delivery.deliver_now(message("raw", 1))
    third = message("raw", 2)
    assert not delivery.deliver_now(third)
    tasks, reported = len(asyncio.all_tasks()), len(full)
    delivering = app.topics.on_message(third)
    waits_on = delivering.send(None)  # suspends until there is room
    assert isinstance(waits_on, asyncio.Future) and len(asyncio.all_tasks()) == tasks
    assert full[reported:] == [TP("raw", 0)]  # reported as faust reports it
    assert topic.queue.get_nowait().message.offset == 0
    assert waits_on.done()  # room: the waiting put was woken
    run_at_once(delivering)
    offsets = [topic.queue.get_nowait().message.offset for _ in range(2)]
    assert offsets == [1, 2] and third.refcount == 1


async def test_pressure_on_the_queue_pauses_the_partition() -> None:
    app = make_app(stream_buffer_maxsize=8)
    topic = raw_topic(app, "pressed")
    paused: list[Any] = []
    app.consumer.on_buffer_full = paused.append  # faust would stop fetching the partition
    delivery = attach(app, topic)
    high = topic.queue.pressure_high_size
    for offset in range(high):
        assert delivery.deliver_now(message("pressed", offset))
    assert paused == []
    assert delivery.deliver_now(message("pressed", high))
    assert paused == [TP("pressed", 0)]


def test_a_workers_app_builds_its_conductor_after_the_patches(tmp_path: Path) -> None:
    # The conductor compiles its handler when built: the patches (agents.install) must
    # come first, so create_app may not build it.
    settings = load_settings(
        None,
        app={"data_dir": str(tmp_path)},
        source={"dsn": "Driver=SQLite3;Database=./demo.db", "tables": ["items"]},
        bigquery={"project": "local", "dataset": "cdc"},
    )
    app = create_app(settings)
    assert "topics" not in app.__dict__  # faust's cached conductor, not yet made


async def test_the_conductors_handler_gives_the_partitions_raw_delivery(app: Any) -> None:
    # faust's fetch loop calls the consumer's callback, which is the conductor's handler.
    assert app.consumer.callback is app.topics.on_message
    topic = raw_topic(app)
    delivery = attach(app, topic)
    assert app.consumer.callback.delivery_for(TP("raw", 0)) is delivery
    assert app.consumer.callback.delivery_for(TP("raw", 1)) is None  # not assigned here
    typed = aiter(app.topic("typed", key_serializer="raw", value_serializer="json"))
    tp = TP("typed", 0)
    app.topics._tp_to_callback[tp] = app.topics._build_handler(tp, {typed, topic})
    assert app.consumer.callback.delivery_for(tp) is not None  # a RawDelivery still…
    assert not app.consumer.callback.delivery_for(tp).deliver_now(message("typed"))  # …refuses
    async with app.topics._tp_to_callback_lock:  # the callbacks are being rebuilt
        assert app.consumer.callback.delivery_for(TP("raw", 0)) is None
