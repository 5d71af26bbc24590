"""BigQuery table shapes for source tables, and row validation before sending.

bqemulator answers a wrongly typed row with HTTP 500 for the whole request, and ignores
unknown columns; real BigQuery rejects them per row. Either way, a row is checked here
first so a bad row goes to ``_error_records`` instead of failing its batch.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from google.cloud.bigquery import PolicyTagList, SchemaField

from ctstream.models import ChangeEvent, TableSpec, bq_identifier
from ctstream.models.column_types import column_type

METADATA_FIELDS: tuple[SchemaField, ...] = (
    SchemaField("message_unique_id", "STRING", mode="REQUIRED"),
    SchemaField("table_name", "STRING", mode="REQUIRED"),
    SchemaField("changetrack_interval", "FLOAT64"),
    SchemaField("changetrack_start_time", "TIMESTAMP"),
    SchemaField("changetrack_type", "STRING", mode="REQUIRED"),
    SchemaField("changetrack_ver", "INT64", mode="REQUIRED"),
    SchemaField("bigquery_insert_time", "TIMESTAMP"),
)

ERROR_RECORDS_TABLE = "_error_records"
ERROR_RECORDS_FIELDS: tuple[SchemaField, ...] = (
    SchemaField("source_table", "STRING"),
    SchemaField("message_unique_id", "STRING"),
    SchemaField("reason", "STRING", mode="REQUIRED"),
    SchemaField("payload", "STRING"),
    SchemaField("topic", "STRING"),
    SchemaField("partition", "INT64"),
    SchemaField("offset", "INT64"),
    SchemaField("error_time", "TIMESTAMP", mode="REQUIRED"),
)

# One row per completed snapshot of a source table; the latest-state views hide keys whose
# newest change predates the table's newest snapshot (rows deleted while changes were lost).
SNAPSHOTS_TABLE = "_ctstream_snapshots"
SNAPSHOTS_FIELDS: tuple[SchemaField, ...] = (
    SchemaField("table_name", "STRING", mode="REQUIRED"),  # the BigQuery table
    SchemaField("source_table", "STRING", mode="REQUIRED"),
    SchemaField("snapshot_version", "INT64", mode="REQUIRED"),
    SchemaField("row_count", "INT64", mode="REQUIRED"),
    SchemaField("reason", "STRING"),
    SchemaField("completed_at", "TIMESTAMP", mode="REQUIRED"),
)

# One row per change table: up to when its change log is merged into <t>_current.
# Written by DML only (compaction.py), never streamed.
COMPACTION_TABLE = "_ctstream_compaction"
COMPACTION_FIELDS: tuple[SchemaField, ...] = (
    SchemaField("table_name", "STRING", mode="REQUIRED"),  # the change table
    SchemaField("merged_to", "TIMESTAMP", mode="REQUIRED"),  # by bigquery_insert_time
    SchemaField("merged_at", "TIMESTAMP"),
    SchemaField("rows_merged", "INT64"),  # by the last merge
    SchemaField("merge_seconds", "FLOAT64"),  # of the last merge
)


def table_schema(
    spec: TableSpec, policy_tags: Mapping[str, str] | None = None
) -> list[SchemaField]:
    """The change table's fields; ``policy_tags``: source column → policy tag resource."""
    tags = policy_tags or {}
    fields = []
    for c in spec.columns:
        field_type = column_type(c)
        if field_type is None:
            continue
        tag = tags.get(c.name)
        fields.append(
            SchemaField(c.bq_name, field_type, policy_tags=PolicyTagList([tag]) if tag else None)
        )
    return [*fields, *METADATA_FIELDS]


def change_row(
    change: ChangeEvent, insert_time: str, names: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A change event as a BigQuery row (see ``payload_row``)."""
    return payload_row(change.as_payload(), insert_time, names)


def payload_row(
    payload: Mapping[str, Any],
    insert_time: str,
    names: Mapping[str, str] | None = None,
    own_names: AbstractSet[str] = frozenset(),
) -> dict[str, Any]:
    """A change event's checked fields (``parse_payload``) as a BigQuery row: source
    columns under their BigQuery names (from ``names``, else made safe as ctstream names
    them), plus the change metadata.

    ``own_names``: columns whose BigQuery name is their own. When the payload's row has no
    other, its dict *is* made the BigQuery row (the caller must own the payload; the sink
    does, having just parsed it), which saves copying every value.
    """
    source_row = payload["row"]
    row: dict[str, Any]
    if own_names and source_row.keys() <= own_names:
        row = source_row
    else:
        known = names or {}
        row = {known.get(k) or bq_identifier(k): v for k, v in source_row.items()}
    row["message_unique_id"] = payload["message_unique_id"]
    row["table_name"] = payload["table_name"]
    row["changetrack_interval"] = float(payload["changetrack_interval"])
    row["changetrack_start_time"] = payload["changetrack_start_time"]
    row["changetrack_type"] = payload["changetrack_type"]
    row["changetrack_ver"] = payload["changetrack_ver"]
    row["bigquery_insert_time"] = insert_time
    return row


@dataclass(frozen=True, slots=True)
class RowProblem:
    column: str
    reason: str

    def __str__(self) -> str:
        return f"column {self.column!r}: {self.reason}"

    @property
    def unknown_column(self) -> bool:
        return self.reason == NO_SUCH_COLUMN


_INT64 = (-(2**63), 2**63 - 1)
NO_SUCH_COLUMN = "no such column in the BigQuery table"
_NUMERIC_LIMITS = {"NUMERIC": (29, 9), "BIGNUMERIC": (38, 38)}


def _check_decimal(kind: str, number: Decimal, value: Any) -> str | None:
    if not number.is_finite():
        return f"{kind} cannot hold {value!r}"
    max_digits, max_scale = _NUMERIC_LIMITS[kind]
    # From the digits themselves: Decimal arithmetic would round at 28 digits.
    _, digits, exponent = number.as_tuple()
    significant = "".join(map(str, digits)).lstrip("0")
    if not significant:
        return None
    trailing = len(significant) - len(significant.rstrip("0"))
    decimals = max(0, -(int(exponent) + trailing))
    integer_digits = len(significant) + int(exponent)
    if decimals > max_scale:
        return f"{kind} holds at most {max_scale} decimal places, got {str(value)[:40]!r}"
    if integer_digits > max_digits:
        return f"{kind} holds at most {max_digits} integer digits, got {str(value)[:40]!r}"
    return None


def _shown(value: Any) -> str:
    """``value`` as an error reason shows it: its kind and its first 40 characters. A
    value a source could not carry as JSON arrives wrapped (``{"sqlite_blob": …}``)."""
    if isinstance(value, dict) and len(value) == 1:
        [(key, inner)] = value.items()
        if isinstance(key, str) and key.startswith("sqlite_"):
            return f"a SQLite {key.removeprefix('sqlite_')} value {str(inner)[:40]!r}"
        if key == "mssql_shape":
            return (
                "a SQL Server shape with no exact WKT (a non-finite coordinate or a type "
                f"WKB lacks), WKB with SRID {str(inner)[:40]!r}"
            )
    return f"{type(value).__name__} {str(value)[:40]!r}"


def _check_value(kind: str, value: Any) -> str | None:
    """None if ``value`` is acceptable JSON for a BigQuery ``kind`` column, else why not."""
    if value is None:
        return None
    if kind == "STRING":
        return None if isinstance(value, str) else f"expected text, got {_shown(value)}"
    if kind == "INT64":
        if isinstance(value, bool) or not isinstance(value, int | str):
            return f"expected an integer, got {_shown(value)}"
        try:
            number = int(value)
        except ValueError:
            return f"expected an integer, got {str(value)[:40]!r}"
        return None if _INT64[0] <= number <= _INT64[1] else "integer out of INT64 range"
    if kind == "FLOAT64":
        if isinstance(value, bool):
            return "expected a number, got bool"
        if isinstance(value, int | float) or value in ("NaN", "Infinity", "-Infinity"):
            return None
        return f"expected a number, got {_shown(value)}"
    if kind in {"NUMERIC", "BIGNUMERIC"}:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            return f"expected a decimal number, got {_shown(value)}"
        try:
            decimal = Decimal(str(value))
        except InvalidOperation:
            return f"expected a decimal number, got {str(value)[:40]!r}"
        return _check_decimal(kind, decimal, value)
    if kind == "GEOGRAPHY":
        if not isinstance(value, str):
            return f"expected WKT text, got {_shown(value)}"
        if value.startswith("SRID="):
            srid = value[5:].partition(";")[0]
            return (
                f"a shape in SRID {srid} or with Z or M values ({value[:40]!r}): BigQuery's "
                "GEOGRAPHY holds two-dimensional WGS 84 (SRID 4326) shapes only"
            )
        return None
    if kind == "BOOL":
        if isinstance(value, bool) or value in (0, 1, "true", "false"):
            return None
        return f"expected a boolean, got {str(value)[:40]!r}"
    if kind == "BYTES":
        if not isinstance(value, str):
            return f"expected base64 bytes, got {_shown(value)}"
        try:
            base64.b64decode(value, validate=True)
        except binascii.Error:
            return f"expected base64-encoded bytes, got {_shown(value)}"
        return None
    if kind in {"DATE", "DATETIME", "TIMESTAMP", "TIME"}:
        if not isinstance(value, str):
            return f"expected an ISO-8601 {kind.lower()}, got {_shown(value)}"
        try:
            if kind == "DATE":
                dt.date.fromisoformat(value)
            elif kind == "TIME":
                dt.time.fromisoformat(value)
            else:
                dt.datetime.fromisoformat(value.replace(" ", "T"))
        except ValueError:
            return f"expected an ISO-8601 {kind.lower()}, got {value[:40]!r}"
        return None
    return None


_NULL_ONLY: frozenset[type] = frozenset({type(None)})
# Exact types (bool is not int here) _check_value accepts for a kind without looking at
# the value; every other type, and every other kind, is checked value by value.
_ALWAYS_VALID: dict[str, frozenset[type]] = {
    "STRING": frozenset({str, type(None)}),
    "FLOAT64": frozenset({float, int, type(None)}),
    "BOOL": frozenset({bool, type(None)}),
}

_TEXT_VERDICTS = 4096


class RowValidator:
    """Checks rows against one BigQuery table's schema (names and types)."""

    def __init__(self, fields: list[SchemaField]) -> None:
        self._types = {f.name: f.field_type for f in fields}
        self._required = [f.name for f in fields if f.mode == "REQUIRED"]
        # Per column, the exact value types that need no closer look (most values of
        # most rows), so only the rest go through _check_value.
        self._accepted = {
            name: _ALWAYS_VALID.get(kind, _NULL_ONLY) for name, kind in self._types.items()
        }
        # Verdicts on text values: a batch's rows share their poll's changetrack_start_time
        # and their bigquery_insert_time, and parsing each as a TIMESTAMP again is the
        # validator's largest cost. Bounded: cleared when full.
        self._text_verdicts: dict[tuple[str, str], str | None] = {}

    def problems(self, row: Mapping[str, Any]) -> list[RowProblem]:
        found: list[RowProblem] = []
        accepted = self._accepted
        for name, value in row.items():
            valid_types = accepted.get(name)
            if valid_types is None:
                found.append(RowProblem(name, NO_SUCH_COLUMN))
            elif type(value) not in valid_types:
                reason = self._check(self._types[name], value)
                if reason is not None:
                    found.append(RowProblem(name, reason))
        for name in self._required:
            if row.get(name) is None:
                found.append(RowProblem(name, "required, but missing or null"))
        return found

    def _check(self, kind: str, value: Any) -> str | None:
        """``_check_value``, with the common cases of the rest taken first."""
        if type(value) is int and kind == "INT64":
            return None if _INT64[0] <= value <= _INT64[1] else "integer out of INT64 range"
        if type(value) is str and kind != "GEOGRAPHY":  # a shape's text may be long
            verdicts = self._text_verdicts
            key = (kind, value)
            if key in verdicts:
                return verdicts[key]
            if len(verdicts) >= _TEXT_VERDICTS:
                verdicts.clear()
            reason = verdicts[key] = _check_value(kind, value)
            return reason
        return _check_value(kind, value)


def with_policy_tags(
    schema: Sequence[SchemaField], fields: Sequence[SchemaField]
) -> list[SchemaField] | None:
    """``schema`` with the policy tags ``fields`` ask for on its columns; None when every
    column has them already."""
    wanted = {f.name.lower(): f.policy_tags for f in fields if f.policy_tags}
    changed = False
    out = []
    for field in schema:
        tags = wanted.get(field.name.lower())
        if tags is not None and set(tags.names) != set(
            field.policy_tags.names if field.policy_tags else ()
        ):
            api = field.to_api_repr()
            api["policyTags"] = tags.to_api_repr()
            field = SchemaField.from_api_repr(api)
            changed = True
        out.append(field)
    return out if changed else None
