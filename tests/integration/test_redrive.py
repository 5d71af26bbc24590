"""Bad rows are parked with a reason while good rows of the batch land; redrive sends them
again once BigQuery can take them, each to the table it was parked from (the main table or
its restricted copy)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import orjson
import pytest

from ctstream.models import ChangeEvent, ColumnSpec, TableSpec, encode_key, unique_id
from ctstream.streams.topics import TopicNames

pytestmark = pytest.mark.integration

ITEMS = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL)"
SECRET_ITEMS = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, secret TEXT)"


def event(key: int, row: dict[str, Any]) -> tuple[bytes, bytes, float]:
    change = ChangeEvent(
        message_unique_id=unique_id("items", [key], 10**6 + key),
        table_name="items",
        changetrack_interval=1.0,
        changetrack_start_time="2026-11-22T00:00:00.000000Z",
        changetrack_type="I",
        changetrack_ver=10**6 + key,
        key=[key],
        row={"id": key, **row},
    )
    return encode_key([key]), change.to_bytes(), time.time()


def redrive(h: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctstream", "redrive", "--config", str(h.config), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_bad_rows_are_parked_and_redriven_once_bigquery_accepts_them(
    make_harness: Any,
) -> None:
    h = make_harness({"items": ITEMS})
    worker = await h.start_worker()
    await h.produce_raw(
        "items",
        [
            *(event(k, {"name": f"good {k}", "price": 1.5}) for k in range(1, 6)),
            event(6, {"name": "wrong type", "price": "abc"}),
            event(7, {"name": "new column", "price": 2.0, "discount": "10%"}),
        ],
    )
    deadline = time.monotonic() + 60
    while h.status(worker)["tables"]["items"]["error_rows"] < 2:
        assert time.monotonic() < deadline, h.status(worker)
        await asyncio.sleep(0.3)
    await h.wait_caught_up(timeout=60)
    good = await h.query("SELECT id FROM `{ds}.items_latest` ORDER BY id")
    assert [r["id"] for r in good] == [1, 2, 3, 4, 5]  # the batch's good rows landed
    reasons = {
        r["message_unique_id"]: r["reason"]
        for r in await h.query("SELECT message_unique_id, reason FROM `{ds}._error_records`")
    }
    assert "column 'price': expected a number" in reasons[unique_id("items", [6], 10**6 + 6)]
    assert "column 'discount': no such column" in reasons[unique_id("items", [7], 10**6 + 7)]

    before = redrive(h, "--json")
    assert before.returncode == 1, before.stderr
    assert orjson.loads(before.stdout)["delivered"] == 0

    # The fix: BigQuery gains the column (as it would when the source table gains it).
    spec = TableSpec(
        "items",
        None,
        "items",
        (
            ColumnSpec("id", "INTEGER", False, 1),
            ColumnSpec("name", "TEXT"),
            ColumnSpec("price", "REAL"),
            ColumnSpec("discount", "TEXT"),
        ),
    )
    assert await h.writer.add_columns(spec, h.settings.bigquery.options_for("items")) == [
        "discount"
    ]
    dry = redrive(h, "--dry-run")
    assert "1 would be sent" in dry.stdout, dry.stdout + dry.stderr
    assert await h.query("SELECT id FROM `{ds}.items` WHERE id = 7") == []

    after = redrive(h, "--json", "--table", "items")
    result = orjson.loads(after.stdout)
    assert result["selected"] == 2 and result["delivered"] == 1
    [still] = result["still_failing"]
    assert still["id"] == unique_id("items", [6], 10**6 + 6)
    assert "expected a number" in still["reason"]
    assert after.returncode == 1  # one row still does not fit
    rows = await h.query("SELECT id, discount FROM `{ds}.items_latest` WHERE id = 7")
    assert rows == [{"id": 7, "discount": "10%"}]


async def test_a_row_parked_from_the_restricted_copy_is_redriven_there_and_not_to_the_main_table(
    make_harness: Any,
) -> None:
    h = make_harness({"items": SECRET_ITEMS}, source_extra='restricted = { "items" = ["secret"] }')
    worker = await h.start_worker()
    uid = unique_id("items", [8], 10**6 + 8)
    # Neither table has the column `discount`: the row is parked from both.
    await h.produce_raw("items", [event(8, {"name": "n8", "secret": "s8", "discount": "10%"})])
    deadline = time.monotonic() + 60
    while h.status(worker)["tables"]["items"]["error_rows"] < 2:
        assert time.monotonic() < deadline, h.status(worker)
        await asyncio.sleep(0.3)
    names = TopicNames(h.settings.kafka.topic_prefix)
    parked = {
        r["topic"]: ChangeEvent.from_bytes(r["payload"].encode()).row
        for r in await h.query(
            "SELECT message_unique_id, topic, payload FROM `{ds}._error_records`"
        )
        if r["message_unique_id"] == uid
    }
    spec = h.spec("items")
    assert parked.keys() == {names.deduped(spec), names.restricted(spec)}, parked
    assert parked[names.restricted(spec)]["secret"] is None  # the restricted copy's payload
    assert parked[names.deduped(spec)]["secret"] == "s8"

    columns = (
        ColumnSpec("id", "INTEGER", False, 1),
        ColumnSpec("name", "TEXT"),
        ColumnSpec("secret", "TEXT"),
        ColumnSpec("discount", "TEXT"),
    )
    fixed = TableSpec("items", None, "items", columns)
    options = h.settings.bigquery.options_for("items")

    # Only the restricted copy gains the column: its record lands there, the main one
    # still fails, and the main table gets nothing.
    assert await h.writer.add_columns(fixed.restricted_copy(), options) == ["discount"]
    first = redrive(h, "--json", "--table", "items")
    result = orjson.loads(first.stdout)
    assert result["selected"] == 2 and result["delivered"] == 1, first.stdout + first.stderr
    [still] = result["still_failing"]
    assert (still["id"], still["table"]) == (uid, "items"), still
    assert "column 'discount': no such column" in still["reason"]
    assert first.returncode == 1
    restricted_rows = "SELECT id, name, secret, discount FROM `{ds}.items_restricted` WHERE id = 8"
    assert await h.query(restricted_rows) == [
        {"id": 8, "name": "n8", "secret": None, "discount": "10%"}
    ]
    assert await h.query("SELECT id FROM `{ds}.items` WHERE id = 8") == []

    # The main table gains it too: its record lands there with the clear value, and the
    # restricted copy's NULLs never reach it.
    assert await h.writer.add_columns(fixed, options) == ["discount"]
    second = redrive(h, "--json", "--table", "items")
    result = orjson.loads(second.stdout)
    assert result == {
        "selected": 2,
        "delivered": 2,
        "still_failing": [],
        "unrecoverable": [],
    }, second.stdout + second.stderr
    assert second.returncode == 0
    main_rows = await h.query("SELECT id, secret, discount FROM `{ds}.items` WHERE id = 8")
    assert main_rows == [{"id": 8, "secret": "s8", "discount": "10%"}]
    latest = await h.query("SELECT id, secret FROM `{ds}.items_restricted_latest` WHERE id = 8")
    assert latest == [{"id": 8, "secret": None}]
