"""Rows encoded for the Storage Write API from a BigQuery schema built at run time."""

from __future__ import annotations

import pytest
from google.cloud.bigquery import SchemaField

from ctstream.bigquery.storage_write import RowEncoder

FIELDS = [
    SchemaField("id", "INT64"),
    SchemaField("name", "STRING"),
    SchemaField("price", "NUMERIC"),
    SchemaField("ratio", "FLOAT64"),
    SchemaField("ok", "BOOL"),
    SchemaField("blob", "BYTES"),
    SchemaField("day", "DATE"),
    SchemaField("at", "TIMESTAMP"),
    SchemaField("local", "DATETIME"),
]


def decode(encoder: RowEncoder, data: bytes) -> dict[str, object]:
    message = encoder._class()
    message.ParseFromString(data)
    return {f.name: v for f, v in message.ListFields()}


def test_values_are_converted_to_what_the_api_accepts() -> None:
    encoder = RowEncoder(FIELDS)
    row = {
        "id": "9007199254740993",  # bigger than a double holds exactly
        "name": "x",
        "price": "12.50",
        "ratio": "NaN",
        "ok": True,
        "blob": "AAEC",
        "day": "1970-01-11",
        "at": "1970-01-01T00:00:01.5Z",
        "local": "2026-11-22 10:00:00",
        "gone": None,
    }
    values = decode(encoder, encoder.encode(row))
    assert values["id"] == 9007199254740993
    assert values["price"] == "12.50"
    assert values["ratio"] != values["ratio"]  # NaN
    assert values["blob"] == b"\x00\x01\x02"
    assert values["day"] == 10
    assert values["at"] == 1_500_000
    assert values["local"] == "2026-11-22T10:00:00"


def test_nulls_are_left_out_and_unknown_types_refused() -> None:
    encoder = RowEncoder(FIELDS)
    assert decode(encoder, encoder.encode({"id": 1, "name": None})) == {"id": 1}
    with pytest.raises(ValueError, match="RECORD cannot be written"):
        RowEncoder([SchemaField("nested", "RECORD", fields=[SchemaField("a", "STRING")])])
