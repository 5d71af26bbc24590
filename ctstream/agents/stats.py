"""What the agents did, per table, for the status views and /metrics: counters, and a
histogram with fixed buckets (for /metrics) and recent samples (for percentiles)."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

LATENCY_BUCKETS: tuple[float, ...] = (0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600, math.inf)
BATCH_BUCKETS: tuple[float, ...] = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, math.inf)


class Histogram:
    """Counts per bucket plus the last ``recent`` values (for percentiles)."""

    def __init__(self, buckets: Sequence[float], recent: int = 2000) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)  # per bucket, not cumulative
        self.sum = 0.0
        self.count = 0
        self._recent: deque[float] = deque(maxlen=recent)

    def observe(self, value: float, times: int = 1) -> None:
        """Record ``value``, ``times`` times (the rows of a batch share a few values)."""
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += times
                break
        self.sum += value * times
        self.count += times
        recent = self._recent
        if times == 1:
            recent.append(value)
        else:
            recent.extend(repeat(value, min(times, recent.maxlen or times)))

    def cumulative(self) -> list[tuple[float, int]]:
        total, result = 0, []
        for bound, count in zip(self.buckets, self.counts, strict=True):
            total += count
            result.append((bound, total))
        return result

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of the recent samples; None without samples."""
        if not self._recent:
            return None
        ordered = sorted(self._recent)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class PollStats:
    """What the pollers did, per table."""

    polls: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    last_error: dict[str, str] = field(default_factory=dict)
    last_start: dict[str, float] = field(default_factory=dict)
    # Snapshots: the one running (its reason), the last completed, and tables stopped
    # because their saved version is too old and their mode does not re-snapshot.
    snapshotting: dict[str, str] = field(default_factory=dict)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)


@dataclass
class DedupStats:
    """What the dedup agent saw, forwarded and dropped, per table."""

    seen: dict[str, int] = field(default_factory=dict)
    forwarded: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    bad: int = 0


@dataclass
class SinkStats:
    """What the sink wrote, per table, and how its batches went."""

    rows_written: dict[str, int] = field(default_factory=dict)
    error_rows: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    retries: int = 0
    last_batch_at: float | None = None
    last_batch_rows: int = 0
    # bigquery_insert_time - changetrack_start_time per written row, and rows per batch.
    latency: dict[str, Histogram] = field(default_factory=dict)
    batch_rows: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))

    def observe_latency(self, table: str, start_times: Sequence[str], now: float) -> None:
        """Record ``now`` minus each row's ``changetrack_start_time`` (ISO text)."""
        histogram = self.latency.get(table)
        if histogram is None:
            histogram = self.latency[table] = Histogram(LATENCY_BUCKETS)
        # The rows of one poll share their start time: each time is read and counted once.
        for start, rows in Counter(start_times).items():
            try:
                started = dt.datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
            histogram.observe(max(0.0, now - started), rows)
