"""``ctstream redrive``: send rows parked in ``_error_records`` again, once the cause is fixed.

A record is sent back to the BigQuery table it was parked from. The sink writes a table
with a restricted copy twice, from two topics: the main table from ``<prefix>.<t>.deduped``
and the restricted copy (``<t>_restricted``) from ``<prefix>.<t>.restricted``, whose
payload has source.restricted's columns NULL; every record it parks keeps the topic it
read. So a record whose ``topic`` is its source table's restricted-copy topic (under any
topic prefix, see :func:`parked_from_restricted_copy`) goes to the restricted copy,
validated against that table's schema; every other record — another topic, or none
recorded — goes to the main table. The destination is derived, not stored: ``_error_records``
keeps its columns, and every record in it, however old, is routed by this rule.

Each selected record (the newest per unique id and destination: a row parked from both
tables has a record for each) is parsed back into its change event — from the payload
kept in the record, or, for a payload too large to keep there, from Kafka at the
record's topic/partition/offset — checked against its BigQuery table's current schema,
and written with ``insertId = message_unique_id``. Rows that still do not fit are
reported with the reason and their table, and left where they are (their record stays).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import time
from collections.abc import Iterable, Mapping
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
from ctstream.streams.topics import TopicNames


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
    # (unique id, BigQuery table, why): still refused by the schema or BigQuery; or not
    # redrivable at all.
    still_failing: list[tuple[str, str, str]] = field(default_factory=list)
    unrecoverable: list[tuple[str, str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        def entries(items: list[tuple[str, str, str]]) -> list[dict[str, str]]:
            return [{"id": i, "table": t, "reason": r} for i, t, r in items]

        return {
            "selected": self.selected,
            "delivered": self.delivered,
            "still_failing": entries(self.still_failing),
            "unrecoverable": entries(self.unrecoverable),
        }


def parked_from_restricted_copy(record: Mapping[str, Any]) -> bool:
    """Whether the error ``record`` was parked while writing its source table's restricted
    copy: its ``topic`` is that table's restricted-copy topic, under any topic prefix."""
    topic, table = record.get("topic"), record.get("source_table")
    if not topic or not table:
        return False
    own = TopicNames("").restricted(TableSpec(table, None, table, ()))  # ".<t>.restricted"
    return str(topic).endswith(own)


def destination(table_name: str, restricted: bool) -> TableSpec:
    """The spec of the BigQuery table a redriven event of ``table_name`` goes to."""
    spec = TableSpec(table_name, None, table_name, ())
    return spec.restricted_copy() if restricted else spec


def newest_per_destination(
    rows: Iterable[Mapping[str, Any]], tables: set[str]
) -> list[dict[str, Any]]:
    """Of ``rows`` (error records oldest first), the newest per unique id and destination
    (main table or restricted copy), for the source ``tables``."""
    newest: dict[tuple[str, bool], dict[str, Any]] = {}
    for row in rows:
        if row["source_table"] in tables:
            newest[(row["message_unique_id"], parked_from_restricted_copy(row))] = dict(row)
    return list(newest.values())


def _ts(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


async def select_records(
    writer: BigQueryWriter,
    tables: set[str],
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> list[dict[str, Any]]:
    """The newest error record per unique id and destination, for the tables and time
    range."""
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
    return newest_per_destination(rows, tables)


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


async def _changes(
    settings: Settings, records: list[dict[str, Any]], result: RedriveResult
) -> dict[tuple[str, bool], list[ChangeEvent]]:
    """The records' change events by (table name, restricted copy?); the records that
    cannot be read back join ``result.unrecoverable``."""
    by_destination: dict[tuple[str, bool], list[ChangeEvent]] = {}
    for record in records:
        uid = record["message_unique_id"]
        restricted = parked_from_restricted_copy(record)
        parked_in = destination(record["source_table"], restricted).bq_table
        data = _payload(record) or await _from_kafka(settings, record)
        if data is None:
            why = "payload neither kept nor still in Kafka"
            result.unrecoverable.append((uid, parked_in, why))
            continue
        try:
            change = ChangeEvent.from_bytes(data)
        except BadEvent as exc:
            result.unrecoverable.append((uid, parked_in, f"not a change event: {exc}"))
            continue
        by_destination.setdefault((change.table_name, restricted), []).append(change)
    return by_destination


async def redrive(
    settings: Settings,
    tables: list[str],
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    dry_run: bool = False,
    give_up_after: float = 300.0,
) -> RedriveResult:
    """Send the selected records again, each to the table it was parked from (module)."""
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
        by_destination = await _changes(settings, records, result)
        now = iso_utc(time.time())
        deadline = time.monotonic() + give_up_after
        for (table, restricted), changes in by_destination.items():
            bq_table = destination(table, restricted).bq_table
            validator = await writer.refresh_validator(bq_table)
            rows, ids = [], []
            for change in changes:
                row = change_row(change, now)
                problems = validator.problems(row)
                if problems:
                    reason = "; ".join(str(p) for p in problems)
                    result.still_failing.append((change.message_unique_id, bq_table, reason))
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
                why = f"rejected by BigQuery: {reason}"
                result.still_failing.append((ids[index], bq_table, why))
            result.delivered += len(rows) - len(rejected)
    finally:
        writer.close()
    return result


def render(result: RedriveResult, dry_run: bool) -> str:
    verb = "would be sent" if dry_run else "delivered"
    lines = [f"{result.selected} error record(s) selected; {result.delivered} {verb}"]
    for uid, table, reason in result.still_failing[:20]:
        lines.append(f"  still failing {uid} ({table}): {reason}")
    for uid, table, reason in result.unrecoverable[:20]:
        lines.append(f"  cannot redrive {uid} ({table}): {reason}")
    hidden = len(result.still_failing) + len(result.unrecoverable) - 40
    if hidden > 0:
        lines.append(f"  … and {hidden} more (use --json)")
    return "\n".join(lines)
