"""A histogram with fixed buckets (for /metrics) and recent samples (for percentiles)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from itertools import repeat

LATENCY_BUCKETS: tuple[float, ...] = (0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600, math.inf)
BATCH_BUCKETS: tuple[float, ...] = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, math.inf)


class Histogram:
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
