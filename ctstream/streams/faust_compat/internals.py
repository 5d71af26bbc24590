"""Accessors for the private names of faust, mode and aiokafka that ctstream reads.

Outside streams/faust_compat/ no module reads such a name itself (tests/unit/test_faust_door.py
checks it); each read goes through one of these functions, so a name that moves upstream
breaks here, in one place, where the fingerprint test and docs/faust-patches.md point.
Each returns upstream's own object (no copy): what a caller changes, faust sees.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Collection, Mapping, MutableSet
from typing import Any

from aiokafka import AIOKafkaProducer
from faust.streams import _current_event

# faust's Consumer: its commit bookkeeping, per topic-partition.


def committed_offsets(consumer: Any) -> Mapping[Any, int | None]:
    """tp → the offset faust last committed (the next to read); None: nothing yet."""
    offsets: Mapping[Any, int | None] = consumer._committed_offset
    return offsets


def acked_offsets(consumer: Any) -> Mapping[Any, list[int]]:
    """tp → the offsets acknowledged and not committed yet (faust's ``_acked``)."""
    offsets: Mapping[Any, list[int]] = consumer._acked
    return offsets


def unacked_messages(consumer: Any) -> MutableSet[Any]:
    """The messages tracked as started and not acknowledged (faust's ``consumer.unacked``)."""
    messages: MutableSet[Any] = consumer._unacked_messages
    return messages


def consumer_if_created(app: Any) -> Any | None:
    """The app's consumer if faust has made it; None before (``app.consumer`` would make it)."""
    return getattr(app, "_consumer", None)


# faust's Stream: the event a table write takes its partition from.


def set_current_event(event: Any) -> None:
    """Make ``event`` the current one for table access in this task only (None: no event).

    faust keeps it in a context variable, so other tasks do not see the change.
    """
    _current_event.set(None if event is None else weakref.ref(event))


# faust's Conductor: the consumer's subscription.


def callbacks_being_rebuilt(conductor: Any) -> bool:
    """True while the conductor rebuilds its per-partition callbacks (a subscription change)."""
    locked: bool = conductor._tp_to_callback_lock.locked()
    return locked


def subscribed_topics(conductor: Any) -> Collection[str]:
    """The topic names the conductor has subscribed the consumer to."""
    index: Collection[str] = conductor._topic_name_index
    return index


def flag_subscription_change(conductor: Any) -> None:
    """Ask the conductor to resubscribe the consumer (after its resubscribe delay)."""
    conductor._flag_changes()


def set_resubscribe_delay(conductor: Any, seconds: float) -> None:
    """How long the conductor gathers subscription changes before it resubscribes."""
    conductor._resubscribe_sleep_lock_seconds = seconds


# aiokafka's producer, inside faust's.


def aiokafka_producer_of(faust_producer: Any) -> AIOKafkaProducer:
    """The aiokafka producer inside faust's (raises faust's NotReady before it started)."""
    producer: AIOKafkaProducer = faust_producer._ensure_producer()
    return producer


def wait_on_metadata(producer: AIOKafkaProducer, topic: str) -> Awaitable[Any]:
    """Await it: until the producer's metadata knows ``topic`` (as aiokafka's ``send`` waits)."""
    waiting: Awaitable[Any] = producer.client._wait_on_metadata(topic)
    return waiting


def producer_metadata(producer: AIOKafkaProducer) -> Any:
    """The producer's cluster metadata (aiokafka's ``ClusterMetadata``)."""
    return producer._metadata


def producer_partitioner(producer: AIOKafkaProducer) -> Callable[..., int]:
    """The partitioner the producer calls as ``(key, all_partitions, available)``."""
    partitioner: Callable[..., int] = producer._partitioner
    return partitioner
