"""Batches taken straight from an agent's channel, without faust's per-event stream path.

faust's ``Stream.take_events`` passes every event through the stream's iterator
(processors, sensors, the task-local current event) and a buffer processor that awaits
once per event. The dedup and sink agents only want the events, in batches, so they take
them from the channel's queue in bulk, at a fraction of the CPU per event
(``benchmarks.stages --only dedup`` shows it). What the stream did that ctstream's
guarantees rest on is done here too:

- an event fetched while flow control is suspended or from an older consumer generation
  (a rebalance is under way) is skipped and *not* acknowledged: its offset stays a hole
  that holds the commit until the rebalance's seek reads it again (faust patch 8 makes
  faust's streams do the same);
- every other event is tracked as started, so a rebalance or a stop waits for it to be
  acknowledged (faust's ``Consumer.wait_empty``);
- a batch is acknowledged when the agent asks for the next one, as ``take_events`` does;
  the app's ``in_flight`` (streams/in_flight.py) keeps a batch still running from
  committing;
- events taken but never handed out (the agent was cancelled meanwhile) are marked done
  without being acknowledged: holes again, read again by the partition's next owner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import faust

from ctstream.streams.faust_compat.batch_steps import ack_all, take_now, track_all
from ctstream.streams.faust_compat.internals import unacked_messages

# How often an idle wait looks at the worker's stop flag.
IDLE_CHECK_SECONDS = 1.0


async def channel_batches(
    app: faust.App, stream: faust.StreamT[Any], max_events: int, within: float
) -> AsyncIterator[list[Any]]:
    """Up to ``max_events`` events at a time, at most ``within`` s after the first came."""
    channel: Any = stream.channel  # a faust Channel (StreamT says AsyncIterator)
    queue = channel.queue
    consumer = app.consumer
    flow_control = app.flow_control
    acking_topics = app.topics.acking_topics
    unacked = unacked_messages(consumer)
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
