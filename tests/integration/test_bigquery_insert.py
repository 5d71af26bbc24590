"""insertAll as ctstream sends it (one orjson body per request), on the emulator.

Where an answer of BigQuery's must be injected (rows held back by an invalid one), the
fault proxy in front of the emulator gives it; the rows that pass go to the emulator.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ctstream.bigquery.writer import STOPPED, BigQueryWriter
from ctstream.models import ColumnSpec, TableSpec, unique_id
from ctstream.settings import BigQuerySettings
from tests.integration.fault_proxy import FaultProxy

pytestmark = pytest.mark.integration

SPEC = TableSpec(
    "items",
    None,
    "items",
    (
        ColumnSpec("id", "INTEGER", False, 1),
        ColumnSpec("name", "TEXT"),
        ColumnSpec("price", "REAL"),
    ),
)
_datasets = itertools.count()


@pytest.fixture
async def writer(bigquery_proxy: tuple[FaultProxy, str]) -> AsyncIterator[BigQueryWriter]:
    _, endpoint = bigquery_proxy
    dataset = f"insert_{int(time.time() * 1000) % 10**9}_{next(_datasets)}"
    w = BigQueryWriter(BigQuerySettings(project="local", dataset=dataset, endpoint=endpoint))
    await w.ensure_dataset()
    await w.ensure_table(SPEC)
    yield w
    w.close()


def row(key: int, name: str | None, price: Any = 1.5) -> dict[str, Any]:
    return {
        "id": key,
        "name": name,
        "price": price,
        "message_unique_id": unique_id("items", [key], 1),
        "table_name": "items",
        "changetrack_interval": 1.0,
        "changetrack_start_time": "2026-11-27T10:00:00Z",
        "changetrack_type": "I",
        "changetrack_ver": 1,
        "bigquery_insert_time": "2026-11-27T10:00:01Z",
    }


async def stored(w: BigQueryWriter) -> dict[int, tuple[Any, Any]]:
    rows = await w.query(f"SELECT id, name, price FROM `{w.ref('items')}`")
    return {r["id"]: (r["name"], r["price"]) for r in rows}


async def test_rows_arrive_with_their_values(writer: BigQueryWriter) -> None:
    rows = [
        row(1, 'quote " backslash \\ and tab\t', 0.1),
        row(2, "ünïcödé ✓ 𝄞", -2.5e300),
        row(3, None, None),
        row(4, "NaN price", "NaN"),  # how ctstream sends a NaN float (models/values.py)
    ]
    assert await writer.insert("items", rows, [r["message_unique_id"] for r in rows]) == []
    got = await stored(writer)
    assert {k: v for k, v in got.items() if k != 4} == {
        1: ('quote " backslash \\ and tab\t', 0.1),
        2: ("ünïcödé ✓ 𝄞", -2.5e300),
        3: (None, None),
    }
    assert got[4][0] == "NaN price" and got[4][1] != got[4][1]  # NaN


async def test_valid_rows_held_back_by_an_invalid_one_are_sent_again(
    writer: BigQueryWriter, bigquery_proxy: tuple[FaultProxy, str]
) -> None:
    proxy, _ = bigquery_proxy
    proxy.invalid_value = "<bad>"
    rows = [row(i, "<bad>" if i in (2, 5) else f"row {i}") for i in range(8)]
    rejected = await writer.insert("items", rows, [r["message_unique_id"] for r in rows])
    # Only the invalid rows are refused, with BigQuery's reason; the six it held back
    # ("stopped") were sent again on their own and are in the table.
    assert [index for index, _ in rejected] == [2, 5]
    assert all("injected: bad value" in reason for _, reason in rejected)
    assert proxy.stopped_requests == 1
    assert sorted(await stored(writer)) == [0, 1, 3, 4, 6, 7]


async def test_rows_held_back_with_no_invalid_row_named_are_parked_not_resent(
    writer: BigQueryWriter, bigquery_proxy: tuple[FaultProxy, str]
) -> None:
    proxy, _ = bigquery_proxy
    proxy.invalid_value = "<bad>"
    proxy.name_invalid_rows = False
    rows = [row(i, "<bad>" if i == 0 else f"row {i}") for i in range(3)]
    rejected = await writer.insert("items", rows, [r["message_unique_id"] for r in rows])
    assert [index for index, _ in rejected] == [1, 2]
    assert all(reason.startswith(STOPPED) for _, reason in rejected)
    assert proxy.stopped_requests == 1  # not sent again: nothing says what to leave out


async def test_the_local_emulator_copies_no_table_on_write(writer: BigQueryWriter) -> None:
    # emulator_main runs without --time-travel: no snapshot (a copy of the whole table) per
    # write, so FOR SYSTEM_TIME AS OF reads the live table. With snapshots it would show
    # the table as of the first insert.
    await writer.insert("items", [row(1, "one")], [unique_id("items", [1], 1)])
    [now] = await writer.query("SELECT CURRENT_TIMESTAMP() AS t")
    await writer.insert("items", [row(2, "two")], [unique_id("items", [2], 1)])
    at = now["t"].isoformat()
    rows = await writer.query(
        f"SELECT id FROM `{writer.ref('items')}` FOR SYSTEM_TIME AS OF TIMESTAMP '{at}'"
    )
    assert sorted(r["id"] for r in rows) == [1, 2]
