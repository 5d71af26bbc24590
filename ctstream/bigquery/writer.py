"""Writes change rows to BigQuery: tables and views on first use, insertAll with insertIds.

The google-cloud-bigquery client is synchronous; every call runs in a worker thread so
the event loop never blocks. Retrying is the caller's job (the sink agent retries forever
with backoff and does not acknowledge meanwhile); this module only says, through the
``retriable`` attribute of the error it raises, whether trying again can help.

On both write paths (insertAll, Storage Write) BigQuery writes nothing of a request with
an invalid row: the rows it names are refused with its reason, the others sent again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from google.cloud import bigquery

from ctstream.bigquery.client import DEFAULT_CONNECTIONS, in_thread, make_client
from ctstream.bigquery.layout import apply_layout, quote_bq
from ctstream.bigquery.schema import (
    COMPACTION_FIELDS,
    COMPACTION_TABLE,
    ERROR_RECORDS_FIELDS,
    ERROR_RECORDS_TABLE,
    SNAPSHOTS_FIELDS,
    SNAPSHOTS_TABLE,
    RowValidator,
    table_schema,
    with_policy_tags,
)
from ctstream.bigquery.storage_write import RowEncoder, append_rows, make_write_client, stream_name
from ctstream.bigquery.table_views import ensure_current_and_views
from ctstream.errors import RequestTooLarge
from ctstream.models import TableSpec
from ctstream.models.values import iso_utc
from ctstream.settings import BigQuerySettings, BigQueryTableOptions

log = logging.getLogger(__name__)

# Starts the reason of a row rejected for its size (the sink keeps its payload out of
# the error records table, which could not hold it either).
TOO_LARGE = "row too large for one BigQuery request"
# The reason of a valid row BigQuery did not insert because another row of its request
# was invalid.
STOPPED = "held back by BigQuery (stopped)"
QueryParameter = bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter


@dataclass(frozen=True)
class _Batch:
    """The rows of one ``insert`` call and their encoded insertAll entries (with insertId)."""

    table: str
    rows: Sequence[dict[str, Any]]
    encoded: Sequence[bytes]


class BigQueryWriter:
    """One dataset: change tables, their latest-state views and the error records table."""

    def __init__(
        self,
        settings: BigQuerySettings,
        timeout: float = 60.0,
        max_request_bytes: int = 9_000_000,
        connections: int = DEFAULT_CONNECTIONS,
    ) -> None:
        self.settings = settings
        self._client = make_client(settings, connections)
        self._timeout = timeout
        self._max_bytes = max_request_bytes
        self._write_client: Any = None  # the Storage Write API client, made on first use
        self._encoders: dict[str, RowEncoder] = {}
        self.requests = {"insert_all": 0, "storage_write": 0}  # successful, for status
        self._validators: dict[str, RowValidator] = {}

    def ref(self, table: str) -> str:
        return f"{self.settings.project}.{self.settings.dataset}.{table}"

    def validator(self, table: str) -> RowValidator:
        return self._validators[table]

    async def run(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn`` in a worker thread; its failure as ctstream's error (``classify``)."""
        return await in_thread(what, fn, *args, **kwargs)

    async def create(self, table: bigquery.Table, what: str) -> None:
        """Create ``table`` unless it exists."""
        await self.run(
            what, self._client.create_table, table, exists_ok=True, timeout=self._timeout
        )

    async def ensure_dataset(self) -> None:
        """Create the dataset and ctstream's own tables if missing.

        The first call to BigQuery at start: the client retries it for at most the request
        timeout (not its default 10 minutes), so an unreachable endpoint fails the start
        with a clear error instead of a silent wait.
        """
        dataset = bigquery.Dataset(f"{self.settings.project}.{self.settings.dataset}")
        if self.settings.location:
            dataset.location = self.settings.location
        await self.run(
            f"creating dataset {self.settings.dataset}",
            self._client.create_dataset,
            dataset,
            exists_ok=True,
            timeout=self._timeout,
            retry=bigquery.DEFAULT_RETRY.with_timeout(self._timeout),
        )
        fields = list(ERROR_RECORDS_FIELDS)
        table = bigquery.Table(self.ref(ERROR_RECORDS_TABLE), schema=fields)
        await self.create(table, "creating the error records table")
        self._validators[ERROR_RECORDS_TABLE] = RowValidator(fields)
        table = bigquery.Table(self.ref(SNAPSHOTS_TABLE), schema=list(SNAPSHOTS_FIELDS))
        await self.create(table, "creating the snapshots table")
        table = bigquery.Table(self.ref(COMPACTION_TABLE), schema=list(COMPACTION_FIELDS))
        await self.create(table, "creating the compaction table")

    async def ensure_table(
        self, spec: TableSpec, options: BigQueryTableOptions | None = None
    ) -> None:
        """Create the change table if missing, and its compacted table, latest-state view
        and time-travel function (table_views.py)."""
        options = options or BigQueryTableOptions()
        fields = table_schema(spec, options.policy_tags)
        table = bigquery.Table(self.ref(spec.bq_table), schema=fields)
        apply_layout(table, spec, fields, options, self.settings.change_log_retention)
        await self.create(table, f"creating table {spec.bq_table}")
        await ensure_current_and_views(self, spec)
        self._validators[spec.bq_table] = RowValidator(fields)

    async def add_columns(
        self,
        spec: TableSpec,
        options: BigQueryTableOptions,
        table: bigquery.Table | None = None,
    ) -> list[str]:
        """Add the spec's columns the BigQuery table lacks (NULLABLE); returns their names.
        ``table``: the table as just read, if the caller has it."""
        name = spec.bq_table
        missing = await self.add_fields(name, table_schema(spec, options.policy_tags), table)
        if missing:
            await self.ensure_table(spec, options)  # views and function see the new columns
        await self.refresh_validator(name)
        return missing

    async def add_fields(
        self,
        name: str,
        fields: Sequence[bigquery.SchemaField],
        table: bigquery.Table | None = None,
    ) -> list[str]:
        """Add the ``fields`` table ``name`` lacks (NULLABLE, in order), and their policy
        tags; returns the names added.

        ``table``: the table as just read, if the caller has it. ``ALTER TABLE … ADD COLUMN
        IF NOT EXISTS`` first, then the table's schema metadata if it still lacks them: real
        BigQuery updates both with the DDL; bqemulator keeps its storage and its catalog
        apart and needs both, in the same column order.
        """
        if table is None:
            table = await self.table(name)
        have = {f.name.lower() for f in table.schema}
        missing = [f for f in fields if f.name.lower() not in have]
        await self._apply_policy_tags(table, fields)
        for field in missing:
            sql = (
                f"ALTER TABLE {quote_bq(self.ref(name))} ADD COLUMN IF NOT EXISTS "
                f"{quote_bq(field.name)} {field.field_type}"
            )
            await self.execute(sql, (), f"adding column {field.name} to {name}")
        if missing:
            table = await self.table(name)
            have = {f.name.lower() for f in table.schema}
            still = [f for f in missing if f.name.lower() not in have]
            if still:
                table.schema = [*table.schema, *still]
                await self.run(
                    f"adding columns to {name}", self._client.update_table, table, ["schema"]
                )
        return [f.name for f in missing]

    async def _apply_policy_tags(
        self, table: bigquery.Table, fields: Sequence[bigquery.SchemaField]
    ) -> None:
        """Give existing columns the policy tags the config asks for (tags added later)."""
        schema = with_policy_tags(table.schema, fields)
        if schema is not None:
            table.schema = schema
            what = f"setting policy tags on {table.table_id}"
            await self.run(what, self._client.update_table, table, ["schema"])

    async def refresh_validator(self, name: str) -> RowValidator:
        """The validator of ``name`` from its current BigQuery schema."""
        table = await self.table(name)
        validator = RowValidator(list(table.schema))
        self._validators[name] = validator
        self._encoders.pop(name, None)  # rebuilt from the new schema on the next append
        return validator

    async def ensure_view(self, name: str, sql: str) -> None:
        """Create the view, or bring an older ctstream's definition up to date."""
        what = f"creating view {name}"
        view = bigquery.Table(self.ref(name))
        view.view_query = sql
        await self.create(view, what)
        existing = await self.run(what, self._client.get_table, self.ref(name))
        if existing.view_query != sql:
            existing.view_query = sql
            await self.run(what, self._client.update_table, existing, ["view_query"])
            log.info("updated the definition of view %s", name)

    async def insert(
        self, table: str, rows: Sequence[dict[str, Any]], row_ids: Sequence[str]
    ) -> list[tuple[int, str]]:
        """insertAll. Returns per-row rejections as (index, reason); raises on failure.

        Rows go in requests of at most ``max_request_bytes``; a request BigQuery refuses as
        too large is split in halves; a row too large on its own is rejected, not sent.
        A row's ``bigquery_insert_time``, when it has one, is set to the time of this call:
        retried, a row lands at most a request timeout after its stamp, which compaction's
        watermark relies on (compaction.py).
        """
        stamp = iso_utc(time.time())
        for row in rows:
            if "bigquery_insert_time" in row:
                row["bigquery_insert_time"] = stamp
        # Each row is encoded once, with orjson: its size decides the requests, and the
        # same bytes make the request body (the client would encode again with stdlib json).
        encoded = [
            orjson.dumps({"insertId": row_id, "json": row})
            for row_id, row in zip(row_ids, rows, strict=True)
        ]
        batch = _Batch(table, rows, encoded)
        rejected: list[tuple[int, str]] = []
        start, size = 0, 0
        for index, entry in enumerate(encoded):
            row_size = len(entry) + 1
            if row_size > self._max_bytes:
                rejected += await self._insert_range(batch, start, index)
                rejected.append(
                    (index, f"{TOO_LARGE}: {row_size} bytes, a request holds {self._max_bytes}")
                )
                start, size = index + 1, 0
            elif size + row_size > self._max_bytes:
                rejected += await self._insert_range(batch, start, index)
                start, size = index, row_size
            else:
                size += row_size
        rejected += await self._insert_range(batch, start, len(rows))
        return rejected

    async def _insert_range(self, batch: _Batch, start: int, end: int) -> list[tuple[int, str]]:
        if start >= end:
            return []
        try:
            refused, held_back = await self._insert_once(batch, start, end)
        except RequestTooLarge as exc:
            if end - start == 1:
                return [(start, f"{TOO_LARGE}: {exc}")]
            middle = (start + end) // 2
            log.info("%s; splitting %d rows in two", exc, end - start)
            first = await self._insert_range(batch, start, middle)
            return first + await self._insert_range(batch, middle, end)
        rejected = [(start + index if index >= 0 else -1, reason) for index, reason in refused]
        held = [start + index for index in held_back]
        if held and not rejected:
            # Held back without an invalid row named: park them rather than loop.
            rejected += [(index, f"{STOPPED}, with no invalid row named") for index in held]
        elif held:
            log.info(
                "%d valid rows of %s held back by %d invalid ones; sending them again",
                len(held),
                batch.table,
                len(rejected),
            )
            rejected += await self._insert_again(batch, held)
        return sorted(rejected)

    async def _insert_again(self, batch: _Batch, indexes: list[int]) -> list[tuple[int, str]]:
        """Insert the rows at ``indexes`` of ``batch`` on their own; rejections by batch index."""
        again = _Batch(
            batch.table, [batch.rows[i] for i in indexes], [batch.encoded[i] for i in indexes]
        )
        rejected = await self._insert_range(again, 0, len(indexes))
        return [(indexes[index] if index >= 0 else -1, reason) for index, reason in rejected]

    async def _insert_once(
        self, batch: _Batch, start: int, end: int
    ) -> tuple[list[tuple[int, str]], list[int]]:
        """One request: the rows refused (index in the request, reason), and those held back.

        Without ``skipInvalidRows`` BigQuery inserts nothing of a request with an invalid
        row, and answers for each valid row the reason ``stopped``: those rows can be sent
        again as they are. The Storage Write API appends nothing of a request with row
        errors either; ``_append`` answers in the same shape.
        """
        table = batch.table
        if self.settings.write_api == "storage_write" and not table.startswith("_"):
            return await self._append(table, batch.rows[start:end])
        body = b'{"rows":[' + b",".join(batch.encoded[start:end]) + b"]}"
        response = await self.run(
            f"writing {end - start} rows to {table}", self._post_insert_all, table, body
        )
        self.requests["insert_all"] += 1
        refused: list[tuple[int, str]] = []
        held: list[int] = []
        for entry in response.get("insertErrors") or []:
            index = int(entry.get("index", -1))
            errors = entry.get("errors") or []
            if not 0 <= index < end - start:
                index = -1  # names no row of the request
            elif errors and all(e.get("reason") == "stopped" for e in errors):
                held.append(index)
                continue
            reasons = "; ".join(
                f"{e.get('location', '')}: {e.get('message', e.get('reason', ''))}" for e in errors
            )
            refused.append((index, reasons or "rejected by BigQuery"))
        return refused, held

    def _post_insert_all(self, table: str, body: bytes) -> dict[str, Any]:
        """tabledata.insertAll with a body already encoded (runs in a worker thread).

        The client's own connection sends it, so authentication, the endpoint and the
        errors raised (google.api_core exceptions, see ``classify``) are the client's.
        No retry here: ours is forever, with backoff, and without acknowledging meanwhile.
        """
        ref = bigquery.TableReference.from_string(self.ref(table))
        response: dict[str, Any] = self._client._connection.api_request(  # type: ignore[no-untyped-call]
            method="POST",
            path=f"{ref.path}/insertAll",
            data=body,
            content_type="application/json",
            timeout=self._timeout,
        )
        return response

    async def _append(
        self, table: str, rows: Sequence[dict[str, Any]]
    ) -> tuple[list[tuple[int, str]], list[int]]:
        """One append to the Storage Write API's default stream (ctstream's own tables use
        insertAll): the rows refused (index, reason), and those held back (``append_rows``)."""
        encoder = await self.encoder(table)
        answer: tuple[list[tuple[int, str]], list[int]] = await self.run(
            f"appending {len(rows)} rows to {table}",
            append_rows,
            self.write_client(),
            stream_name(self.settings, table),
            encoder,
            list(rows),
            self._timeout,
        )
        self.requests["storage_write"] += 1
        return answer

    async def encoder(self, table: str) -> RowEncoder:
        """The Storage Write encoder of ``table``'s schema (read once, then cached)."""
        encoder = self._encoders.get(table)
        if encoder is None:
            fields = list((await self.table(table)).schema)
            encoder = self._encoders[table] = RowEncoder(fields)
        return encoder

    def write_client(self) -> Any:
        """The Storage Write API client (made on first use)."""
        if self._write_client is None:
            self._write_client = make_write_client(self.settings)
        return self._write_client

    async def table(self, name: str) -> bigquery.Table:
        # Retried by the client for at most the request timeout (its default is 10
        # minutes): callers retry themselves, and a command should fail in that time.
        table: bigquery.Table = await self.run(
            f"reading table {name}",
            self._client.get_table,
            self.ref(name),
            timeout=self._timeout,
            retry=bigquery.DEFAULT_RETRY.with_timeout(self._timeout),
        )
        return table

    async def query(self, sql: str, params: Sequence[QueryParameter] = ()) -> list[dict[str, Any]]:
        """Rows of a query; ``params`` are its named ``@parameters``."""
        config = bigquery.QueryJobConfig(query_parameters=list(params)) if params else None

        def run() -> list[dict[str, Any]]:
            job = self._client.query(sql, job_config=config, timeout=self._timeout)
            return [dict(row.items()) for row in job.result(timeout=self._timeout)]

        result: list[dict[str, Any]] = await self.run("query", run)
        return result

    async def execute(
        self, sql: str, params: Sequence[bigquery.ScalarQueryParameter], what: str
    ) -> int:
        """Run a DML or DDL statement; the rows it changed (0 for DDL)."""
        config = bigquery.QueryJobConfig(query_parameters=list(params)) if params else None

        def run() -> int:
            job = self._client.query(sql, job_config=config, timeout=self._timeout)
            job.result(timeout=self._timeout)
            return int(job.num_dml_affected_rows or 0)

        affected: int = await self.run(what, run)
        return affected

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]
