"""Fetched change rows → SourceChange: every value normalised, deletes with their key only."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import struct

from ctstream.models import ColumnSpec, TableSpec
from ctstream.models.values import normalise
from ctstream.source.changes import SourceChange, rows_to_changes
from ctstream.source.dialects.mssql import MssqlDialect

SPEC = TableSpec(
    "orders",
    None,
    "orders",
    (
        ColumnSpec("region", "TEXT", nullable=False, key_ordinal=1),
        ColumnSpec("id", "INTEGER", nullable=False, key_ordinal=2),
        ColumnSpec("total", "DECIMAL(10,2)"),
        ColumnSpec("ratio", "REAL"),
        ColumnSpec("paid", "BOOLEAN"),
        ColumnSpec("blob", "BLOB"),
        ColumnSpec("at", "DATETIME"),
    ),
)
VALUES = ("total", "ratio", "paid", "blob", "at")


def test_every_value_is_normalised_as_normalise_does() -> None:
    naive = dt.datetime(2026, 11, 27, 1, 2)  # noqa: DTZ001 - ODBC's DATETIME values are naive
    odd = [decimal.Decimal("12.50"), math.nan, True, b"\x00\x01", naive]
    plain = [None, 0.25, False, None, None]
    rows = [("U", 7, "eu", 1, *odd), ("I", 8, "us", 2, *plain)]
    changes = rows_to_changes(rows, SPEC, 2, VALUES)
    assert changes[0] == SourceChange(
        "U",
        7,
        ("eu", 1),
        {"region": "eu", "id": 1} | {n: normalise(v) for n, v in zip(VALUES, odd, strict=True)},
    )
    assert changes[0].row["ratio"] == "NaN" and changes[0].row["total"] == "12.50"
    assert changes[1].row == {"region": "us", "id": 2} | dict(zip(VALUES, plain, strict=True))
    assert [type(v) for v in changes[1].row.values()] == [
        str,
        int,
        type(None),
        float,
        bool,
        type(None),
        type(None),
    ]


def test_a_delete_carries_its_key_only() -> None:
    (change,) = rows_to_changes([("D", 9, "eu", 3, None, None, None, None, None)], SPEC, 2, VALUES)
    assert change == SourceChange("D", 9, ("eu", 3), {"region": "eu", "id": 3})


def test_a_key_value_is_normalised_too() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5)  # noqa: DTZ001 - as ODBC returns DATETIME
    spec = TableSpec("t", None, "t", (ColumnSpec("at", "DATETIME", key_ordinal=1),))
    (change,) = rows_to_changes([("I", 1, when)], spec, 1, ())
    assert change.key == (normalise(when),) and change.row == {"at": normalise(when)}


def test_infinite_floats_are_normalised_and_finite_ones_kept() -> None:
    rows = [
        ("I", 1, "eu", n, None, ratio, None, None, None)
        for n, ratio in enumerate([math.inf, -math.inf, math.nan, -0.0, 1e308])
    ]
    ratios = [c.row["ratio"] for c in rows_to_changes(rows, SPEC, 2, VALUES)]
    assert ratios[:3] == ["Infinity", "-Infinity", "NaN"]
    assert [(type(r), r) for r in ratios[3:]] == [(float, -0.0), (float, 1e308)]


def test_sql_server_shapes_are_converted_from_their_wkb() -> None:
    """The dialect's converts turn a shape's SRID + WKB into exact WKT; a shape with no
    WKT travels wrapped (its row is parked by the sink), a NULL stays NULL."""
    spec = TableSpec(
        "dbo.places",
        "dbo",
        "places",
        (
            ColumnSpec("id", "int", nullable=False, key_ordinal=1),
            ColumnSpec("where", "geography"),
            ColumnSpec("plan", "geometry"),
        ),
    )
    query = MssqlDialect().changes_query(spec)
    point = struct.pack(">i", 4326) + struct.pack("<BIdd", 1, 1, -122.349, 0.1 + 0.2)
    planar = struct.pack(">i", 0) + struct.pack("<BIddd", 1, 1001, 1.0, 2.0, 3.0)
    full_globe = struct.pack(">i", 4326)  # AsBinaryZM gave no WKB
    rows = [
        ("I", 1, 1, point, planar),
        ("U", 2, 2, None, full_globe),
        ("D", 3, 3, None, None),
    ]
    changes = rows_to_changes(rows, spec, 1, ("where", "plan"), query.converts)
    assert changes[0].row == {
        "id": 1,
        "where": "POINT (-122.349 0.30000000000000004)",
        "plan": "SRID=0;POINT Z (1 2 3)",
    }
    assert changes[1].row["where"] is None
    assert changes[1].row["plan"] == {"mssql_shape": base64.b64encode(full_globe).decode()}
    assert changes[2].row == {"id": 3}
