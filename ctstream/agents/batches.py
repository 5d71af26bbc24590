"""Running a batch so that faust never commits what was not finished.

A batch is acknowledged when the agent leaves it (streams/channel_batches.py, as faust's
``take_events`` did) — also when it leaves by an exception or by being cancelled at
shutdown. So ctstream
does not rely on acknowledgements alone: every batch is registered while it runs, and the
commit of a partition is capped below the first offset of any batch that has not
finished (``commit_ceiling``, applied in streams/faust_compat/patches.py). An unfinished batch is
*withheld*: its offsets stay under the cap until the batch is processed again (after a
rebalance or a restart re-reads it), and its messages are marked acknowledged without being
registered, so faust does not wait for them either.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from ctstream.retry import RetryAborted, backoff_delay
from ctstream.streams.faust_compat.patches import commit_ceilings

log = logging.getLogger("ctstream.batches")

TopicPartition = tuple[str, int]

_tokens = itertools.count()
_running: dict[int, dict[TopicPartition, int]] = {}  # batch token → first offset per tp
_withheld: dict[TopicPartition, int] = {}  # tp → first offset not finished


def _first_offsets(events: Sequence[Any]) -> dict[TopicPartition, int]:
    firsts: dict[TopicPartition, int] = {}
    for event in events:
        message = event.message
        tp = (message.topic, message.partition)
        offset = int(message.offset)
        if tp not in firsts or offset < firsts[tp]:
            firsts[tp] = offset
    return firsts


def commit_ceiling(topic: str, partition: int) -> int | None:
    """The highest offset that may be committed for a partition (None: no limit)."""
    tp = (topic, partition)
    limits = [firsts[tp] for firsts in _running.values() if tp in firsts]
    if tp in _withheld:
        limits.append(_withheld[tp])
    return min(limits) if limits else None


commit_ceilings.append(commit_ceiling)


def withhold(events: Sequence[Any]) -> None:
    """Keep faust from committing these events' offsets (they will be read again)."""
    for tp, offset in _first_offsets(events).items():
        _withheld[tp] = min(offset, _withheld.get(tp, offset))
    for event in events:
        event.message.acked = True


def register(events: Sequence[Any]) -> int:
    """Cap commits below these events until their batch finishes; returns its token.

    Called synchronously before a batch runs in a task of its own, so that faust, which
    acknowledges the batch as soon as the agent takes the next one, cannot commit it first.
    """
    token = next(_tokens)
    _running[token] = _first_offsets(events)
    return token


async def run_in_flight(
    app: Any,
    batches: AsyncIterator[Sequence[Any]],
    handler: Callable[[Sequence[Any]], Awaitable[None]],
    what: str,
    limit: int,
    retry_initial: float = 0.5,
    retry_max: float = 30.0,
) -> None:
    """Run up to ``limit`` batches at once; the stream is not read while ``limit`` run.

    Commits stay below every unfinished batch (see :func:`register`), so a batch finishing
    before an earlier one commits nothing past the earlier one.
    """
    running: set[asyncio.Task[None]] = set()
    try:
        async for events in batches:
            token = register(events)
            task = asyncio.create_task(
                run_batch(app, events, handler, what, retry_initial, retry_max, token)
            )
            running.add(task)
            task.add_done_callback(running.discard)
            if len(running) >= limit:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        if running:
            await asyncio.wait(running)
    finally:
        for task in running:
            task.cancel()  # a cancelled batch is withheld, never committed
        if running:
            await asyncio.gather(*running, return_exceptions=True)


def _finished(firsts: dict[TopicPartition, int]) -> None:
    for tp, offset in firsts.items():
        if tp in _withheld and offset <= _withheld[tp]:
            del _withheld[tp]  # what was withheld has now been processed again


async def run_batch(
    app: Any,
    events: Sequence[Any],
    handler: Callable[[Sequence[Any]], Awaitable[None]],
    what: str,
    retry_initial: float = 0.5,
    retry_max: float = 30.0,
    token: int | None = None,
) -> None:
    """``handler(events)`` until it completes, retrying unexpected errors with backoff.

    Stops without committing the batch when the worker shuts down (RetryAborted, or a
    failure while stopping) or the agent is cancelled. ``token``: from :func:`register`,
    for a batch run in its own task (its offsets are capped from registration on).
    """
    token = register(events) if token is None else token
    firsts = _running[token]
    try:
        attempt = 0
        while True:
            try:
                await handler(events)
                _finished(firsts)
                return
            except RetryAborted as exc:
                withhold(events)
                log.warning("%s not finished, left for the next owner: %s", what, exc)
                return
            except Exception:
                if app.should_stop:
                    withhold(events)
                    log.warning("%s failed while stopping; left for the next owner", what)
                    return
                attempt += 1
                delay = backoff_delay(attempt, retry_initial, retry_max)
                log.exception("%s failed (attempt %d); retrying in %.1fs", what, attempt, delay)
                await asyncio.sleep(delay)
            except BaseException:  # cancelled: the batch may be half done
                withhold(events)
                raise
    finally:
        del _running[token]
