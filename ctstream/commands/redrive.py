"""``ctstream redrive``: send rows parked in ``_error_records`` again, once the cause is fixed.

Each selected record (the newest per unique id) is parsed back into its change event —
from the payload kept in the record, or, for a payload too large to keep there, from
Kafka at the record's topic/partition/offset — checked against the BigQuery table's
current schema, and written with ``insertId = message_unique_id``. Rows that still do
not fit are reported with the reason and left where they are (their record stays).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from ctstream.bigquery.layout import quote_bq
from ctstream.bigquery.schema import ERROR_RECORDS_TABLE, change_row
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.commands.bigquery_tables import existing_table
from ctstream.errors import BadEvent, ConfigError
from ctstream.models import ChangeEvent, TableSpec
from ctstream.models.values import iso_utc
from ctstream.retry import retry_forever
from ctstream.settings import Settings, load_settings
from ctstream.source.reader import selected_tables
from ctstream.streams.security import client_options


def run(args: argparse.Namespace) -> int:
    """``ctstream redrive --config FILE [--table T]… [--since] [--until] [--dry-run]
    [--json]``: print the result; 1 when any row could not be redriven, else 0."""
    settings = load_settings(args.config)
    tables = args.table or asyncio.run(selected_tables(settings.source))
    unknown = [t for t in tables if not settings.source.selection.selects(t)]
    if unknown:
        raise ConfigError(f"--table {unknown[0]!r} is not in source.tables of {args.config}")
    result = asyncio.run(redrive(settings, tables, args.since, args.until, args.dry_run))
    print(json.dumps(result.as_json()) if args.json else render(result, args.dry_run))
    return 0 if not (result.still_failing or result.unrecoverable) else 1


@dataclass
class RedriveResult:
    selected: int = 0
    delivered: int = 0
    # (unique id, why): still refused by the schema or BigQuery; or not redrivable at all.
    still_failing: list[tuple[str, str]] = field(default_factory=list)
    unrecoverable: list[tuple[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "selected": self.selected,
            "delivered": self.delivered,
            "still_failing": [{"id": i, "reason": r} for i, r in self.still_failing],
            "unrecoverable": [{"id": i, "reason": r} for i, r in self.unrecoverable],
        }


def _ts(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


async def select_records(
    writer: BigQueryWriter,
    tables: set[str],
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> list[dict[str, Any]]:
    """The newest error record per unique id, for the tables and time range."""
    where = ["message_unique_id IS NOT NULL"]
    # Timestamps are formatted here from parsed datetimes, never pasted from input.
    if since is not None:
        where.append(f"error_time >= TIMESTAMP '{_ts(since)}'")
    if until is not None:
        where.append(f"error_time < TIMESTAMP '{_ts(until)}'")
    rows = await writer.query(
        "SELECT source_table, message_unique_id, payload, topic, `partition`, `offset`, "
        f"error_time FROM {quote_bq(writer.ref(ERROR_RECORDS_TABLE))} "
        f"WHERE {' AND '.join(where)} ORDER BY error_time"
    )
    newest: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["source_table"] in tables:
            newest[row["message_unique_id"]] = row
    return list(newest.values())


async def _from_kafka(settings: Settings, record: dict[str, Any]) -> bytes | None:
    if record.get("topic") is None or record.get("offset") is None:
        return None
    tp = TopicPartition(record["topic"], int(record["partition"]))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        enable_auto_commit=False,
        **client_options(settings.kafka),
    )
    try:
        await asyncio.wait_for(consumer.start(), 15)
        consumer.assign([tp])
        consumer.seek(tp, int(record["offset"]))
        message = await asyncio.wait_for(consumer.getone(tp), 15)
    except (TimeoutError, KafkaError, OSError):
        return None
    finally:
        await consumer.stop()
    if message.offset != int(record["offset"]):
        return None  # deleted by topic retention
    value: bytes | None = message.value
    return value


def _payload(record: dict[str, Any]) -> bytes | None:
    text = record.get("payload")
    if text is None:
        return None
    if text.startswith("base64:"):
        return base64.b64decode(text.removeprefix("base64:"))
    return str(text).encode("utf-8")


async def redrive(
    settings: Settings,
    tables: list[str],
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    dry_run: bool = False,
    give_up_after: float = 300.0,
) -> RedriveResult:
    writer = BigQueryWriter(
        settings.bigquery,
        timeout=settings.sink.request_timeout,
        max_request_bytes=settings.sink.max_request_bytes,
    )
    result = RedriveResult()
    try:
        await existing_table(writer, ERROR_RECORDS_TABLE)
        records = await select_records(writer, set(tables), since, until)
        result.selected = len(records)
        by_table: dict[str, list[ChangeEvent]] = {}
        for record in records:
            uid = record["message_unique_id"]
            data = _payload(record) or await _from_kafka(settings, record)
            if data is None:
                result.unrecoverable.append((uid, "payload neither kept nor still in Kafka"))
                continue
            try:
                change = ChangeEvent.from_bytes(data)
            except BadEvent as exc:
                result.unrecoverable.append((uid, f"not a change event: {exc}"))
                continue
            by_table.setdefault(change.table_name, []).append(change)
        now = iso_utc(time.time())
        deadline = time.monotonic() + give_up_after
        for table, changes in by_table.items():
            bq_table = TableSpec(table, None, table, ()).bq_table
            validator = await writer.refresh_validator(bq_table)
            rows, ids = [], []
            for change in changes:
                row = change_row(change, now)
                problems = validator.problems(row)
                if problems:
                    reason = "; ".join(str(p) for p in problems)
                    result.still_failing.append((change.message_unique_id, reason))
                else:
                    rows.append(row)
                    ids.append(change.message_unique_id)
            if dry_run or not rows:
                result.delivered += len(rows)  # dry run: would be sent
                continue

            async def write(
                bq_table: str = bq_table, rows: list[dict[str, Any]] = rows, ids: list[str] = ids
            ) -> list[tuple[int, str]]:
                return await writer.insert(bq_table, rows, ids)

            rejected = await retry_forever(
                write,
                f"redriving {len(rows)} rows to {bq_table}",
                settings.sink.retry_initial,
                settings.sink.retry_max,
                should_abort=lambda: time.monotonic() > deadline,
            )
            for index, reason in rejected:
                result.still_failing.append((ids[index], f"rejected by BigQuery: {reason}"))
            result.delivered += len(rows) - len(rejected)
    finally:
        writer.close()
    return result


def render(result: RedriveResult, dry_run: bool) -> str:
    verb = "would be sent" if dry_run else "delivered"
    lines = [f"{result.selected} error record(s) selected; {result.delivered} {verb}"]
    for uid, reason in result.still_failing[:20]:
        lines.append(f"  still failing {uid}: {reason}")
    for uid, reason in result.unrecoverable[:20]:
        lines.append(f"  cannot redrive {uid}: {reason}")
    hidden = len(result.still_failing) + len(result.unrecoverable) - 40
    if hidden > 0:
        lines.append(f"  … and {hidden} more (use --json)")
    return "\n".join(lines)
