"""The BigQuery Storage Write API as a write path: the default stream, at-least-once.

Rows are encoded as protocol buffers whose descriptor is built at run time from the
table's BigQuery schema (one message type per schema, cached). Each append is one
request on its own short bidirectional stream, so a failure affects one batch only and
the caller's retries work exactly as for insertAll. The client is synchronous and runs
in a worker thread.

BigQuery appends none of the rows of a request with row errors, and names the bad rows
so that the rest can be sent again without them (``AppendRowsResponse.row_errors``).
``append_rows`` answers such a request as insertAll's answer to a request with an invalid
row reads: the rows named are refused with BigQuery's reason, every other row is held
back, and the writer sends those again on their own (writer.py).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
from collections.abc import Sequence
from typing import Any

from google.cloud import bigquery
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from ctstream.errors import ConfigError, SinkUnavailable
from ctstream.settings import BigQuerySettings

_F = descriptor_pb2.FieldDescriptorProto
# BigQuery type → proto field type (the conversions the Storage Write API accepts).
_PROTO_TYPES = {
    "STRING": _F.TYPE_STRING,
    "INT64": _F.TYPE_INT64,
    "INTEGER": _F.TYPE_INT64,
    "FLOAT64": _F.TYPE_DOUBLE,
    "FLOAT": _F.TYPE_DOUBLE,
    "BOOL": _F.TYPE_BOOL,
    "BOOLEAN": _F.TYPE_BOOL,
    "BYTES": _F.TYPE_BYTES,
    "NUMERIC": _F.TYPE_STRING,
    "BIGNUMERIC": _F.TYPE_STRING,
    "TIMESTAMP": _F.TYPE_INT64,  # microseconds since the epoch
    "DATE": _F.TYPE_INT32,  # days since the epoch
    "DATETIME": _F.TYPE_STRING,
    "TIME": _F.TYPE_STRING,
    "GEOGRAPHY": _F.TYPE_STRING,
    "JSON": _F.TYPE_STRING,
}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@functools.lru_cache(maxsize=4096)  # the rows of a poll share their times
def _timestamp_micros(value: str) -> int:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return (parsed - _EPOCH) // dt.timedelta(microseconds=1)


def _encode(kind: str, value: Any) -> Any:
    """A validated JSON value (as insertAll takes it) → the proto field's value."""
    if kind in {"INT64", "INTEGER"}:
        return int(value)
    if kind in {"FLOAT64", "FLOAT"}:
        return float(value)  # also "NaN", "Infinity", "-Infinity"
    if kind in {"BOOL", "BOOLEAN"}:
        return value in (True, 1, "true")
    if kind == "BYTES":
        return base64.b64decode(value)
    if kind == "TIMESTAMP":
        return _timestamp_micros(value)
    if kind == "DATE":
        return (dt.date.fromisoformat(value) - _EPOCH.date()).days
    if kind == "DATETIME":
        return value.replace(" ", "T")
    return str(value)


class RowEncoder:
    """Rows of one BigQuery schema → serialized proto messages."""

    def __init__(self, fields: Sequence[bigquery.SchemaField]) -> None:
        message = descriptor_pb2.DescriptorProto(name="Row")
        self.kinds: dict[str, str] = {}
        for number, field in enumerate(fields, start=1):
            kind = field.field_type.upper()
            if kind not in _PROTO_TYPES:
                raise ValueError(f"column {field.name!r}: {kind} cannot be written yet")
            message.field.add(
                name=field.name, number=number, type=_PROTO_TYPES[kind], label=_F.LABEL_OPTIONAL
            )
            self.kinds[field.name] = kind
        file = descriptor_pb2.FileDescriptorProto(name="ctstream_row.proto", package="ctstream")
        file.message_type.add().CopyFrom(message)
        pool = descriptor_pool.DescriptorPool()
        pool.Add(file)
        self.descriptor = message
        self._class = message_factory.GetMessageClass(pool.FindMessageTypeByName("ctstream.Row"))

    def encode(self, row: dict[str, Any]) -> bytes:
        values = {
            name: _encode(self.kinds[name], value)
            for name, value in row.items()
            if value is not None and name in self.kinds
        }
        data: bytes = self._class(**values).SerializeToString()
        return data


def make_write_client(settings: BigQuerySettings) -> Any:
    """The Storage Write API client: plaintext to ``storage_endpoint`` (an emulator), else
    Google's endpoint with the service-account key in ``credentials_file`` or Application
    Default Credentials. Raises ConfigError when there are none (never naming a secret)."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud.bigquery_storage_v1 import BigQueryWriteClient

    if settings.storage_endpoint:
        import grpc  # type: ignore[import-untyped]
        from google.cloud.bigquery_storage_v1.services.big_query_write.transports import (
            BigQueryWriteGrpcTransport,
        )

        # An emulator on a plaintext port; Google's endpoint uses TLS and credentials.
        channel = grpc.insecure_channel(settings.storage_endpoint)
        return BigQueryWriteClient(transport=BigQueryWriteGrpcTransport(channel=channel))  # type: ignore[no-untyped-call]
    credentials = None
    if settings.credentials_file is not None:
        from google.oauth2 import service_account

        credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
            str(settings.credentials_file)
        )
    try:
        return BigQueryWriteClient(credentials=credentials)  # type: ignore[no-untyped-call]
    except DefaultCredentialsError:
        raise ConfigError(
            f"bigquery.write_api = {settings.write_api!r} needs Google credentials for the "
            "Storage Write API: set bigquery.credentials_file or Application Default "
            "Credentials, or bigquery.storage_endpoint for a local emulator"
        ) from None


def table_path(settings: BigQuerySettings, table: str) -> str:
    """``table`` of the configured dataset, as the Storage Write API names it."""
    return f"projects/{settings.project}/datasets/{settings.dataset}/tables/{table}"


def stream_name(settings: BigQuerySettings, table: str) -> str:
    """The name of the default stream of ``table`` in the configured dataset."""
    return f"{table_path(settings, table)}/streams/_default"


def append_rows(
    client: Any,
    stream: str,
    encoder: RowEncoder,
    rows: Sequence[dict[str, Any]],
    timeout: float,
    offset: int | None = None,
) -> tuple[list[tuple[int, str]], list[int]]:
    """One append to ``stream``: the rows refused as (index, reason), and the indexes of
    the rows held back (not appended, to be sent again). Raises on failure.

    ``offset``: where the request's first row must go in a committed-type stream
    (bigquery/committed_streams.py); BigQuery fails the request when that is not the
    stream's end.

    A row that cannot be encoded is refused and not sent. An answer with row errors
    appended nothing, whatever its ``error`` says: the rows it names are refused with
    their message and every other row sent is held back. Row errors that name no row of
    the request leave nothing to send again without them: every row sent is refused.
    The other rows of an answer without row errors were appended.
    """
    from google.cloud.bigquery_storage_v1 import types

    refused: list[tuple[int, str]] = []
    proto_rows = types.ProtoRows()
    sent: list[int] = []  # request row → caller's row index
    for index, row in enumerate(rows):
        try:
            proto_rows.serialized_rows.append(encoder.encode(row))
            sent.append(index)
        except (ValueError, TypeError, OverflowError) as exc:
            refused.append((index, f"cannot encode for the Storage Write API: {exc}"))
    if not sent:
        return refused, []
    request = types.AppendRowsRequest(
        write_stream=stream,
        proto_rows=types.AppendRowsRequest.ProtoData(
            writer_schema=types.ProtoSchema(proto_descriptor=encoder.descriptor), rows=proto_rows
        ),
    )
    if offset is not None:
        request.offset = offset
    response = first_answer(client.append_rows(iter([request]), retry=None, timeout=timeout))
    if response.row_errors:
        named, held = _row_errors(response.row_errors, sent)
        return sorted(refused + named), held
    if response.error.code:
        from google.api_core import exceptions

        raise exceptions.from_grpc_status(response.error.code, response.error.message)  # type: ignore[no-untyped-call]
    return refused, []


def first_answer(responses: Any) -> Any:
    """The first answer of an AppendRows call.

    Callers pass ``retry=None``: the client's own retry of AppendRows opens the call again
    with the request iterator it already used up, so the retried call sends nothing and
    ends without an answer. ctstream retries itself, with the same request. An answer
    missing anyway is a retriable failure (and no StopIteration, which cannot cross
    ``asyncio.to_thread``).
    """
    response = next(iter(responses), None)
    if response is None:
        raise SinkUnavailable("AppendRows ended without an answer")
    return response


def row_errors_answer(errors: Sequence[Any], count: int) -> list[tuple[int, str]]:
    """(request row, reason) of each row a request of ``count`` rows with row errors
    refused; nothing of it was appended. Row errors that name no row of the request leave
    nothing to send again without them: every row is refused then."""
    named: dict[int, list[str]] = {}  # request row → its messages
    for error in errors:
        if 0 <= int(error.index) < count:
            named.setdefault(int(error.index), []).append(str(error.message))
    if not named:
        reason = "row errors naming no row of the request: " + "; ".join(
            str(e.message) for e in errors
        )
        return [(position, reason) for position in range(count)]
    return [
        (position, "; ".join(m for m in messages if m) or "rejected by BigQuery")
        for position, messages in sorted(named.items())
    ]


def _row_errors(errors: Sequence[Any], sent: list[int]) -> tuple[list[tuple[int, str]], list[int]]:
    """The rows refused and held back by an answer with row errors (nothing appended).

    ``sent``: the caller's index of each row of the request, in request order.
    """
    refused = row_errors_answer(errors, len(sent))
    named = {position for position, _ in refused}
    held = [index for position, index in enumerate(sent) if position not in named]
    return [(sent[position], reason) for position, reason in refused], held
