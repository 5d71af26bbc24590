"""What the agents did, per table, for the status views and /metrics: counters, and a
histogram with fixed buckets (for /metrics) and recent samples (for percentiles).

A failed poll is counted under one of :data:`POLL_FAILURE_REASONS`, named from its
exception's class by :func:`failure_reason`:

- ``source_unavailable``: the source could not be reached, timed out or was locked
  (SourceUnavailable);
- ``permission_denied``: the source login lacks a permission (SourcePermissionDenied);
- ``schema_changed``: the table's columns changed again right after they were adopted
  (SchemaChanged; a single change is adopted without a failure);
- ``source_error``: any other SourceError (the table vanished or is no longer tracked,
  new columns that cannot be carried);
- ``kafka``: producing the events failed or was not acknowledged (ctstream's or
  aiokafka's KafkaError);
- ``bigquery``: BigQuery refused what a poll writes there (a snapshot's record, new
  columns) in a way retrying cannot fix (SinkError);
- ``timeout``: something the poll waited for timed out (TimeoutError);
- ``unexpected``: anything else (a bug: the log has its traceback).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from aiokafka.errors import KafkaError as AioKafkaError

from ctstream.errors import (
    KafkaError,
    SchemaChanged,
    SinkError,
    SourceError,
    SourcePermissionDenied,
    SourceUnavailable,
)

LATENCY_BUCKETS: tuple[float, ...] = (0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600, math.inf)
BATCH_BUCKETS: tuple[float, ...] = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, math.inf)
# The fine latency buckets (web/series.py merges them across workers): bucket i > 0 holds
# (2^((i-1)/8), 2^(i/8)] milliseconds, each 2^(1/8) ≈ 1.0905 times as wide as the one
# below; bucket 0 holds everything up to 1 ms, the last everything above 2^40 ms (35 years).
FINE_BUCKETS_PER_DOUBLING = 8
FINE_BUCKET_LAST = 40 * FINE_BUCKETS_PER_DOUBLING


def fine_bucket(seconds: float) -> int:
    """The fine latency bucket holding ``seconds`` (0 for ≤ 1 ms and NaN)."""
    milliseconds = seconds * 1000.0
    if not milliseconds > 1.0:
        return 0
    if milliseconds >= 2.0**40:
        return FINE_BUCKET_LAST
    return math.ceil(FINE_BUCKETS_PER_DOUBLING * math.log2(milliseconds))


def fine_bucket_upper(index: int) -> float:
    """The upper bound, in seconds, of fine latency bucket ``index`` (clamped to the
    buckets there are: an index from another worker's JSON may be anything)."""
    index = min(max(index, 0), FINE_BUCKET_LAST)
    return float(2.0 ** (index / FINE_BUCKETS_PER_DOUBLING) / 1000.0)


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
    # The snapshot under way: phase (reading, paused, verifying), chunks, rows, rate, ETA.
    snapshot_progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)
    # The source lag, as measured at lag_checked_at (epoch s): the source's current Change
    # Tracking version minus the saved version, the age of the oldest change not yet sent
    # (absent when the source cannot tell), and the source's change retention (when known).
    version_lag: dict[str, int] = field(default_factory=dict)
    unsent_age: dict[str, float] = field(default_factory=dict)
    retention: dict[str, float] = field(default_factory=dict)
    lag_checked_at: dict[str, float] = field(default_factory=dict)
    # Failed polls: table → reason (POLL_FAILURE_REASONS) → count.
    failures: dict[str, Counter[str]] = field(default_factory=dict)

    def failed(self, table: str, reason: str) -> None:
        """Count one failed poll of ``table`` for ``reason``."""
        counts = self.failures.get(table)
        if counts is None:
            counts = self.failures[table] = Counter()
        counts[reason] += 1

    def record_lag(
        self,
        table: str,
        version_lag: int,
        unsent_age: float | None,
        retention: float | None,
        checked_at: float,
    ) -> None:
        """The source lag of ``table`` measured at ``checked_at``. ``unsent_age`` None: the
        source cannot tell (the series is left out); ``retention`` None: unchanged."""
        self.version_lag[table] = max(0, version_lag)
        if unsent_age is None:
            self.unsent_age.pop(table, None)
        else:
            self.unsent_age[table] = max(0.0, unsent_age)
        if retention is not None:
            self.retention[table] = retention
        self.lag_checked_at[table] = checked_at


POLL_FAILURE_REASONS: tuple[str, ...] = (
    "source_unavailable",
    "permission_denied",
    "schema_changed",
    "source_error",
    "kafka",
    "bigquery",
    "timeout",
    "unexpected",
)


def failure_reason(exc: BaseException) -> str:
    """The reason (one of POLL_FAILURE_REASONS) a poll failed with ``exc``."""
    if isinstance(exc, SourceUnavailable):
        return "source_unavailable"
    if isinstance(exc, SourcePermissionDenied):
        return "permission_denied"
    if isinstance(exc, SchemaChanged):
        return "schema_changed"
    if isinstance(exc, SourceError):
        return "source_error"
    if isinstance(exc, KafkaError | AioKafkaError):
        return "kafka"
    if isinstance(exc, SinkError):
        return "bigquery"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "unexpected"


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
    # The exactly-once path (agents/exactly_once.py): rows left out as written before,
    # write streams opened, rows looked up in BigQuery after a take-over.
    copies_refused: int = 0
    streams_opened: int = 0
    rows_looked_up: int = 0
    # bigquery_insert_time - changetrack_start_time per written row, and rows per batch.
    latency: dict[str, Histogram] = field(default_factory=dict)
    batch_rows: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    # The same latencies, cumulative, per fine bucket (fine_bucket): the dashboard's
    # charts take the difference between two samples as an interval's histogram.
    latency_fine: dict[str, Counter[int]] = field(default_factory=dict)

    def observe_latency(self, table: str, start_times: Sequence[str], now: float) -> None:
        """Record ``now`` minus each row's ``changetrack_start_time`` (ISO text)."""
        histogram = self.latency.get(table)
        if histogram is None:
            histogram = self.latency[table] = Histogram(LATENCY_BUCKETS)
        fine = self.latency_fine.get(table)
        if fine is None:
            fine = self.latency_fine[table] = Counter()
        # The rows of one poll share their start time: each time is read and counted once.
        for start, rows in Counter(start_times).items():
            try:
                started = dt.datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
            latency = max(0.0, now - started)
            histogram.observe(latency, rows)
            fine[fine_bucket(latency)] += rows
