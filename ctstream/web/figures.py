"""The figures the dashboard shows beside each table, read from a (merged) series."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ctstream.web.series import chart_lines, quantile

# The dashboard's "now" figures cover the last minute of samples.
RECENT_S = 60.0


@dataclass(frozen=True)
class Figures:
    """One table's (or the pipeline's) recent figures; None where nothing was sampled."""

    rows_in_per_s: float | None = None
    rows_out_per_s: float | None = None
    lag: int | None = None
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    error_rows: int = 0


def chart_window(series: Mapping[str, Any], now: float) -> tuple[float, float]:
    """The time range the charts show: the series' window up to ``now``, or less while
    the workers have sampled for less than that (a step before the first point)."""
    start = now - float(series.get("window") or 900.0)
    points = series.get("points") or []
    if points:
        first = float(points[0]["t"]) - float(series.get("step") or 5.0)
        start = max(start, min(first, now - 60.0))
    return start, now


def span_text(start: float, end: float) -> str:
    """``15 minutes``, ``1 minute``, ``40 seconds``: how long ``start`` to ``end`` is."""
    seconds = round(end - start)
    if seconds < 90:
        return f"{seconds} seconds"
    minutes = round(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def series_lines(
    series: Mapping[str, Any], metric: str, table: str | None = None
) -> list[tuple[float, float | None]]:
    """(time, value) of ``metric`` for the pipeline or ``table``, None in gaps."""
    return chart_lines(series, metric, table)


def recent_figures(
    series: Mapping[str, Any], table: str | None, now: float, seconds: float = RECENT_S
) -> Figures:
    """The last ``seconds`` of ``series``: mean rates, the last lag, latency quantiles
    over every row written in that time, and the error rows."""
    points = [p for p in series.get("points", []) if p.get("t", 0) > now - seconds]
    values = [
        part
        for p in points
        if (part := (p.get("pipeline") if table is None else p.get("tables", {}).get(table)))
    ]
    if not values:
        return Figures()
    hist: dict[int, int] = {}
    for v in values:
        for bucket, count in (v.get("latency_hist") or {}).items():
            hist[int(bucket)] = hist.get(int(bucket), 0) + int(count)
    lag = values[-1].get("lag")
    return Figures(
        rows_in_per_s=_mean(v.get("rows_in") for v in values),
        rows_out_per_s=_mean(v.get("rows_out") for v in values),
        lag=None if lag is None else int(lag),
        latency_p50_s=quantile(hist, 0.5),
        latency_p99_s=quantile(hist, 0.99),
        error_rows=sum(int(v.get("error_rows") or 0) for v in values),
    )


def _mean(values: Any) -> float | None:
    found = [float(v) for v in values if v is not None]
    return sum(found) / len(found) if found else None
