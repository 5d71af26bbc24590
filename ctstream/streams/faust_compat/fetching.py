"""How faust's consumer asks aiokafka for records (patches 9 and 10, docs/faust-patches.md).

- 9 ``AIOKafkaConsumerThread._fetch_records``: faust passes its live set of active
  partitions, and aiokafka reads an *empty* set as "every partition"; here aiokafka gets a
  view of that set that is never "empty = all", so a fetch never hands out records of a
  partition that is not active (paused at the end of table recovery, say).
- 10 ``AIOKafkaConsumerThread._create_worker_consumer``: the consumer faust builds, with
  fetches held by the broker at most ``FETCH_MAX_WAIT_MS`` (faust fixes 1,500 ms) — each
  Kafka hop's latency.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

FETCH_MAX_WAIT_MS = 100


class OnlyThese:
    """A live view of faust's active partitions that aiokafka cannot read as "all".

    aiokafka's ``Fetcher.fetched_records`` tests ``if partitions and tp not in
    partitions``: an empty set there means every partition.
    """

    def __init__(self, partitions: Any) -> None:
        self.partitions = partitions

    def __bool__(self) -> bool:
        return True

    def __contains__(self, tp: object) -> bool:
        return tp in self.partitions


def wrap_fetch_records(faust_fetch_records: Callable[..., Any]) -> Callable[..., Any]:
    """``_fetch_records`` with the active partitions as :class:`OnlyThese` (9)."""

    async def fetch_records(
        self: Any,
        consumer: Any,
        active_partitions: Any,
        timeout: float | None = None,  # noqa: ASYNC109 - faust's signature
        max_records: int | None = None,
    ) -> Any:
        """faust's ``_fetch_records``, never returning records of partitions not active."""
        if active_partitions is not None:
            active_partitions = OnlyThese(active_partitions)
        return await faust_fetch_records(
            self, consumer, active_partitions, timeout=timeout, max_records=max_records
        )

    return fetch_records


def wrap_create_worker_consumer(
    faust_create_worker_consumer: Callable[..., Any],
) -> Callable[..., Any]:
    """``_create_worker_consumer`` with ``FETCH_MAX_WAIT_MS`` (10)."""

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        """faust's worker consumer, with fetches held at most ``FETCH_MAX_WAIT_MS``."""
        consumer = faust_create_worker_consumer(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by start(), which builds the fetcher
        return consumer

    return create_worker_consumer
