"""What the commands that read BigQuery (status, redrive, replay) share: a table they need,
or a clear error when it does not exist yet."""

from __future__ import annotations

from google.api_core.exceptions import NotFound
from google.cloud import bigquery

from ctstream.bigquery.writer import BigQueryWriter
from ctstream.errors import SinkError, TableMissing


async def existing_table(writer: BigQueryWriter, name: str) -> bigquery.Table:
    """The table ``name`` of the writer's dataset; TableMissing when it (or the dataset)
    does not exist, other SinkErrors as the writer raises them."""
    try:
        return await writer.table(name)
    except SinkError as exc:
        if isinstance(exc.__cause__, NotFound):
            raise TableMissing(
                f"BigQuery table {writer.ref(name)} does not exist; `ctstream worker` "
                "creates it (and the dataset) at start"
            ) from None
        raise
