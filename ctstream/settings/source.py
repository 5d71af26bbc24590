"""``[source]``: the database, its tables, how and how often they are read."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ctstream.models.table_selection import TableSelection
from ctstream.settings.fields import Duration, MaskRule, Section, dsn_pairs

SnapshotMode = Literal["initial", "never", "when_needed"]
# names are looked up in the catalog and quoted by the reader.
_POLICY_TAG = r"^projects/[^/]+/locations/[^/]+/taxonomies/[^/]+/policyTags/[^/]+$"
_TABLE_NAME = re.compile(r"^[^\x00-\x1f.]+(\.[^\x00-\x1f.]+)?$")


class SourceSettings(Section):
    dialect: Literal["sqlite", "mssql"] = "sqlite"
    dsn: SecretStr = Field(description="ODBC connection string (may hold a password)")
    tables: list[str] = Field(min_length=1)
    poll_interval: Duration = 1.0
    fetch_size: int = Field(default=5000, ge=1, le=1_000_000)
    # How long one poll may take before it is abandoned and retried.
    poll_timeout: Duration = 300.0
    # When a table is read whole (Debezium's names): "initial" — when ctstream has no
    # saved version for it; "when_needed" — also when the saved version fell below the
    # minimum valid version; "never" — never on its own (`ctstream snapshot` still works).
    snapshot_mode: SnapshotMode = "initial"
    table_snapshot_mode: dict[str, SnapshotMode] = Field(default_factory=dict)
    # Rows per chunk of a snapshot: each chunk is one short read transaction, and its
    # progress is saved once Kafka acknowledged it (a crash reads at most one again).
    snapshot_chunk_rows: int = Field(default=10_000, ge=1, le=1_000_000)
    # Table → the column whose value ranges bound its snapshot chunks instead of its key
    # (a key that cannot bound chunks, or a better index): NOT NULL, need not be unique.
    chunk_columns: dict[str, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)
    # Source connections per worker, and so tables polled (or snapshot chunks read) at
    # the same time: a table with a big backlog or a snapshot does not hold up others.
    max_connections: int = Field(default=4, ge=1, le=64)
    # SQL Server: how long a poll waits for a lock before failing (SET LOCK_TIMEOUT).
    lock_timeout: Duration = 10.0
    # Whether, and how often, the source catalog is read again while running for tables
    # that started or stopped being tracked (and that source.tables selects).
    discover: bool = True
    discover_interval: Duration = 30.0
    # Personal data, protected before anything is produced (models/masking.py):
    # table → column → 'hash' | 'null' | 'drop' | 'truncate:N'.
    mask: dict[str, dict[str, MaskRule]] = Field(default_factory=dict)
    # The HMAC key of 'hash' (at least 16 characters); a secret: CTSTREAM_SOURCE__MASK_KEY.
    mask_key: SecretStr | None = None
    # A restricted copy (topics <prefix>.<t>.restricted, BigQuery <t>_restricted) with
    # these columns NULL, for consumers that may not see them: table → columns.
    restricted: dict[str, Annotated[list[str], Field(min_length=1)]] = Field(default_factory=dict)

    def snapshot_mode_of(self, table: str) -> SnapshotMode:
        return self.table_snapshot_mode.get(table, self.snapshot_mode)

    @field_validator("dsn")
    @classmethod
    def _dsn_well_formed(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        pairs = dsn_pairs(value.get_secret_value())
        if not ({"driver", "dsn"} & pairs.keys()):
            raise ValueError(
                "expected an ODBC connection string naming a Driver= or DSN=, "
                "e.g. 'Driver=SQLite3;Database=./demo.db'"
            )
        if info.data.get("dialect") == "sqlite" and "database" not in pairs:
            raise ValueError("a sqlite DSN needs Database=<path to the .db file>")
        return value

    @field_validator("tables")
    @classmethod
    def _table_names(cls, tables: list[str], info: ValidationInfo) -> list[str]:
        for entry in tables:
            name = entry.removeprefix("!")
            if not _TABLE_NAME.match(name):
                raise ValueError(
                    f"{entry!r} is not a table name or pattern: expected 'table' (sqlite) or "
                    "'schema.table' (mssql), with * ? [..] wildcards and a leading ! to "
                    "exclude, without control characters"
                )
        if len(set(tables)) != len(tables):
            raise ValueError("a table is listed twice")
        if info.data.get("dialect") == "mssql":
            for entry in tables:
                if "." not in entry:
                    raise ValueError(
                        f"{entry!r} needs its schema for mssql, e.g. 'dbo.{entry.lstrip('!')}'"
                        " (patterns too: 'dbo.*')"
                    )
        TableSelection.parse(tables)  # raises on contradictions
        return tables

    @property
    def selection(self) -> TableSelection:
        return TableSelection.parse(self.tables)

    @field_validator("mask_key")
    @classmethod
    def _mask_key_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("expected at least 16 characters (a random secret)")
        return value

    @model_validator(mode="after")
    def _masking_consistent(self) -> SourceSettings:
        selection = self.selection
        for key in ("mask", "restricted"):
            for table in getattr(self, key):
                if not selection.selects(table):
                    raise ValueError(
                        f"source.{key}: names {table!r}, which source.tables does not select"
                    )
        hashes = [
            f"{t}.{c}" for t, cols in self.mask.items() for c, r in cols.items() if r == "hash"
        ]
        if hashes and self.mask_key is None:
            raise ValueError(
                f"source.mask_key: required to hash {', '.join(hashes)}; set a random secret of "
                "at least 16 characters, e.g. by CTSTREAM_SOURCE__MASK_KEY"
            )
        for table, columns in self.restricted.items():
            dropped = [c for c in columns if self.mask.get(table, {}).get(c) == "drop"]
            if dropped:
                raise ValueError(
                    f"source.restricted.{table}: {', '.join(dropped)} dropped by source.mask "
                    "is not carried at all; leave it out of the restricted copy"
                )
        return self

    @field_validator("table_snapshot_mode", "chunk_columns")
    @classmethod
    def _known_tables(cls, per_table: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        tables = info.data.get("tables")
        if tables is None:
            return per_table  # tables itself was refused
        selection = TableSelection.parse(tables)
        unknown = sorted(t for t in per_table if not selection.selects(t))
        if unknown:
            raise ValueError(
                f"names tables that source.tables does not select: {', '.join(map(repr, unknown))}"
            )
        return per_table
