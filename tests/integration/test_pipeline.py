"""The whole pipeline on the real local stack: SQLite CT → Kafka → dedup → BigQuery."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from ctstream.models import ChangeEvent, encode_key, unique_id
from ctstream.streams.offsets import true_end_offsets
from ctstream.streams.partitioner import kafka_partitioner
from ctstream.streams.topics import TopicNames

pytestmark = pytest.mark.integration

ITEMS = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL)"
KV = "CREATE TABLE kv (a TEXT NOT NULL, b TEXT NOT NULL, v TEXT, PRIMARY KEY (a, b))"


@pytest.mark.parametrize("write_api", ["insert_all", "storage_write"])
async def test_changes_arrive_deletes_vanish_and_composite_keys_stay_distinct(
    make_harness: Any, write_api: str
) -> None:
    h = make_harness({"items": ITEMS, "kv": KV}, write_api=write_api)
    worker = await h.start_worker()
    h.execute("INSERT INTO items VALUES (?, ?, ?)", [(i, f"item {i}", i * 1.5) for i in range(200)])
    # Naive concatenation would turn both keys into '123'; separators inside values too.
    h.execute(
        "INSERT INTO kv VALUES (?, ?, ?)",
        [
            ("1", "23", "first"),
            ("12", "3", "second"),
            ("a|b", "c", "x"),
            ("a", "b|c", "y"),
            ('q"', ",", "z"),
            ("1,", "23", "w"),
        ],
    )
    h.execute("UPDATE items SET name = name || ' v2', price = price + 1 WHERE id % 3 = 0")
    h.execute("DELETE FROM items WHERE id % 10 = 0")
    h.execute("DELETE FROM kv WHERE a = 'a|b'")
    h.execute("UPDATE items SET id = 1000 WHERE id = 7")  # a key change: delete + insert
    h.execute("INSERT INTO items VALUES (10, 'back again', 9.99)")  # re-insert a deleted key
    await h.wait_equal(timeout=120)

    latest = await h.query("SELECT a, b, v FROM `{ds}.kv_latest`")
    assert {(r["a"], r["b"]): r["v"] for r in latest} == {
        ("1", "23"): "first",
        ("12", "3"): "second",
        ("a", "b|c"): "y",
        ('q"', ","): "z",
        ("1,", "23"): "w",
    }
    deleted = await h.query("SELECT id FROM `{ds}.items` WHERE changetrack_type = 'D' ORDER BY id")
    deleted_ids = {r["id"] for r in deleted}
    assert {20, 30, 7} <= deleted_ids
    items = {r["id"] for r in await h.query("SELECT id FROM `{ds}.items_latest`")}
    assert 20 not in items and 7 not in items and 1000 in items and 10 in items
    assert len(items) == 200 - 20 + 1 + 1 - 1  # 20 deleted, 7→1000 moved, 10 re-inserted
    requests = h.status(worker)["sink"]["requests"]
    assert requests[write_api] > 0  # the rows went the configured way
    if write_api == "insert_all":
        assert requests["storage_write"] == 0


async def test_duplicates_are_written_once_also_across_a_window_boundary(
    make_harness: Any,
) -> None:
    window = 6.0
    h = make_harness({"items": ITEMS}, window="6s")
    await h.start_worker()

    def event(key: int, version: int) -> tuple[bytes, bytes]:
        change = ChangeEvent(
            message_unique_id=unique_id("items", [key], version),
            table_name="items",
            changetrack_interval=1.0,
            changetrack_start_time="2026-11-22T00:00:00.000000Z",
            changetrack_type="I",
            changetrack_ver=version,
            key=[key],
            row={"id": key, "name": f"dup {key}", "price": 1.0},
        )
        return encode_key([key]), change.to_bytes()

    now = time.time()
    boundary = math.ceil(now / window) * window + window  # a window edge in the near future
    plain_k, plain_v = event(900_001, 10**9)
    edge_k, edge_v = event(900_002, 10**9)
    other_k, other_v = event(900_001, 10**9 + 1)  # same key, new version: not a duplicate
    await h.produce_raw(
        "items",
        [
            (plain_k, plain_v, now),
            (plain_k, plain_v, now + 0.5),
            (edge_k, edge_v, boundary - 0.5),  # last half second of one window ...
            (edge_k, edge_v, boundary + 0.5),  # ... and the first of the next
            (other_k, other_v, now + 1),
        ],
    )
    await h.wait_caught_up(timeout=60)
    rows = await h.query(
        "SELECT message_unique_id, COUNT(*) AS n FROM `{ds}.items` "
        "WHERE id IN (900001, 900002) GROUP BY message_unique_id"
    )
    counts = {r["message_unique_id"]: r["n"] for r in rows}
    assert counts == {
        unique_id("items", [900_001], 10**9): 1,
        unique_id("items", [900_002], 10**9): 1,
        unique_id("items", [900_001], 10**9 + 1): 1,
    }


async def test_a_restarted_worker_drops_copies_its_predecessor_forwarded(
    make_harness: Any,
) -> None:
    """The dedup state comes back from its changelog: a copy arriving after a restart is
    still recognised (several ids per partition, each recorded as part of a batch)."""
    h = make_harness({"items": ITEMS})
    first = await h.start_worker()

    def event(key: int) -> tuple[bytes, bytes]:
        change = ChangeEvent(
            message_unique_id=unique_id("items", [key], 7),
            table_name="items",
            changetrack_interval=1.0,
            changetrack_start_time="2026-11-22T00:00:00.000000Z",
            changetrack_type="I",
            changetrack_ver=7,
            key=[key],
            row={"id": key, "name": f"copy {key}", "price": 1.0},
        )
        return encode_key([key]), change.to_bytes()

    now = time.time()
    before = [event(k) for k in range(800_000, 800_040)]
    await h.produce_raw("items", [(k, v, now) for k, v in before])
    await h.wait_caught_up(timeout=60)
    assert h.stop_worker(first) == 0
    second = await h.start_worker()
    after = [event(k) for k in range(800_040, 800_050)]
    await h.produce_raw("items", [(k, v, now + 1) for k, v in before + after])
    await h.wait_caught_up(timeout=90)
    rows = await h.query(
        "SELECT COUNT(*) AS n, COUNT(DISTINCT message_unique_id) AS ids FROM `{ds}.items` "
        "WHERE id BETWEEN 800000 AND 800049"
    )
    assert rows == [{"n": 50, "ids": 50}]
    table = h.status(second)["tables"]["items"]
    assert table["duplicates_dropped"] == 40


async def test_poison_messages_go_to_the_error_records_with_a_reason(make_harness: Any) -> None:
    h = make_harness({"items": ITEMS})
    await h.start_worker()
    good_key = encode_key([5])
    bad_type = ChangeEvent(
        unique_id("items", [5], 77),
        "items",
        0.0,
        "2026-11-22T00:00:00.000000Z",
        "I",
        77,
        [5],
        {"id": 5, "name": "ok", "price": "not a number"},
    ).to_bytes()
    # The dedup stage reads only the id and table of an event that begins as the poller
    # writes one: one whose rest is bad is refused by the sink, one of another table here.
    bad_rest = orjson.loads(bad_type)
    bad_rest.update(message_unique_id=unique_id("items", [6], 78), changetrack_ver="78")
    other_table = orjson.loads(bad_type)
    other_table.update(message_unique_id=unique_id("kv", [7], 79), table_name="kv")
    await h.produce_raw(
        "items",
        [
            (b"x", b"\xff\x00 not json", time.time()),
            (b"y", b'{"table_name": "items"}', time.time()),
            (good_key, bad_type, time.time()),
            (encode_key([6]), orjson.dumps(bad_rest), time.time()),
            (encode_key([7]), orjson.dumps(other_table), time.time()),
        ],
    )
    # Every topic the pipeline reads: the deduped topic (the sink) and the poll ticks.
    names = TopicNames(h.settings.kafka.topic_prefix)
    huge = b'{"table_name": "items", "pad": "' + b"x" * 200_000 + b'"}'
    await h.produce_raw("items", [(b"z", huge, time.time())], topic=names.deduped(h.spec("items")))
    await h.produce_raw("items", [(b"items", b"\x00tick?", time.time())], topic=names.poll_ticks)
    h.execute("INSERT INTO items VALUES (1, 'fine', 2.5)")
    await h.wait_equal(timeout=60)
    await h.wait_caught_up(timeout=60)
    rows = await h.query("SELECT reason, payload, topic FROM `{ds}._error_records`")
    reasons = " | ".join(r["reason"] for r in rows)
    assert "not JSON" in reasons
    assert "missing field" in reasons
    assert "column 'price'" in reasons and "expected a number" in reasons
    assert any("not a number" in (r["payload"] or "") for r in rows)
    by_topic: dict[str, str] = {}
    for r in rows:
        by_topic[r["topic"]] = by_topic.get(r["topic"], "") + " | " + r["reason"]
    assert "sink: " in by_topic[names.deduped(h.spec("items"))]
    assert "sink: changetrack_ver must be an integer" in by_topic[names.deduped(h.spec("items"))]
    assert "dedup: table_name 'kv' does not belong" in by_topic[names.raw(h.spec("items"))]
    assert "poll tick: " in by_topic[names.poll_ticks]


async def test_two_workers_share_the_work(make_harness: Any) -> None:
    h = make_harness({"items": ITEMS, "kv": KV}, partitions=4)
    await h.start_worker()
    await h.start_worker(wait=False)
    h.execute("INSERT INTO items VALUES (?, ?, ?)", [(i, f"x{i}", 1.0) for i in range(500)])
    h.execute("INSERT INTO kv VALUES (?, ?, ?)", [(str(i), str(i * 7), "v") for i in range(300)])
    h.execute("DELETE FROM items WHERE id < 100")
    await h.wait_equal(timeout=180)
    rows = await h.query("SELECT COUNT(*) AS n FROM `{ds}.items_latest`")
    assert rows[0]["n"] == 400
    # Dedup forwards a copy to the partition it was read from: where its key hashes.
    deduped = TopicNames(h.settings.kafka.topic_prefix).deduped(h.spec("items"))
    parts = [TopicPartition(deduped, p) for p in range(4)]
    bootstrap = h.settings.kafka.bootstrap_servers
    ends = await true_end_offsets(bootstrap, parts)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    placed: list[tuple[int, int]] = []
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        async with asyncio.timeout(30):
            while len(placed) < sum(ends.values()):
                for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                    placed += [
                        (tp.partition, kafka_partitioner(r.key, range(4), [])) for r in records
                    ]
    finally:
        await consumer.stop()
    assert len(placed) >= 400 and all(got == hashed for got, hashed in placed)
