"""SQL Server geography and geometry values as text that keeps every coordinate exactly.

The reader selects such a column as ``CAST(ref.STSrid AS binary(4)) + ref.AsBinaryZM()``,
so a value arrives as bytes: the SRID as a 4-byte big-endian signed integer, then the
shape as OGC Well-Known Binary with its Z and M values.

:func:`wkb_to_wkt` writes the WKB as OGC/ISO Well-Known Text. Every coordinate is written
as Python's shortest round-trip ``repr`` of its double without a trailing ``.0`` (``1``,
``-0``, ``0.1``, ``1e-07``, ``1e+16``), so ``float(token)`` gives back the same double,
bit for bit (negative zero included). A point whose coordinates are all NaN is ``POINT
EMPTY`` (WKB has no other way to write it); any other NaN or infinite coordinate raises
ValueError, as WKT has no exact form for it. Both ISO type codes (+1000 Z, +2000 M,
+3000 ZM) and EWKB flag bits are read (an EWKB SRID inside the WKB is skipped); types
1-10 (Point to CurvePolygon) are known. A multi-geometry's, compound curve's or curve
polygon's members must be of a type it can hold and have its Z/M; a collection's members
are written each with its own type and Z/M. Malformed input (truncated, trailing bytes,
bad byte order, unknown type, a count the remaining bytes cannot hold, a member its
container cannot hold, nesting deeper than 64) raises ValueError.

:func:`spatial_text` adds the SRID: a geography in SRID 4326 with neither Z nor M
anywhere is plain WKT (what a BigQuery GEOGRAPHY accepts); anything else is EWKT,
``SRID=<n>;<WKT>``, which :func:`ewkt_srid` reads back.
"""

from __future__ import annotations

import math
import re
import struct

EWKT_PREFIX = "SRID="

_EWKB_Z = 0x80000000
_EWKB_M = 0x40000000
_EWKB_SRID = 0x20000000
_NAMES = {
    1: "POINT",
    2: "LINESTRING",
    3: "POLYGON",
    4: "MULTIPOINT",
    5: "MULTILINESTRING",
    6: "MULTIPOLYGON",
    7: "GEOMETRYCOLLECTION",
    8: "CIRCULARSTRING",
    9: "COMPOUNDCURVE",
    10: "CURVEPOLYGON",
}
_LINESTRING = 2
_COLLECTION = 7
# Container type → the member types it may hold; None: any.
_MEMBERS: dict[int, frozenset[int] | None] = {
    4: frozenset({1}),
    5: frozenset({2}),
    6: frozenset({3}),
    7: None,
    9: frozenset({2, 8}),
    10: frozenset({2, 8, 9}),
}
# A compound curve's or curve polygon's members are written by name, except a LineString,
# which is a bare point list there (as in every other container but a collection).
_CURVE_CONTAINERS = frozenset({9, 10})
_TAGS = {(False, False): "", (True, False): " Z", (False, True): " M", (True, True): " ZM"}
# The smallest nested geometry: byte order, type code and a zero count.
_MIN_GEOMETRY = 9
# Deeper nesting than any real shape; stops crafted input before Python's recursion limit.
_MAX_DEPTH = 64
_UINT32 = {True: struct.Struct(">I"), False: struct.Struct("<I")}
_EWKT_SRID = re.compile(r"SRID=(-?[0-9]+);")


def wkb_to_wkt(data: bytes | memoryview) -> str:
    """The OGC/ISO WKT of the WKB ``data`` (see the module docstring); ValueError for
    malformed input or a coordinate WKT cannot write exactly."""
    return _convert(bytes(data), 0)[0]


def spatial_text(raw: bytes | memoryview, *, geography: bool) -> str:
    """The text of a SQL Server spatial value read as ``CAST(STSrid AS binary(4)) +
    AsBinaryZM()``: plain WKT for a ``geography`` in SRID 4326 without Z or M, else
    ``SRID=<n>;<WKT>``. ValueError for fewer than 4 bytes or malformed WKB."""
    data = bytes(raw)
    if len(data) < 4:
        raise ValueError(f"spatial value has {len(data)} bytes; it needs a 4-byte SRID first")
    srid = int.from_bytes(data[:4], "big", signed=True)
    wkt, has_z_or_m = _convert(data, 4)
    if geography and srid == 4326 and not has_z_or_m:
        return wkt
    return f"{EWKT_PREFIX}{srid};{wkt}"


def ewkt_srid(text: str) -> int | None:
    """The SRID of an EWKT ``text`` (``SRID=<int>;…``), None if it has no such prefix."""
    found = _EWKT_SRID.match(text)
    return int(found.group(1)) if found else None


class _Reader:
    """A position in WKB bytes; remembers whether any geometry had Z or M."""

    __slots__ = ("data", "has_z_or_m", "pos", "start")

    def __init__(self, data: bytes, start: int) -> None:
        self.data = data
        self.start = start
        self.pos = start
        self.has_z_or_m = False

    def _take(self, size: int) -> int:
        at = self.pos
        if size > len(self.data) - at:
            raise ValueError(
                f"WKB truncated: {size} bytes needed at offset {at - self.start}, "
                f"{len(self.data) - at} left"
            )
        self.pos = at + size
        return at

    def byte(self) -> int:
        return self.data[self._take(1)]

    def uint32(self, big: bool) -> int:
        value: int = _UINT32[big].unpack_from(self.data, self._take(4))[0]
        return value

    def count(self, big: bool, min_size: int) -> int:
        """A uint32 count of elements of at least ``min_size`` bytes each."""
        at = self.pos - self.start
        n = self.uint32(big)
        left = len(self.data) - self.pos
        if n * min_size > left:
            raise ValueError(
                f"WKB count {n} at offset {at} needs at least {n * min_size} bytes, {left} left"
            )
        return n

    def doubles(self, n: int, big: bool) -> tuple[float, ...]:
        return struct.unpack_from(f"{'>' if big else '<'}{n}d", self.data, self._take(8 * n))


def _convert(data: bytes, start: int) -> tuple[str, bool]:
    """(WKT of the WKB in ``data`` from ``start`` to its end, whether Z or M occurs)."""
    reader = _Reader(data, start)
    base, z, m, body = _geometry(reader, 0)
    if reader.pos != len(data):
        raise ValueError(f"{len(data) - reader.pos} trailing bytes after the WKB geometry")
    return _NAMES[base] + _TAGS[z, m] + " " + body, reader.has_z_or_m


def _geometry(r: _Reader, depth: int) -> tuple[int, bool, bool, str]:
    """(base type, has Z, has M, body: ``EMPTY`` or a parenthesised list) of the next
    geometry."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"WKB geometries nested deeper than {_MAX_DEPTH} levels")
    at = r.pos - r.start
    order = r.byte()
    if order not in (0, 1):
        raise ValueError(f"WKB byte order {order} at offset {at} is neither 0 nor 1")
    big = order == 0
    base, z, m, has_srid = _type(r.uint32(big))
    if has_srid:
        r.uint32(big)
    r.has_z_or_m = r.has_z_or_m or z or m
    dims = 2 + z + m
    if base == 1:
        coords = r.doubles(dims, big)
        if all(math.isnan(c) for c in coords):
            return base, z, m, "EMPTY"
        return base, z, m, "(" + _position(coords) + ")"
    if base in (2, 8):
        return base, z, m, _points(r, dims, big)
    if base == 3:
        rings = [_points(r, dims, big) for _ in range(r.count(big, 4))]
        return base, z, m, _list(rings)
    allowed = _MEMBERS[base]
    parts: list[str] = []
    for _ in range(r.count(big, _MIN_GEOMETRY)):
        member, mz, mm, body = _geometry(r, depth + 1)
        if allowed is not None and (member not in allowed or (mz, mm) != (z, m)):
            raise ValueError(
                f"{_NAMES[base]}{_TAGS[z, m]} cannot hold a {_NAMES[member]}{_TAGS[mz, mm]}"
            )
        if base == _COLLECTION or (base in _CURVE_CONTAINERS and member != _LINESTRING):
            body = _NAMES[member] + _TAGS[mz, mm] + " " + body
        parts.append(body)
    return base, z, m, _list(parts)


def _type(code: int) -> tuple[int, bool, bool, bool]:
    """(base type, Z, M, SRID follows) of a WKB type code, ISO or EWKB."""
    flags = code & (_EWKB_Z | _EWKB_M | _EWKB_SRID)
    iso = code & ~flags
    base, thousands = iso % 1000, iso // 1000
    if base not in _NAMES or thousands > 3 or (thousands and flags & (_EWKB_Z | _EWKB_M)):
        raise ValueError(f"unknown WKB geometry type {code} (0x{code:08X})")
    z = bool(flags & _EWKB_Z) or thousands in (1, 3)
    m = bool(flags & _EWKB_M) or thousands in (2, 3)
    return base, z, m, bool(flags & _EWKB_SRID)


def _points(r: _Reader, dims: int, big: bool) -> str:
    """The next counted point list as a body."""
    n = r.count(big, 8 * dims)
    coords = r.doubles(n * dims, big)
    return _list([_position(coords[i : i + dims]) for i in range(0, n * dims, dims)])


def _position(coords: tuple[float, ...]) -> str:
    return " ".join(map(_number, coords))


def _number(x: float) -> str:
    """The shortest text that reads back as ``x`` exactly."""
    if not math.isfinite(x):
        raise ValueError(f"coordinate is not finite ({x!r}); WKT cannot carry it exactly")
    text = repr(x)
    return text[:-2] if text.endswith(".0") else text


def _list(parts: list[str]) -> str:
    return "(" + ", ".join(parts) + ")" if parts else "EMPTY"
