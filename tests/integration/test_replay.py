"""``ctstream replay`` on the real local stack: topics re-read into BigQuery by time or offset."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndTimestamp

from ctstream.commands.replay import render, replay
from ctstream.devstack.demo_check import compare_table
from ctstream.errors import ConfigError, SinkError
from ctstream.models import ChangeEvent, encode_key, unique_id
from ctstream.streams.offsets import true_end_offsets
from ctstream.streams.topics import TopicNames
from tests.integration.harness import SECRET

pytestmark = pytest.mark.integration

ITEMS = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL)"


def event(key: int, version: int, row: dict[str, Any]) -> tuple[bytes, bytes, float]:
    change = ChangeEvent(
        message_unique_id=unique_id("items", [key], version),
        table_name="items",
        changetrack_interval=1.0,
        changetrack_start_time="2026-11-22T00:00:00.000000Z",
        changetrack_type="I",
        changetrack_ver=version,
        key=[key],
        row={"id": key, **row},
    )
    return encode_key([key]), change.to_bytes(), time.time()


async def next_poll(h: Any, worker: Any, timeout: float = 30) -> None:
    """Until a poll of items has completed since now: later changes get later timestamps."""
    polls = h.status(worker)["tables"]["items"]["polls"]
    deadline = time.monotonic() + timeout
    while h.status(worker)["tables"]["items"]["polls"] <= polls:
        assert time.monotonic() < deadline, "no poll completed"
        await asyncio.sleep(0.1)


async def timestamp_at(h: Any, topic: str, partition: int, offset: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=h.settings.kafka.bootstrap_servers)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        record = await asyncio.wait_for(consumer.getone(tp), 15)
        return int(record.timestamp)
    finally:
        await consumer.stop()


async def count(h: Any, table: str) -> int:
    return int((await h.query(f"SELECT COUNT(*) AS n FROM `{{ds}}.{table}`"))[0]["n"])


async def no_duplicate_keys(h: Any, view: str) -> None:
    rows = await h.query(f"SELECT id, COUNT(*) AS n FROM `{{ds}}.{view}` GROUP BY id HAVING n > 1")
    assert rows == []


async def test_replay_since_a_time_into_the_same_table(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = make_harness({"items": ITEMS})
    worker = await h.start_worker()
    h.execute("INSERT INTO items VALUES (?, ?, ?)", [(i, f"item {i}", i * 1.5) for i in range(100)])
    await h.wait_equal(timeout=60)
    middle = dt.datetime.now(dt.UTC)
    await next_poll(h, worker)
    h.execute("UPDATE items SET price = price + 1 WHERE id < 30")
    h.execute("DELETE FROM items WHERE id >= 90")
    await h.wait_equal(timeout=60)
    await h.wait_caught_up(timeout=60)
    rows_before = await count(h, "items")

    calls: list[tuple[int, int]] = []
    result = await replay(
        h.settings, "items", since=middle, progress=lambda d, t: calls.append((d, t))
    )
    assert result.messages_read == 40 and result.rows_written == 40, render(result)
    assert result.duplicates_skipped == 0 and result.error_rows == 0
    spans = result.partitions.values()
    assert sum(s.messages for s in spans) == 40
    assert all(s.first is not None and s.first <= (s.last or 0) for s in spans if s.messages)
    assert calls and calls[-1][0] == calls[-1][1]  # the last call: everything in range read
    assert calls[-1][0] == result.messages_read + result.outside_time_range
    assert await count(h, "items") == rows_before + 40
    await no_duplicate_keys(h, "items_latest")
    assert await h.differences("items") == []
    assert "wrote 40 rows" in render(result)
    assert result.as_json()["rows_written"] == 40

    # Tansu's offsets_for_times answers from append times, so the replay above scanned every
    # partition. A broker answering as Kafka does (the first record at or after `since`)
    # lets it start right there.
    exact = {
        TopicPartition(result.topic, p): OffsetAndTimestamp(
            s.first, await timestamp_at(h, result.topic, p, s.first)
        )
        for p, s in result.partitions.items()
        if s.first is not None
    }

    async def like_kafka(self: Any, timestamps: dict[TopicPartition, int]) -> dict[Any, Any]:
        return {tp: exact.get(tp) for tp in timestamps}

    monkeypatch.setattr(AIOKafkaConsumer, "offsets_for_times", like_kafka)
    dry = await replay(h.settings, "items", since=middle, dry_run=True)
    assert (dry.outside_time_range, dry.messages_read, dry.would_write) == (0, 40, 40)
    assert {p: s.start for p, s in dry.partitions.items() if s.messages} == {
        p: s.first for p, s in result.partitions.items() if s.messages
    }


async def test_replay_raw_topic_from_offset_drops_duplicates(make_harness: Any) -> None:
    h = make_harness({"items": ITEMS})
    await h.start_worker()
    h.execute("INSERT INTO items VALUES (?, ?, ?)", [(i, f"item {i}", i * 1.5) for i in range(50)])
    await h.wait_equal(timeout=60)
    # A second collector's copy of a change (same unique id, same row as the source).
    copy = event(1, 10**6, {"name": "item 1", "price": 1.5})
    await h.produce_raw("items", [copy, copy])
    await h.wait_caught_up(timeout=60)

    dry = await replay(
        h.settings, "items", from_offset=0, topic="raw", skip_dedup=True, dry_run=True
    )
    assert (dry.messages_read, dry.duplicates_skipped, dry.would_write) == (52, 0, 52)
    result = await replay(h.settings, "items", from_offset=0, topic="raw")
    assert result.messages_read == 52 and result.outside_time_range == 0
    assert result.duplicates_skipped == 1 and result.rows_written == 51, render(result)
    assert sum(s.start for s in result.partitions.values()) == 0
    copies = await h.query(
        "SELECT COUNT(*) AS n FROM `{ds}.items` WHERE message_unique_id = "
        f"'{unique_id('items', [1], 10**6)}'"
    )
    assert copies == [{"n": 2}]  # once by the pipeline, once by the replay
    await no_duplicate_keys(h, "items_latest")
    assert await h.differences("items") == []


async def test_replay_a_time_range_into_a_backfill_table(make_harness: Any, tmp_path: Path) -> None:
    h = make_harness({"items": ITEMS})
    worker = await h.start_worker()
    since = dt.datetime.now(dt.UTC)
    h.execute("INSERT INTO items VALUES (?, ?, ?)", [(i, f"a {i}", i * 1.0) for i in range(60)])
    h.execute("UPDATE items SET name = name || ' v2' WHERE id % 4 = 0")
    h.execute("DELETE FROM items WHERE id % 10 = 3")
    await h.wait_equal(timeout=60)
    until = dt.datetime.now(dt.UTC)
    await next_poll(h, worker)
    as_of_until = tmp_path / "as_of_until.db"
    with (
        contextlib.closing(sqlite3.connect(h.db)) as src,
        contextlib.closing(sqlite3.connect(as_of_until)) as dst,
    ):
        src.backup(dst)
    h.execute("UPDATE items SET price = -1 WHERE id < 20")
    h.execute("DELETE FROM items WHERE id >= 50")
    h.execute("INSERT INTO items VALUES (?, ?, ?)", [(i, f"b {i}", 0.5) for i in range(100, 110)])
    await h.wait_equal(timeout=60)
    await h.wait_caught_up(timeout=60)

    dry = await replay(
        h.settings, "items", since=since, until=until, to_table="items_backfill", dry_run=True
    )
    assert dry.would_write == dry.messages_read > 0 and dry.rows_written == 0
    with pytest.raises(SinkError):
        await h.writer.table("items_backfill")  # a dry run creates nothing
    result = await replay(h.settings, "items", since=since, until=until, to_table="items_backfill")
    assert result.target_table == "items_backfill" and result.error_rows == 0
    assert result.rows_written == result.messages_read > 0, render(result)
    assert await compare_table(as_of_until, h.writer, "items", "items_backfill") == []
    assert await compare_table(h.db, h.writer, "items", "items_backfill") != []  # phase B left out
    await no_duplicate_keys(h, "items_backfill_latest")
    at = await h.query("SELECT id FROM `{ds}.items_backfill_at`(CURRENT_TIMESTAMP())")
    with contextlib.closing(sqlite3.connect(as_of_until)) as conn:
        assert sorted(r["id"] for r in at) == [
            r[0] for r in conn.execute("SELECT id FROM items ORDER BY id")
        ]
    source = await h.writer.table("items")
    backfill = await h.writer.table("items_backfill")
    assert [(f.name, f.field_type) for f in backfill.schema] == [
        (f.name, f.field_type) for f in source.schema
    ]
    assert await h.differences("items") == []  # the table itself is untouched

    again = await replay(h.settings, "items", since=since, until=until, to_table="items_backfill")
    assert again.rows_written == result.rows_written  # an existing backfill table is reused
    assert await compare_table(as_of_until, h.writer, "items", "items_backfill") == []


async def test_dry_run_writes_nothing_and_bad_rows_are_parked(make_harness: Any) -> None:
    h = make_harness({"items": ITEMS})
    await h.start_worker()
    h.execute("INSERT INTO items VALUES (?, ?, ?)", [(i, f"item {i}", 2.0) for i in range(10)])
    await h.wait_equal(timeout=60)
    bad_type = event(500, 10**6, {"name": "wrong type", "price": "abc"})
    await h.produce_raw("items", [bad_type, (b"x", b"\xff not json", time.time())])
    deadline = time.monotonic() + 60
    while await count(h, "_error_records") < 2:  # the pipeline's own error records
        assert time.monotonic() < deadline, h.logs()
        await asyncio.sleep(0.3)
    await h.wait_caught_up(timeout=60)
    errors_topic = TopicPartition(TopicNames(h.settings.kafka.topic_prefix).errors, 0)
    parts = [errors_topic._replace(partition=p) for p in range(h.settings.kafka.partitions)]

    async def error_messages() -> int:
        return sum((await true_end_offsets(h.settings.kafka.bootstrap_servers, parts)).values())

    state = (await count(h, "items"), await count(h, "_error_records"), await error_messages())
    dry = await replay(h.settings, "items", from_offset=0, topic="raw", dry_run=True)
    assert (dry.messages_read, dry.would_write, dry.rows_written, dry.error_rows) == (12, 10, 0, 2)
    assert any("expected a number" in s for s in dry.error_samples), dry.error_samples
    assert "(dry run)" in render(dry) and "would write 10 rows" in render(dry)
    assert (await count(h, "items"), await count(h, "_error_records"), await error_messages()) == (
        state
    )

    result = await replay(h.settings, "items", from_offset=0, topic="raw")
    assert (result.rows_written, result.error_rows) == (10, 2), render(result)
    reasons = [
        r["reason"]
        for r in await h.query("SELECT reason FROM `{ds}._error_records`")
        if r["reason"].startswith("replay:")
    ]
    assert len(reasons) == 2, reasons
    assert any("column 'price'" in r and "expected a number" in r for r in reasons)
    assert any("not JSON" in r for r in reasons)
    assert await error_messages() == state[2] + 2
    assert await count(h, "items") == state[0] + 10
    assert await h.differences("items") == []


async def test_bad_arguments_are_refused_with_the_option_named(make_harness: Any) -> None:
    h = make_harness({"items": ITEMS})
    now = dt.datetime.now(dt.UTC)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"since": now, "table": "nope"}, "--table"),
        ({}, "--since"),
        ({"since": now, "from_offset": 0}, "--from-offset"),
        ({"from_offset": -1}, "--from-offset"),
        ({"since": now, "until": now}, "--until"),
        ({"from_offset": 0, "to_table": "items-backfill"}, "--to-table"),
        ({"from_offset": 0, "to_table": "1items"}, "--to-table"),
        ({"from_offset": 0, "to_table": "_error_records"}, "--to-table"),
        ({"from_offset": 0, "topic": "errors"}, "--topic"),
    ]
    for kwargs, option in cases:
        table = kwargs.pop("table", "items")
        with pytest.raises(ConfigError) as info:
            await replay(h.settings, table, **kwargs)
        assert option in str(info.value) and SECRET not in str(info.value)

    # No worker ever ran: no BigQuery table to write to, said as such.
    with pytest.raises(SinkError, match="items does not exist"):
        await replay(h.settings, "items", from_offset=0)


async def test_replay_command_line(make_harness: Any) -> None:
    import subprocess
    import sys

    import orjson

    h = make_harness({"items": ITEMS})
    await h.start_worker()
    h.execute("INSERT INTO items VALUES (?, ?, ?)", [(i, f"item {i}", 1.0) for i in range(25)])
    await h.wait_equal(timeout=60)
    args = [sys.executable, "-m", "ctstream", "replay", "--config", str(h.config)]
    result = await asyncio.to_thread(
        subprocess.run,
        [*args, "--table", "items", "--from-offset", "0", "--json"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["rows_written"] == 25
    await h.wait_equal(timeout=60)
    refused = await asyncio.to_thread(
        subprocess.run, [*args, "--table", "items"], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "--since" in refused.stderr
