"""Retry with exponential backoff and jitter, forever, for errors marked retriable."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ctstream.errors import CtstreamError

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
) -> T:
    """Call ``fn`` until it succeeds; re-raise at once an error that is not retriable."""
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
            log.warning("%s failed, retry %d in %.2fs: %s", what, attempt, delay, exc)
            await asyncio.sleep(delay)
