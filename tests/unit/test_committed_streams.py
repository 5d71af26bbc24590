"""Appends to committed-type streams land once, whatever answers are lost on the way.

The client here keeps a stream as Google documents committed-type streams with offsets:
an append lands only at the stream's end (ALREADY_EXISTS before it, OUT_OF_RANGE beyond),
a request with row errors appends nothing, a finalized stream takes no appends and
finalizing answers its row count. Faults are injected around it: an answer lost after the
rows landed (the case offsets exist for), and a failure before they reach it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import bigquery
from google.cloud.bigquery_storage_v1 import types
from google.rpc import status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from ctstream.bigquery import committed_streams
from ctstream.bigquery.client import classify
from ctstream.bigquery.committed_streams import CommittedStreams, WriteStream
from ctstream.bigquery.storage_write import RowEncoder
from ctstream.errors import StreamFenced

FIELDS = [bigquery.SchemaField("id", "INT64"), bigquery.SchemaField("name", "STRING")]
BAD = "<bad>"


class DocumentedStream:
    """One committed-type stream, as Google documents it, with faults on demand."""

    def __init__(self, faults: list[str] | None = None) -> None:
        self.rows: list[bytes] = []
        self.finalized = False
        self.faults = list(faults or [])  # per append: "lost", "down" or "" (none)
        self.appends = 0

    def append_rows(
        self, requests: Iterator[Any], timeout: float, retry: Any = None
    ) -> Iterator[Any]:
        [request] = list(requests)
        fault = self.faults.pop(0) if self.faults else ""
        if fault == "down":
            raise gexc.ServiceUnavailable("injected: down before the rows arrived")
        answer = self._answer(request)
        if fault == "lost":
            raise gexc.ServiceUnavailable("injected: answer lost after the rows landed")
        return iter([answer])

    def _answer(self, request: Any) -> Any:
        self.appends += 1
        rows = list(request.proto_rows.rows.serialized_rows)
        offset = request.offset
        if self.finalized:
            return types.AppendRowsResponse(error=status_pb2.Status(code=9, message="FINALIZED"))
        bad = [i for i, row in enumerate(rows) if BAD.encode() in row]
        if offset < len(self.rows):
            return types.AppendRowsResponse(error=status_pb2.Status(code=6, message="exists"))
        if offset > len(self.rows):
            return types.AppendRowsResponse(error=status_pb2.Status(code=11, message="beyond"))
        if bad:
            return types.AppendRowsResponse(
                error=status_pb2.Status(code=3, message="Errors found while processing rows."),
                row_errors=[types.RowError(index=i, message="bad value") for i in bad],
            )
        self.rows += rows
        return types.AppendRowsResponse(append_result=types.AppendRowsResponse.AppendResult())

    def finalize_write_stream(self, name: str, timeout: float, retry: Any = None) -> Any:
        self.finalized = True
        return types.FinalizeWriteStreamResponse(row_count=len(self.rows))


async def call(what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:
        raise classify(exc, what) from exc


def streams(client: DocumentedStream) -> CommittedStreams:
    return CommittedStreams(call, lambda: client, 0.001, 0.001, should_abort=lambda: False)


def rows_of(names: list[str]) -> list[dict[str, Any]]:
    return [{"id": i, "name": name} for i, name in enumerate(names)]


def names_in(client: DocumentedStream, encoder: RowEncoder) -> list[str]:
    message = encoder._class  # the generated message type decodes what was appended
    return [str(message.FromString(row).name) for row in client.rows]


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=30),
    faults=st.lists(st.sampled_from(["lost", "down", ""]), max_size=12),
    per_request=st.integers(min_value=1, max_value=8),
)
async def test_every_row_lands_once_whatever_answers_are_lost(
    count: int, faults: list[str], per_request: int
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(committed_streams, "MAX_REQUEST_BYTES", per_request * 8)
        await _append_through_faults(count, faults)


async def _append_through_faults(count: int, faults: list[str]) -> None:
    client = DocumentedStream(faults)
    encoder = RowEncoder(FIELDS)
    stream = WriteStream("s")
    names = [f"r{i}" for i in range(count)]
    refused = await streams(client).append(stream, encoder, rows_of(names))
    assert refused == []
    assert names_in(client, encoder) == names
    assert stream.rows == count


async def test_rows_with_row_errors_are_refused_and_the_rest_sent_again_at_the_offset() -> None:
    client = DocumentedStream(["lost"])
    encoder = RowEncoder(FIELDS)
    stream = WriteStream("s")
    await streams(client).append(stream, encoder, rows_of(["a"]))
    refused = await streams(client).append(stream, encoder, rows_of(["b", BAD, "c", BAD]))
    assert [index for index, _ in refused] == [1, 3]
    assert all("bad value" in reason for _, reason in refused)
    assert names_in(client, encoder) == ["a", "b", "c"]
    assert stream.rows == 3


async def test_a_finalized_stream_fences_its_writer() -> None:
    client = DocumentedStream()
    encoder = RowEncoder(FIELDS)
    stream = WriteStream("s")
    await streams(client).append(stream, encoder, rows_of(["a", "b"]))
    assert await streams(client).finalize("s") == 2
    with pytest.raises(StreamFenced, match="FINALIZED"):
        await streams(client).append(stream, encoder, rows_of(["c"]))
    assert names_in(client, encoder) == ["a", "b"]


async def test_an_offset_beyond_the_end_fences_the_writer_instead_of_skipping_rows() -> None:
    client = DocumentedStream()
    encoder = RowEncoder(FIELDS)
    stream = WriteStream("s", rows=5)  # counted more than the stream holds
    with pytest.raises(StreamFenced, match="offset 5"):
        await streams(client).append(stream, encoder, rows_of(["a"]))
    assert client.rows == []


async def test_rows_that_cannot_be_encoded_are_refused_and_not_sent() -> None:
    client = DocumentedStream()
    encoder = RowEncoder(FIELDS)
    stream = WriteStream("s")
    rows: list[dict[str, Any]] = [{"id": "not a number", "name": "x"}, {"id": 2, "name": "y"}]
    refused = await streams(client).append(stream, encoder, rows)
    assert [index for index, _ in refused] == [0]
    assert names_in(client, encoder) == ["y"]


async def test_a_storage_error_detail_says_finalized_whatever_the_status_code() -> None:
    from google.protobuf import any_pb2

    class GoogleFinalized(DocumentedStream):
        def append_rows(
            self, requests: Iterator[Any], timeout: float, retry: Any = None
        ) -> Iterator[Any]:
            detail = any_pb2.Any(
                type_url="type.googleapis.com/google.cloud.bigquery.storage.v1.StorageError",
                value=types.StorageError.serialize(
                    types.StorageError(code=types.StorageError.StorageErrorCode.STREAM_FINALIZED)
                ),
            )
            status = status_pb2.Status(code=3, message="Stream is closed", details=[detail])
            return iter([types.AppendRowsResponse(error=status)])

    encoder = RowEncoder(FIELDS)
    with pytest.raises(StreamFenced, match="closed"):
        await streams(GoogleFinalized()).append(WriteStream("s"), encoder, rows_of(["a"]))
