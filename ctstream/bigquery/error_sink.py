"""Where rows that cannot be written go: the error topic and ``<dataset>._error_records``.

Both get the reason, the source table, the unique id when known and the raw payload, so
nothing is lost and a row can be re-sent once the cause is fixed. Writes are retried
with backoff (forever for retriable failures) before the caller acknowledges anything.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ctstream.bigquery.schema import ERROR_RECORDS_TABLE
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.errors import RetryAborted, SinkError
from ctstream.models.values import iso_utc
from ctstream.retry import retry_forever

log = logging.getLogger("ctstream.errors")

_MAX_PAYLOAD = 512 * 1024


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    reason: str
    payload: bytes | None
    source_table: str | None = None
    message_unique_id: str | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    def as_row(self, now: float) -> dict[str, Any]:
        payload: str | None = None
        reason = self.reason[:10_000]
        if self.payload is not None and len(self.payload) > _MAX_PAYLOAD:
            # Never a cut payload: `ctstream redrive` reads the whole one from Kafka.
            reason += (
                f" (payload of {len(self.payload)} bytes left in Kafka at "
                f"{self.topic}/{self.partition}/{self.offset})"
            )
        elif self.payload is not None:
            try:
                payload = self.payload.decode("utf-8")
            except UnicodeDecodeError:
                payload = "base64:" + base64.b64encode(self.payload).decode()
        return {
            "source_table": self.source_table,
            "message_unique_id": self.message_unique_id,
            "reason": reason,
            "payload": payload,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "error_time": iso_utc(now),
        }


class ErrorReporter:
    def __init__(
        self,
        writer: BigQueryWriter,
        error_topic: Any,
        retry_initial: float,
        retry_max: float,
        should_abort: Callable[[], bool] | None = None,
    ) -> None:
        self._writer = writer
        self._topic = error_topic
        self._retry = (retry_initial, retry_max)
        self._should_abort = should_abort
        self.count = 0

    async def report(
        self,
        reason: str,
        payload: bytes | None,
        source_table: str | None = None,
        message_unique_id: str | None = None,
        message: Any = None,
    ) -> None:
        record = ErrorRecord(
            reason=reason,
            payload=payload,
            source_table=source_table,
            message_unique_id=message_unique_id,
            topic=getattr(message, "topic", None),
            partition=getattr(message, "partition", None),
            offset=getattr(message, "offset", None),
        )
        await self.report_many([record])

    async def report_many(self, records: Sequence[ErrorRecord]) -> None:
        if not records:
            return
        now = time.time()
        rows = [r.as_row(now) for r in records]
        for record, row in zip(records, rows, strict=True):
            log.warning(
                "error record: table=%s id=%s reason=%s",
                record.source_table,
                record.message_unique_id,
                record.reason[:300],
            )
            fut = await self._topic.send(
                key=(record.source_table or "").encode("utf-8"), value=orjson.dumps(row)
            )
            await fut
        ids = [f"error:{r.topic}:{r.partition}:{r.offset}:{i}" for i, r in enumerate(records)]

        async def write() -> list[tuple[int, str]]:
            return await self._writer.insert(ERROR_RECORDS_TABLE, rows, ids)

        self.count += len(records)
        try:
            rejected = await retry_forever(
                write, "writing error records", *self._retry, should_abort=self._should_abort
            )
        except RetryAborted:
            raise  # the caller keeps the events uncommitted
        except SinkError as exc:
            rejected = [(-1, str(exc))]
        if rejected:
            # The error topic holds them all the same; say loudly that the table does not.
            log.error("BigQuery refused %d error records: %s", len(rejected), rejected[:3])
