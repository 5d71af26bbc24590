"""SQL Server spatial values as text: every WKB type read in both byte orders, with ISO and
EWKB type codes, written as OGC WKT whose every coordinate reads back as the same double;
malformed WKB refused. The property tests encode random shapes with an encoder of their
own and check the text's structure and every number, bit for bit."""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctstream.source.spatial_values import EWKT_PREFIX, ewkt_srid, spatial_text, wkb_to_wkt


def wkb(*hex_parts: str) -> bytes:
    return bytes.fromhex("".join(hex_parts))


ONE_TWO_LE = "000000000000F03F 0000000000000040"
ONE_TO_FOUR_LE = "000000000000F03F 0000000000000040 0000000000000840 0000000000001040"
ONE_TO_FOUR_BE = "3FF0000000000000 4000000000000000 4008000000000000 4010000000000000"
NAN_LE = "000000000000F87F"
NAN_BE = "7FF8000000000000"
SQUARE_LE = (  # (0 0, 10 0, 0 10, 0 0)
    "0000000000000000 0000000000000000 0000000000002440 0000000000000000"
    "0000000000000000 0000000000002440 0000000000000000 0000000000000000"
)
HOLE_LE = (  # (1 1, 2 1, 1 2, 1 1)
    "000000000000F03F 000000000000F03F 0000000000000040 000000000000F03F"
    "000000000000F03F 0000000000000040 000000000000F03F 000000000000F03F"
)

EXAMPLES = {
    "point little endian": ("01 01000000" + ONE_TWO_LE, "POINT (1 2)"),
    "point big endian": ("00 00000001 3FF0000000000000 4000000000000000", "POINT (1 2)"),
    "point z iso": (
        "01 E9030000 000000000000F03F 0000000000000040 0000000000000840",
        "POINT Z (1 2 3)",
    ),
    "point m iso big endian": (
        "00 000007D1 3FF0000000000000 4000000000000000 4010000000000000",
        "POINT M (1 2 4)",
    ),
    # AsBinaryZM() of geometry 'Point(1 1 2 3)', as Microsoft's documentation shows it.
    "point zm from sql server": (
        "01B90B0000000000000000F03F000000000000F03F00000000000000400000000000000840",
        "POINT ZM (1 1 2 3)",
    ),
    "point z ewkb big endian": (
        "00 80000001 3FF0000000000000 4000000000000000 4008000000000000",
        "POINT Z (1 2 3)",
    ),
    "point m ewkb": (
        "01 01000040 000000000000F03F 0000000000000040 0000000000001040",
        "POINT M (1 2 4)",
    ),
    "point zm ewkb with srid": ("01 010000E0 E6100000" + ONE_TO_FOUR_LE, "POINT ZM (1 2 3 4)"),
    "linestring": ("01 02000000 02000000" + ONE_TO_FOUR_LE, "LINESTRING (1 2, 3 4)"),
    "linestring big endian": ("00 00000002 00000002" + ONE_TO_FOUR_BE, "LINESTRING (1 2, 3 4)"),
    "polygon with a hole": (
        "01 03000000 02000000 04000000" + SQUARE_LE + "04000000" + HOLE_LE,
        "POLYGON ((0 0, 10 0, 0 10, 0 0), (1 1, 2 1, 1 2, 1 1))",
    ),
    # STMPointFromWKB's example in Microsoft's documentation.
    "multipoint from sql server docs": (
        "010400000002000000010100000000000000000059400000000000005940"
        "010100000000000000000069400000000000006940",
        "MULTIPOINT ((100 100), (200 200))",
    ),
    "multilinestring mixed byte orders": (
        "00 00000005 00000002 00 00000002 00000002" + ONE_TO_FOUR_BE + "01 02000000 02000000"
        "0000000000001440 0000000000001840 0000000000001C40 0000000000002040",
        "MULTILINESTRING ((1 2, 3 4), (5 6, 7 8))",
    ),
    "multipolygon": (
        "01 06000000 01000000 01 03000000 01000000 04000000" + SQUARE_LE,
        "MULTIPOLYGON (((0 0, 10 0, 0 10, 0 0)))",
    ),
    "nested collection mixed byte orders": (
        "00 00000007 00000003"
        "01 01000000" + ONE_TWO_LE + "00 00000002 00000002"
        "4008000000000000 4010000000000000 4014000000000000 4018000000000000"
        "01 07000000 01000000 00 00000001 401C000000000000 4020000000000000",
        "GEOMETRYCOLLECTION (POINT (1 2), LINESTRING (3 4, 5 6), GEOMETRYCOLLECTION (POINT (7 8)))",
    ),
    "circularstring": (
        "01 08000000 03000000 0000000000000000 0000000000000000"
        "000000000000F03F 000000000000F03F 0000000000000040 0000000000000000",
        "CIRCULARSTRING (0 0, 1 1, 2 0)",
    ),
    "compoundcurve": (
        "01 09000000 02000000 01 02000000 02000000" + ONE_TO_FOUR_LE + "00 00000008 00000003"
        "4008000000000000 4010000000000000 4014000000000000 4018000000000000"
        "401C000000000000 4020000000000000",
        "COMPOUNDCURVE ((1 2, 3 4), CIRCULARSTRING (3 4, 5 6, 7 8))",
    ),
    "curvepolygon": (
        "01 0A000000 02000000 01 08000000 05000000"
        "0000000000000000 0000000000000000 0000000000001040 0000000000000000"
        "0000000000001040 0000000000001040 0000000000000000 0000000000001040"
        "0000000000000000 0000000000000000 01 02000000 04000000" + HOLE_LE,
        "CURVEPOLYGON (CIRCULARSTRING (0 0, 4 0, 4 4, 0 4, 0 0), (1 1, 2 1, 1 2, 1 1))",
    ),
    "curvepolygon of a compoundcurve": (
        "01 0A000000 01000000 01 09000000 02000000 01 08000000 03000000"
        "0000000000000000 0000000000000000 000000000000F03F 000000000000F03F"
        "0000000000000040 0000000000000000 01 02000000 02000000"
        "0000000000000040 0000000000000000 0000000000000000 0000000000000000",
        "CURVEPOLYGON (COMPOUNDCURVE (CIRCULARSTRING (0 0, 1 1, 2 0), (2 0, 0 0)))",
    ),
    "point empty": ("01 01000000" + NAN_LE + NAN_LE, "POINT EMPTY"),
    "point z empty": ("00 000003E9" + NAN_BE * 3, "POINT Z EMPTY"),
    "point zm empty ewkb": ("01 010000C0" + NAN_LE * 4, "POINT ZM EMPTY"),
    "linestring empty": ("01 02000000 00000000", "LINESTRING EMPTY"),
    "linestring m empty": ("01 D2070000 00000000", "LINESTRING M EMPTY"),
    "polygon empty": ("00 00000003 00000000", "POLYGON EMPTY"),
    "multipoint empty": ("01 04000000 00000000", "MULTIPOINT EMPTY"),
    "multipolygon z empty": ("01 EE030000 00000000", "MULTIPOLYGON Z EMPTY"),
    "collection empty": ("01 07000000 00000000", "GEOMETRYCOLLECTION EMPTY"),
    "curvepolygon empty": ("01 0A000000 00000000", "CURVEPOLYGON EMPTY"),
    "multipoint with an empty point": (
        "01 04000000 02000000 01 01000000" + NAN_LE + NAN_LE + "01 01000000" + ONE_TWO_LE,
        "MULTIPOINT (EMPTY, (1 2))",
    ),
    "negative zero keeps its sign": (
        "01 01000000 0000000000000080 0000000000000000",
        "POINT (-0 0)",
    ),
    "shortest exact numbers": (
        "01 02000000 03000000 9A9999999999B93F 48AFBC9AF2D77A3E 0080E03779C34143"
        "0100000000000000 00000054346F9D41 00000000000004C0",
        "LINESTRING (0.1 1e-07, 1e+16 5e-324, 123456789 -2.5)",
    ),
}


@pytest.mark.parametrize(("hex_wkb", "expected"), EXAMPLES.values(), ids=EXAMPLES.keys())
def test_wkb_is_written_as_wkt(hex_wkb: str, expected: str) -> None:
    assert wkb_to_wkt(wkb(hex_wkb)) == expected
    assert wkb_to_wkt(memoryview(wkb(hex_wkb))) == expected


LINESTRING_2 = "01 02000000 02000000"
BAD = {
    "empty input": ("", "truncated"),
    "truncated point": ("01 01000000 000000000000F03F", "truncated"),
    "truncated header": ("01 0100", "truncated"),
    "trailing bytes": ("01 01000000" + ONE_TWO_LE + "00", "1 trailing bytes"),
    "unknown type 17": ("01 11000000" + ONE_TWO_LE, "unknown WKB geometry type 17"),
    "unknown type 0": ("01 00000000", "unknown WKB geometry type 0"),
    "iso thousands past zm": ("01 A10F0000" + ONE_TWO_LE, "unknown WKB geometry type 4001"),
    "ewkb flag on an iso code": ("01 E9030080" + ONE_TWO_LE, "unknown WKB geometry type"),
    "bad byte order": ("02 01000000" + ONE_TWO_LE, "byte order 2"),
    "bad nested byte order": ("01 04000000 01000000 07 01000000" + ONE_TWO_LE, "byte order 7"),
    "huge point count": ("01 02000000 FFFFFFFF" + ONE_TO_FOUR_LE, "count 4294967295"),
    "huge ring count": ("01 03000000 FFFFFF7F", "count 2147483647"),
    "huge member count": ("01 07000000 10000000" + ONE_TWO_LE, "count 16"),
    "nan inside a linestring": (LINESTRING_2 + ONE_TWO_LE + NAN_LE + NAN_LE, "not finite"),
    "partly nan point": ("01 01000000 000000000000F03F" + NAN_LE, "not finite"),
    "infinite point": ("01 01000000 000000000000F07F 0000000000000000", "not finite"),
    "negative infinity": (LINESTRING_2 + ONE_TWO_LE + "000000000000F0FF" * 2, "not finite"),
    "linestring in a multipoint": (
        "01 04000000 01000000" + LINESTRING_2 + ONE_TO_FOUR_LE,
        "MULTIPOINT cannot hold a LINESTRING",
    ),
    "2d point in a multipoint z": (
        "01 EC030000 01000000 01 01000000" + ONE_TWO_LE,
        "MULTIPOINT Z cannot hold a POINT",
    ),
    "point in a compoundcurve": (
        "01 09000000 01000000 01 01000000" + ONE_TWO_LE,
        "COMPOUNDCURVE cannot hold a POINT",
    ),
    "absurd nesting": ("01 07000000 01000000" * 100 + "01 07000000 00000000", "nested deeper"),
}


@pytest.mark.parametrize(("hex_wkb", "message"), BAD.values(), ids=BAD.keys())
def test_malformed_wkb_is_refused(hex_wkb: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        wkb_to_wkt(wkb(hex_wkb))


# geography::Point(47.651, -122.349, 4326) as CAST(STSrid AS binary(4)) + AsBinaryZM().
SEATTLE = "000010E6 01 01000000 7593180456965EC0 17D9CEF753D34740"
POINT_Z = "01 E9030000 000000000000F03F 0000000000000040 0000000000000840"
SPATIAL = {
    "geography 4326 2d is plain wkt": (SEATTLE, True, "POINT (-122.349 47.651)"),
    "geometry 4326 keeps its srid": (SEATTLE, False, "SRID=4326;POINT (-122.349 47.651)"),
    "geography with z": ("000010E6" + POINT_Z, True, "SRID=4326;POINT Z (1 2 3)"),
    "geography in another srid": (
        "000010AD 01 01000000" + ONE_TWO_LE,
        True,
        "SRID=4269;POINT (1 2)",
    ),
    "geometry srid 0": ("00000000 01 01000000" + ONE_TWO_LE, False, "SRID=0;POINT (1 2)"),
    "negative srid": ("FFFFFFFF 01 01000000" + ONE_TWO_LE, False, "SRID=-1;POINT (1 2)"),
    "z member of a 2d collection": (
        "000010E6 01 07000000 01000000" + POINT_Z,
        True,
        "SRID=4326;GEOMETRYCOLLECTION (POINT Z (1 2 3))",
    ),
    "m on an empty geography": (
        "000010E6 01 D1070000" + NAN_LE * 3,
        True,
        "SRID=4326;POINT M EMPTY",
    ),
}


@pytest.mark.parametrize(("hex_raw", "geography", "expected"), SPATIAL.values(), ids=SPATIAL.keys())
def test_spatial_text(hex_raw: str, geography: bool, expected: str) -> None:
    assert spatial_text(wkb(hex_raw), geography=geography) == expected
    assert spatial_text(memoryview(wkb(hex_raw)), geography=geography) == expected


@pytest.mark.parametrize("raw", [b"", b"\x00\x00\x10"])
def test_spatial_text_needs_an_srid(raw: bytes) -> None:
    with pytest.raises(ValueError, match="4-byte SRID"):
        spatial_text(raw, geography=True)


def test_spatial_text_refuses_malformed_wkb() -> None:
    with pytest.raises(ValueError, match="truncated"):
        spatial_text(wkb("000010E6"), geography=True)


@pytest.mark.parametrize(
    ("text", "srid"),
    [
        ("SRID=4326;POINT (1 2)", 4326),
        ("SRID=0;POINT EMPTY", 0),
        ("SRID=-1;LINESTRING (1 2, 3 4)", -1),
        ("POINT (1 2)", None),
        ("SRID=4326POINT (1 2)", None),
        ("SRID=;POINT (1 2)", None),
        ("SRID=abc;POINT (1 2)", None),
        (" SRID=4326;POINT (1 2)", None),
        ("SRID=٤٣;POINT (1 2)", None),
        ("", None),
    ],
)
def test_ewkt_srid(text: str, srid: int | None) -> None:
    assert ewkt_srid(text) == srid
    assert EWKT_PREFIX == "SRID="


# --- Property tests: an encoder of the test's own, random shapes ---------------------------

NAMES = {
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
MEMBER_KINDS = {4: [1], 5: [2], 6: [3], 9: [2, 8], 10: [2, 8, 9]}
LEAF_KINDS = [1, 2, 3, 8]
NUMBER = re.compile(r"-?[0-9][0-9.e+-]*")
COORDINATES = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [-0.0, 0.0, 5e-324, -5e-324, 2.225073858507201e-308, 1e16, 1e-7, 1.7976931348623157e308]
)


@dataclass
class Shape:
    kind: int
    z: bool
    m: bool
    big: bool
    ewkb: bool
    srid: int | None  # an EWKB SRID inside the WKB
    points: list[tuple[float, ...]] | None = None  # a Point: None is EMPTY (NaNs)
    rings: list[list[tuple[float, ...]]] = field(default_factory=list)
    members: list[Shape] = field(default_factory=list)

    @property
    def dims(self) -> int:
        return 2 + self.z + self.m


def encode(s: Shape) -> bytes:
    e = ">" if s.big else "<"
    if s.ewkb:
        code = s.kind | (0x80000000 if s.z else 0) | (0x40000000 if s.m else 0)
        code |= 0x20000000 if s.srid is not None else 0
    else:
        code = s.kind + 1000 * (s.z + 2 * s.m)
    out = struct.pack(e + "BI", 0 if s.big else 1, code)
    if s.ewkb and s.srid is not None:
        out += struct.pack(e + "I", s.srid)

    def point_list(points: list[tuple[float, ...]]) -> bytes:
        flat = [c for p in points for c in p]
        return struct.pack(f"{e}I{len(flat)}d", len(points), *flat)

    if s.kind == 1:
        coords = s.points[0] if s.points else (math.nan,) * s.dims
        return out + struct.pack(f"{e}{s.dims}d", *coords)
    if s.kind in (2, 8):
        return out + point_list(s.rings[0])
    if s.kind == 3:
        return out + struct.pack(e + "I", len(s.rings)) + b"".join(map(point_list, s.rings))
    return out + struct.pack(e + "I", len(s.members)) + b"".join(map(encode, s.members))


def coordinates(s: Shape) -> list[float]:
    """Every coordinate of ``s`` in the order its WKT writes them."""
    if s.kind == 1:
        return list(s.points[0]) if s.points else []
    if s.kind in (2, 3, 8):
        return [c for ring in s.rings for p in ring for c in p]
    return [c for member in s.members for c in coordinates(member)]


def tag(s: Shape) -> str:
    return NAMES[s.kind] + {(0, 0): "", (1, 0): " Z", (0, 1): " M", (1, 1): " ZM"}[s.z, s.m]


def skeleton(s: Shape, named: bool = True) -> str:
    """The WKT ``s`` should have, each number written ``#``."""
    position = " ".join(["#"] * s.dims)

    def listed(parts: list[str]) -> str:
        return "(" + ", ".join(parts) + ")" if parts else "EMPTY"

    if s.kind == 1:
        body = f"({position})" if s.points else "EMPTY"
    elif s.kind in (2, 8):
        body = listed([position] * len(s.rings[0]))
    elif s.kind == 3:
        body = listed([listed([position] * len(ring)) for ring in s.rings])
    else:
        body = listed(
            [
                skeleton(
                    member,
                    named=s.kind == 7 or (s.kind in (9, 10) and member.kind != 2),
                )
                for member in s.members
            ]
        )
    return f"{tag(s)} {body}" if named else body


def any_z_or_m(s: Shape) -> bool:
    return s.z or s.m or any(map(any_z_or_m, s.members))


@st.composite
def shapes(
    draw: st.DrawFn,
    kinds: list[int] | None = None,
    dims: tuple[bool, bool] | None = None,
    depth: int = 0,
) -> Shape:
    kind = draw(st.sampled_from(kinds or (list(NAMES) if depth < 3 else LEAF_KINDS)))
    z, m = dims if dims is not None else (draw(st.booleans()), draw(st.booleans()))
    ewkb = draw(st.booleans())
    srid = draw(st.none() | st.integers(0, 2**32 - 1)) if ewkb else None
    s = Shape(kind, z, m, big=draw(st.booleans()), ewkb=ewkb, srid=srid)
    position = st.tuples(*[COORDINATES] * s.dims)
    if kind == 1:
        s.points = draw(st.none() | st.lists(position, min_size=1, max_size=1))
    elif kind in (2, 8):
        s.rings = [draw(st.lists(position, max_size=4))]
    elif kind == 3:
        s.rings = draw(st.lists(st.lists(position, max_size=4), max_size=3))
    else:
        # A collection's members may have dimensions of their own; other containers' not.
        if kind == 7:
            member = shapes(None, None, depth + 1)
        else:
            member = shapes(MEMBER_KINDS[kind], (z, m), depth + 1)
        s.members = draw(st.lists(member, max_size=3))
    return s


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


@settings(max_examples=200, deadline=None)
@given(shapes())
def test_every_coordinate_reads_back_exactly(shape: Shape) -> None:
    text = wkb_to_wkt(encode(shape))
    tokens = NUMBER.findall(text)
    assert [bits(float(t)) for t in tokens] == [bits(c) for c in coordinates(shape)]
    assert not any(t.endswith(".0") for t in tokens)
    assert text.startswith(tag(shape) + " ")
    assert NUMBER.sub("#", text) == skeleton(shape)


@settings(max_examples=200, deadline=None)
@given(shapes(), st.integers(-(2**31), 2**31 - 1) | st.just(4326), st.booleans())
def test_srid_is_kept_unless_bigquery_takes_the_plain_wkt(
    shape: Shape, srid: int, geography: bool
) -> None:
    wkt = wkb_to_wkt(encode(shape))
    text = spatial_text(struct.pack(">i", srid) + encode(shape), geography=geography)
    if geography and srid == 4326 and not any_z_or_m(shape):
        assert text == wkt
        assert ewkt_srid(text) is None
    else:
        assert text == f"SRID={srid};{wkt}"
        assert ewkt_srid(text) == srid


@settings(max_examples=200, deadline=None)
@given(st.lists(COORDINATES, min_size=1, max_size=8))
def test_numbers_are_shortest_exact_and_plain(values: list[float]) -> None:
    raw = struct.pack(f"<BII{2 * len(values)}d", 1, 2, len(values), *values, *values)
    tokens = NUMBER.findall(wkb_to_wkt(raw))
    assert [bits(float(t)) for t in tokens] == [bits(v) for v in values * 2]
    for token, value in zip(tokens, values * 2, strict=True):
        assert token == repr(value).removesuffix(".0")
