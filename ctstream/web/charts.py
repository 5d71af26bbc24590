"""Server-side SVG line charts for the dashboard: no JavaScript, no assets, stdlib only.

:func:`line_chart` draws a small time-series chart (title, y grid with compact labels,
time labels, up to ~6 lines, a legend with each line's last value, an optional dashed
threshold); :func:`sparkline` draws a bare trend line for a table row. Both return one
``<svg>`` element, SVG 1.1 markup meant to be inlined in HTML, and are pure: the same
input gives the same string (no clock, no locale, no random ids, no ``<style>`` that
would leak into the page).

Contract shared by both:

* a point is ``(unix time, value)``; a value of ``None``, NaN or ±inf is a gap that
  breaks the line; points with a non-finite time are ignored; points are sorted by time;
* only ``[start, end]`` is drawn: a line crossing an edge is cut there (interpolated),
  points beyond are otherwise ignored; a run of one point is drawn as a dot;
* values are clamped to ±1e300 (so the arithmetic stays finite); the y axis spans
  ``min(0, lowest value)`` to a nice number (1, 2, 2.5 or 5 times 10^k) at or above the
  highest value and the threshold, so negative data extends the axis below zero;
* coordinates are rounded to 0.1 px and always lie inside the viewBox;
* every text (titles, labels, units) is XML-escaped; characters XML cannot carry are
  replaced with U+FFFD.

Times are labelled as HH:MM (HH:MM:SS for ranges under a few minutes, MM-DD for ranges
of days) in UTC, or in the fixed offset ``tz_offset_s`` (seconds east of UTC, e.g.
``-time.timezone``); the offset is named in a caption at the top right ("UTC",
"UTC+02:00"), so the output never depends on the server's time zone settings.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from itertools import chain, pairwise
from xml.sax.saxutils import escape

Point = tuple[float, float | None]
Seg = list[tuple[float, float]]  # a run of (t, value) without gaps
Fn = Callable[[float], float]

# Okabe & Ito's colour-blind-safe palette, the yellow left out (unreadable on white).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
THRESHOLD_COLOUR = "#b3261e"
_LIMIT = 1e300  # values are clamped to ±_LIMIT, axis ends kept above _TINY
_TINY = 1e-300
_CHAR_W = 5.8  # estimated width of one 10px character
_LABEL_CHARS = 24  # legend labels are cut to this many characters
_MORE_W = 9 * _CHAR_W  # the width of a "+N more" legend entry
_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SVG = 'xmlns="http://www.w3.org/2000/svg" version="1.1"'
_SUFFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)


def _text(s: str) -> str:
    """``s`` made safe for XML text and double-quoted attributes."""
    return escape(_BAD_XML.sub("\ufffd", s), {'"': "&quot;"})


def _n(x: float) -> str:
    """A coordinate rounded to 0.1, without a useless ``.0``."""
    s = f"{x:.1f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def format_value(v: float) -> str:
    """Compact, 3 significant digits: 0, 0.25, 1.5, 250, 1k, 1.25k, 2M, -3.5G, 1e+18."""
    if v == 0:
        return "0"
    for scale, suffix in _SUFFIXES:
        if scale <= abs(v) < 1e15:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def _clean(v: float | None) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return max(-_LIMIT, min(_LIMIT, float(v)))


def _nice_steps(x: float) -> Iterator[float]:
    """Ascending numbers m * 10^k (m in 1, 2, 2.5, 5) that are ≥ ``x`` (0 < x ≤ 1e300)."""
    exp = math.floor(math.log10(x)) - 1
    while True:
        for m in (1.0, 2.0, 2.5, 5.0):
            c = m * float(f"1e{exp}")
            if c >= x:
                yield c
        exp += 1


def _nice_up(x: float) -> float:
    return next(_nice_steps(max(x, _TINY)))


def y_ticks(lo: float, hi: float, max_intervals: int = 5) -> list[float]:
    """Gridline values from ``min(0, lo)`` up to a nice max ≥ ``max(0, hi)``, 3 to 6 of them.

    With no negative data the top is the nice number above ``hi`` (1 if ``hi`` ≤ 0)
    split into 4 or 5 intervals (2 when ``max_intervals`` < 4); below zero the
    step is the smallest nice one giving at most ``max_intervals`` intervals.
    """
    lo, hi = min(0.0, lo), max(0.0, hi)
    if lo == 0 or hi == 0:
        top = _nice_up(max(hi, -lo)) if hi or lo else 1.0
        mantissa = top / float(f"1e{math.floor(math.log10(top) + 1e-9)}")
        n = 4 if mantissa < 2.25 else 5
        n = n if n <= max_intervals else 2
        ticks = [top * i / n for i in range(n + 1)]
        return [-t for t in reversed(ticks)] if lo else ticks
    for step in _nice_steps((hi - lo) / max_intervals):
        below, above = math.ceil(-lo / step), math.ceil(hi / step)
        if below + above <= max_intervals:
            return [i * step for i in range(-below, above + 1)]
    raise AssertionError("unreachable")  # pragma: no cover


def _frac(t: float, t0: float, t1: float) -> float:
    """Where ``t0 ≤ t ≤ t1`` lies between them, 0 to 1, for any finite times."""
    d = t1 - t0
    f = (t - t0) / d if math.isfinite(d) else (t / 2 - t0 / 2) / (t1 / 2 - t0 / 2)
    return min(1.0, max(0.0, f)) if d else 1.0


def _segments(points: Sequence[Point], start: float, end: float) -> list[Seg]:
    """Runs of ``(t, value)`` without gaps, cut to ``[start, end]``."""
    pts = sorted(((float(t), _clean(v)) for t, v in points if math.isfinite(t)), key=lambda p: p[0])
    runs: list[Seg] = [[]]
    for t, v in pts:
        if v is None:
            runs.append([])
        else:
            runs[-1].append((t, v))
    out = []
    for run in runs:
        if len(run) == 1 and start <= run[0][0] <= end:
            out.append(run)
        cut: Seg = []
        for (t0, v0), (t1, v1) in pairwise(run):
            if t1 < start or t0 > end:
                continue
            if not cut:
                cut.append(
                    (t0, v0) if t0 >= start else (start, v0 + (v1 - v0) * _frac(start, t0, t1))
                )
            cut.append((t1, v1) if t1 <= end else (end, v0 + (v1 - v0) * _frac(end, t0, t1)))
        if cut:
            out.append(cut)
    return out


def _last_value(points: Sequence[Point], start: float, end: float) -> float | None:
    inside = [(t, _clean(v)) for t, v in points if math.isfinite(t) and start <= t <= end]
    ordered = reversed(sorted(inside, key=lambda p: p[0]))  # the latest, as _segments sees it
    return next((v for _, v in ordered if v is not None), None)


def _clock(t: float, step: float) -> str:
    if step >= 86400:
        try:
            return time.strftime("%m-%d", time.gmtime(t))
        except (OverflowError, OSError, ValueError):
            return ""
    s = math.floor(t) % 86400
    hhmm = f"{s // 3600:02d}:{s // 60 % 60:02d}"
    return f"{hhmm}:{s % 60:02d}" if step < 60 else hhmm


def time_ticks(
    start: float, end: float, tz_offset_s: int = 0, most: int = 4
) -> list[tuple[float, str]]:
    """Up to ``most`` ``(unix time, label)``: round clock times (of the offset) in the range."""
    span = end - start
    days = (86400 * s for s in _nice_steps(max(span / most / 86400, 1.0)) if s == int(s))
    for step in chain((s for s in _TIME_STEPS if s * most >= span), days):
        local = math.ceil((start + tz_offset_s) / step) * step
        count = math.floor((end + tz_offset_s - local) / step) + 1
        if count <= most:
            times = [local + i * step for i in range(max(count, 0))]
            return [(t - tz_offset_s, _clock(t, step)) for t in times]
    raise AssertionError("unreachable")  # pragma: no cover


def _tz_caption(offset: int) -> str:
    if not offset:
        return "UTC"
    sign = "+" if offset > 0 else "\u2212"
    return f"UTC{sign}{abs(offset) // 3600:02d}:{abs(offset) // 60 % 60:02d}"


def _cut(s: str, n: int) -> str:
    return s if len(s) <= n else s[: max(n - 1, 0)] + "\u2026"


def _draw(segs: list[Seg], x: Fn, y: Fn, colour: str, w: float, r: float, dash: str) -> list[str]:
    """Polylines (and dots for single points) for the segments, in pixel coordinates."""
    parts = []
    for seg in segs:
        coords: list[str] = []
        for t, v in seg:
            c = f"{_n(x(t))},{_n(y(v))}"
            if not coords or coords[-1] != c:
                coords.append(c)
        if len(coords) == 1:
            cx, cy = coords[0].split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="{r}" fill="{colour}" stroke="none"/>')
        else:
            parts.append(f'<polyline points="{" ".join(coords)}"/>')
    attrs = f'fill="none" stroke="{colour}" stroke-width="{w}"{dash}'
    return [f'<g {attrs} stroke-linejoin="round" stroke-linecap="round">', *parts, "</g>"]


def _line(x1: float, y1: float, x2: float, y2: float, attrs: str = "") -> str:
    return f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}"{attrs}/>'


def _open(width: int, height: int, title: str, aria: str, attrs: str = "") -> str:
    """The ``<svg>`` start tag and its ``<title>``."""
    return (
        f'<svg {_SVG} width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' role="img" aria-label="{_text(aria)}"{attrs}><title>{_text(title)}</title>'
    )


def _dash(i: int) -> str:
    """Line i's dash pattern: lines past the palette's colours are dashed."""
    return ' stroke-dasharray="5 2"' if i >= len(PALETTE) else ""


def _check(start: float, end: float, size: tuple[int, int], least: tuple[int, int]) -> None:
    if not (math.isfinite(end - start) and end > start):  # (inf - inf is NaN, not finite)
        raise ValueError(f"need finite start < end, got {start!r}, {end!r}")
    if size[0] < least[0] or size[1] < least[1]:
        raise ValueError(f"need at least {least[0]}x{least[1]} px, got {size[0]}x{size[1]}")


def _flow(
    widths: list[float], x0: float, x1: float, rows: int
) -> tuple[list[tuple[float, int]], int]:
    """Place the first k legend entries (plus a "+N more" one if k is short) in rows.

    Returns ``(x, row)`` per placed entry and k, the largest count that fits in ``rows``.
    """
    for k in range(len(widths), -1, -1):
        items = widths[:k] + ([_MORE_W] if k < len(widths) else [])
        placed: list[tuple[float, int]] = []
        row, x = 0, x0
        for w in items:
            if x > x0 and x + w - 10 > x1:  # (w ends with a 10 px gap)
                row, x = row + 1, x0
            placed.append((x, row))
            x += w
        if row < rows:
            return placed, k
    return [], 0


def line_chart(
    title: str,
    unit: str,
    lines: Sequence[tuple[str, Sequence[Point]]],
    *,
    start: float,
    end: float,
    width: int = 360,
    height: int = 140,
    threshold: float | None = None,
    tz_offset_s: int = 0,
) -> str:
    """One ``<svg>`` element: a titled time-series chart of ``lines`` over ``[start, end]``.

    ``lines`` are ``(label, points)``; line i is drawn in ``PALETTE[i % 7]`` (dashed from
    the 8th on) and listed in a legend under the chart with its last value in the range
    and ``unit`` ("p99 0.84 s"); entries that do not fit become "+N more". The y axis
    has 3 to 6 labelled gridlines (see :func:`y_ticks`), the x axis up to 4 clock times
    (see :func:`time_ticks`). ``threshold`` adds a dashed red line labelled with its
    value. Without any point to draw: the frame, the time labels and "no data yet".
    ``width`` ≥ 120 and ``height`` ≥ 80 (pixels); ``start`` < ``end``, both finite.
    """
    _check(start, end, (width, height), (120, 80))
    thr = None if threshold is None else _clean(threshold)
    series = [(lb, _segments(pts, start, end), _last_value(pts, start, end)) for lb, pts in lines]
    has_data = any(segs for _, segs, _ in series)
    suffix = f" {unit}" if unit else ""
    legend = [
        (_cut(label, _LABEL_CHARS), "\u2013" if last is None else format_value(last) + suffix)
        for label, _, last in series
    ]
    # a legend of at most (height - 66) // 13 rows keeps the plot at least 30 px high
    widths = [25 + len(a + b) * _CHAR_W for a, b in legend]
    placed, shown = _flow(widths, 4, width - 4, (height - 66) // 13 if has_data else 0)
    top, bottom = 20.0, float(height - 16 - 13 * (max((r for _, r in placed), default=-1) + 1))

    values = [v for _, segs, _ in series for seg in segs for _, v in seg]
    values += [] if thr is None else [thr]
    room = max(2, min(5, int((bottom - top) // 16)))
    ticks = y_ticks(min(values, default=0.0), max(values, default=1.0), room)
    tick_labels = [format_value(t) for t in ticks]
    left = max(16.0, 8 + max(len(s) for s in tick_labels) * _CHAR_W) if has_data else 8.0
    right, lo, hi = width - 8.0, ticks[0], ticks[-1]

    def x(t: float) -> float:
        return left + (t - start) / (end - start) * (right - left)

    def y(v: float) -> float:
        return min(bottom, max(top, bottom - (v - lo) / (hi - lo) * (bottom - top)))

    summary = "; ".join(f"{a} {b}" for a, b in legend) if has_data else "no data yet"
    caption = _tz_caption(tz_offset_s)
    title_room = max(4, int((width - 12 - len(caption) * 5) / 6.4) - len(suffix) - 2)
    font = ' font-family="system-ui,-apple-system,Segoe UI,sans-serif" font-size="10"'
    out = [
        _open(width, height, title, f"{title}{suffix}: {summary}", font),
        '<text x="4" y="12" font-size="11" font-weight="600" fill="#1c1c1c">'
        f"{_text(_cut(title, title_room))}"
        + (f'<tspan fill="#777" font-weight="400">{_text(suffix)}</tspan>' if unit else "")
        + f'</text><text x="{width - 4}" y="12" text-anchor="end" font-size="8" fill="#888">'
        f"{caption}</text>",
    ]
    if has_data:
        out += ['<g stroke="#e8e8e8">', *(_line(left, y(t), right, y(t)) for t in ticks), "</g>"]
        out += [_line(left, y(0), right, y(0), ' stroke="#aaa"')] if lo < 0 else []
        out.append('<g fill="#666" text-anchor="end">')
        for t, label in zip(ticks, tick_labels, strict=True):
            out.append(f'<text x="{_n(left - 4)}" y="{_n(y(t) + 3.5)}">{label}</text>')
        out.append("</g>")
    out.append(
        f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(right - left)}"'
        f' height="{_n(bottom - top)}" fill="none" stroke="#ccc"/>'
    )
    marks, times = ['<g stroke="#ccc">'], ['</g><g fill="#666" text-anchor="middle">']
    for t, label in time_ticks(start, end, tz_offset_s, max(2, min(4, int(right - left) // 50))):
        px, half = x(t), len(label) * _CHAR_W / 2
        marks.append(_line(px, bottom, px, bottom + 3))
        anchor = ' text-anchor="end"' if px + half > width - 2 else ""
        anchor = ' text-anchor="start"' if px - half < 2 else anchor
        times.append(f'<text x="{_n(px)}" y="{_n(bottom + 12)}"{anchor}>{label}</text>')
    out += [*marks, *times, "</g>"]
    if not has_data:
        out.append(
            f'<text x="{_n((left + right) / 2)}" y="{_n((top + bottom) / 2 + 4)}"'
            ' text-anchor="middle" font-size="11" fill="#888">no data yet</text>'
        )
        return "".join(out) + "</svg>"
    if thr is not None:
        out.append(
            _line(
                left, y(thr), right, y(thr), f' stroke="{THRESHOLD_COLOUR}" stroke-dasharray="4 3"'
            )
        )
    for i, (label, segs, _) in enumerate(series):
        drawn = _draw(segs, x, y, PALETTE[i % len(PALETTE)], 1.5, 2.2, _dash(i))
        out += [drawn[0], f"<title>{_text(label)}</title>", *drawn[1:]]
    if thr is not None:  # the label above the line, or below it when at the top
        ly = y(thr) - 3 if y(thr) - 3 >= top + 9 else y(thr) + 10
        out.append(
            f'<text x="{_n(right - 3)}" y="{_n(ly)}" text-anchor="end" font-size="9"'
            f' fill="{THRESHOLD_COLOUR}">{_text(format_value(thr) + suffix)}</text>'
        )
    for i, (px, row) in enumerate(placed):
        by = bottom + 25 + 13 * row
        if i == shown:
            more = f"+{len(legend) - shown} more" if shown else f"{len(legend)} lines"
            out.append(f'<text x="{_n(px)}" y="{_n(by)}">{more}</text>')
            break
        name, value = legend[i]
        pen = f' stroke="{PALETTE[i % len(PALETTE)]}" stroke-width="2"{_dash(i)}'
        out.append(
            _line(px, by - 3.5, px + 11, by - 3.5, pen)
            + f'<text x="{_n(px + 15)}" y="{_n(by)}" fill="#1c1c1c">{_text(name)} '
            f'<tspan font-weight="600">{_text(value)}</tspan></text>'
        )
    return "".join(out) + "</svg>"


def sparkline(
    points: Sequence[Point],
    *,
    start: float,
    end: float,
    width: int = 120,
    height: int = 24,
    label: str = "trend",
) -> str:
    """One small ``<svg>``: the trend of ``points`` over ``[start, end]``, no axes, no text.

    The y range runs from ``min(0, lowest)`` to the highest value (not rounded), so the
    line's height is comparable to zero; the last point gets a dot. Without data: a
    faint baseline. ``label`` is the accessible name and tooltip. ``width`` ≥ 16 and
    ``height`` ≥ 8; ``start`` < ``end``, both finite.
    """
    _check(start, end, (width, height), (16, 8))
    segs, pad = _segments(points, start, end), 2.0
    out = [_open(width, height, label, label)]
    if not segs:
        out.append(_line(pad, height - pad, width - pad, height - pad, ' stroke="#ddd"'))
        return "".join(out) + "</svg>"
    values = [v for seg in segs for _, v in seg]
    lo, hi = min(0.0, *values), max(0.0, *values)
    hi = hi if hi > lo else lo + 1

    def x(t: float) -> float:
        return pad + (t - start) / (end - start) * (width - 2 * pad)

    def y(v: float) -> float:
        return height - pad - (v - lo) / (hi - lo) * (height - 2 * pad)

    out += _draw(segs, x, y, PALETTE[0], 1.2, 1.5, "")
    if len(segs[-1]) > 1:
        t, v = segs[-1][-1]
        out.append(f'<circle cx="{_n(x(t))}" cy="{_n(y(v))}" r="1.5" fill="{PALETTE[0]}"/>')
    return "".join(out) + "</svg>"
