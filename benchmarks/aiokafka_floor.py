"""The peer job as a bare aiokafka loop: the floor of Python overhead for the same work.

``getmany`` → orjson → dict of unique ids (with the time first seen; window 10 min) →
``insert_rows_json`` per table with ``row_ids`` (in a thread) → commit. No state
durability (the ids live in a dict only), so this is a reference for speed, not a design.
Run as a child process by ``benchmarks.peer``; writes ``{"first", "last", "rows",
"started", "dropped"}`` to ``--out`` once ``--rows`` rows were written.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer


async def run(args: argparse.Namespace) -> None:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    started = time.time()
    client = bigquery.Client(
        project="local",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=args.endpoint),
    )
    consumer = AIOKafkaConsumer(
        *args.topics.split(","),
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=2_000,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    seen: dict[str, float] = {}
    state: dict[str, Any] = {"first": 0.0, "last": 0.0, "rows": 0, "started": started}
    state["dropped"] = 0
    window = args.window
    try:
        while state["rows"] < args.rows:
            batch = await consumer.getmany(timeout_ms=int(args.batch_wait * 1000),
                                           max_records=args.batch_rows)  # fmt: skip
            if not batch:
                continue
            if not state["first"]:
                state["first"] = time.time()
            now = time.time()
            iso = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            by_table: dict[str, tuple[list[dict[str, Any]], list[str]]] = {}
            for records in batch.values():
                for record in records:
                    event = orjson.loads(record.value)
                    uid = event["message_unique_id"]
                    first = seen.get(uid)
                    if first is not None and now - first < window:
                        state["dropped"] += 1
                        continue
                    seen[uid] = now
                    row = event.pop("row")
                    event.pop("key")
                    row.update(event)
                    row["bigquery_insert_time"] = iso
                    rows, ids = by_table.setdefault(event["table_name"], ([], []))
                    rows.append(row)
                    ids.append(uid)
            for table, (rows, ids) in by_table.items():
                errors = await asyncio.to_thread(
                    client.insert_rows_json, f"local.{args.dataset}.{table}", rows, row_ids=ids
                )
                if errors:
                    raise RuntimeError(f"insert errors: {errors[:3]}")
                state["rows"] += len(rows)
            await consumer.commit()
            state["last"] = time.time()
        args.out.write_text(json.dumps(state), encoding="utf-8")
    finally:
        await consumer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated raw topics")
    parser.add_argument("--endpoint", required=True, help="BigQuery emulator REST endpoint")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--rows", type=int, required=True, help="unique rows to wait for")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--group", default="peer-floor")
    parser.add_argument("--batch-rows", type=int, default=5000)
    parser.add_argument("--batch-wait", type=float, default=0.3)
    parser.add_argument("--window", type=float, default=600.0, help="dedup window, s")
    args = parser.parse_args(argv)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
