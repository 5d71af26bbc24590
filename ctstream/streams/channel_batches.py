"""Batches taken straight from an agent's channel, without faust's per-event stream path.

faust's ``Stream.take_events`` passes every event through the stream's iterator
(processors, sensors, the task-local current event) and a buffer processor that awaits
once per event. The dedup and sink agents only want the events, in batches, so they take
them from the channel's queue in bulk (measured on the dedup stage: see
benchmarks/README.md). What the stream did that ctstream's guarantees rest on is done
here too:

- an event fetched while flow control is suspended or from an older consumer generation
  (a rebalance is under way) is skipped and *not* acknowledged: its offset stays a hole
  that holds the commit until the rebalance's seek reads it again (faust_patches fix 8
  makes faust's streams do the same);
- every other event is tracked as started, so a rebalance or a stop waits for it to be
  acknowledged (faust's ``Consumer.wait_empty``);
- a batch is acknowledged when the agent asks for the next one, as ``take_events`` does;
  the commit ceiling of agents/batches.py keeps a batch still running from committing;
- events taken but never handed out (the agent was cancelled meanwhile) are marked done
  without being acknowledged: holes again, read again by the partition's next owner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, MutableSet, Sequence
from typing import Any
from weakref import WeakSet, ref

from faust.types.tuples import ConsumerMessage, ack_lock
from mode.utils.futures import notify

# How often an idle wait looks at the worker's stop flag.
IDLE_CHECK_SECONDS = 1.0


async def channel_batches(
    app: Any, stream: Any, max_events: int, within: float
) -> AsyncIterator[list[Any]]:
    """Up to ``max_events`` events at a time, at most ``within`` s after the first came."""
    queue = stream.channel.queue
    consumer = app.consumer
    flow_control = app.flow_control
    acking_topics = app.topics.acking_topics
    unacked = consumer._unacked_messages  # what faust's ``consumer.unacked`` returns
    events: list[Any] = []
    try:
        while not app.should_stop:
            deadline = 0.0
            while len(events) < max_events:
                if queue.empty():  # also false while an error waits to be raised
                    wait = deadline - time.monotonic() if events else IDLE_CHECK_SECONDS
                    if wait <= 0:
                        break
                    try:
                        taken = [await asyncio.wait_for(queue.get(), wait)]
                    except TimeoutError:
                        if events or app.should_stop:
                            break
                        continue
                else:
                    taken = take_now(queue, max_events - len(events))
                started: list[Any] = []
                for event in taken:
                    message = event.message
                    if (
                        not flow_control.is_active()
                        or message.generation_id != app.consumer_generation_id
                    ):
                        continue  # left unacknowledged: read again after the rebalance
                    if message.topic in acking_topics and not message.tracked:
                        message.tracked = True
                        started.append(message)
                    if not events:
                        deadline = time.monotonic() + within
                    events.append(event)
                track_all(unacked, started)  # before anything awaits
            if not events:
                continue
            batch, events = events, []
            try:
                yield batch
            finally:
                ack_all(consumer, batch)  # does nothing for an event the agent withheld
    finally:
        for event in events:
            event.message.acked = True  # taken, never handed out: a hole, not an ack


def track_all(unacked: MutableSet[Any], messages: Sequence[Any]) -> None:
    """``unacked.add`` of each message: for faust's ``WeakSet``, its own steps once."""
    if type(unacked) is not WeakSet:
        for message in messages:
            unacked.add(message)
    elif messages:
        weak: Any = unacked  # WeakSet's private parts: not in typeshed's stubs
        if weak._pending_removals:
            weak._commit_removals()
        remove = weak._remove
        weak.data.update([ref(message, remove) for message in messages])


def untrack_all(unacked: MutableSet[Any], messages: Sequence[Any]) -> None:
    """``unacked.discard`` of each message: for faust's ``WeakSet``, its own steps once."""
    if type(unacked) is not WeakSet:
        for message in messages:
            unacked.discard(message)
    elif messages:
        weak: Any = unacked
        if weak._pending_removals:
            weak._commit_removals()
        weak.data.difference_update([ref(message) for message in messages])


def take_now(queue: Any, limit: int) -> list[Any]:
    """Up to ``limit`` queued items at once, as that many ``get_nowait`` calls take them.

    The channel's queue is mode's ``ThrowableQueue``: an error waiting to be raised comes
    first; before each item, as mode's ``get_nowait`` does, the queue may call a pressure
    drop callback (which resumes fetching a partition); after each, as asyncio's does, one
    waiting putter is woken. Without four method calls per item (its private attributes:
    mode and faust are pinned, asyncio's are those of every Python 3.11+).
    """
    if queue._errors:
        raise queue._errors.popleft()
    inner, putters = queue._queue, queue._putters
    endorse_pressure_drop, wake_next = queue.maybe_endorse_pressure_drop, queue._wakeup_next
    items = []
    for _ in range(min(limit, len(inner))):
        endorse_pressure_drop()
        items.append(inner.popleft())
        if putters:
            wake_next(putters)
    return items


def ack_all(consumer: Any, events: Sequence[Any]) -> None:
    """``event.ack()`` for every event, in one critical section.

    faust's ``Event.ack`` → ``Message.ack`` → ``decref`` → ``on_final_ack`` →
    ``Consumer.ack`` (with faust_patches fix 8) takes faust's acknowledgement lock four
    times and makes five calls per event; here the same steps run inline, under the lock
    once per batch. The consumer's bookkeeping is faust's own (its private attributes:
    faust is pinned, and the tests compare the result with ``Event.ack``'s). Messages of
    another type than a fetched ``ConsumerMessage`` still go through their own method.
    """
    acking_topics = consumer.app.topics.acking_topics
    committed_offsets = consumer._committed_offset
    acked_indexes = consumer._acked_index
    acked_offsets = consumer._acked
    finished: list[Any] = []
    with ack_lock:
        for event in events:
            message = event.message
            if message.acked:
                continue  # withheld by the agent, or acknowledged already
            refcount = message.refcount = max(message.refcount - 1, 0)
            if refcount:
                continue  # another stream has yet to acknowledge it
            if type(message) is not ConsumerMessage:
                message.on_final_ack(consumer)
                continue
            message.acked = True
            if message.topic not in acking_topics or not message.tracked:
                continue  # fix 8: a message no stream took up stays a hole
            tp, offset = message.tp, message.offset
            committed = committed_offsets[tp]
            if committed is None or offset >= committed:
                acked_index = acked_indexes[tp]
                if offset not in acked_index:
                    finished.append(message)
                    acked_index.add(offset)
                    acked_offsets[tp].append(offset)
                    consumer._n_acked += 1
        untrack_all(consumer._unacked_messages, finished)
        notify(consumer._waiting_for_ack)  # faust wakes a waiting rebalance on each ack
