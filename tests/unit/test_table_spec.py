"""TableSpec: BigQuery names, key order, and refusing tables that cannot be carried."""

from __future__ import annotations

import re

import pytest

from ctstream.models import METADATA_COLUMNS, ColumnSpec, TableSpec, bq_identifier

_BQ_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def table(name: str, *columns: ColumnSpec) -> TableSpec:
    schema, _, short = name.rpartition(".")
    return TableSpec(name=name, schema=schema or None, table=short, columns=columns)


def key(name: str, ordinal: int = 1) -> ColumnSpec:
    return ColumnSpec(name, "int", nullable=False, key_ordinal=ordinal)


def col(name: str) -> ColumnSpec:
    return ColumnSpec(name, "text")


def test_bq_table_of_schema_qualified_name() -> None:
    assert table("dbo.items", key("id")).bq_table == "dbo_items"


def test_bq_table_of_plain_name() -> None:
    assert table("items", key("id")).bq_table == "items"


def test_bq_table_of_hostile_name_is_safe() -> None:
    bq = table('we"ird;tab', key("id")).bq_table
    assert _BQ_NAME.match(bq)
    assert bq == "we_ird_tab"


def test_topic_part() -> None:
    assert table("dbo.order lines", key("id")).topic_part == "dbo_order_lines"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("plain", "plain"),
        ("Mixed_Case9", "Mixed_Case9"),
        ("my column", "my_column"),
        ('we"ird', "we_ird"),
        ("it's", "it_s"),
        ("a`b", "a_b"),
        ("1st", "_1st"),
        ("9", "_9"),
        ("", "_"),
        ("x-y.z", "x_y_z"),
        ("café", "caf_"),
        ("; DROP TABLE x; --", "__DROP_TABLE_x____"),
    ],
)
def test_bq_identifier(name: str, expected: str) -> None:
    out = bq_identifier(name)
    assert out == expected
    assert _BQ_NAME.match(out)


def test_bq_identifier_is_at_most_300_chars() -> None:
    assert len(bq_identifier("x" * 1000)) == 300


def test_column_bq_name() -> None:
    assert ColumnSpec("my col", "text").bq_name == "my_col"


def test_key_columns_ordered_by_key_ordinal() -> None:
    spec = table(
        "t",
        col("v1"),
        key("b", 2),
        col("v2"),
        key("c", 3),
        key("a", 1),
    )
    assert [c.name for c in spec.key_columns] == ["a", "b", "c"]


def test_key_columns_empty_without_key() -> None:
    assert table("t", col("a")).key_columns == ()


def test_check_accepts_a_good_table() -> None:
    table("dbo.items", key("id"), col("name"), col("price")).check()


def test_check_refuses_no_primary_key() -> None:
    with pytest.raises(ValueError, match="no primary key") as info:
        table("dbo.items", col("a"), col("b")).check()
    msg = str(info.value)
    assert "'dbo.items'" in msg
    assert "add a primary key" in msg


@pytest.mark.parametrize("name", [*METADATA_COLUMNS, "ChangeTrack_Ver", "changetrack ver"])
def test_check_refuses_metadata_column_names(name: str) -> None:
    with pytest.raises(ValueError, match="metadata column") as info:
        table("items", key("id"), col(name)).check()
    msg = str(info.value)
    assert "'items'" in msg
    assert repr(name) in msg
    assert "rename" in msg


def test_check_refuses_metadata_name_on_key_column() -> None:
    with pytest.raises(ValueError, match="metadata column"):
        table("items", key("changetrack_ver")).check()


@pytest.mark.parametrize(
    ("first", "second"),
    [("a b", "a_b"), ("a-b", "a.b"), ("Name", "name"), ("x y", "X_Y"), ("é", "ü")],
)
def test_check_refuses_columns_mapping_to_same_bq_name(first: str, second: str) -> None:
    with pytest.raises(ValueError, match="both map") as info:
        table("dbo.t", key("id"), col(first), col(second)).check()
    msg = str(info.value)
    assert "'dbo.t'" in msg
    assert repr(first) in msg
    assert repr(second) in msg
    assert "rename one" in msg


def test_check_accepts_distinct_bq_names() -> None:
    table("t", key("id"), col("a b"), col("a_c"), col("ab")).check()


def test_topic_retention_by_kind() -> None:
    from ctstream.settings import TopicRetention
    from ctstream.streams.topics import TopicNames

    spec = TableSpec("dbo.items", "dbo", "items", ())
    retention = TopicNames("p").retention_of([spec], TopicRetention(raw=60.0))
    assert retention == {
        "p.dbo_items.raw": 60.0,
        "p.dbo_items.deduped": 7 * 86400.0,
        "p.errors": 30 * 86400.0,
        "p.poll-ticks": 86400.0,
    }
