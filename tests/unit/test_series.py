"""The dashboard's chart series (web/series.py): a worker's points of the last window,
aligned on the step so that several workers' documents merge by time."""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ctstream.agents.stats import PollStats, SinkStats, fine_bucket, fine_bucket_upper
from ctstream.settings.sections import WebSettings
from ctstream.streams.topics import TopicNames
from ctstream.web.series import (
    SeriesRecorder,
    SeriesSources,
    chart_lines,
    merge_hists,
    merge_series,
    quantile,
    series_json,
)

TOPICS = {"items": ["p.items.raw", "p.items.deduped"], "orders": ["p.orders.raw"]}
Lags = dict[tuple[str, int], int]


def recorder(
    poll: PollStats | None = None,
    sink: SinkStats | None = None,
    *,
    topics: dict[str, list[str]] | None = None,
    lags: Lags | None = None,
    step: float = 5.0,
    window: float = 900.0,
) -> SeriesRecorder:
    """A recorder over the given stats; ``topics`` and ``lags`` are read at each sample,
    so a test may change them in place."""
    tables = TOPICS if topics is None else topics
    lag_now: Lags = {} if lags is None else lags
    sources = SeriesSources(
        poll or PollStats(), sink or SinkStats(), lambda: tables, lambda: lag_now
    )
    return SeriesRecorder(sources, step, window)


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def hist_of(values: list[float]) -> dict[int, int]:
    return dict(Counter(fine_bucket(v) for v in values))


def wire(values: list[float]) -> dict[str, int]:
    """The ``latency_hist`` of ``values`` as JSON carries it."""
    return {str(index): count for index, count in hist_of(values).items()}


def test_a_point_holds_the_interval_s_rates_counts_lag_and_latency() -> None:
    poll, sink = PollStats(), SinkStats()
    lags: Lags = {}
    rec = recorder(poll, sink, lags=lags)
    poll.events["items"] = 100  # before the baseline: not in any point
    rec.sample(1001.0)
    assert not rec.points  # the first sample only sets the baseline
    poll.events.update(items=150, orders=20)
    sink.rows_written["items"] = 40
    sink.error_rows["items"] = 2
    sink.retries = 3
    sink.observe_latency("items", ["2026-11-27T00:00:00Z"] * 4, 1795737602.0)  # 2 s
    lags.update({("p.items.raw", 0): 7, ("p.items.deduped", 1): 3, ("p.errors", 0): 5})
    rec.sample(1011.0)
    (point,) = rec.points
    assert point.t == 1010.0
    items, orders = point.tables["items"], point.tables["orders"]
    assert (items.rows_in, items.rows_out, items.error_rows) == (5.0, 4.0, 2)
    assert (orders.rows_in, orders.rows_out, orders.lag) == (2.0, 0.0, 0)
    assert items.lag == 10  # its own topics; the errors topic only in the total
    assert point.pipeline.lag == 15
    assert point.pipeline.rows_in == pytest.approx(7.0)
    assert point.sink_retries == 3
    assert items.latency == point.pipeline.latency == {fine_bucket(2.0): 4}
    doc = series_json(rec)
    pipeline = doc["points"][0]["pipeline"]
    assert pipeline["latency_p50_s"] == pytest.approx(fine_bucket_upper(fine_bucket(2.0)))
    assert 2.0 <= pipeline["latency_p99_s"] <= 2.0 * 1.091
    assert doc["points"][0]["tables"]["orders"]["latency_p50_s"] is None  # no rows written
    assert json.loads(json.dumps(doc)) == doc


def test_a_second_sample_in_the_same_step_is_skipped_and_loses_nothing() -> None:
    poll = PollStats()
    rec = recorder(poll)
    rec.sample(1000.5)
    poll.events["items"] = 10
    rec.sample(1004.9)  # still the step of 1000: skipped
    rec.sample(1003.0)  # an earlier time: skipped
    assert not rec.points
    poll.events["items"] = 30
    rec.sample(1005.5)
    (point,) = rec.points
    assert point.t == 1005.0
    assert point.tables["items"].rows_in == pytest.approx(30 / 5.0)


def test_counters_that_went_backwards_count_from_zero() -> None:
    poll, sink = PollStats(), SinkStats()
    rec = recorder(poll, sink)
    poll.events["items"] = 500
    sink.rows_written["items"] = 400
    sink.retries = 9
    sink.latency_fine["items"] = Counter({80: 50})
    rec.sample(1000.0)
    # The counters started again (a worker restarted with the stats it reports).
    poll.events["items"] = 20
    sink.rows_written["items"] = 10
    sink.retries = 1
    sink.latency_fine["items"] = Counter({80: 3, 90: 2})
    rec.sample(1010.0)
    (point,) = rec.points
    assert (point.tables["items"].rows_in, point.tables["items"].rows_out) == (2.0, 1.0)
    assert point.sink_retries == 1
    assert point.tables["items"].latency == {80: 3, 90: 2}


def test_only_the_latency_added_in_the_interval_is_in_its_histogram() -> None:
    sink = SinkStats()
    rec = recorder(sink=sink)
    sink.observe_latency("items", ["2026-11-27T00:00:00Z"], 1795737601.0)
    rec.sample(1000.0)
    sink.observe_latency("items", ["2026-11-27T00:00:00Z"] * 2, 1795737610.0)
    rec.sample(1005.0)
    assert rec.points[-1].tables["items"].latency == {fine_bucket(10.0): 2}
    rec.sample(1010.0)
    assert rec.points[-1].tables["items"].latency == {}
    assert series_json(rec)["points"][-1]["pipeline"]["latency_p99_s"] is None


def test_two_workers_with_another_phase_put_their_points_at_the_same_times() -> None:
    a_poll, b_poll = PollStats(), PollStats()
    a, b = recorder(a_poll), recorder(b_poll)
    for k in range(5):
        a_poll.events["items"] = 10 * k
        b_poll.events["items"] = 30 * k
        a.sample(1000.3 + 5 * k)
        b.sample(1004.6 + 5 * k)
    assert [p.t for p in a.points] == [p.t for p in b.points] == [1005.0, 1010.0, 1015.0, 1020.0]
    merged = merge_series([series_json(a), series_json(b)])
    assert [p["t"] for p in merged["points"]] == [1005.0, 1010.0, 1015.0, 1020.0]
    assert {p["tables"]["items"]["rows_in"] for p in merged["points"]} == {8.0}


def test_merge_sums_the_figures_and_recomputes_the_quantiles() -> None:
    fast, slow = [0.5] * 98, [30.0] * 2
    doc_a = {
        "step": 5.0,
        "window": 900.0,
        "points": [
            {
                "t": 1000.0,
                "pipeline": {"rows_in": 1.5, "rows_out": 2, "error_rows": 1, "lag": 4,
                             "sink_retries": 2, "latency_hist": wire(fast)},
                "tables": {"items": {"rows_in": 1.5, "lag": 4, "latency_hist": {}}},
            },
            {"t": 1005.0, "pipeline": {"rows_in": 1.0}, "tables": {}},
        ],
    }  # fmt: skip
    doc_b = {
        "step": 5.0,
        "window": 600.0,
        "points": [
            {
                "t": 1000.0,
                "pipeline": {"rows_in": 0.5, "rows_out": 1, "error_rows": 0, "lag": 6,
                             "sink_retries": 1, "latency_hist": wire(slow)},
                "tables": {"items": {"rows_in": 0.5, "lag": 1}, "orders": {"rows_in": 3}},
            },
        ],
    }  # fmt: skip
    merged = merge_series([doc_a, doc_b])
    assert (merged["step"], merged["window"]) == (5.0, 900.0)
    first, second = merged["points"]
    pipeline = first["pipeline"]
    assert (pipeline["rows_in"], pipeline["rows_out"], pipeline["error_rows"]) == (2.0, 3.0, 1)
    assert (pipeline["lag"], pipeline["sink_retries"]) == (10, 3)
    assert pipeline["latency_hist"] == {
        str(fine_bucket(0.5)): 98,
        str(fine_bucket(30.0)): 2,
    }
    # Each worker alone: p99 0.5 s and 30 s; together the 99th row is one of the slow two.
    assert pipeline["latency_p50_s"] == pytest.approx(fine_bucket_upper(fine_bucket(0.5)))
    assert pipeline["latency_p99_s"] == pytest.approx(fine_bucket_upper(fine_bucket(30.0)))
    assert first["tables"]["items"]["rows_in"] == 2.0
    assert first["tables"]["items"]["lag"] == 5
    assert first["tables"]["orders"]["rows_in"] == 3.0
    assert first["tables"]["orders"]["latency_p50_s"] is None
    # A point only one worker has is that worker's alone.
    assert second["pipeline"]["rows_in"] == 1.0
    assert second["pipeline"]["sink_retries"] == 0


def test_merging_one_document_gives_it_back() -> None:
    poll, sink = PollStats(), SinkStats()
    rec = recorder(poll, sink, lags={("p.orders.raw", 2): 4})
    for k in range(4):
        poll.events["items"] = 7 * k
        sink.rows_written["orders"] = 3 * k
        sink.observe_latency("orders", ["2026-11-27T00:00:00Z"] * k, 1795737600.0 + k)
        rec.sample(2000.0 + 5 * k)
    doc = json.loads(json.dumps(series_json(rec)))
    assert merge_series([doc]) == doc
    assert merge_series([]) == {"step": None, "window": None, "points": []}


def test_documents_with_other_steps_are_refused() -> None:
    with pytest.raises(ValueError, match="different steps"):
        merge_series([{"step": 5, "points": []}, {"step": 10, "points": []}])


def test_the_series_keeps_at_most_window_over_step_points() -> None:
    rec = recorder(step=1.0, window=60.0)
    for second in range(200):
        rec.sample(5000.0 + second)
    assert len(rec.points) == 60
    assert rec.points[0].t == 5140.0 and rec.points[-1].t == 5199.0
    # A stalled worker: points older than the window go although there are fewer.
    rec.sample(5230.0)
    assert [p.t for p in rec.points] == [*range(5171, 5200), 5230.0]


def test_a_table_dropped_from_the_specs_leaves_the_new_points() -> None:
    poll = PollStats()
    topics = {"items": ["p.items.raw"], "orders": ["p.orders.raw"]}
    rec = recorder(poll, topics=topics)
    rec.sample(1000.0)
    rec.sample(1005.0)
    del topics["orders"]
    poll.events["orders"] = 5  # its last rows still count in the pipeline's total
    rec.sample(1010.0)
    assert set(rec.points[0].tables) == {"items", "orders"}
    assert set(rec.points[1].tables) == {"items"}
    assert rec.points[1].pipeline.rows_in == 1.0


def test_chart_lines_give_one_value_per_step_and_none_for_gaps() -> None:
    poll = PollStats()
    rec = recorder(poll)
    for t in (1000.0, 1005.0, 1010.0, 1025.0, 1030.0):
        poll.events["items"] = poll.events.get("items", 0) + 10
        rec.sample(t + 0.5)
    doc = series_json(rec)
    lines = chart_lines(doc, "rows_in", "items")
    assert [t for t, _ in lines] == [1005.0, 1010.0, 1015.0, 1020.0, 1025.0, 1030.0]
    assert [v for _, v in lines] == [2.0, 2.0, None, None, 0.667, 2.0]  # rounded in JSON
    assert [v for _, v in chart_lines(doc, "latency_p50_s")] == [None] * 6
    assert chart_lines(doc, "rows_in", "nowhere") == [(t, None) for t, _ in lines]
    assert chart_lines({"step": 5, "points": []}, "lag") == []
    with pytest.raises(ValueError, match="latency_hist"):
        chart_lines(doc, "latency_hist")


latencies = st.lists(st.floats(min_value=0.001, max_value=3600.0), min_size=1, max_size=200)
quantiles = st.sampled_from([0.01, 0.25, 0.5, 0.9, 0.99, 1.0])


@given(latencies, latencies, quantiles)
def test_the_quantile_of_merged_hists_is_that_of_all_values(
    a: list[float], b: list[float], q: float
) -> None:
    assert quantile(merge_hists([hist_of(a), hist_of(b)]), q) == quantile(hist_of(a + b), q)


@given(latencies, quantiles)
def test_the_quantile_is_within_9_1_percent_above_the_exact_one(
    values: list[float], q: float
) -> None:
    estimate = quantile(hist_of(values), q)
    exact = exact_quantile(values, q)
    assert estimate is not None
    assert exact <= estimate * (1 + 1e-12) and estimate <= exact * 1.091


def test_an_empty_hist_has_no_quantile() -> None:
    assert quantile({}, 0.5) is None
    assert quantile({3: 0}, 0.5) is None


def test_the_sink_counts_each_row_in_its_fine_bucket() -> None:
    sink = SinkStats()
    start = "2026-11-27T00:00:00Z"  # 1795737600.0
    sink.observe_latency("items", [start, start, "bad", "2026-11-27T00:00:01Z"], 1795737603.0)
    assert sink.latency_fine["items"] == {fine_bucket(3.0): 2, fine_bucket(2.0): 1}
    assert fine_bucket(0.0) == 0 and fine_bucket(float("inf")) == fine_bucket(1e12)


def test_the_recorder_of_a_pipeline_reads_its_counters_tables_and_lag() -> None:
    spec = SimpleNamespace(topic_part="items", restricted=("email",))
    pipeline: Any = SimpleNamespace(
        topics=SimpleNamespace(names=TopicNames("p")),
        app=SimpleNamespace(),  # no consumer yet: no lag
        specs={"items": spec},
        poll_stats=PollStats(),
        sink_stats=SinkStats(),
    )
    rec = SeriesRecorder(pipeline, 10.0, 600.0)
    assert (rec.step, rec.window, rec.points.maxlen) == (10.0, 600.0, 60)
    assert rec.sources.poll is pipeline.poll_stats
    topics = {"items": ["p.items.raw", "p.items.deduped", "p.items.restricted"]}
    assert rec.sources.table_topics() == topics
    assert rec.sources.lags() == {}
    pipeline.specs["orders"] = SimpleNamespace(topic_part="orders", restricted=())
    assert set(rec.sources.table_topics()) == {"items", "orders"}  # read at each sample


def test_started_it_samples_in_the_middle_of_each_step() -> None:
    rec = recorder(step=5.0)
    assert rec.delay(1000.0) == 2.5 and rec.delay(1003.0) == 4.5 and rec.delay(1002.5) == 5.0
    slept: list[float] = []

    class App:
        should_stop = False
        tasks: list[Any] = []

        async def sleep(self, seconds: float) -> None:
            slept.append(seconds)
            self.should_stop = len(slept) >= 3

        def task(self, fun: Any) -> None:
            self.tasks.append(fun)

    app = App()
    rec.start(app)  # type: ignore[arg-type]
    (task,) = app.tasks
    asyncio.run(task())
    assert len(slept) == 3 and all(0 < s <= 5.0 for s in slept)


def test_the_chart_settings_are_bounded() -> None:
    web = WebSettings()
    assert (web.chart_step, web.chart_window) == (5.0, 900.0)
    assert (
        WebSettings.model_validate({"chart_step": "5s", "chart_window": "1h"}).chart_window
        == 3600.0
    )
    for wrong in (
        {"chart_step": 0.5},
        {"chart_window": "30s"},
        {"chart_window": "2h"},
        {"chart_step": 1, "chart_window": "1h"},  # 3600 points
        {"chart_step": "2m", "chart_window": "1m"},
    ):
        with pytest.raises(ValidationError):
            WebSettings.model_validate(wrong)
