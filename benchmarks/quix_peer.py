"""The peer job in Quix Streams, run as a child process by ``benchmarks.peer``.

The same job as ctstream's dedup + sink stages: read the raw topics, drop an event whose
``message_unique_id`` was seen within the window (Quix state, RocksDB, per message key —
events are keyed by primary key and every copy of an id has the same key), and write the
unique events to BigQuery in batches with ``insertId = message_unique_id`` (a Quix
``BatchingSink``, flushed at each checkpoint: every ``--batch-rows`` messages or
``--batch-wait`` s). Writes ``{"first", "last", "rows", "started"}`` to ``--out`` once
``--rows`` rows were written.

Tansu holds a JoinGroup for half the session timeout; librdkafka's default (45 s) makes
Quix wait ~22 s before it gets partitions, so ``session.timeout.ms`` is set to 6 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated raw topics")
    parser.add_argument("--endpoint", required=True, help="BigQuery emulator REST endpoint")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--rows", type=int, required=True, help="unique rows to wait for")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--group", default="peer-quix")
    parser.add_argument("--batch-rows", type=int, default=5000)
    parser.add_argument("--batch-wait", type=float, default=0.3)
    parser.add_argument("--window", type=float, default=600.0, help="dedup window, s")
    args = parser.parse_args(argv)

    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery
    from quixstreams import Application
    from quixstreams.sinks import BatchingSink, SinkBatch

    started = time.time()
    client = bigquery.Client(
        project="local",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=args.endpoint),
    )
    progress = {"first": 0.0, "last": 0.0, "rows": 0, "started": started, "dropped": 0}

    class BigQuerySink(BatchingSink):
        def write(self, batch: SinkBatch) -> None:
            by_table: dict[str, tuple[list[dict[str, Any]], list[str]]] = {}
            now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            for item in batch:
                event = item.value
                rows, ids = by_table.setdefault(event["table_name"], ([], []))
                row = dict(event["row"])
                row.update(
                    message_unique_id=event["message_unique_id"],
                    table_name=event["table_name"],
                    changetrack_interval=event["changetrack_interval"],
                    changetrack_start_time=event["changetrack_start_time"],
                    changetrack_type=event["changetrack_type"],
                    changetrack_ver=event["changetrack_ver"],
                    bigquery_insert_time=now,
                )
                rows.append(row)
                ids.append(event["message_unique_id"])
            for table, (rows, ids) in by_table.items():
                errors = client.insert_rows_json(f"local.{args.dataset}.{table}", rows, row_ids=ids)
                if errors:
                    raise RuntimeError(f"insert errors: {errors[:3]}")
                progress["rows"] += len(rows)
            progress["last"] = time.time()
            if progress["rows"] >= args.rows:
                args.out.write_text(json.dumps(progress), encoding="utf-8")

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        auto_create_topics=True,  # its changelog topic; the raw topics exist
        state_dir=str(args.state_dir),
        commit_every=args.batch_rows,
        commit_interval=args.batch_wait,
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
        loglevel="WARNING",
    )
    window_ms = int(args.window * 1000)
    sdf = None
    for name in args.topics.split(","):
        topic = app.topic(name, key_deserializer="bytes", value_deserializer="json")
        part = app.dataframe(topic)
        sdf = part if sdf is None else sdf.concat(part)
    assert sdf is not None

    def unique(event: dict[str, Any], state: Any) -> bool:
        if not progress["first"]:
            progress["first"] = time.time()
        uid = event["message_unique_id"]
        now_ms = int(time.time() * 1000)
        seen = state.get(uid)
        if seen is not None and now_ms - seen < window_ms:
            progress["dropped"] += 1
            return False
        state.set(uid, now_ms)
        return True

    sdf = sdf.filter(unique, stateful=True)
    sdf.sink(BigQuerySink())
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
