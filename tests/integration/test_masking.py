"""Masked columns never leave the source in clear text; the restricted copy hides more.

The pipeline runs with hashed (a primary key among them), truncated, nulled and dropped
columns, then every topic (the pipeline's and its Faust changelogs), every BigQuery table,
view and table function, the web views and the logs are searched for the clear values.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import urllib.request
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from ctstream.streams.offsets import true_end_offsets
from tests.integration.fault_proxy import FaultProxy

pytestmark = pytest.mark.integration

MASK_KEY = "test-mask-key-0123456789"
TAG = "projects/local/locations/us/taxonomies/pii/policyTags/email"
PEOPLE = (
    "CREATE TABLE people (ssn TEXT PRIMARY KEY, name TEXT, email TEXT, phone TEXT, "
    "notes TEXT, city TEXT)"
)
ORDERS = "CREATE TABLE orders (id INTEGER PRIMARY KEY, email TEXT, amount REAL)"
SOURCE = f"""mask_key = "{MASK_KEY}"
restricted = {{ "people" = ["city", "phone"] }}
[source.mask.people]
ssn = "hash"
email = "hash"
phone = "truncate:4"
notes = "null"
name = "drop"
[source.mask.orders]
email = "hash"
"""
BIGQUERY = f"""[bigquery.tables.people]
policy_tags = {{ email = "{TAG}" }}
"""


def person(i: int) -> tuple[str, str, str, str, str, str]:
    return (
        f"SSN-{i:04d}-SECRET",
        f"Hiddenname{i} Person",
        f"user{i}@secret.example",
        f"+1-555-{i:04d}-77",
        f"confidential note {i}",
        f"City{i % 3}",
    )


def hashed(value: object) -> str:
    return hmac.new(MASK_KEY.encode(), orjson.dumps(value), hashlib.sha256).hexdigest()


async def kafka_messages(h: Any) -> list[bytes]:
    """Keys and values of every message in every topic of this pipeline and its app."""
    bootstrap = h.settings.kafka.bootstrap_servers
    prefixes = (h.settings.kafka.topic_prefix + ".", h.settings.app.id + "-")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    seen: list[bytes] = []
    try:
        mine = [t for t in await consumer.topics() if t.startswith(prefixes)]
        parts = [TopicPartition(t, p) for t in mine for p in consumer.partitions_for_topic(t) or ()]
        ends = await true_end_offsets(bootstrap, parts)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        remaining = {tp: end for tp, end in ends.items() if end > 0}
        while remaining:
            batch = await consumer.getmany(timeout_ms=2000)
            assert batch, f"topics ended early: {remaining}"
            for tp, records in batch.items():
                for r in records:
                    seen += [r.key or b"", r.value or b""]
                    if r.offset + 1 >= remaining.get(tp, 0):
                        remaining.pop(tp, None)
    finally:
        await consumer.stop()
    assert {tp.topic.rsplit(".", 1)[-1] for tp in parts} >= {"raw", "deduped", "restricted"}
    assert any("changelog" in tp.topic for tp in parts)
    return seen


def web_pages(worker: Any) -> str:
    base = f"http://127.0.0.1:{worker.web_port}"
    pages = ["/", "/api/status/", "/metrics", "/tables/", "/api/tables/"]
    listing = orjson.loads(urllib.request.urlopen(base + "/api/tables/", timeout=10).read())
    pages += [f"/api/tables/{t['name']}/?size=100000" for t in listing["tables"]]
    text = []
    for page in pages:
        with urllib.request.urlopen(base + page, timeout=10) as response:
            text.append(response.read().decode(errors="replace"))
    return "\n".join(text)


async def bigquery_text(h: Any) -> str:
    rows = await h.query("SELECT table_name FROM `{ds}.INFORMATION_SCHEMA.TABLES`")
    names = [r["table_name"] for r in rows]
    assert {"people", "people_latest", "people_restricted", "people_restricted_latest"} <= set(
        names
    ), names
    text = []
    for name in names:
        text.append(repr(await h.query(f"SELECT * FROM `{{ds}}.{name}`")))
    for function in ("people_at", "orders_at", "people_restricted_at"):
        text.append(repr(await h.query(f"SELECT * FROM `{{ds}}.{function}`(CURRENT_TIMESTAMP())")))
    return "\n".join(text)


async def test_masked_columns_never_appear_in_clear(
    make_harness: Any, bigquery_proxy: tuple[FaultProxy, str]
) -> None:
    # The emulator keeps no policy tags: what ctstream asked for is checked at the proxy.
    proxy, endpoint = bigquery_proxy
    h = make_harness(
        {"people": PEOPLE, "orders": ORDERS},
        source_extra=SOURCE,
        bigquery_extra=BIGQUERY,
        bigquery_endpoint=endpoint,
        seed=[("INSERT INTO people VALUES (?, ?, ?, ?, ?, ?)", [person(i) for i in range(5)])],
    )
    worker = await h.start_worker()
    h.execute("INSERT INTO people VALUES (?, ?, ?, ?, ?, ?)", [person(i) for i in range(5, 30)])
    orders = [(1, person(1)[2], 10.0), (2, person(2)[2], 20.0), (3, person(1)[2], 5.0)]
    h.execute("INSERT INTO orders VALUES (?, ?, ?)", orders)
    h.execute(
        "UPDATE people SET city = 'Moved', notes = 'new secret' WHERE ssn = ?", [(person(3)[0],)]
    )
    h.execute("DELETE FROM people WHERE ssn = ?", [(person(4)[0],)])
    h.execute(
        "UPDATE people SET email = ? WHERE ssn = ?", [("changed@secret.example", person(7)[0])]
    )

    # The latest view is right with a hashed key: one row per person, updates and
    # deletes applied, and every masked column as configured.
    expected = {hashed(p[0]): p for p in (person(i) for i in range(30)) if p[0] != person(4)[0]}

    async def latest() -> dict[str, dict[str, Any]]:
        rows = await h.query("SELECT * FROM `{ds}.people_latest`")
        return {r["ssn"]: r for r in rows}

    deadline = time.monotonic() + 90
    while (people := await latest()).keys() != expected.keys() or any(
        r["email"] != hashed("changed@secret.example")
        for k, r in people.items()
        if k == hashed(person(7)[0])
    ):
        assert time.monotonic() < deadline, f"people_latest: {len(people)} rows\n{h.logs()}"
        await asyncio.sleep(0.5)
    await h.wait_caught_up(timeout=60)  # the orders and the restricted copy too
    for key, p in expected.items():
        row = people[key]
        email = "changed@secret.example" if p[0] == person(7)[0] else p[2]
        assert row["email"] == hashed(email)
        assert row["phone"] == p[3][:4]
        assert row["notes"] is None
        assert "name" not in row  # dropped: not even a column
        assert row["city"] == ("Moved" if p[0] == person(3)[0] else p[5])
    # Hashes join: equal inputs, equal hashes; different people, different hashes.
    by_order = {r["id"]: r["email"] for r in await h.query("SELECT * FROM `{ds}.orders_latest`")}
    assert by_order[1] == by_order[3] == people[hashed(person(1)[0])]["email"]
    assert by_order[2] == people[hashed(person(2)[0])]["email"] != by_order[1]

    # The restricted copy: NULL where configured, equal elsewhere.
    restricted = {
        r["ssn"]: r for r in await h.query("SELECT * FROM `{ds}.people_restricted_latest`")
    }
    assert set(restricted) == set(people)
    ignore = {"bigquery_insert_time"}
    for key, row in restricted.items():
        assert row["city"] is None and row["phone"] is None
        same = {k: v for k, v in row.items() if k not in {"city", "phone", *ignore}}
        assert same == {k: v for k, v in people[key].items() if k not in {"city", "phone", *ignore}}

    # Nothing in clear anywhere.
    needles = [v for i in range(30) for v in person(i)[:5]]
    needles += ["changed@secret.example", "new secret"]
    haystacks = {
        "kafka": b"\n".join(await kafka_messages(h)).decode(errors="replace"),
        "bigquery": await bigquery_text(h),
        "web": web_pages(worker),
        "logs": h.full_logs(),
    }
    for where, text in haystacks.items():
        found = [n for n in needles if n in text]
        assert not found, f"clear text in {where}: {found[:5]}"
    assert hashed(person(1)[2]) in haystacks["kafka"]  # the search would have found things

    # The policy tag was set on the email column of both people tables when they were
    # created, and nowhere else.
    tagged: dict[str, list[str]] = {}
    for method, _, body in proxy.table_writes:
        table = orjson.loads(body)
        if method == "POST" and "schema" in table:
            name = table["tableReference"]["tableId"]
            for field in table["schema"]["fields"]:
                for tag in (field.get("policyTags") or {}).get("names") or []:
                    tagged.setdefault(name, []).append(f"{field['name']}={tag}")
    assert tagged == {"people": [f"email={TAG}"], "people_restricted": [f"email={TAG}"]}
