"""Rows encoded for the Storage Write API from a BigQuery schema built at run time, and the
answer to a request with row errors: nothing of it appended, its good rows sent again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.cloud import bigquery
from google.cloud.bigquery import SchemaField
from google.cloud.bigquery_storage_v1 import types
from google.rpc import status_pb2

from ctstream.bigquery.storage_write import RowEncoder
from ctstream.bigquery.writer import BigQueryWriter
from ctstream.errors import SinkUnavailable
from ctstream.settings import BigQuerySettings

FIELDS = [
    SchemaField("id", "INT64"),
    SchemaField("name", "STRING"),
    SchemaField("price", "NUMERIC"),
    SchemaField("ratio", "FLOAT64"),
    SchemaField("ok", "BOOL"),
    SchemaField("blob", "BYTES"),
    SchemaField("day", "DATE"),
    SchemaField("at", "TIMESTAMP"),
    SchemaField("local", "DATETIME"),
]


def decode(encoder: RowEncoder, data: bytes) -> dict[str, object]:
    message = encoder._class()
    message.ParseFromString(data)
    return {f.name: v for f, v in message.ListFields()}


def test_values_are_converted_to_what_the_api_accepts() -> None:
    encoder = RowEncoder(FIELDS)
    row = {
        "id": "9007199254740993",  # bigger than a double holds exactly
        "name": "x",
        "price": "12.50",
        "ratio": "NaN",
        "ok": True,
        "blob": "AAEC",
        "day": "1970-01-11",
        "at": "1970-01-01T00:00:01.5Z",
        "local": "2026-11-22 10:00:00",
        "gone": None,
    }
    values = decode(encoder, encoder.encode(row))
    assert values["id"] == 9007199254740993
    assert values["price"] == "12.50"
    assert values["ratio"] != values["ratio"]  # NaN
    assert values["blob"] == b"\x00\x01\x02"
    assert values["day"] == 10
    assert values["at"] == 1_500_000
    assert values["local"] == "2026-11-22T10:00:00"


def test_nulls_are_left_out_and_unknown_types_refused() -> None:
    encoder = RowEncoder(FIELDS)
    assert decode(encoder, encoder.encode({"id": 1, "name": None})) == {"id": 1}
    with pytest.raises(ValueError, match="RECORD cannot be written"):
        RowEncoder([SchemaField("nested", "RECORD", fields=[SchemaField("a", "STRING")])])


# -- a request with row errors -------------------------------------------------------------

ITEMS = [SchemaField("id", "INT64", mode="REQUIRED"), SchemaField("name", "STRING")]
ROWS_FAILED = "Errors found while processing rows. Please refer to the row_errors field."


class DocumentedWriteClient:
    """A Storage Write client answering AppendRows as Google documents it.

    ``AppendRowsResponse.row_errors``: if a request failed due to corrupted rows, no rows
    in the batch are appended, and the answer names the bad rows so that the caller can
    remove them and retry. Google answers such a request with ``error``
    (INVALID_ARGUMENT, "Errors found while processing rows…") and ``row_errors`` beside
    it. A fake stands in for the server here only because the local emulator cannot
    give this answer: bqemulator never answers ``row_errors`` (it fails a whole request
    on a value it cannot convert, and appends every row otherwise).

    A row whose ``name`` is ``bad`` is the corrupted row; ``errors_at``, when set, are
    the request positions named instead (to answer with indexes that name no row).
    """

    def __init__(self, bad: str = "<bad>", errors_at: list[int] | None = None) -> None:
        self.bad = bad
        self.errors_at = errors_at
        self.encoder = RowEncoder(ITEMS)
        self.requests: list[list[dict[str, object]]] = []  # rows of each request
        self.appended: list[dict[str, object]] = []

    def append_rows(
        self, requests: Iterator[Any], timeout: float, retry: Any = None
    ) -> Iterator[Any]:
        for request in requests:
            rows = [decode(self.encoder, raw) for raw in request.proto_rows.rows.serialized_rows]
            self.requests.append(rows)
            named = self.errors_at
            if named is None:
                named = [i for i, row in enumerate(rows) if row.get("name") == self.bad]
            if not named:
                self.appended += rows
                yield types.AppendRowsResponse(
                    append_result=types.AppendRowsResponse.AppendResult()
                )
                continue
            yield types.AppendRowsResponse(
                error=status_pb2.Status(code=3, message=ROWS_FAILED),
                row_errors=[
                    types.RowError(
                        index=i,
                        code=types.RowError.RowErrorCode.FIELDS_ERROR,
                        message=f"Field name: invalid value {self.bad!r}",
                    )
                    for i in named
                ],
            )


@pytest.fixture
def storage_writer(monkeypatch: pytest.MonkeyPatch) -> Iterator[BigQueryWriter]:
    """A writer on the Storage Write path of an unreachable endpoint: its ``write_client``
    is the one ``make_write_client`` gives, and table ``items`` has the schema ITEMS."""
    settings = BigQuerySettings(
        project="p",
        dataset="d",
        endpoint="http://127.0.0.1:9",
        write_api="storage_write",
        storage_endpoint="127.0.0.1:9",
    )
    writer = BigQueryWriter(settings)

    async def table(name: str) -> bigquery.Table:
        return bigquery.Table(writer.ref(name), schema=ITEMS)

    monkeypatch.setattr(writer, "table", table)
    yield writer
    writer.close()


def use(monkeypatch: pytest.MonkeyPatch, client: DocumentedWriteClient) -> None:
    monkeypatch.setattr("ctstream.bigquery.writer.make_write_client", lambda settings: client)


def items(names: list[Any]) -> list[dict[str, Any]]:
    return [{"id": i, "name": name} for i, name in enumerate(names)]


def ids(rows: list[dict[str, object]]) -> list[object]:
    return [row["id"] for row in rows]


async def test_good_rows_of_a_request_with_row_errors_are_sent_again_bad_ones_refused(
    storage_writer: BigQueryWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = DocumentedWriteClient()
    use(monkeypatch, client)
    rows = items(["<bad>" if i in (2, 5) else f"row {i}" for i in range(8)])
    rejected = await storage_writer.insert("items", rows, [str(i) for i in range(8)])
    assert rejected == [
        (2, "Field name: invalid value '<bad>'"),
        (5, "Field name: invalid value '<bad>'"),
    ]
    # Nothing of the first request was appended; its six good rows went again, alone.
    assert [ids(request) for request in client.requests] == [
        [0, 1, 2, 3, 4, 5, 6, 7],
        [0, 1, 3, 4, 6, 7],
    ]
    assert ids(client.appended) == [0, 1, 3, 4, 6, 7]
    assert storage_writer.requests == {"insert_all": 0, "storage_write": 2}


async def test_row_errors_name_rows_of_the_request_not_of_the_batch(
    storage_writer: BigQueryWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = DocumentedWriteClient()
    use(monkeypatch, client)
    # Row 0 cannot be encoded and is not sent: the bad row is the request's row 2.
    rows = [{"id": "zero", "name": "x"}, *items(["a", "b", "<bad>", "c"])[1:]]
    rejected = await storage_writer.insert("items", rows, ["0", "1", "2", "3"])
    assert [index for index, _ in rejected] == [0, 2]
    assert rejected[0][1].startswith("cannot encode for the Storage Write API")
    assert rejected[1][1] == "Field name: invalid value '<bad>'"
    assert [ids(request) for request in client.requests] == [[1, 2, 3], [1, 3]]
    assert ids(client.appended) == [1, 3]


async def test_row_errors_naming_no_row_refuse_every_row_instead_of_sending_it_again(
    storage_writer: BigQueryWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = DocumentedWriteClient(errors_at=[7])
    use(monkeypatch, client)
    rejected = await storage_writer.insert("items", items(["a", "b", "c"]), ["0", "1", "2"])
    assert [index for index, _ in rejected] == [0, 1, 2]
    assert all("row errors naming no row of the request" in reason for _, reason in rejected)
    assert len(client.requests) == 1 and client.appended == []


async def test_an_error_without_row_errors_fails_the_whole_request(
    storage_writer: BigQueryWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Unavailable(DocumentedWriteClient):
        def append_rows(
            self, requests: Iterator[Any], timeout: float, retry: Any = None
        ) -> Iterator[Any]:
            for _ in requests:
                yield types.AppendRowsResponse(error=status_pb2.Status(code=14, message="down"))

    use(monkeypatch, Unavailable())
    with pytest.raises(SinkUnavailable, match="down"):
        await storage_writer.insert("items", items(["a"]), ["0"])
