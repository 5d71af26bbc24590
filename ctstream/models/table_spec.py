"""What ctstream knows about a source table: its columns, key and destination names."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ctstream.models.change_event import METADATA_COLUMNS

_BQ_BAD = re.compile(r"[^A-Za-z0-9_]")
_TOPIC_BAD = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    name: str  # as in the source catalog
    source_type: str  # declared type, e.g. 'INTEGER', 'decimal(18,2)'
    nullable: bool = True
    key_ordinal: int | None = None  # 1-based position in the primary key
    precision: int | None = None
    scale: int | None = None
    max_length: int | None = None
    # The BigQuery column when it is not the default one: set for a column whose type
    # changed at the source into one its BigQuery column cannot hold (see schema_drift).
    target: str | None = None
    # source.mask's rule for this column ('hash', 'null', 'drop', 'truncate:N'), if any.
    mask: str | None = None

    @property
    def bq_name(self) -> str:
        return self.target or bq_identifier(self.name)


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A tracked source table. ``name`` is how the config names it (``dbo.items``)."""

    name: str
    schema: str | None
    table: str
    columns: tuple[ColumnSpec, ...]
    change_table: str | None = None  # the SQLite stand-in's change table
    object_id: int | None = None  # SQL Server's object id of the table
    # Columns NULL in the restricted copy (source.restricted); empty: no restricted copy.
    restricted: tuple[str, ...] = ()
    # "restricted": this spec describes the restricted copy's BigQuery table.
    variant: str | None = None

    @property
    def catalog_columns(self) -> tuple[ColumnSpec, ...]:
        """The columns as the source catalog describes them (no BigQuery targets)."""
        return tuple(
            replace(c, target=None, mask=None) if c.target or c.mask else c for c in self.columns
        )

    @property
    def targets(self) -> dict[str, str]:
        """Source column → BigQuery column, for the columns written elsewhere than usual."""
        return {c.name: c.target for c in self.columns if c.target}

    @property
    def key_columns(self) -> tuple[ColumnSpec, ...]:
        keys = [c for c in self.columns if c.key_ordinal is not None]
        return tuple(sorted(keys, key=lambda c: c.key_ordinal or 0))

    @property
    def bq_table(self) -> str:
        """``items`` → ``items``; ``dbo.items`` → ``dbo_items``; restricted copy:
        ``items_restricted``."""
        base = self.base_bq_table
        return f"{base}_restricted" if self.variant == "restricted" else base

    @property
    def base_bq_table(self) -> str:
        """The main table's name, also for the restricted copy (snapshots are recorded
        under it)."""
        return bq_identifier(self.name.replace(".", "_"))

    def restricted_copy(self) -> TableSpec:
        """The spec of the restricted copy's BigQuery table (same columns and key)."""
        return replace(self, variant="restricted")

    @property
    def topic_part(self) -> str:
        return _TOPIC_BAD.sub("_", self.name.replace(".", "_"))

    def check(self) -> None:
        """Refuse tables that cannot be carried faithfully; say what to do."""
        if not self.key_columns:
            raise ValueError(
                f"table {self.name!r} has no primary key: Change Tracking needs one; "
                "add a primary key or remove the table from source.tables"
            )
        seen: dict[str, str] = {}
        for column in self.columns:
            bq = column.bq_name.lower()
            if bq in METADATA_COLUMNS:
                raise ValueError(
                    f"table {self.name!r}: column {column.name!r} clashes with ctstream's "
                    f"metadata column {bq!r}; rename the column or leave the table out"
                )
            if bq in seen:
                raise ValueError(
                    f"table {self.name!r}: columns {seen[bq]!r} and {column.name!r} both map "
                    f"to the BigQuery column {bq!r}; rename one of them"
                )
            seen[bq] = column.name


def bq_identifier(name: str) -> str:
    """A BigQuery-safe column/table name: letters, digits, underscores; not a digit first."""
    cleaned = _BQ_BAD.sub("_", name)
    if not cleaned or cleaned[0].isdigit():
        cleaned = "_" + cleaned
    return cleaned[:300]
