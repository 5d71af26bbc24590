"""Running an agent's batches so that faust never commits what was not finished.

Each batch is registered with the app's :class:`~ctstream.streams.in_flight.InFlightBatches`
while it runs, which caps faust's commits below it; a batch that does not finish (the
worker stops, the agent is cancelled) is withheld and read again by the partition's next
owner. Unexpected errors are retried with backoff: an agent never lets a batch go with
unwritten work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

from ctstream.errors import RetryAborted
from ctstream.retry import backoff_delay
from ctstream.streams.in_flight import InFlightBatches

log = logging.getLogger("ctstream.batches")


class BatchOwner(Protocol):
    """What running a batch needs of the app: its stop flag and its batches in flight."""

    @property
    def should_stop(self) -> bool: ...

    @property
    def in_flight(self) -> InFlightBatches: ...


async def run_in_flight(
    app: BatchOwner,
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
            token = app.in_flight.register(events)
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


async def run_batch(
    app: BatchOwner,
    events: Sequence[Any],
    handler: Callable[[Sequence[Any]], Awaitable[None]],
    what: str,
    retry_initial: float = 0.5,
    retry_max: float = 30.0,
    token: int | None = None,
) -> None:
    """``handler(events)`` until it completes, retrying unexpected errors with backoff.

    Stops without committing the batch when the worker shuts down (RetryAborted, or a
    failure while stopping) or the agent is cancelled. ``token``: from ``InFlightBatches.register``,
    for a batch run in its own task (its offsets are capped from registration on).
    """
    in_flight = app.in_flight
    token = in_flight.register(events) if token is None else token
    done = False
    try:
        attempt = 0
        while True:
            try:
                await handler(events)
                done = True
                return
            except RetryAborted as exc:
                in_flight.withhold(events)
                log.warning("%s not finished, left for the next owner: %s", what, exc)
                return
            except Exception:
                if app.should_stop:
                    in_flight.withhold(events)
                    log.warning("%s failed while stopping; left for the next owner", what)
                    return
                attempt += 1
                delay = backoff_delay(attempt, retry_initial, retry_max)
                log.exception("%s failed (attempt %d); retrying in %.1fs", what, attempt, delay)
                await asyncio.sleep(delay)
            except BaseException:  # cancelled: the batch may be half done
                in_flight.withhold(events)
                raise
    finally:
        in_flight.finish(token, done=done)
