"""Putting a fetched message of a raw-bytes topic on its stream's queue without coroutines.

A speed change, not a fix (patch 13, docs/faust-patches.md). For every message faust's
conductor takes a lock to look up the partition's delivery handler (faust's Cython
``ConductorHandler``, installed with faust, or its Python closure), and the handler awaits
flow control, the producer buffer and the channel's ``decode`` — a schema and two codecs
which, for ctstream's topics (raw bytes, no key or value type), return the key and value
unchanged — before it puts an event on the channel's queue: a chain of coroutines per
message around work that almost never waits.

:class:`RawDelivery` keeps faust's handler and adds ``deliver_now``, which does the same
work synchronously when nothing would wait: flow control active, the producer buffer
within its limit, one channel, raw bytes both ways, room in the queue. It builds the event
as faust's raw codecs would (the key, value and headers as fetched) and puts it with the
same back-pressure callbacks, so a filling queue still pauses the partition's fetching.
When only room in the queue is lacking — the usual state while a backlog is read —
``deliver`` waits for it with the channel's own ``put``, where faust makes a task per
message to await that put. Whatever else does not qualify — a suspended flow, a full
producer buffer, a topic with a key or value type, several channels — goes to faust's
handler unchanged. The conductor's lock is taken only while someone holds it (a
subscription change), as the lookup is synchronous.

The fetch loop (streams/faust_compat/fetch_loop.py) asks the conductor's handler for a
partition's RawDelivery once (``delivery_for``) and calls its ``deliver_now`` for each
message, looking again after anything it awaited.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableSet
from typing import Any

RAW = "raw"


def is_raw(channel: Any) -> bool:
    """True if faust's decoding of this channel's messages changes nothing."""
    schema = channel.schema
    return (
        channel.key_type is None
        and channel.value_type is None
        and schema.key_serializer == RAW
        and schema.value_serializer == RAW
    )


class RawDelivery:
    """A partition's delivery callback: faust's, plus a synchronous path (``deliver_now``)."""

    def __init__(
        self,
        conductor: Any,
        tp: Any,
        channels: MutableSet[Any],
        callback: Callable[[Any], Awaitable[None]],
    ) -> None:
        app = conductor.app
        self.callback = callback
        self._channels = channels
        self._flow_control = app.flow_control
        self._producer_buffer = app.producer.buffer
        # faust's ProducerBuffer.size reads a setting on every call (about 1 µs a
        # message); the queue it measures for an unthreaded producer is made once.
        self._producer_pending = (
            None if app.conf.producer_threaded else self._producer_buffer.pending
        )
        self._raw_verdict: tuple[Any, bool] = (None, False)  # (channel, is_raw(channel))
        self._event_type = app.conf.Event
        self._app = app
        self._tp = tp
        consumer, on_topic_buffer_full = app.consumer, app.sensors.on_topic_buffer_full

        # As faust's compiled callback: over the queue's high mark, stop fetching the
        # partition until the queue drains.
        def on_pressure_high() -> None:
            on_topic_buffer_full(tp)
            consumer.on_buffer_full(tp)

        def on_pressure_drop() -> None:
            consumer.on_buffer_drop(tp)

        # The same objects every time: the queue keeps the pending drop callback in a set.
        self._on_topic_buffer_full = on_topic_buffer_full
        self._on_pressure_high = on_pressure_high
        self._on_pressure_drop = on_pressure_drop

    def __call__(self, message: Any) -> Awaitable[None]:
        return self.callback(message)

    def _raw_channel(self) -> Any | None:
        """The one raw channel, if nothing but (perhaps) room in its queue needs a wait."""
        channels = self._channels
        if len(channels) != 1 or not self._flow_control.is_active():
            return None
        buffer, pending = self._producer_buffer, self._producer_pending
        size = buffer.size if pending is None else pending.qsize()
        if size > buffer.max_messages:
            return None  # faust's callback flushes the producer buffer first
        (channel,) = channels
        # A channel's types and serializers are fixed when it is made.
        known, raw = self._raw_verdict
        if channel is not known:
            raw = is_raw(channel)
            self._raw_verdict = (channel, raw)
        return channel if raw else None

    def _event(self, message: Any) -> Any:
        # faust's ``incref`` takes its global acknowledgement lock; this message was made a
        # moment ago by the fetch loop of this thread and nothing else holds it yet.
        message.refcount += 1
        return self._event_type(self._app, message.key, message.value, message.headers, message)

    def deliver_now(self, message: Any) -> bool:
        """Deliver without waiting, if nothing would wait; False: call ``deliver``."""
        channel = self._raw_channel()
        if channel is None or channel.queue.full():
            return False
        self._put_now(channel, message)
        return True

    async def deliver(self, message: Any) -> None:
        """Deliver, waiting for room in the queue if need be, or through faust's callback."""
        channel = self._raw_channel()
        if channel is None:
            await self.callback(message)
        elif not channel.queue.full():
            self._put_now(channel, message)
        else:
            # faust awaits this put in a task of its own per message; here the delivery
            # itself waits, and a rebalance that cancels the delivery cancels the put
            # (the message is then not acknowledged: a hole, read again).
            self._on_topic_buffer_full(self._tp)
            await channel.put(self._event(message))

    def _put_now(self, channel: Any, message: Any) -> None:
        channel.queue.put_nowait_enhanced(
            self._event(message),
            on_pressure_high=self._on_pressure_high,
            on_pressure_drop=self._on_pressure_drop,
        )


def wrap_build_handler(faust_build_handler: Callable[..., Any]) -> Callable[..., RawDelivery]:
    """``Conductor._build_handler`` whose callbacks are :class:`RawDelivery`."""

    def build_handler(self: Any, tp: Any, channels: MutableSet[Any]) -> RawDelivery:
        """faust's per-partition delivery callback (its Cython ``ConductorHandler`` where
        installed, else the compiled closure), wrapped in a :class:`RawDelivery`."""
        return RawDelivery(self, tp, channels, faust_build_handler(self, tp, channels))

    return build_handler


def wrap_compile_message_handler(
    faust_compile_message_handler: Callable[..., Any],
) -> Callable[..., Callable[[Any], Awaitable[None]]]:
    """``Conductor._compile_message_handler`` trying each callback's ``deliver_now`` first."""

    def compile_message_handler(self: Any) -> Callable[[Any], Awaitable[None]]:
        """faust's conductor handler: the partition's callback, its ``deliver_now`` first
        (a client-only app keeps faust's handler)."""
        if self.app.client_only:
            handler: Callable[[Any], Awaitable[None]] = faust_compile_message_handler(self)
            return handler
        get_callback_for_tp = self._tp_to_callback.__getitem__
        lock = self._tp_to_callback_lock

        async def on_message(message: Any) -> None:
            if lock.locked():  # the callbacks are being rebuilt: wait for them
                async with lock:
                    callback = get_callback_for_tp(message.tp)
            else:
                callback = get_callback_for_tp(message.tp)
            if type(callback) is not RawDelivery:
                await callback(message)
            elif not callback.deliver_now(message):
                await callback.deliver(message)

        find_callback = self._tp_to_callback.get

        def delivery_for(tp: Any) -> RawDelivery | None:
            """The partition's RawDelivery, for ``deliver_now`` of its messages until the
            caller next awaits; None: call ``on_message`` (another kind of callback, or the
            callbacks are being rebuilt)."""
            if lock.locked():
                return None
            callback = find_callback(tp)
            return callback if type(callback) is RawDelivery else None

        on_message.delivery_for = delivery_for  # type: ignore[attr-defined]
        return on_message

    return compile_message_handler
