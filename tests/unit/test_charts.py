"""ctstream.web.charts: well-formed, escaped, deterministic SVG whatever the data."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ctstream.web.charts import (
    PALETTE,
    THRESHOLD_COLOUR,
    format_value,
    line_chart,
    sparkline,
    time_ticks,
    y_ticks,
)

NS = "{http://www.w3.org/2000/svg}"
START, END = 1_700_000_000.0, 1_700_000_900.0  # a 15-minute window
COORDS = ("x", "y", "x1", "y1", "x2", "y2", "cx", "cy")
Point = tuple[float, float | None]


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # raises on anything not well-formed
    assert root.tag == f"{NS}svg"
    assert root.get("role") == "img" and root.get("aria-label")
    assert root.find(f"{NS}title") is not None
    return root


def series(n: int = 180) -> list[Point]:
    return [(START + i * 5, float(i % 37)) for i in range(n)]


def polylines(root: ET.Element) -> list[list[tuple[float, float]]]:
    return [
        [(float(a), float(b)) for a, b in (p.split(",") for p in e.get("points", "").split())]
        for e in root.iter(f"{NS}polyline")
    ]


def texts(root: ET.Element) -> list[str]:
    return ["".join(e.itertext()) for e in root.iter(f"{NS}text")]


def frame(root: ET.Element) -> tuple[float, float, float, float]:
    rect = next(root.iter(f"{NS}rect"))
    x, y = float(rect.get("x", "")), float(rect.get("y", ""))
    return x, y, x + float(rect.get("width", "")), y + float(rect.get("height", ""))


def y_labels(root: ET.Element) -> list[str]:
    groups = [g for g in root.iter(f"{NS}g") if g.get("text-anchor") == "end"]
    return [e.text or "" for e in groups[0]]


def assert_inside(root: ET.Element) -> None:
    """Every coordinate is finite and inside the viewBox."""
    _, _, w, h = (float(v) for v in root.get("viewBox", "").split())
    for e in root.iter():
        for name in COORDS:
            if (v := e.get(name)) is not None:
                f = float(v)
                limit = w if name.startswith(("x", "cx")) else h
                assert math.isfinite(f) and 0 <= f <= limit, (e.tag, name, v)
        if e.tag == f"{NS}rect":
            assert float(e.get("x", "")) + float(e.get("width", "")) <= w
            assert float(e.get("y", "")) + float(e.get("height", "")) <= h
    for line in polylines(root):
        assert len(line) >= 2
        for x, y in line:
            assert math.isfinite(x) and math.isfinite(y) and 0 <= x <= w and 0 <= y <= h


def test_a_chart_is_well_formed_svg_with_title_legend_and_axes() -> None:
    svg = line_chart("Latency", "s", [("p99", series())], start=START, end=END)
    root = parse(svg)
    assert root.get("viewBox") == "0 0 360 140"
    assert root.findtext(f"{NS}title") == "Latency"
    assert len(polylines(root)) == 1
    assert "p99 31 s" in texts(root)  # the legend: label, last value, unit
    assert y_labels(root) == ["0", "10", "20", "30", "40", "50"]
    assert "UTC" in texts(root)
    assert_inside(root)


def test_hostile_text_is_escaped() -> None:
    evil = '</text><script>alert("&x\'")</script>\x00\x1b'
    svg = line_chart(evil, "<u>", [(evil, series())], start=START, end=END, threshold=3)
    root = parse(svg)
    assert "<script>" not in svg
    assert root.findtext(f"{NS}title") == '</text><script>alert("&x\'")</script>\ufffd\ufffd'
    assert evil[:10] in root.get("aria-label", "")
    assert any(t.startswith("</text><script>") for t in texts(root))
    parse(sparkline(series(), start=START, end=END, label=evil))


def test_gaps_break_the_line_and_a_lone_point_is_a_dot() -> None:
    points = series(60)
    points[10] = (points[10][0], None)
    points[20] = (points[20][0], math.nan)
    points[30] = (points[30][0], math.inf)
    points[32] = (points[32][0], None)  # leaves points[31] alone
    root = parse(line_chart("t", "", [("a", points)], start=START, end=END))
    assert len(polylines(root)) == 4
    assert len(list(root.iter(f"{NS}circle"))) == 1


@pytest.mark.parametrize(
    ("top", "expected"),
    [(0.0, 1), (0.7, 1), (1, 1), (1.01, 2), (2.2, 2.5), (3, 5), (7, 10), (1234, 2000), (9e6, 1e7)],
)
def test_the_y_axis_ends_at_a_nice_number_at_or_above_the_data(top: float, expected: float) -> None:
    ticks = y_ticks(0, top)
    assert ticks[0] == 0 and ticks[-1] == pytest.approx(expected) and ticks[-1] >= top
    assert 5 <= len(ticks) <= 6
    assert len(y_ticks(0, top, max_intervals=3)) == 3


@pytest.mark.parametrize("top", [1e-7, 0.003, 0.84, 42.0, 999.0, 1001.0, 3.3e9, 1e300])
def test_the_chart_axis_covers_the_data(top: float) -> None:
    root = parse(line_chart("t", "", [("a", [(START, 0.0), (END, top)])], start=START, end=END))
    ticks = y_ticks(0, top)
    assert y_labels(root) == [format_value(t) for t in ticks]
    assert ticks[-1] >= top
    mantissa = ticks[-1] / 10 ** math.floor(math.log10(ticks[-1]) + 1e-9)
    assert min(abs(mantissa - m) for m in (1, 2, 2.5, 5)) < 1e-9
    assert_inside(root)


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (0.25, "0.25"), (1.5, "1.5"), (250, "250"), (1000, "1k"), (1500, "1.5k"),
     (1250, "1.25k"), (2e6, "2M"), (-3.5e9, "-3.5G"), (0.8412, "0.841"), (1e18, "1e+18")],
)  # fmt: skip
def test_values_are_formatted_compactly(value: float, text: str) -> None:
    assert format_value(value) == text


def test_negative_values_extend_the_axis_below_zero() -> None:
    assert y_ticks(-3, 0) == [-5, -4, -3, -2, -1, 0]
    ticks = y_ticks(-30, 45)
    assert ticks[0] <= -30 and ticks[-1] >= 45 and 0 in ticks and len(ticks) <= 6
    root = parse(line_chart("t", "", [("a", [(START, -30.0), (END, 45.0)])], start=START, end=END))
    assert y_labels(root)[0].startswith("-")
    assert_inside(root)


def test_the_threshold_is_a_labelled_dashed_line_within_the_axis() -> None:
    root = parse(line_chart("t", "s", [("a", series())], start=START, end=END, threshold=50))
    dashed = [e for e in root.iter(f"{NS}line") if e.get("stroke") == THRESHOLD_COLOUR]
    assert len(dashed) == 1 and dashed[0].get("stroke-dasharray")
    assert "50 s" in texts(root)
    assert y_labels(root)[-1] == "50"
    assert float(dashed[0].get("y1", "")) == frame(root)[1]  # the axis top


@pytest.mark.parametrize(
    "lines",
    [
        [],
        [("a", [])],
        [("a", [(START, None), (START + 5, math.nan)])],
        [("a", [(START - 100, 1.0), (START - 50, 2.0), (END + 10, None), (END + 20, 3.0)])],
    ],
)
def test_without_data_the_chart_says_no_data_yet(lines: list[tuple[str, list[Point]]]) -> None:
    root = parse(line_chart("Lag", "messages", lines, start=START, end=END, threshold=5))
    assert "no data yet" in texts(root)
    assert not polylines(root) and not list(root.iter(f"{NS}circle"))
    assert list(root.iter(f"{NS}rect"))


def test_points_outside_the_range_are_cut_off() -> None:
    points: list[Point] = [(START - 600, 100.0), (START - 60, 0.0), (START + 450, 4.0)]
    points += [(END + 1, 4.0), (END + 500, 1000.0)]
    root = parse(line_chart("t", "", [("a", points)], start=START, end=END))
    [line] = polylines(root)
    left, _, right, _ = frame(root)
    assert line[0][0] == left and line[-1][0] == right  # cut at both edges, interpolated
    assert y_labels(root)[-1] == "5"  # 100 and 1000 lie outside: not on the axis
    assert len(line) == 3
    assert "a 4" in texts(root)  # the last value inside the range


def test_time_labels_are_round_clock_times_in_utc_or_the_given_offset() -> None:
    assert [label for _, label in time_ticks(0, 900)] == ["00:00", "00:05", "00:10", "00:15"]
    assert [label for _, label in time_ticks(0, 900, 5400)] == ["01:30", "01:35", "01:40", "01:45"]
    assert [t for t, _ in time_ticks(10, 3600)] == [900, 1800, 2700, 3600]
    assert [label for _, label in time_ticks(0, 30)][:2] == ["00:00:00", "00:00:10"]
    assert [label for _, label in time_ticks(0, 86400 * 10)] == ["01-01", "01-06", "01-11"]
    root = parse(line_chart("t", "", [], start=0, end=900, tz_offset_s=-16200))
    assert "UTC\u221204:30" in texts(root) and "19:30" in texts(root)


def test_many_lines_get_distinct_colours_and_the_legend_says_what_it_left_out() -> None:
    lines = [(f"table_{i}", series()) for i in range(6)]
    root = parse(line_chart("t", "rows/s", lines, start=START, end=END))
    colours = [g.get("stroke") for g in root.iter(f"{NS}g") if g.find(f"{NS}polyline") is not None]
    assert colours == list(PALETTE[:6])
    many = [(f"a_rather_long_table_name_{i}", series()) for i in range(30)]
    root = parse(line_chart("t", "rows/s", many, start=START, end=END))
    assert any(t.startswith("+") and t.endswith(" more") for t in texts(root))
    assert_inside(root)
    tiny = parse(line_chart("t", "rows/s", lines, start=START, end=END, width=120, height=80))
    assert "6 lines" in texts(tiny)
    assert 1 <= len([t for t in texts(tiny) if ":" in t]) <= 2  # no room for more


def test_output_is_deterministic_and_compact() -> None:
    args = ("Latency", "s", [("p99", [(START + i * 5, i / 7) for i in range(180)])])
    svg = line_chart(*args, start=START, end=END)
    assert svg == line_chart(*args, start=START, end=END)
    assert len(svg) < 4000
    assert len(sparkline(args[2][0][1], start=START, end=END)) < 3000
    assert all(len(d) == 1 for d in re.findall(r"\d\.(\d+)", svg))  # rounded to 0.1


def test_sparkline() -> None:
    root = parse(sparkline(series(), start=START, end=END))
    assert root.get("viewBox") == "0 0 120 24"
    assert len(polylines(root)) == 1 and not texts(root)
    assert len(list(root.iter(f"{NS}circle"))) == 1  # the last point
    assert_inside(root)
    empty = parse(sparkline([], start=START, end=END))
    assert not polylines(empty) and len(list(empty.iter(f"{NS}line"))) == 1


@pytest.mark.parametrize(
    ("start", "end", "width"), [(1.0, 1.0, 360), (2.0, 1.0, 360), (math.nan, 1.0, 360),
                                (0.0, math.inf, 360), (0.0, 1.0, 100)],
)  # fmt: skip
def test_bad_ranges_and_sizes_are_refused(start: float, end: float, width: int) -> None:
    with pytest.raises(ValueError):
        line_chart("t", "", [], start=start, end=end, width=width)


anything = st.floats(allow_nan=True, allow_infinity=True)
values = st.one_of(st.none(), anything, st.floats(-1e4, 1e4), st.sampled_from([0.0, -0.0, 1e308]))
points = st.lists(
    st.tuples(st.one_of(st.floats(-0.2, 1.2), anything), values), max_size=40
)  # times as a fraction of the range, or anything at all


@settings(max_examples=300, deadline=None)
@example(  # subnormal times next to the range's start
    lines=[("", [(0.0, 0.0), (-5e-324, 0.0)])], threshold=None, start=0.0, span=1.0,
    width=120, height=80, tz=0,
)  # fmt: skip
@given(
    lines=st.lists(st.tuples(st.text(max_size=30), points), max_size=9),
    threshold=st.one_of(st.none(), anything),
    start=st.floats(-1e10, 1e10),
    span=st.floats(1, 1e9),
    width=st.integers(120, 900),
    height=st.integers(80, 400),
    tz=st.integers(-14 * 3600, 14 * 3600),
)
def test_any_data_gives_well_formed_svg_inside_the_viewbox(
    lines: list[tuple[str, list[Point]]],
    threshold: float | None,
    start: float,
    span: float,
    width: int,
    height: int,
    tz: int,
) -> None:
    def place(t: float) -> float:
        return start + t * span if -0.2 <= t <= 1.2 else t

    lines = [(label, [(place(t), v) for t, v in pts]) for label, pts in lines]
    end = start + span
    size = {"width": width, "height": height}
    svg = line_chart("t", "u", lines, start=start, end=end, threshold=threshold, **size)
    assert svg == line_chart("t", "u", lines, start=start, end=end, threshold=threshold, **size)
    assert_inside(parse(svg))
    for _, pts in lines[:2]:
        spark = sparkline(pts, start=start, end=end, width=width // 4, height=height // 4)
        assert_inside(parse(spark))
