"""The sink's latency figures: bigquery_insert_time - changetrack_start_time per row."""

from __future__ import annotations

import pytest

from ctstream.agents.sink import SinkStats


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
