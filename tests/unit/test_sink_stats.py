"""The sink's latency figures: bigquery_insert_time - changetrack_start_time per row."""

from __future__ import annotations

import pytest

from ctstream.agents.stats import LATENCY_BUCKETS, Histogram, SinkStats


def test_each_row_counts_once_and_unreadable_times_are_skipped() -> None:
    stats = SinkStats()
    start = "2026-11-27T00:00:00.000000Z"  # 1795737600.0
    later = "2026-11-27T00:00:01.500000Z"
    stats.observe_latency("items", [start, start, later, "not a time", start], 1795737602.0)
    histogram = stats.latency["items"]
    assert histogram.count == 4
    assert histogram.sum == pytest.approx(2.0 * 3 + 0.5)


def test_a_start_after_the_insert_counts_as_zero() -> None:
    stats = SinkStats()
    stats.observe_latency("items", ["2026-11-27T00:00:05Z"], 1795737600.0)
    assert stats.latency["items"].sum == 0.0


def test_a_value_observed_many_times_counts_as_each_time() -> None:
    once, many = Histogram(LATENCY_BUCKETS, recent=5), Histogram(LATENCY_BUCKETS, recent=5)
    for value, times in [(0.2, 3), (1.5, 1), (7.0, 8)]:
        many.observe(value, times)
        for _ in range(times):
            once.observe(value)
    assert (many.counts, many.count) == (once.counts, once.count)
    assert many.sum == pytest.approx(once.sum)
    assert list(many._recent) == list(once._recent) == [7.0] * 5
    assert many.percentile(0.5) == once.percentile(0.5)
