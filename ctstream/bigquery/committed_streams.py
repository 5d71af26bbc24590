"""Committed-type Storage Write streams with offsets: each row appended exactly once.

A committed-type stream is a table's append-only log of rows, visible as soon as they are
appended. Every append names the offset its first row must take, and BigQuery appends a
request only at the stream's end: before the end it answers ALREADY_EXISTS (that request
was appended, by an earlier try of it), beyond the end OUT_OF_RANGE, and a finalized
stream takes no more appends (FinalizeWriteStream answers the rows it holds). So a request
sent again after a timeout or a dropped connection lands at most once — if the same rows
go at the same offset, which :meth:`CommittedStreams.append` keeps true: a request's
rows are fixed until BigQuery answered it; only an answer that appended nothing (row
errors, too large) changes what is sent there next.

BigQuery's answers are read from the response's ``error``: its status code and, where
Google attaches one, its ``StorageError`` detail (STREAM_FINALIZED, OFFSET_ALREADY_EXISTS…).
bqemulator 1.4.0 answers ALREADY_EXISTS, OUT_OF_RANGE, FAILED_PRECONDITION "Stream is
FINALIZED" and NOT_FOUND without details. Row errors are read as in storage_write.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc

from ctstream.bigquery.storage_write import RowEncoder, first_answer, row_errors_answer
from ctstream.errors import (
    CtstreamError,
    RequestTooLarge,
    SinkError,
    StreamFenced,
)
from ctstream.models.values import iso_utc
from ctstream.retry import retry_forever

log = logging.getLogger(__name__)

# The Storage Write API takes requests of up to 10 MB; the rows' bytes are most of it.
MAX_REQUEST_BYTES = 9_000_000
_ALREADY_EXISTS, _OUT_OF_RANGE, _NOT_FOUND, _FAILED_PRECONDITION = 6, 11, 5, 9
# StorageError codes: STREAM_NOT_FOUND, STREAM_FINALIZED, OFFSET_OUT_OF_RANGE; and
# OFFSET_ALREADY_EXISTS.
_FENCED_DETAILS = {3, 6, 9}
_OFFSET_ALREADY_EXISTS = 8


@dataclass
class WriteStream:
    """A committed-type stream and the offset of its next row, as its writer counts."""

    name: str
    rows: int = 0


@dataclass(frozen=True)
class _Answer:
    appended: bool  # the request's rows are in the stream (now, or by an earlier try)
    refused: list[tuple[int, str]]  # (request row, reason): row errors, nothing appended


def create_stream(client: Any, table_path: str, timeout: float) -> str:
    """A new committed-type stream on ``table_path`` (``projects/…/tables/…``); its name."""
    from google.cloud.bigquery_storage_v1 import types

    stream = client.create_write_stream(
        parent=table_path,
        write_stream=types.WriteStream(type_=types.WriteStream.Type.COMMITTED),
        retry=None,  # ctstream retries, with its own backoff
        timeout=timeout,
    )
    return str(stream.name)


def finalize_stream(client: Any, name: str, timeout: float) -> int | None:
    """Finalize ``name``: no more appends; the rows it holds, or None when it is gone."""
    try:
        answer = client.finalize_write_stream(name=name, retry=None, timeout=timeout)
        return int(answer.row_count)
    except gexc.NotFound:
        return None


def _append_at(
    client: Any, name: str, descriptor: Any, rows: Sequence[bytes], offset: int, timeout: float
) -> _Answer:
    from google.cloud.bigquery_storage_v1 import types

    request = types.AppendRowsRequest(
        write_stream=name,
        offset=offset,
        proto_rows=types.AppendRowsRequest.ProtoData(
            writer_schema=types.ProtoSchema(proto_descriptor=descriptor),
            rows=types.ProtoRows(serialized_rows=list(rows)),
        ),
    )
    response = first_answer(client.append_rows(iter([request]), retry=None, timeout=timeout))
    if response.row_errors:
        return _Answer(False, row_errors_answer(response.row_errors, len(rows)))
    code, message = response.error.code, response.error.message
    detail = _storage_error_code(response.error)
    if not code or code == _ALREADY_EXISTS or detail == _OFFSET_ALREADY_EXISTS:
        return _Answer(True, [])
    if (
        code in (_OUT_OF_RANGE, _NOT_FOUND, _FAILED_PRECONDITION)
        or detail in _FENCED_DETAILS
        or "finaliz" in message.lower()
    ):
        raise StreamFenced(f"write stream {name} at offset {offset}: {message}")
    raise gexc.from_grpc_status(code, message)  # type: ignore[no-untyped-call]


def _storage_error_code(status: Any) -> int | None:
    """The ``StorageError`` code among a status' details (Google's documented detail), if any."""
    from google.cloud.bigquery_storage_v1 import types

    for detail in status.details:
        if detail.type_url.endswith("google.cloud.bigquery.storage.v1.StorageError"):
            return int(types.StorageError.deserialize(detail.value).code)
    return None


class CommittedStreams:
    """Creates, appends to and finalizes committed-type streams, through ``call``.

    ``call(what, fn, *args)`` runs a synchronous client call in a worker thread and turns
    its exceptions into ctstream's errors (``BigQueryWriter.run``).
    """

    def __init__(
        self,
        call: Callable[..., Any],
        client: Callable[[], Any],
        retry_initial: float,
        retry_max: float,
        should_abort: Callable[[], bool],
        timeout: float = 60.0,
        on_retry: Callable[[], None] = lambda: None,
    ) -> None:
        self._call = call
        self._on_retry = on_retry
        self._client = client
        self._retry = (retry_initial, retry_max)
        self._should_abort = should_abort
        self._timeout = timeout
        self.appends = 0  # requests BigQuery answered (appended, or found appended)

    async def create(self, table_path: str) -> WriteStream:
        name: str = await self._retrying(
            f"creating a write stream on {table_path}", create_stream, table_path
        )
        return WriteStream(name)

    async def finalize(self, name: str) -> int | None:
        rows: int | None = await self._retrying(
            f"finalizing write stream {name}", finalize_stream, name
        )
        return rows

    async def append(
        self, stream: WriteStream, encoder: RowEncoder, rows: Sequence[dict[str, Any]]
    ) -> list[tuple[int, str]]:
        """Append ``rows`` at ``stream.rows``, each exactly once, advancing ``stream.rows``.

        Returns the rows refused (index, reason): not encodable, named by row errors, or
        of a request BigQuery refused for good. Retriable failures are retried forever with
        backoff, at the same offset with the same rows. Raises StreamFenced when the stream
        takes no more appends (finalized by another writer, gone, or its end is not where
        ``stream.rows`` says): the rows not yet appended are then unwritten. Raises
        RetryAborted when stopping.
        """
        refused: list[tuple[int, str]] = []
        encoded: list[tuple[int, bytes]] = []
        for index, row in enumerate(rows):
            try:
                encoded.append((index, encoder.encode(stamped(row))))
            except (ValueError, TypeError, OverflowError) as exc:
                refused.append((index, f"cannot encode for the Storage Write API: {exc}"))
        pending = _requests(encoded)
        while pending:
            request = pending.pop(0)
            try:
                answer = await self._send(stream, encoder, request, rows)
            except RequestTooLarge as exc:
                if len(request) == 1:
                    refused.append((request[0][0], f"row too large for one request: {exc}"))
                else:
                    middle = len(request) // 2
                    pending[:0] = [request[:middle], request[middle:]]
                continue
            except SinkError as exc:
                if isinstance(exc, StreamFenced):
                    raise
                # Not retriable: this and every later request stay unwritten, refused.
                for unsent in [request, *pending]:
                    refused += [(index, str(exc)) for index, _ in unsent]
                break
            self.appends += 1
            if answer.appended:
                stream.rows += len(request)
                continue
            named = {position for position, _ in answer.refused}
            refused += [(request[position][0], reason) for position, reason in answer.refused]
            held = [item for position, item in enumerate(request) if position not in named]
            if held:
                pending.insert(0, held)  # nothing was appended: the rest go at this offset
        return sorted(refused)

    async def _send(
        self,
        stream: WriteStream,
        encoder: RowEncoder,
        request: list[tuple[int, bytes]],
        rows: Sequence[dict[str, Any]],
    ) -> _Answer:
        offset = stream.rows  # fixed for every try of this request
        payload = [data for _, data in request]
        tries = 0

        async def once() -> _Answer:
            nonlocal payload, tries
            tries += 1
            if tries > 1:  # a row lands at most a request timeout after its stamp
                payload = [encoder.encode(stamped(rows[index])) for index, _ in request]
            answer: _Answer = await self._call(
                f"appending {len(request)} rows to {stream.name} at offset {offset}",
                _append_at,
                self._client(),
                stream.name,
                encoder.descriptor,
                payload,
                offset,
                self._timeout,
            )
            return answer

        result: _Answer = await self._retry_forever(once, f"appending to {stream.name}")
        return result

    async def _retrying(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        async def once() -> Any:
            return await self._call(what, fn, self._client(), *args, self._timeout)

        return await self._retry_forever(once, what)

    async def _retry_forever(self, once: Callable[[], Any], what: str) -> Any:
        def on_retry(attempt: int, exc: CtstreamError) -> None:
            self._on_retry()

        return await retry_forever(
            once, what, *self._retry, on_retry=on_retry, should_abort=self._should_abort
        )


def stamped(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with ``bigquery_insert_time``, when it has one, set to now (compaction's
    watermark relies on a row landing at most a request timeout after its stamp)."""
    if "bigquery_insert_time" in row:
        row["bigquery_insert_time"] = iso_utc(time.time())
    return row


def _requests(encoded: list[tuple[int, bytes]]) -> list[list[tuple[int, bytes]]]:
    """Rows in requests of at most MAX_REQUEST_BYTES (a larger row goes alone)."""
    requests: list[list[tuple[int, bytes]]] = []
    size = 0
    for item in encoded:
        if not requests or size + len(item[1]) > MAX_REQUEST_BYTES:
            requests.append([])
            size = 0
        requests[-1].append(item)
        size += len(item[1])
    return requests
