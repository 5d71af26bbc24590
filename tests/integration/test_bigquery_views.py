"""BigQuery tables, the latest-state view and the time-travel function, on the emulator."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ctstream.bigquery.error_sink import ErrorRecord
from ctstream.bigquery.schema import ERROR_RECORDS_TABLE
from ctstream.bigquery.snapshots import record_snapshot, snapshot_rows_landed
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.devstack.local_stack import StackInfo
from ctstream.errors import ConfigError
from ctstream.models import ColumnSpec, TableSpec, unique_id
from ctstream.settings import BigQuerySettings, BigQueryTableOptions

pytestmark = pytest.mark.integration

SPEC = TableSpec(
    "items",
    None,
    "items",
    (
        ColumnSpec("id", "INTEGER", False, 1),
        ColumnSpec("name", "TEXT"),
        ColumnSpec("added", "TIMESTAMP"),
    ),
)
_datasets = itertools.count()


@pytest.fixture
async def writer(stack: StackInfo) -> AsyncIterator[BigQueryWriter]:
    dataset = f"views_{int(time.time() * 1000) % 10**9}_{next(_datasets)}"
    settings = BigQuerySettings(project="local", dataset=dataset, endpoint=stack.bigquery_endpoint)
    w = BigQueryWriter(settings)
    await w.ensure_dataset()
    yield w
    w.close()


def change(key: int, version: int, op: str, name: str | None, at: str) -> dict[str, Any]:
    return {
        "id": key,
        "name": name,
        "message_unique_id": unique_id("items", [key], version),
        "table_name": "items",
        "changetrack_interval": 1.0,
        "changetrack_start_time": at,
        "changetrack_type": op,
        "changetrack_ver": version,
        "bigquery_insert_time": "2026-11-22T12:00:00Z",
    }


async def state_at(w: BigQueryWriter, ts: str) -> dict[int, str]:
    rows = await w.query(
        f"SELECT id, name FROM `{w.ref('items_at')}`(TIMESTAMP '{ts}') ORDER BY id"
    )
    return {r["id"]: r["name"] for r in rows}


async def test_time_travel_function_returns_the_state_at_each_time(writer: BigQueryWriter) -> None:
    await writer.ensure_table(SPEC)
    t = "2026-11-22T10:0{}:00Z".format
    rows = [
        change(1, 1, "I", "one", t(1)),
        change(2, 2, "I", "two", t(1)),
        change(1, 3, "U", "one v2", t(2)),
        change(3, 4, "I", "three", t(3)),
        change(2, 5, "D", None, t(4)),
        # A re-snapshot at version 6 (t6, completed t7) that no longer has key 3: its
        # delete was lost to a retention overrun.
        change(1, 6, "S", "one v2", t(6)),
    ]
    assert await writer.insert("items", rows, [r["message_unique_id"] for r in rows]) == []
    await record_snapshot(writer, SPEC, 6, 1, "test", t(7))

    assert await state_at(writer, "2026-11-22T10:00:30Z") == {}
    assert await state_at(writer, "2026-11-22T10:01:00Z") == {1: "one", 2: "two"}
    assert await state_at(writer, "2026-11-22T10:02:30Z") == {1: "one v2", 2: "two"}
    assert await state_at(writer, "2026-11-22T10:03:00Z") == {1: "one v2", 2: "two", 3: "three"}
    assert await state_at(writer, "2026-11-22T10:04:00Z") == {1: "one v2", 3: "three"}
    assert await state_at(writer, "2026-11-22T10:06:30Z") == {1: "one v2", 3: "three"}
    assert await state_at(writer, "2026-11-22T10:07:00Z") == {1: "one v2"}  # snapshot done
    latest = await writer.query(f"SELECT id, name FROM `{writer.ref('items_latest')}`")
    assert {r["id"]: r["name"] for r in latest} == {1: "one v2"}


async def test_partitioning_and_clustering_options(writer: BigQueryWriter) -> None:
    options = BigQueryTableOptions(
        partition_column="added", partition_granularity="HOUR", cluster_by=["name", "id"]
    )
    await writer.ensure_table(SPEC, options)
    table = await writer.table("items")
    assert table.time_partitioning.type_ == "HOUR"
    assert table.time_partitioning.field == "added"
    assert table.clustering_fields == ["name", "id"]


async def test_default_layout_is_clustered_by_primary_key(writer: BigQueryWriter) -> None:
    await writer.ensure_table(SPEC)
    table = await writer.table("items")
    assert table.time_partitioning is None
    assert table.clustering_fields == ["id"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            BigQueryTableOptions(partition_column="name"),
            "partition_column: column 'name' is STRING",
        ),
        (BigQueryTableOptions(partition_column="nope"), "has no column 'nope'"),
        (BigQueryTableOptions(cluster_by=["changetrack_interval"]), "is FLOAT64"),
    ],
)
async def test_bad_layout_options_are_refused(
    writer: BigQueryWriter, options: BigQueryTableOptions, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        await writer.ensure_table(SPEC, options)


async def test_a_snapshots_rows_are_counted_where_they_landed(writer: BigQueryWriter) -> None:
    """Its rows in the change table and those parked, each id once; other snapshots' rows,
    changes, and other tables' parked rows are not counted."""
    await writer.ensure_table(SPEC)
    t = "2026-11-22T10:00:00Z"

    def snapshot_row(key: int, version: int, snapshot: str) -> dict[str, Any]:
        row = change(key, version, "S", "s", t)
        return row | {"message_unique_id": unique_id("items", [key], version, snapshot)}

    rows = [
        snapshot_row(1, 7, "r1"),
        snapshot_row(1, 9, "r1"),  # the same row read again (a chunk after a crash)
        snapshot_row(2, 7, "r1"),
        snapshot_row(3, 7, "r10"),  # another snapshot, whose id ends like r1's would not
        change(4, 7, "I", "i", t),
    ]
    assert await writer.insert("items", rows, [f"{i}" for i in range(len(rows))]) == []
    assert await snapshot_rows_landed(writer, SPEC, "r1") == 2
    parked = [
        ErrorRecord("bad", b"{}", "items", unique_id("items", [5], 8, "r1")),
        ErrorRecord("bad", b"{}", "other", unique_id("other", [6], 8, "r1")),
    ]
    parked_rows = [record.as_row(time.time()) for record in parked]
    assert await writer.insert(ERROR_RECORDS_TABLE, parked_rows, ["p1", "p2"]) == []
    assert await snapshot_rows_landed(writer, SPEC, "r1") == 3
    assert await snapshot_rows_landed(writer, SPEC, "r10") == 1
    assert await snapshot_rows_landed(writer, SPEC, "none") == 0
