"""A source table's columns against its BigQuery table: what was dropped or retyped.

BigQuery tables only ever gain columns. A column dropped at the source stays in BigQuery
(later rows leave it NULL). A column whose new type its BigQuery column cannot hold is
written to a new column named after the type (``qty`` → ``qty__string``), so its values
keep flowing and the old ones stay where they were. A key column cannot move that way —
the latest-state view partitions by the key — so a retyped key stops the table.
Every such difference is reported with what to do about it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from google.cloud.bigquery import SchemaField

from ctstream.bigquery.writer import BigQueryWriter
from ctstream.errors import SourceError
from ctstream.models import METADATA_COLUMNS, ColumnSpec, TableSpec
from ctstream.models.column_types import column_type
from ctstream.settings import BigQueryTableOptions

log = logging.getLogger("ctstream.schema")

# Legacy SQL names the API may report → standard SQL names.
_STANDARD = {
    "INTEGER": "INT64",
    "FLOAT": "FLOAT64",
    "BOOLEAN": "BOOL",
    "DECIMAL": "NUMERIC",
    "BIGDECIMAL": "BIGNUMERIC",
    "RECORD": "STRUCT",
}


def standard_type(field_type: str) -> str:
    t = field_type.upper()
    return _STANDARD.get(t, t)


@dataclass(frozen=True, slots=True)
class SchemaDrift:
    spec: TableSpec  # the source spec, with targets for columns written elsewhere
    dropped: tuple[str, ...]  # BigQuery columns no source column writes any more
    retyped: tuple[tuple[str, str, str], ...]  # (source column, old BigQuery type, new column)

    def notes(self) -> list[str]:
        """One line per difference, each saying what happened and what to do."""
        name, bq_table = self.spec.name, self.spec.bq_table
        lines = [
            f"column {column!r} is no longer in the source table: BigQuery keeps "
            f"{bq_table}.{column} with its old values and later rows leave it NULL; drop it "
            "in BigQuery when it is no longer wanted"
            for column in self.dropped
        ]
        for column, old_type, target in self.retyped:
            lines.append(
                f"column {column!r} changed type at the source and BigQuery's {old_type} "
                f"column cannot hold it: its values now go to {bq_table}.{target}, the old "
                f"ones stay in the old column. To have one column again, recreate "
                f"{bq_table} with the new type and run `ctstream snapshot --table {name}`"
            )
        return lines


def reconcile(spec: TableSpec, fields: Sequence[SchemaField]) -> SchemaDrift:
    """Match ``spec``'s columns (as the source catalog has them) to a BigQuery table."""
    have = {f.name.lower(): standard_type(f.field_type) for f in fields}
    columns: list[ColumnSpec] = []
    retyped: list[tuple[str, str, str]] = []
    written: set[str] = set()
    for column in (replace(c, target=None) for c in spec.columns):
        wanted = column_type(column)
        if wanted is None:  # dropped by source.mask: not carried
            columns.append(column)
            written.add(column.bq_name.lower())  # an older column of it is not news
            continue
        current = have.get(column.bq_name.lower())
        if current is None or current == wanted:
            columns.append(column)
            written.add(column.bq_name.lower())
            continue
        if column.key_ordinal is not None:
            raise SourceError(
                f"table {spec.name!r}: key column {column.name!r} changed type "
                f"({current} in BigQuery, now {wanted}); the latest-state view keys on it, "
                f"so the table is stopped. Recreate {spec.bq_table} in BigQuery (or rename "
                f"the old one) and run `ctstream snapshot --table {spec.name}`"
            )
        target = f"{column.bq_name}__{wanted.lower()}"
        existing = have.get(target.lower())
        if existing is not None and existing != wanted:
            raise SourceError(
                f"table {spec.name!r}: column {column.name!r} changed type to {wanted}, and "
                f"the column {target} it would go to is already {existing}; rename that "
                "BigQuery column"
            )
        columns.append(replace(column, target=target))
        retyped.append((column.name, current, target))
        written |= {column.bq_name.lower(), target.lower()}
    dropped = tuple(
        f.name
        for f in fields
        if f.name.lower() not in written and f.name.lower() not in METADATA_COLUMNS
    )
    return SchemaDrift(replace(spec, columns=tuple(columns)), dropped, tuple(retyped))


async def adopt_schema(
    writer: BigQueryWriter, spec: TableSpec, options: BigQueryTableOptions
) -> tuple[SchemaDrift, list[str]]:
    """Reconcile ``spec`` with its (existing) BigQuery table and add the columns it lacks;
    returns the drift (with the spec to poll with) and the columns added."""
    table = await writer.table(spec.bq_table)
    drift = reconcile(spec, list(table.schema))
    added = await writer.add_columns(drift.spec, options, table)
    if spec.restricted:  # the restricted copy follows the same columns
        await writer.add_columns(drift.spec.restricted_copy(), options)
    return drift, added


async def prepare_table(
    writer: BigQueryWriter, spec: TableSpec, options: BigQueryTableOptions
) -> SchemaDrift:
    """Make the BigQuery table, views and function, then adopt the source's columns (some
    may have been added, dropped or retyped while ctstream was not looking)."""
    await writer.ensure_table(spec, options)
    if spec.restricted:
        await writer.ensure_table(spec.restricted_copy(), options)
    drift, added = await adopt_schema(writer, spec, options)
    if added:
        log.info("table %s: added BigQuery columns %s", spec.name, ", ".join(added))
    for note in drift.notes():
        log.warning("table %s: %s", spec.name, note, extra={"ctstream": {"table": spec.name}})
    return drift
