"""Retry with exponential backoff and jitter, forever, for errors marked retriable."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from ctstream.errors import CtstreamError, RetryAborted

log = logging.getLogger("ctstream.retry")

T = TypeVar("T")


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Full-jitter-ish delay: between half and all of ``initial * 2**(attempt-1)``, capped."""
    ceiling = min(maximum, initial * 2 ** max(0, attempt - 1))
    return float(ceiling * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not cryptography


async def retry_forever(
    fn: Callable[[], Awaitable[T]],
    what: str,
    initial: float,
    maximum: float,
    on_retry: Callable[[int, CtstreamError], None] | None = None,
    should_abort: Callable[[], bool] | None = None,
    log_fields: Mapping[str, object] | None = None,
) -> T:
    """Call ``fn`` until it succeeds; re-raise at once an error that is not retriable.

    ``should_abort`` is asked between attempts (and during the waits); when it says yes,
    RetryAborted is raised so a stopping worker does not wait for a service that is down.
    """
    attempt = 0
    while True:
        try:
            return await fn()
        except CtstreamError as exc:
            if not exc.retriable:
                raise
            attempt += 1
            delay = backoff_delay(attempt, initial, maximum)
            if on_retry is not None:
                on_retry(attempt, exc)
            log.warning(
                "%s failed, retry %d in %.2fs: %s",
                what,
                attempt,
                delay,
                exc,
                extra={"ctstream": {**(log_fields or {}), "attempt": attempt}},
            )
            waited = 0.0
            while waited < delay:
                if should_abort is not None and should_abort():
                    raise RetryAborted(f"{what}: stopped after {attempt} tries") from exc
                step = min(0.25, delay - waited)
                await asyncio.sleep(step)
                waited += step
            if should_abort is not None and should_abort():
                raise RetryAborted(f"{what}: stopped after {attempt} tries") from exc
