"""The SQL of compaction parses as BigQuery SQL for any table and column names, and names
exactly the columns it is given (sqlglot's BigQuery dialect)."""

from __future__ import annotations

import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import exp

from ctstream.bigquery.compaction_sql import (
    daily_copy_sql,
    latest_view_sql,
    merge_sql,
    prune_sql,
    save_watermark_sql,
    time_travel_from_copies_sql,
)
from ctstream.models import ColumnSpec, TableSpec

_names = st.text(min_size=1, max_size=20).filter(lambda s: s.strip() != "")


def _spec(table: str, key: str, other: str) -> TableSpec:
    return TableSpec(
        table, None, table, (ColumnSpec(key, "INTEGER", False, 1), ColumnSpec(other, "TEXT"))
    )


def _columns(sql: str) -> set[str]:
    tree = sqlglot.parse_one(sql, read="bigquery")
    return {c.name for c in tree.find_all(exp.Column)}


@settings(max_examples=200)
@given(table=_names, key=_names, other=_names)
def test_any_names_give_well_formed_sql(table: str, key: str, other: str) -> None:
    spec = _spec(table, key, other)
    bq_key, bq_other = (c.bq_name for c in spec.columns)
    if bq_key == bq_other:
        return  # refused by TableSpec.check at start
    columns = [bq_key, bq_other, "changetrack_ver", "changetrack_type", "bigquery_insert_time"]
    merge = merge_sql(spec, columns, "p.d.t", "p.d.t_current")
    assert _columns(merge) <= {*columns, "_ctstream_rank"}
    assert bq_key in _columns(merge)
    view = latest_view_sql(spec, columns, "p.d.t", "p.d.t_current", "p.d.s", "p.d.c", 86400)
    assert _columns(view) >= {bq_key, "merged_to", "snapshot_version"}
    copy = daily_copy_sql(columns, "p.d.t_current", "p.d.t_daily")
    assert _columns(copy) <= set(columns)
    at = time_travel_from_copies_sql("p.d.t_at", spec, columns, "p.d.t", "p.d.t_daily", "p.d.s", 7)
    assert bq_key in _columns(at)
    for sql in (prune_sql(spec, "p.d.t_current", "p.d.s"), save_watermark_sql("p.d.c")):
        sqlglot.parse_one(sql, read="bigquery")


def test_the_view_bounds_the_tail_by_a_constant_and_guards_the_horizon() -> None:
    spec = _spec("items", "id", "name")
    view = latest_view_sql(
        spec, ["id", "name"], "p.d.items", "p.d.items_current", "p.d.s", "p.d.c", 3600
    )
    # A constant bound (BigQuery prunes partitions by it) and the watermark.
    assert "bigquery_insert_time > TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 3600 SECOND)" in view
    assert "ERROR('items_latest: items has not been compacted for more than 3600 s" in view
