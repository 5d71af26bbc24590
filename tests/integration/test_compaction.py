"""``<t>_current`` and the latest-state view on it, on the emulator.

The merges here pass an explicit ``merged_to`` (the newest insert time written so far):
the workers merge up to ``bigquery.compact_settle`` ago, which a test would wait for.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ctstream.bigquery.compaction import compact, rebuild, watermark
from ctstream.bigquery.compaction_sql import merge_sql
from ctstream.bigquery.daily_copies import copy_current, merge_round
from ctstream.bigquery.schema import COMPACTION_TABLE
from ctstream.bigquery.snapshots import record_snapshot
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.devstack.local_stack import StackInfo
from ctstream.errors import SinkError
from ctstream.models import ColumnSpec, TableSpec, unique_id
from ctstream.models.change_event import METADATA_COLUMNS
from ctstream.settings import BigQuerySettings, BigQueryTableOptions

pytestmark = pytest.mark.integration

SPEC = TableSpec(
    "items",
    None,
    "items",
    (ColumnSpec("id", "INTEGER", False, 1), ColumnSpec("name", "TEXT")),
)
_datasets = itertools.count()


def _settings(stack: StackInfo) -> BigQuerySettings:
    dataset = f"compact_{int(time.time() * 1000) % 10**9}_{next(_datasets)}"
    return BigQuerySettings(project="local", dataset=dataset, endpoint=stack.bigquery_endpoint)


@pytest.fixture
async def writer(stack: StackInfo) -> AsyncIterator[BigQueryWriter]:
    w = BigQueryWriter(_settings(stack))
    await w.ensure_dataset()
    await w.ensure_table(SPEC)
    yield w
    w.close()


def change(key: int, version: int, op: str, name: str | None) -> dict[str, Any]:
    return {
        "id": key,
        "name": None if op == "D" else name,
        "message_unique_id": unique_id("items", [key], version),
        "table_name": "items",
        "changetrack_interval": 1.0,
        "changetrack_start_time": dt.datetime.now(dt.UTC).isoformat(),
        "changetrack_type": op,
        "changetrack_ver": version,
        "bigquery_insert_time": None,  # the writer stamps it
    }


async def write(w: BigQueryWriter, rows: list[dict[str, Any]]) -> None:
    assert await w.insert("items", rows, [r["message_unique_id"] for r in rows]) == []


async def newest_insert(w: BigQueryWriter) -> dt.datetime:
    rows = await w.query(f"SELECT MAX(bigquery_insert_time) AS t FROM `{w.ref('items')}`")
    value = rows[0]["t"]
    assert isinstance(value, dt.datetime)
    return value


async def merge_all(w: BigQueryWriter, spec: TableSpec = SPEC) -> None:
    await compact(w, spec, merged_to=await newest_insert(w))


async def latest(w: BigQueryWriter, table: str = "items") -> dict[int, str | None]:
    rows = await w.query(f"SELECT id, name FROM `{w.ref(table + '_latest')}`")
    return {r["id"]: r["name"] for r in rows}


async def current(w: BigQueryWriter) -> dict[int, tuple[int, str]]:
    rows = await w.query(
        f"SELECT id, changetrack_ver, changetrack_type FROM `{w.ref('items_current')}`"
    )
    return {r["id"]: (r["changetrack_ver"], r["changetrack_type"]) for r in rows}


async def test_the_view_reads_the_merged_state_plus_the_changes_since(
    writer: BigQueryWriter,
) -> None:
    await write(writer, [change(1, 1, "I", "a"), change(2, 2, "I", "b"), change(1, 3, "U", "a2")])
    assert await latest(writer) == {1: "a2", 2: "b"}  # all in the tail: nothing merged yet
    await merge_all(writer)
    assert await current(writer) == {1: (3, "U"), 2: (2, "I")}
    await write(writer, [change(2, 4, "D", None), change(3, 5, "I", "c")])
    assert await latest(writer) == {1: "a2", 3: "c"}  # the tail's delete and insert count
    # Expiry of every change-log row the merges covered leaves the view as it was.
    await merge_all(writer)
    merged_to = await watermark(writer, "items")
    assert merged_to is not None
    await writer.execute(
        f"DELETE FROM `{writer.ref('items')}` WHERE bigquery_insert_time <= @t",
        [_ts("t", merged_to)],
        "expiring",
    )
    assert await writer.query(f"SELECT COUNT(*) AS n FROM `{writer.ref('items')}`") == [{"n": 0}]
    assert await latest(writer) == {1: "a2", 3: "c"}
    assert (await current(writer))[2] == (4, "D")  # the delete is kept as a tombstone


async def test_a_merge_is_idempotent_and_older_copies_never_win(writer: BigQueryWriter) -> None:
    await write(writer, [change(1, 1, "I", "a"), change(1, 5, "D", None)])
    await merge_all(writer)
    # A crash after the MERGE, before the watermark was saved: the same window again.
    to = await newest_insert(writer)
    merge = merge_sql(
        SPEC, ["id", "name", *METADATA_COLUMNS], writer.ref("items"), writer.ref("items_current")
    )
    params = [_ts("merged_from", dt.datetime(1970, 1, 1, tzinfo=dt.UTC)), _ts("merged_to", to)]
    assert await writer.execute(merge, params, "merging again") == 0
    await merge_all(writer)
    assert await current(writer) == {1: (5, "D")}
    # An older copy of a change written after the delete (a replay, a late redelivery).
    await write(writer, [change(1, 1, "I", "a")])
    assert await latest(writer) == {}
    await merge_all(writer)
    assert await current(writer) == {1: (5, "D")}
    assert await latest(writer) == {}


async def test_a_completed_snapshot_prunes_the_keys_it_did_not_see(writer: BigQueryWriter) -> None:
    await write(writer, [change(1, 1, "I", "a"), change(2, 2, "I", "b")])
    await merge_all(writer)
    # Key 2 was deleted while its changes were lost; the snapshot at version 10 saw key 1.
    await write(writer, [change(1, 10, "S", "a")])
    await record_snapshot(writer, SPEC, 10, 1, "test", "2026-12-07T10:00:00Z")
    assert await latest(writer) == {1: "a"}
    result = await compact(writer, SPEC, merged_to=await newest_insert(writer))
    assert result.rows_pruned == 1
    assert await current(writer) == {1: (10, "S")}
    assert await latest(writer) == {1: "a"}


async def test_the_view_fails_loudly_when_compaction_fell_behind_its_horizon(
    writer: BigQueryWriter,
) -> None:
    await write(writer, [change(1, 1, "I", "a")])
    await writer.execute(
        f"UPDATE `{writer.ref(COMPACTION_TABLE)}` SET merged_to = @t WHERE TRUE",
        [_ts("t", dt.datetime(2020, 1, 1, tzinfo=dt.UTC))],
        "turning the clock back",
    )
    with pytest.raises(SinkError, match="has not been compacted"):
        await latest(writer)
    result = await compact(writer, SPEC, merged_to=await newest_insert(writer))
    assert result.rows_merged == 1
    assert await latest(writer) == {1: "a"}


async def test_rebuild_gives_the_same_state(writer: BigQueryWriter) -> None:
    await write(writer, [change(1, 1, "I", "a"), change(2, 2, "I", "b"), change(2, 3, "D", None)])
    await merge_all(writer)
    before = await current(writer)
    await writer.execute(f"DELETE FROM `{writer.ref('items_current')}` WHERE id = 1", (), "harm")
    await rebuild(writer, SPEC, await newest_insert(writer))
    assert await current(writer) == before


async def test_new_columns_reach_the_current_table_and_the_view(writer: BigQueryWriter) -> None:
    await write(writer, [change(1, 1, "I", "a")])
    await merge_all(writer)
    wider = TableSpec("items", None, "items", (*SPEC.columns, ColumnSpec("size", "INTEGER")))
    assert await writer.add_columns(wider, BigQueryTableOptions()) == ["size"]
    row = change(1, 2, "U", "a") | {"size": 7}
    await write(writer, [row])
    rows = await writer.query(f"SELECT id, size FROM `{writer.ref('items_latest')}`")
    assert rows == [{"id": 1, "size": 7}]
    await merge_all(writer, wider)
    rows = await writer.query(f"SELECT id, size FROM `{writer.ref('items_current')}`")
    assert rows == [{"id": 1, "size": 7}]


def _ts(name: str, value: dt.datetime) -> Any:
    from google.cloud import bigquery

    return bigquery.ScalarQueryParameter(name, "TIMESTAMP", value)


# A change: (key, op); versions are given in the order written, sometimes out of order.
_changes = st.lists(
    st.tuples(st.integers(0, 5), st.sampled_from("IUD"), st.integers(1, 30), st.booleans()),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(changes=_changes)
@example(changes=[(0, "I", 1, False), (0, "D", 1, False)])  # a tie: the later write
async def test_merging_at_any_points_gives_the_newest_row_per_key(
    stack: StackInfo, changes: list[tuple[int, str, int, bool]]
) -> None:
    """Changes written in any order, with merges after any of them: the view equals the
    newest version per key of everything written (deletes left out)."""
    w = BigQueryWriter(_settings(stack))
    try:
        await w.ensure_dataset()
        await w.ensure_table(SPEC)
        newest: dict[int, tuple[int, str]] = {}
        for key, op, version, merge_after in changes:
            await write(w, [change(key, version, op, f"v{version}")])
            if version >= newest.get(key, (0, ""))[0]:  # a tie: the later write wins
                newest[key] = (version, op)
            if merge_after:
                await merge_all(w)
        expected = {k: f"v{v}" for k, (v, op) in newest.items() if op != "D"}
        assert await latest(w) == expected
        await merge_all(w)
        assert await latest(w) == expected
    finally:
        w.close()


@pytest.fixture
async def kept_writer(stack: StackInfo) -> AsyncIterator[BigQueryWriter]:
    """A dataset whose change log has a retention: daily copies answer <t>_at."""
    base = _settings(stack)
    w = BigQueryWriter(base.model_copy(update={"change_log_retention": 3 * 86_400.0}))
    await w.ensure_dataset()
    await w.ensure_table(SPEC)
    yield w
    w.close()


async def state_at(w: BigQueryWriter, ts: dt.datetime) -> dict[int, str | None]:
    rows = await w.query(f"SELECT id, name FROM `{w.ref('items_at')}`(@ts)", [_ts("ts", ts)])
    return {r["id"]: r["name"] for r in rows}


async def test_time_travel_outlives_the_change_log_through_daily_copies(
    kept_writer: BigQueryWriter,
) -> None:
    w = kept_writer
    await write(w, [change(1, 1, "I", "a"), change(2, 2, "I", "b")])
    copied_at = await newest_insert(w)
    await compact(w, SPEC, merged_to=copied_at)
    assert await copy_current(w, SPEC, copied_at) == 3  # with the copy's marker row
    await write(w, [change(1, 3, "U", "a2"), change(2, 4, "D", None), change(3, 5, "I", "c")])
    await merge_all(w)
    # Expiry of the change rows up to the copy, as partition expiration would.
    await w.execute(
        f"DELETE FROM `{w.ref('items')}` WHERE bigquery_insert_time <= @t",
        [_ts("t", copied_at)],
        "expiring",
    )
    assert await state_at(w, copied_at) == {1: "a", 2: "b"}
    assert await state_at(w, dt.datetime.now(dt.UTC)) == {1: "a2", 3: "c"}
    assert await latest(w) == {1: "a2", 3: "c"}

    # A copy older than the retention answers at its own time only; before any copy, no
    # answer at all: never a silently incomplete one.
    old = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=5)
    await w.execute(
        f"UPDATE `{w.ref('items_daily')}` SET _ctstream_merged_to = @t WHERE TRUE",
        [_ts("t", old)],
        "aging the copy",
    )
    assert await state_at(w, old) == {1: "a", 2: "b"}
    with pytest.raises(SinkError, match="may have expired from the change log"):
        await state_at(w, old + dt.timedelta(hours=1))
    with pytest.raises(SinkError, match="no daily copy of items was made"):
        await state_at(w, old - dt.timedelta(days=1))


async def test_the_leader_copies_once_a_day_at_midnight(kept_writer: BigQueryWriter) -> None:
    w = kept_writer
    await write(w, [change(1, 1, "I", "a")])
    tomorrow = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    tomorrow += dt.timedelta(days=1)
    later = tomorrow.timestamp() + w.settings.compact_settle + 60
    await merge_round(w, SPEC, now=later)
    await merge_round(w, SPEC, now=later + 60)
    copies = await w.query(
        f"SELECT _ctstream_merged_to AS copied, COUNT(*) AS n FROM `{w.ref('items_daily')}` "
        "GROUP BY copied ORDER BY copied"
    )
    # The start's merge passed today's midnight without a copy; the day's copy is made
    # at exactly its midnight, once.
    assert [(c["copied"], c["n"]) for c in copies][-1:] == [(tomorrow, 2)]  # 1 row, 1 marker
    assert await state_at(w, tomorrow) == {1: "a"}
