"""Running a batch so that faust never commits what was not finished.

faust acknowledges every event of a ``take_events`` batch when the agent leaves the batch —
also when it leaves by an exception or by being cancelled at shutdown — and commits what
was acknowledged. An unfinished batch is therefore *withheld*: its messages are marked
acknowledged without being registered with the consumer, so faust neither waits for them
nor commits past them, and whoever owns the partition next reads them again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ctstream.streams.backoff import RetryAborted, backoff_delay

log = logging.getLogger("ctstream.batches")


def withhold(events: Sequence[Any]) -> None:
    """Keep faust from committing these events' offsets (they will be read again)."""
    for event in events:
        event.message.acked = True


async def run_batch(
    app: Any,
    events: Sequence[Any],
    handler: Callable[[Sequence[Any]], Awaitable[None]],
    what: str,
    retry_initial: float = 0.5,
    retry_max: float = 30.0,
) -> None:
    """``handler(events)`` until it completes, retrying unexpected errors with backoff.

    Stops without committing the batch when the worker shuts down (RetryAborted, or a
    failure while stopping) or the agent is cancelled.
    """
    attempt = 0
    while True:
        try:
            await handler(events)
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
