"""Batches from an agent's channel (streams/channel_batches.py, faust_compat/batch_steps.py).

The queue, flow control, messages, events and the acknowledgement bookkeeping are faust's
and mode's own; only the app and the consumer around them are stand-ins.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections import defaultdict
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any
from weakref import WeakSet

import pytest
from faust.events import Event
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from ctstream.streams.channel_batches import channel_batches
from ctstream.streams.faust_compat import commits
from ctstream.streams.faust_compat.batch_steps import ack_all, take_now, track_all, untrack_all
from ctstream.streams.faust_compat.register import replacement_for

# faust's Consumer.ack with ctstream's patch 8, over faust's own.
patched_ack = replacement_for(FaustConsumer, "ack")

TOPIC = "raw"
PARTITION = TP(TOPIC, 0)


class Consumer:
    """The parts of faust's Consumer that acknowledging touches (with ctstream's fix 8)."""

    def __init__(self) -> None:
        acking = {TOPIC}
        self.app = SimpleNamespace(
            topics=SimpleNamespace(acks_enabled_for=acking.__contains__, acking_topics=acking)
        )
        self._committed_offset: dict[Any, int | None] = defaultdict(lambda: 0)
        self._acked: dict[Any, list[int]] = defaultdict(list)
        self._acked_index: dict[Any, set[int]] = defaultdict(set)
        self._unacked_messages: WeakSet[Any] = WeakSet()  # as faust's
        self._n_acked = 0
        self._waiting_for_ack = None

    @property
    def unacked(self) -> WeakSet[Any]:
        return self._unacked_messages

    def ack(self, message: Any) -> bool:
        return bool(patched_ack(self, message))

    def acked(self) -> list[int]:
        return sorted(self._acked[PARTITION])


class Pipeline:
    def __init__(self) -> None:
        self.consumer = Consumer()
        self.flow_control = FlowControlEvent(initially_suspended=False)
        self.app = SimpleNamespace(
            should_stop=False,
            consumer=self.consumer,
            flow_control=self.flow_control,
            topics=SimpleNamespace(acking_topics={TOPIC}),
            consumer_generation_id=1,
        )
        self.queue: ThrowableQueue[Any] = ThrowableQueue(flow_control=self.flow_control)
        self.stream = SimpleNamespace(channel=SimpleNamespace(queue=self.queue))

    def put(self, offset: int, generation: int = 1) -> Event:
        message = ConsumerMessage(TOPIC, 0, offset, 0.0, 0, [], b"k", b"v", None)
        message.generation_id = generation
        event = Event(self.app, b"k", b"v", None, message)  # type: ignore[arg-type]
        self.queue.put_nowait(event)
        return event

    def batches(self, max_events: int, within: float) -> AsyncIterator[list[Any]]:
        return channel_batches(self.app, self.stream, max_events, within)


async def taken(queue: Any) -> None:
    """Until the batches' task has taken what is in the queue (its first steps)."""
    for _ in range(100):
        if queue.empty():
            return
        await asyncio.sleep(0)
    raise AssertionError("the queue was not read")


async def waiting_on(queue: Any) -> None:
    """Until a reader waits on the empty queue (its first steps)."""
    for _ in range(100):
        if queue._getters:  # asyncio.Queue's waiting readers
            return
        await asyncio.sleep(0)
    raise AssertionError("nothing waited on the queue")


def offsets(batch: list[Any]) -> list[int]:
    return [e.message.offset for e in batch]


async def test_batches_are_bounded_by_size_and_acknowledged_when_the_next_is_asked() -> None:
    p = Pipeline()
    for offset in range(5):
        p.put(offset)
    batches = p.batches(3, within=0.05)
    first = await asyncio.wait_for(anext(batches), 5)
    assert offsets(first) == [0, 1, 2]
    assert all(e.message.tracked for e in first)  # a rebalance waits for them
    assert p.consumer.acked() == []  # not before the agent is done with the batch
    second = await asyncio.wait_for(anext(batches), 5)  # the rest, once `within` ran out
    assert offsets(second) == [3, 4]
    assert p.consumer.acked() == [0, 1, 2]
    await batches.aclose()
    assert p.consumer.acked() == [0, 1, 2, 3, 4]


async def test_a_partial_batch_comes_within_the_wait_after_its_first_event() -> None:
    p = Pipeline()
    p.put(0)
    batches = p.batches(1000, within=0.05)
    assert offsets(await asyncio.wait_for(anext(batches), 5)) == [0]
    await batches.aclose()


async def test_events_of_a_rebalance_are_skipped_and_stay_holes() -> None:
    p = Pipeline()
    p.put(0, generation=0)  # fetched before the rebalance's new generation
    p.put(1)
    batches = p.batches(10, within=0.05)
    assert offsets(await asyncio.wait_for(anext(batches), 5)) == [1]
    p.flow_control.suspend()  # a rebalance under way: what is taken now is skipped
    waiting = asyncio.ensure_future(anext(batches))
    p.put(2)
    await taken(p.queue)
    p.flow_control.resume()
    p.put(3)
    assert offsets(await asyncio.wait_for(waiting, 5)) == [3]
    await batches.aclose()
    assert p.consumer.acked() == [1, 3]
    # 0 was never processed, so nothing is committed past it.
    assert commits.new_offset(p.consumer, PARTITION) is None


async def test_a_withheld_batch_is_not_acknowledged() -> None:
    p = Pipeline()
    p.put(0)
    p.put(1)
    batches = p.batches(10, within=0.05)
    batch = await asyncio.wait_for(anext(batches), 5)
    for event in batch:  # what agents/batches.withhold does with an unfinished batch
        event.message.acked = True
    await batches.aclose()
    assert p.consumer.acked() == []


async def test_events_taken_but_not_handed_out_are_released_without_an_ack() -> None:
    p = Pipeline()
    event = p.put(0)
    batches = p.batches(10, within=30)  # waits for more until cancelled
    waiting = asyncio.ensure_future(anext(batches))
    await taken(p.queue)
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 5)
    await batches.aclose()
    assert event.message.acked  # a rebalance does not wait for it ...
    assert p.consumer.acked() == []  # ... and its offset was not recorded as processed


async def test_an_idle_channel_ends_when_the_worker_stops() -> None:
    p = Pipeline()
    batches = p.batches(10, within=0.05)
    waiting = asyncio.ensure_future(anext(batches))
    await waiting_on(p.queue)  # idle, inside its wait for an event
    p.app.should_stop = True
    try:
        await asyncio.wait_for(waiting, 5)
    except StopAsyncIteration:
        pass
    else:
        raise AssertionError("a batch came from an empty channel")


def test_acknowledging_a_batch_at_once_matches_fausts_event_ack() -> None:
    def bookkeeping(acknowledge: Any) -> tuple[Any, ...]:
        p = Pipeline()
        p.consumer._committed_offset[PARTITION] = 1  # offset 0 was committed before
        events = [p.put(offset) for offset in range(6)]
        for event in events[:5]:  # taken by a stream; offset 5 was skipped (fix 8)
            event.message.tracked = True
            p.consumer.unacked.add(event.message)
        events[2].message.incref(2)  # delivered to two streams: one ack is not enough
        events[3].message.acked = True  # withheld by the agent
        other = ConsumerMessage("other", 0, 0, 0.0, 0, [], b"k", b"v", None)  # no acks
        events.append(Event(p.app, b"k", b"v", None, other))  # type: ignore[arg-type]
        acknowledge(p.consumer, events)
        return (
            p.consumer.acked(),
            sorted(m.offset for m in p.consumer.unacked),
            p.consumer._n_acked,
            [(e.message.acked, e.message.refcount) for e in events],
        )

    def one_by_one(consumer: Any, events: list[Any]) -> None:
        for event in events:
            event.ack()

    fausts = bookkeeping(one_by_one)
    assert fausts[:3] == ([1, 4], [0, 2, 3], 2)  # so the cases above mean what they say
    assert bookkeeping(ack_all) == fausts


async def test_acknowledging_wakes_a_rebalance_waiting_for_it() -> None:
    p = Pipeline()
    event = p.put(0)
    event.message.tracked = True
    waiting = p.consumer._waiting_for_ack = asyncio.get_running_loop().create_future()
    ack_all(p.consumer, [event])
    assert waiting.done()


def _pressed_queue(items: int, calls: list[str], name: str) -> ThrowableQueue[int]:
    """A queue over its high mark with two partitions' drop callbacks pending."""
    flow = FlowControlEvent()
    flow.resume()
    queue: ThrowableQueue[int] = ThrowableQueue(maxsize=10, flow_control=flow)
    for i in range(items):
        queue.put_nowait_enhanced(
            i,
            on_pressure_high=lambda: None,
            on_pressure_drop=lambda tp=f"{name}-{i % 2}": calls.append(tp),
        )
    return queue


async def test_take_now_takes_as_get_nowait_would() -> None:
    ours_calls: list[str] = []
    fausts_calls: list[str] = []
    ours, theirs = _pressed_queue(10, ours_calls, "tp"), _pressed_queue(10, fausts_calls, "tp")
    assert ours._pending_pressure_drop_callbacks  # the partitions were paused
    # A putter waits for room in each (a full queue, as a delivery waiting for it).
    loop = asyncio.get_running_loop()
    ours_putter, theirs_putter = loop.create_future(), loop.create_future()
    ours._putters.append(ours_putter)
    theirs._putters.append(theirs_putter)
    steps = [3, 4, 1, 5]  # the last asks for more than is left
    for n in steps:
        took = take_now(ours, n)
        got = [theirs.get_nowait() for _ in range(min(n, theirs.qsize()))]
        assert took == got
        # As many pressure drops at the same points (which one, mode leaves to set.pop).
        assert len(ours_calls) == len(fausts_calls)
    assert ours.empty() and theirs.empty() and sorted(ours_calls) == ["tp-0", "tp-1"]
    assert ours_putter.done() and theirs_putter.done()


async def test_take_now_raises_a_thrown_error_first() -> None:
    queue = _pressed_queue(3, [], "tp")
    await queue.throw(KeyError("boom"))
    with pytest.raises(KeyError):
        take_now(queue, 2)
    assert take_now(queue, 5) == [0, 1, 2]


def test_tracking_in_bulk_is_weaksets_add_and_discard() -> None:
    def msg(offset: int) -> ConsumerMessage:
        return ConsumerMessage(TOPIC, 0, offset, 0.0, 0, [], b"k", b"v", None)

    messages = [msg(o) for o in range(6)]
    ours: WeakSet[Any] = WeakSet()
    theirs: WeakSet[Any] = WeakSet()
    track_all(ours, messages)
    for m in messages:
        theirs.add(m)
    assert set(ours) == set(theirs) == set(messages)
    untrack_all(ours, [*messages[:2], msg(9)])  # one never tracked: ignored, as discard does
    for m in messages[:2]:
        theirs.discard(m)
    assert set(ours) == set(theirs) == set(messages[2:])
    del messages[5]  # a message nobody holds any more leaves the set by itself
    gc.collect()
    assert len(ours) == len(theirs) == 3
    plain: set[Any] = set()  # any other set: its own add and discard
    track_all(plain, messages)
    untrack_all(plain, messages[:1])
    assert plain == set(messages[1:])
