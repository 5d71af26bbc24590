"""``/api/series/``: the last ``web.chart_window`` seconds of this worker's counters, one
point per ``web.chart_step``, for the dashboard's charts; and the merge of several
workers' documents into one.

Each worker samples its own counters (:class:`SeriesRecorder`) and keeps the points in
memory only: a restarted worker starts an empty series. A point's time is the multiple of
the step its sample fell in (wall clock), so the points of different workers line up and
:func:`merge_series` can add them up by time.

A point holds, for the whole pipeline and per table (the tables of the specs at sample
time):

- ``rows_in``: change events the poll agent produced, per second over the interval;
- ``rows_out``: rows BigQuery accepted, per second over the interval;
- ``error_rows``: rows parked in ``_error_records`` during the interval (a count);
- ``lag``: consumer lag (highwater minus committed) summed over the partitions this worker
  owned at sample time; per table over its raw, deduped and restricted topics, while the
  others (poll ticks, errors) count in the pipeline's total only;
- ``latency_hist``: how many rows written in the interval fell in each fine latency bucket
  (``agents.stats.fine_bucket``; JSON keys are the bucket indexes as strings), with
  ``latency_p50_s`` and ``latency_p99_s`` computed from it (None: no row written);
- pipeline only, ``sink_retries``: BigQuery writes retried during the interval.

The pipeline's counts cover every table the worker has counters for, also one just
removed from the specs, so they can exceed the sum over the listed tables.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ctstream.agents.stats import PollStats, SinkStats, fine_bucket_upper
from ctstream.streams.app import PipelineApp
from ctstream.web.metrics import consumer_lag

if TYPE_CHECKING:
    from ctstream.agents import Pipeline

log = logging.getLogger(__name__)

Hist = dict[int, int]  # fine latency bucket index → rows
TableTopics = Callable[[], Mapping[str, Collection[str]]]
Lags = Callable[[], Mapping[tuple[str, int], int]]

# The scalar figures of a point, as chart_lines takes them.
CHART_METRICS: tuple[str, ...] = (
    "rows_in",
    "rows_out",
    "error_rows",
    "lag",
    "latency_p50_s",
    "latency_p99_s",
    "sink_retries",
)
_SUMMED = ("rows_in", "rows_out", "error_rows", "lag", "sink_retries")


def quantile(hist: Mapping[int, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of the values counted in ``hist``, in seconds; None when
    it counts nothing.

    The rank is that of ``Histogram.percentile`` (the ``ceil(q * n)``-th smallest value);
    the answer is the upper bound of the bucket holding it, so it is at most 2^(1/8) - 1
    ≈ 9.05 % above the exact value for values over 1 ms (below 1 ms it is 1 ms).
    """
    total = sum(count for count in hist.values() if count > 0)
    if total == 0:
        return None
    rank = min(total, max(1, math.ceil(q * total)))
    seen = 0
    for index in sorted(hist):
        count = hist[index]
        if count > 0:
            seen += count
            if seen >= rank:
                return fine_bucket_upper(index)
    raise AssertionError("unreachable: the counts add up to total")


def merge_hists(hists: Iterable[Mapping[int, int]]) -> Hist:
    """The bucket-wise sum of ``hists``."""
    merged: Hist = {}
    for hist in hists:
        for index, count in hist.items():
            if count > 0:
                merged[index] = merged.get(index, 0) + count
    return merged


@dataclass
class Figures:
    """One interval's figures of the pipeline or of one table."""

    rows_in: float = 0.0  # per second
    rows_out: float = 0.0  # per second
    error_rows: int = 0
    lag: int = 0
    latency: Hist = field(default_factory=dict)


@dataclass
class Point:
    """The figures of the interval that ended in the step starting at ``t``."""

    t: float
    pipeline: Figures
    sink_retries: int
    tables: dict[str, Figures]


@dataclass
class _Counters:
    """The cumulative counters at one sample: what the next sample subtracts."""

    now: float
    t: float
    events: dict[str, int]
    rows: dict[str, int]
    errors: dict[str, int]
    retries: int
    latency: dict[str, Hist]


def _grown(current: int, before: int) -> int:
    """What a counter added since ``before``; from zero when it went backwards (restart)."""
    return current - before if current >= before else current


def _hist_grown(current: Mapping[int, int], before: Mapping[int, int]) -> Hist:
    if any(current.get(index, 0) < count for index, count in before.items()):
        return {index: count for index, count in current.items() if count > 0}
    added = {index: count - before.get(index, 0) for index, count in current.items()}
    return {index: count for index, count in added.items() if count > 0}


@dataclass(frozen=True)
class SeriesSources:
    """What a recorder reads: the poll and sink counters; ``table_topics()``, the tables to
    show, each with the names of its topics; ``lags()``, the consumer lag per (topic,
    partition) this worker owns. Both callables are called at each sample."""

    poll: PollStats
    sink: SinkStats
    table_topics: TableTopics
    lags: Lags

    @classmethod
    def of(cls, pipeline: Pipeline) -> SeriesSources:
        """``pipeline``'s counters, its tables' raw, deduped and restricted topics, and
        the consumer lag of its app."""
        names = pipeline.topics.names
        app = pipeline.app

        def table_topics() -> dict[str, list[str]]:
            # Read at each sample: tables found or dropped while running come and go.
            return {name: names.per_table(spec) for name, spec in pipeline.specs.items()}

        return cls(
            pipeline.poll_stats, pipeline.sink_stats, table_topics, lambda: consumer_lag(app)
        )


class SeriesRecorder:
    """Samples a worker's counters every ``step`` seconds and keeps the points of the last
    ``window`` seconds (at most ``window // step`` points).

    ``sources``: a Pipeline, or SeriesSources (tests). Nothing is read from the clock:
    :meth:`sample` takes the time, and :meth:`start` calls it with the wall clock's.
    """

    def __init__(self, sources: Pipeline | SeriesSources, step: float, window: float) -> None:
        if not step > 0 or window < step:
            raise ValueError(f"step {step!r} must be positive and window {window!r} ≥ step")
        if not isinstance(sources, SeriesSources):
            sources = SeriesSources.of(sources)
        self.sources = sources
        self.step, self.window = float(step), float(window)
        self.points: deque[Point] = deque(maxlen=max(1, math.floor(window / step + 1e-9)))
        self._last: _Counters | None = None

    def align(self, now: float) -> float:
        """The start of the step ``now`` falls in: the same on every worker."""
        return round(math.floor(now / self.step) * self.step, 6)

    def sample(self, now: float) -> None:
        """Take a sample at ``now`` (epoch seconds) and add the point of the interval since
        the previous one. The first sample only sets the baseline; a sample in the step of
        the previous one (or an earlier step) is skipped and changes nothing. After a stall
        the interval spans several steps: its rates are over its real length, and the
        steps it skipped have no point."""
        t = self.align(now)
        last = self._last
        if last is not None and t <= last.t:
            return
        current = self._read(now, t)
        self._last = current
        if last is None:
            return
        self.points.append(self._point(last, current))
        # A stalled worker leaves gaps: keep to the window in time as well as in count.
        while self.points and self.points[0].t <= t - self.window:
            self.points.popleft()

    def _read(self, now: float, t: float) -> _Counters:
        sink = self.sources.sink
        return _Counters(
            now=now,
            t=t,
            events=dict(self.sources.poll.events),
            rows=dict(sink.rows_written),
            errors=dict(sink.error_rows),
            retries=sink.retries,
            # Copies: the sink keeps counting into its own Counters.
            latency={table: dict(counts) for table, counts in sink.latency_fine.items()},
        )

    def _point(self, last: _Counters, current: _Counters) -> Point:
        elapsed = current.now - last.now  # > 0: the step moved on

        def added(now: dict[str, int], before: dict[str, int], table: str) -> int:
            return _grown(now.get(table, 0), before.get(table, 0))

        def figures(table: str) -> Figures:
            return Figures(
                rows_in=added(current.events, last.events, table) / elapsed,
                rows_out=added(current.rows, last.rows, table) / elapsed,
                error_rows=added(current.errors, last.errors, table),
                latency=_hist_grown(current.latency.get(table, {}), last.latency.get(table, {})),
            )

        counted = current.events.keys() | current.rows.keys() | current.errors.keys()
        every = {table: figures(table) for table in counted | current.latency.keys()}
        lags = self.sources.lags()
        table_of = {
            topic: table
            for table, topics in self.sources.table_topics().items()
            for topic in topics
        }
        tables = {table: every.get(table) or Figures() for table in table_of.values()}
        for (topic, _), lag in lags.items():
            table = table_of.get(topic)
            if table is not None:
                tables[table].lag += lag
        pipeline = Figures(
            rows_in=sum((f.rows_in for f in every.values()), 0.0),
            rows_out=sum((f.rows_out for f in every.values()), 0.0),
            error_rows=sum(f.error_rows for f in every.values()),
            lag=sum(lags.values()),
            latency=merge_hists(f.latency for f in every.values()),
        )
        return Point(current.t, pipeline, _grown(current.retries, last.retries), tables)

    def delay(self, now: float) -> float:
        """Seconds from ``now`` to the next middle of a step: sampling there, a little
        jitter of the event loop never moves a sample into a neighbouring step."""
        return (0.5 * self.step - now % self.step) % self.step or self.step

    def start(self, app: PipelineApp) -> None:
        """Sample every step while ``app`` runs (a faust task on every worker)."""

        async def sample_series() -> None:
            while not app.should_stop:
                await app.sleep(self.delay(time.time()))
                if app.should_stop:
                    break
                try:
                    self.sample(time.time())
                except Exception as exc:  # the charts must not bring the worker down
                    log.warning("sampling the chart series failed: %r", exc)

        app.task(sample_series)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _figures_json(figures: Figures) -> dict[str, Any]:
    return _summary(
        {
            "rows_in": figures.rows_in,
            "rows_out": figures.rows_out,
            "error_rows": figures.error_rows,
            "lag": figures.lag,
        },
        figures.latency,
    )


def _summary(values: dict[str, Any], hist: Mapping[int, int]) -> dict[str, Any]:
    """``values`` with rates rounded and the latency as hist (string keys) and quantiles."""
    for rate in ("rows_in", "rows_out"):
        values[rate] = round(float(values.get(rate, 0.0)), 3)
    values["latency_hist"] = {str(index): count for index, count in sorted(hist.items())}
    values["latency_p50_s"] = _round(quantile(hist, 0.5), 6)
    values["latency_p99_s"] = _round(quantile(hist, 0.99), 6)
    return values


def series_json(recorder: SeriesRecorder) -> dict[str, Any]:
    """The ``/api/series/`` document of ``recorder``: ``{"step", "window", "points":
    [{"t", "pipeline": {...}, "tables": {name: {...}}}]}``, oldest point first."""
    points = []
    for point in recorder.points:
        pipeline = _figures_json(point.pipeline)
        pipeline["sink_retries"] = point.sink_retries
        tables = {name: _figures_json(f) for name, f in sorted(point.tables.items())}
        points.append({"t": point.t, "pipeline": pipeline, "tables": tables})
    return {"step": recorder.step, "window": recorder.window, "points": points}


def _hist_of(figures: Mapping[str, Any]) -> Hist:
    raw = figures.get("latency_hist") or {}
    return {int(index): int(count) for index, count in raw.items()}


@dataclass
class _Sum:
    """The sums of one point's figures of the pipeline or of one table, over workers."""

    values: dict[str, Any] = field(default_factory=dict)
    hist: Hist = field(default_factory=dict)

    def add(self, figures: Mapping[str, Any]) -> None:
        for name in _SUMMED:
            value = figures.get(name)
            if value is not None:
                self.values[name] = self.values.get(name, 0) + value
        self.hist = merge_hists((self.hist, _hist_of(figures)))

    def json(self) -> dict[str, Any]:
        values = {"error_rows": 0, "lag": 0, **self.values}
        return _summary(values, self.hist)


def merge_series(series_list: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Several workers' ``/api/series/`` documents as one of the same shape: points matched
    by ``t``; rates, counts, lag and retries summed; latency hists summed and their
    quantiles computed from the sum. A point or table one worker lacks just lacks its
    contribution. Raises ValueError when the documents' steps differ (their points would
    not line up); the window is the longest. No documents: step and window None."""
    documents = list(series_list)
    if not documents:
        return {"step": None, "window": None, "points": []}
    step = float(documents[0]["step"])
    if any(float(doc["step"]) != step for doc in documents):
        raise ValueError("the series have different steps: set web.chart_step alike")
    # t → None (the pipeline) or a table's name → the sums.
    sums: dict[float, dict[str | None, _Sum]] = {}
    for doc in documents:
        for point in doc.get("points", ()):
            at = sums.setdefault(float(point["t"]), {None: _Sum()})
            at[None].add(point.get("pipeline") or {})
            for name, figures in (point.get("tables") or {}).items():
                at.setdefault(str(name), _Sum()).add(figures)
    points = []
    for t, at in sorted(sums.items()):
        pipeline = at.pop(None).json()
        pipeline.setdefault("sink_retries", 0)
        tables = {name: at[name].json() for name in sorted(n for n in at if n is not None)}
        points.append({"t": t, "pipeline": pipeline, "tables": tables})
    window = max(float(doc.get("window") or 0.0) for doc in documents)
    return {"step": step, "window": window, "points": points}


def chart_lines(
    doc: Mapping[str, Any], metric: str, table: str | None = None
) -> list[tuple[float, float | None]]:
    """(t, value) of ``metric`` (one of CHART_METRICS) for the pipeline, or for ``table``,
    one pair per step from the first point to the last: None where no point (or the point
    without that table, or a latency quantile of an interval without rows)."""
    if metric not in CHART_METRICS:
        raise ValueError(f"{metric!r} is not one of {', '.join(CHART_METRICS)}")
    points = sorted(doc.get("points", ()), key=lambda point: float(point["t"]))
    if not points:
        return []
    step = float(doc["step"])
    first = float(points[0]["t"])
    values: dict[int, float | None] = {}
    for point in points:
        figures = point.get("pipeline") if table is None else point.get("tables", {}).get(table)
        value = (figures or {}).get(metric)
        values[round((float(point["t"]) - first) / step)] = None if value is None else float(value)
    last = max(values)
    return [(round(first + k * step, 6), values.get(k)) for k in range(last + 1)]
