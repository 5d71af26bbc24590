from __future__ import annotations

import pytest
from google.cloud.bigquery import SchemaField

from ctstream.bigquery.drift import reconcile
from ctstream.bigquery.schema import METADATA_FIELDS, table_schema
from ctstream.errors import SourceError
from ctstream.models import ColumnSpec, TableSpec

ID = ColumnSpec("id", "INTEGER", nullable=False, key_ordinal=1)


def spec(*columns: ColumnSpec) -> TableSpec:
    return TableSpec("items", None, "items", (ID, *columns))


def fields(*pairs: tuple[str, str]) -> list[SchemaField]:
    return [SchemaField("id", "INTEGER"), *(SchemaField(n, t) for n, t in pairs), *METADATA_FIELDS]


def test_no_drift_for_the_table_ctstream_made() -> None:
    s = spec(ColumnSpec("name", "TEXT"), ColumnSpec("price", "decimal(10,2)"))
    drift = reconcile(s, table_schema(s))
    assert drift.spec == s and drift.dropped == () and drift.retyped == () and drift.notes() == []


def test_a_compatible_type_change_keeps_the_column() -> None:
    # int → bigint and varchar(10) → varchar(20) keep their BigQuery types.
    s = spec(ColumnSpec("qty", "bigint"), ColumnSpec("name", "varchar(20)"))
    drift = reconcile(s, fields(("qty", "INT64"), ("name", "STRING")))
    assert drift.spec == s and drift.notes() == []


def test_a_dropped_column_is_reported_and_stays() -> None:
    drift = reconcile(
        spec(ColumnSpec("name", "TEXT")), fields(("name", "STRING"), ("note", "STRING"))
    )
    assert drift.dropped == ("note",)
    (note,) = drift.notes()
    assert "'note' is no longer in the source table" in note and "items.note" in note


def test_an_incompatible_type_change_writes_to_a_typed_column() -> None:
    drift = reconcile(spec(ColumnSpec("qty", "TEXT")), fields(("qty", "INTEGER")))
    (qty,) = (c for c in drift.spec.columns if c.name == "qty")
    assert qty.target == "qty__string" and qty.bq_name == "qty__string"
    assert drift.spec.targets == {"qty": "qty__string"}
    assert drift.retyped == (("qty", "INT64", "qty__string"),)
    assert drift.dropped == ()  # the old column still belongs to qty
    (note,) = drift.notes()
    assert "'qty' changed type" in note and "ctstream snapshot --table items" in note
    # The catalog's view of the table is unchanged, so the next poll does not loop.
    assert drift.spec.catalog_columns == spec(ColumnSpec("qty", "TEXT")).columns
    # Once the typed column exists, the same answer.
    again = reconcile(
        spec(ColumnSpec("qty", "TEXT")), fields(("qty", "INT64"), ("qty__string", "STRING"))
    )
    assert again.spec == drift.spec and again.dropped == ()


def test_a_type_changed_back_leaves_the_typed_column_reported_as_dropped() -> None:
    drift = reconcile(
        spec(ColumnSpec("qty", "INTEGER")), fields(("qty", "INT64"), ("qty__string", "STRING"))
    )
    assert drift.spec.targets == {} and drift.dropped == ("qty__string",)


def test_a_retyped_key_stops_the_table_with_what_to_do() -> None:
    s = TableSpec("items", None, "items", (ColumnSpec("id", "TEXT", key_ordinal=1),))
    with pytest.raises(SourceError, match=r"key column 'id' changed type.*ctstream snapshot"):
        reconcile(s, fields())


def test_a_typed_column_of_another_type_is_refused() -> None:
    with pytest.raises(SourceError, match="already INT64"):
        reconcile(
            spec(ColumnSpec("qty", "TEXT")), fields(("qty", "FLOAT"), ("qty__string", "INT64"))
        )
