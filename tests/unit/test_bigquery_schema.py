"""Source types → BigQuery types, table schemas, and row validation before sending."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud.bigquery import SchemaField

from ctstream.bigquery.schema import (
    METADATA_FIELDS,
    RowValidator,
    _check_value,
    change_row,
    payload_row,
    table_schema,
)
from ctstream.models import METADATA_COLUMNS, ChangeEvent, ColumnSpec, TableSpec, unique_id
from ctstream.models.change_event import parse_payload
from ctstream.models.column_types import bigquery_type


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        # SQLite declared types (affinity rules plus the date/bool names apps use)
        ("INTEGER", "INT64"),
        ("BIGINT", "INT64"),
        ("int", "INT64"),
        ("UNSIGNED BIG INT", "INT64"),
        ("TEXT", "STRING"),
        ("VARCHAR(20)", "STRING"),
        ("CLOB", "STRING"),
        ("REAL", "FLOAT64"),
        ("DOUBLE", "FLOAT64"),
        ("DOUBLE PRECISION", "FLOAT64"),
        ("FLOAT", "FLOAT64"),
        ("BLOB", "BYTES"),
        ("NUMERIC", "NUMERIC"),
        ("DECIMAL(10,2)", "NUMERIC"),
        ("DATETIME", "DATETIME"),
        ("DATE", "DATE"),
        ("BOOLEAN", "BOOL"),
        ("  integer  ", "INT64"),
        # SQL Server type names
        ("bit", "BOOL"),
        ("tinyint", "INT64"),
        ("smallint", "INT64"),
        ("bigint", "INT64"),
        ("money", "NUMERIC"),
        ("smallmoney", "NUMERIC"),
        ("decimal(38,10)", "BIGNUMERIC"),
        ("decimal(38, 0)", "BIGNUMERIC"),
        ("decimal(18,2)", "NUMERIC"),
        ("numeric(38,9)", "NUMERIC"),
        ("decimal(30,9)", "NUMERIC"),
        ("decimal(38,8)", "BIGNUMERIC"),  # 30 integer digits: more than NUMERIC holds
        ("decimal(29,0)", "NUMERIC"),
        ("decimal(10,10)", "BIGNUMERIC"),
        ("datetime", "DATETIME"),
        ("datetime2", "DATETIME"),
        ("datetime2(7)", "STRING"),
        ("datetime2(6)", "DATETIME"),
        ("datetime2(0)", "DATETIME"),
        ("smalldatetime", "DATETIME"),
        ("datetimeoffset", "STRING"),
        ("datetimeoffset(7)", "STRING"),
        ("datetimeoffset(0)", "STRING"),
        ("time(7)", "STRING"),
        ("time(3)", "TIME"),
        ("uniqueidentifier", "STRING"),
        ("varbinary(max)", "BYTES"),
        ("binary(16)", "BYTES"),
        ("image", "BYTES"),
        ("nvarchar(50)", "STRING"),
        ("nvarchar(max)", "STRING"),
        ("nchar(3)", "STRING"),
        ("ntext", "STRING"),
        ("xml", "STRING"),
        ("float", "FLOAT64"),
        ("real", "FLOAT64"),
    ],
)
def test_bigquery_type(declared: str, expected: str) -> None:
    assert bigquery_type(declared) == expected


def test_bigquery_type_is_case_insensitive() -> None:
    for a, b in [("VARCHAR(20)", "varchar(20)"), ("DECIMAL(38,10)", "decimal(38,10)")]:
        assert bigquery_type(a) == bigquery_type(b)


def test_sql_server_rowversion_is_bytes() -> None:
    assert bigquery_type("rowversion") == "BYTES"


# --- table_schema ----------------------------------------------------------------------


def spec() -> TableSpec:
    return TableSpec(
        name="dbo.items",
        schema="dbo",
        table="items",
        columns=(
            ColumnSpec("id", "int", nullable=False, key_ordinal=1),
            ColumnSpec("my name", "nvarchar(50)"),
            ColumnSpec("price", "decimal(18,2)"),
        ),
    )


def test_table_schema_columns_then_metadata() -> None:
    fields = table_schema(spec())
    names = [f.name for f in fields]
    assert names[:3] == ["id", "my_name", "price"]
    assert [f.field_type for f in fields[:3]] == ["INT64", "STRING", "NUMERIC"]
    assert tuple(names[3:]) == METADATA_COLUMNS
    assert names[3] == "message_unique_id"
    assert names[-1] == "bigquery_insert_time"
    assert tuple(fields[3:]) == METADATA_FIELDS


def test_metadata_fields_match_the_event_metadata_columns() -> None:
    assert tuple(f.name for f in METADATA_FIELDS) == METADATA_COLUMNS


# --- RowValidator ----------------------------------------------------------------------

FIELDS = [
    SchemaField("id", "INT64", mode="REQUIRED"),
    SchemaField("name", "STRING"),
    SchemaField("score", "FLOAT64"),
    SchemaField("price", "NUMERIC"),
    SchemaField("big", "BIGNUMERIC"),
    SchemaField("ok", "BOOL"),
    SchemaField("data", "BYTES"),
    SchemaField("born", "DATE"),
    SchemaField("at", "DATETIME"),
    SchemaField("ts", "TIMESTAMP"),
    SchemaField("t", "TIME"),
]

VALID_ROW: dict[str, Any] = {
    "id": 1,
    "name": 'x, "y" ] 日本',
    "score": 1.5,
    "price": "12.50",
    "big": "123456789012345678901234567890.0123456789",
    "ok": True,
    "data": "AAEC/w==",
    "born": "2024-02-29",
    "at": "2024-01-02T03:04:05.000000",
    "ts": "2024-01-02T03:04:05.000000Z",
    "t": "23:59:59",
}


def problems(row: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p.column, p.reason) for p in RowValidator(FIELDS).problems(row)]


def test_valid_row_has_no_problems() -> None:
    assert problems(VALID_ROW) == []


def test_only_required_column_set() -> None:
    assert problems({"id": 7}) == []


@pytest.mark.parametrize("column", [f.name for f in FIELDS if f.name != "id"])
def test_none_is_fine_for_nullable(column: str) -> None:
    assert problems({**VALID_ROW, column: None}) == []


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("id", "42"),
        ("id", -(2**63)),
        ("id", 2**63 - 1),
        ("score", 3),
        ("score", "NaN"),
        ("score", "-Infinity"),
        ("price", 3),
        ("price", "-0.000000001"),
        ("ok", False),
        ("ok", 1),
        ("ok", "true"),
        ("data", ""),
        ("at", "2024-01-02 03:04:05"),
        ("ts", "2024-01-02T03:04:05+02:00"),
    ],
)
def test_accepted_values(column: str, value: Any) -> None:
    assert problems({**VALID_ROW, column: value}) == []


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("id", "abc", "integer"),
        ("id", True, "integer"),
        ("id", False, "integer"),
        ("id", 1.0, "integer"),
        ("id", 2**63, "range"),
        ("id", -(2**63) - 1, "range"),
        ("id", str(2**64), "range"),
        ("name", 5, "text"),
        ("score", "fast", "number"),
        ("score", True, "bool"),
        ("price", "12,50", "decimal"),
        ("price", True, "decimal"),
        ("ok", "yes", "boolean"),
        ("ok", 2, "boolean"),
        ("data", "not base64!", "base64"),
        ("data", "AAE", "base64"),
        ("data", 5, "base64"),
        ("born", "2024-02-30", "date"),
        ("at", "yesterday", "datetime"),
        ("at", "2024-13-01T00:00:00", "datetime"),
        ("at", 1700000000, "datetime"),
        ("ts", "noon", "timestamp"),
        ("t", "25:00", "time"),
    ],
)
def test_rejected_values(column: str, value: Any, reason: str) -> None:
    found = problems({**VALID_ROW, column: value})
    assert len(found) == 1
    assert found[0][0] == column
    assert reason in found[0][1]


def test_unknown_column() -> None:
    found = problems({**VALID_ROW, "nope": 1})
    assert found == [("nope", "no such column in the BigQuery table")]


def test_missing_required() -> None:
    row = {k: v for k, v in VALID_ROW.items() if k != "id"}
    found = problems(row)
    assert len(found) == 1
    assert found[0][0] == "id"
    assert "required" in found[0][1]


def test_null_required() -> None:
    found = problems({**VALID_ROW, "id": None})
    assert [c for c, _ in found] == ["id"]
    assert "required" in found[0][1]


def test_several_problems_all_reported() -> None:
    found = problems({"name": 1, "ok": "maybe", "zzz": 0})
    assert {c for c, _ in found} == {"name", "ok", "zzz", "id"}


def test_problem_str_names_column() -> None:
    (problem,) = RowValidator(FIELDS).problems({**VALID_ROW, "id": "abc"})
    assert str(problem).startswith("column 'id': ")


def test_validator_on_a_full_table_schema() -> None:
    validator = RowValidator(table_schema(spec()))
    row = {
        "id": 1,
        "my_name": "a",
        "price": "1.00",
        "message_unique_id": '["dbo.items",[1],5]',
        "table_name": "dbo.items",
        "changetrack_interval": 1.0,
        "changetrack_start_time": "2024-01-01T00:00:00.000000Z",
        "changetrack_type": "I",
        "changetrack_ver": 5,
    }
    assert validator.problems(row) == []
    missing = {k: v for k, v in row.items() if k != "changetrack_ver"}
    assert [p.column for p in validator.problems(missing)] == ["changetrack_ver"]


@pytest.mark.parametrize(
    ("source_type", "precision", "scale", "expected"),
    [
        ("decimal", 18, 2, "NUMERIC"),
        ("numeric", 38, 0, "BIGNUMERIC"),  # 38 integer digits: more than NUMERIC's 29
        ("decimal", 20, 12, "BIGNUMERIC"),  # 12 decimals: more than NUMERIC's 9
        ("money", 19, 4, "NUMERIC"),
        ("datetimeoffset", 34, 7, "STRING"),  # the offset: no BigQuery type keeps it
        ("datetimeoffset", 26, 0, "STRING"),
        ("datetime2", 27, 7, "STRING"),  # 100 ns: DATETIME holds microseconds
        ("datetime2", 26, 6, "DATETIME"),
        ("datetime2", 19, 0, "DATETIME"),
        ("uniqueidentifier", None, None, "STRING"),
        ("varbinary", None, None, "BYTES"),
        ("bit", None, None, "BOOL"),
        ("geography", None, None, "GEOGRAPHY"),
        ("geometry", None, None, "STRING"),
        ("hierarchyid", None, None, "STRING"),
        ("tinyint", 3, 0, "INT64"),
        ("float", 53, None, "FLOAT64"),
        ("real", 24, None, "FLOAT64"),
        ("smalldatetime", None, None, "DATETIME"),
        ("time", 16, 7, "STRING"),
        ("time", 15, 6, "TIME"),
    ],
)
def test_sql_server_catalog_types(
    source_type: str, precision: int | None, scale: int | None, expected: str
) -> None:
    assert bigquery_type(source_type, precision, scale) == expected


@pytest.mark.parametrize(
    ("kind", "value", "ok"),
    [
        ("NUMERIC", "12345678901234567890123456789.123456789", True),
        ("NUMERIC", "123456789012345678901234567890", False),  # 30 integer digits
        ("NUMERIC", "1.1234567891", False),  # 10 decimals
        ("NUMERIC", "1.1000000000", True),  # trailing zeros are not precision
        ("BIGNUMERIC", "1.1234567891", True),
        ("NUMERIC", "NaN", False),
        ("GEOGRAPHY", "POINT(1 2)", True),
        ("GEOGRAPHY", 3, False),
    ],
)
def test_numeric_and_geography_values(kind: str, value: object, ok: bool) -> None:
    problems = RowValidator([SchemaField("c", kind)]).problems({"c": value})
    assert (problems == []) is ok, problems


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("SRID=4269;POINT (1 2)", "a shape in SRID 4269 or with Z or M values"),
        ("SRID=4326;POINT Z (1 2 3)", "a shape in SRID 4326 or with Z or M values"),
        ({"mssql_shape": "AAAQ5g=="}, "expected WKT text, got a SQL Server shape with no exact"),
    ],
)
def test_a_shape_geography_cannot_hold_is_refused_with_why(value: object, reason: str) -> None:
    """SQL Server shapes outside 2-D WGS 84 arrive as EWKT (source/spatial_values.py):
    parked with the reason, never written as another shape."""
    [problem] = RowValidator([SchemaField("g", "GEOGRAPHY")]).problems({"g": value})
    why = problem.reason
    assert problem.column == "g" and why.startswith(reason), why
    if isinstance(value, str):
        assert "WGS 84 (SRID 4326)" in why


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("9" * 38 + "." + "9" * 38, True),  # BIGNUMERIC's full width, beyond Decimal's 28
        ("9" * 39, False),
        ("0." + "0" * 37 + "1", True),
        ("0." + "0" * 38 + "1", False),
        ("0", True),
        ("-0.000", True),
        ("1E+37", True),
        ("1E+38", False),
    ],
)
def test_bignumeric_limits(value: str, ok: bool) -> None:
    problems = RowValidator([SchemaField("c", "BIGNUMERIC")]).problems({"c": value})
    assert (problems == []) is ok, problems


SAMPLES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -(2**63),
    -(2**63) - 1,
    2**63 - 1,
    2**64,
    1.5,
    float("nan"),
    "",
    "x",
    "NaN",
    "true",
    "1",
    "12.5",
    "AAE=",
    "2024-02-29",
    "23:59:59",
    "2026-11-27T12:00:00.123456Z",
    "2026-11-27 12:00:00",
    "2026-13-27T12:00:00Z",
    [1],
    {"a": 1},
]
KINDS = [
    "STRING",
    "INT64",
    "FLOAT64",
    "NUMERIC",
    "BIGNUMERIC",
    "GEOGRAPHY",
    "BOOL",
    "BYTES",
    "DATE",
    "DATETIME",
    "TIMESTAMP",
    "TIME",
]


@pytest.mark.parametrize("kind", KINDS)
def test_the_validators_shortcut_for_common_types_agrees_with_the_full_check(kind: str) -> None:
    validator = RowValidator([SchemaField("c", kind)])
    for value in [*SAMPLES, *SAMPLES]:  # the second time, remembered verdicts
        full = _check_value(kind, value)
        found = validator.problems({"c": value})
        assert [p.reason for p in found] == ([] if full is None else [full]), (kind, value)


def test_remembered_verdicts_stay_bounded() -> None:
    validator = RowValidator([SchemaField("t", "TIMESTAMP")])
    for second in range(10_000):
        stamp = f"2026-11-27T{second // 3600:02}:{second // 60 % 60:02}:{second % 60:02}Z"
        assert validator.problems({"t": stamp}) == []
    assert validator.problems({"t": "yesterday"})[0].column == "t"
    assert len(validator._text_verdicts) <= 4096


def test_a_payload_and_its_event_make_the_same_row() -> None:
    change = ChangeEvent(
        unique_id("odd table", [3], 9),
        "odd table",
        2,  # an int interval, as a foreign producer might write it
        "2026-11-27T00:00:00.000000Z",
        "U",
        9,
        [3],
        {"id": 3, "bad name!": "x", "gone": None},
    )
    names = {"id": "id", "bad name!": "bad_name_"}
    payload = parse_payload(change.to_bytes())
    row = payload_row(payload, "2026-11-27T00:00:01.000000Z", names)
    assert row == change_row(change, "2026-11-27T00:00:01.000000Z", names)
    assert row["bad_name_"] == "x" and row["gone"] is None
    assert type(row["changetrack_interval"]) is float
    assert set(row) == {"id", "bad_name_", "gone", *METADATA_COLUMNS}


def test_a_row_of_own_names_is_made_from_the_payloads_dict_and_others_are_copied() -> None:
    insert_time = "2026-11-27T00:00:01.000000Z"
    change = ChangeEvent(
        unique_id("items", [3], 9), "items", 1.0, "2026-11-27T00:00:00Z", "U", 9, [3],
        {"id": 3, "n": "x"},
    )  # fmt: skip
    names = {"id": "id", "n": "n", "bad name!": "bad_name_"}
    own = {"id", "n"}
    payload = parse_payload(change.to_bytes())
    source_row = payload["row"]
    row = payload_row(payload, insert_time, names, own)
    assert row is source_row  # reused, not copied
    assert row == change_row(change, insert_time, names)

    renamed = parse_payload(
        ChangeEvent(
            change.message_unique_id, "items", 1.0, "2026-11-27T00:00:00Z", "U", 9, [3],
            {"id": 3, "bad name!": "y", "unknown": 1},
        ).to_bytes()
    )  # fmt: skip
    before = dict(renamed["row"])
    row = payload_row(renamed, insert_time, names, own)
    assert row is not renamed["row"] and renamed["row"] == before  # the payload is untouched
    assert (row["bad_name_"], row["unknown"], row["id"]) == ("y", 1, 3)
