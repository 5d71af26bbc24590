"""faust's and mode's per-message steps, done once for a whole batch.

streams/channel_batches.py takes events from an agent's channel in bulk; these functions
do what faust and mode do for each item, with their private bookkeeping, in fewer calls.
Each does exactly the steps of the upstream functions it names (the fingerprint test holds
those to the source they were verified against; tests/unit/test_channel_batches.py
compares the results with upstream's own).
"""

from __future__ import annotations

from collections.abc import MutableSet, Sequence
from typing import Any
from weakref import WeakSet, ref

from faust.types.tuples import ConsumerMessage, ack_lock
from mode.utils.futures import notify


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
    waiting putter is woken. Without four method calls per item (asyncio's private
    attributes are those of every Python 3.11+).
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
    ``Consumer.ack`` (with patch 8) takes faust's acknowledgement lock four times and
    makes five calls per event; here the same steps run inline, under the lock once per
    batch, on the consumer's own bookkeeping. Messages of another type than a fetched
    ``ConsumerMessage`` still go through their own method.
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
                continue  # patch 8: a message no stream took up stays a hole
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
