"""Waiting for Kafka to acknowledge a batch of sent messages, without a callback each."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import KafkaError as AioKafkaError

from ctstream.errors import KafkaSendFailed


async def acknowledged(futures: Sequence[Any]) -> None:
    """Until every producer future is done; raises the first failure, in send order.

    ``asyncio.gather`` adds a done-callback to every future and runs each on the event loop
    when the future completes. The producer completes a whole record batch at once, so
    awaiting the futures one after the other suspends about once per batch, and the rest
    are already done. After a failure the other futures' errors are fetched (as gather
    would), so none is logged as "never retrieved"; the caller resends everything.
    """
    try:
        for future in futures:
            await future
    except BaseException:
        discard(futures)
        raise


def discard(futures: Sequence[Any]) -> None:
    """Futures nobody will await: their errors are fetched, so none is logged as lost."""
    for future in futures:
        if isinstance(future, asyncio.Future):
            future.add_done_callback(_retrieve)  # scheduled at once if already done


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class Sent:
    """Records handed to the producer, as one delivery: ``acknowledged()`` returns when
    Kafka acknowledged every one (raising the first failure), ``discard()`` when nobody
    will wait for them."""

    __slots__ = ("futures",)

    def __init__(self, futures: Sequence[Any]) -> None:
        self.futures = futures

    async def acknowledged(self) -> None:
        """Raises KafkaSendFailed (retriable) when Kafka refused or did not acknowledge
        a record; nothing of the delivery may then count as sent."""
        try:
            await acknowledged(self.futures)
        except AioKafkaError as exc:
            raise KafkaSendFailed(
                f"Kafka did not acknowledge the records ({type(exc).__name__}: {exc})"
            ) from exc

    def discard(self) -> None:
        discard(self.futures)
