"""Which BigQuery type a source column lands in: SQL Server type names, then SQLite's
type affinity rules. Shared by the source side (which columns are text, for masking) and
the BigQuery side (table schemas, row validation)."""

from __future__ import annotations

import re

from ctstream.models.table_spec import ColumnSpec

_MICROSECOND_DIGITS = 6
_PARAMS = re.compile(r"\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)")


def bigquery_type(source_type: str, precision: int | None = None, scale: int | None = None) -> str:
    """Declared source type → BigQuery type (SQL Server names, then SQLite affinity rules).

    ``precision``/``scale`` come from the SQL Server catalog; a declared ``decimal(p,s)``
    (SQLite) carries them in the text. Exact numerics that NUMERIC cannot hold (more than
    29 integer digits or more than 9 decimals) become BIGNUMERIC. ``datetime2`` and
    ``time`` with more than six fractional digits, and ``datetimeoffset``, become STRING:
    no BigQuery time type holds them exactly (docs/types.md).
    """
    t = source_type.strip().lower()
    base = t.split("(")[0].strip()
    if base in {"datetime2", "time"}:
        # Seven fractional digits (100 ns) are more than DATETIME and TIME hold: the
        # value is carried as SQL Server's text. The catalog gives the digits as the
        # scale; a declared type (SQLite) as its one parameter.
        match = _PARAMS.search(t)
        digits = int(match.group(1)) if match else scale
        if digits is not None and digits > _MICROSECOND_DIGITS:
            return "STRING"
    exact = _SQL_SERVER_TYPES.get(base)
    if exact is not None:
        return exact
    if base in {"decimal", "numeric"}:
        match = _PARAMS.search(t)
        if match:
            precision, scale = int(match.group(1)), int(match.group(2) or 0)
        precision = 18 if precision is None else precision
        scale = 0 if scale is None else scale
        return "NUMERIC" if precision - scale <= 29 and scale <= 9 else "BIGNUMERIC"
    # SQLite type affinity (https://www.sqlite.org/datatype3.html §3.1), in its order.
    if "int" in base:
        return "INT64"
    if any(s in base for s in ("char", "clob", "text")):
        return "STRING"
    if base == "" or "blob" in base or "binary" in base:
        return "BYTES" if base else "STRING"
    if any(s in base for s in ("real", "floa", "doub")):
        return "FLOAT64"
    return "NUMERIC"


# SQL Server types (and the SQLite spellings of dates and booleans) with one fixed mapping.
_SQL_SERVER_TYPES: dict[str, str] = {
    "bit": "BOOL",
    "bool": "BOOL",
    "boolean": "BOOL",
    "tinyint": "INT64",
    "smallint": "INT64",
    "int": "INT64",
    "bigint": "INT64",
    "real": "FLOAT64",
    "float": "FLOAT64",
    "money": "NUMERIC",  # 4 decimals, 15 integer digits
    "smallmoney": "NUMERIC",
    "date": "DATE",
    "time": "TIME",
    "datetime": "DATETIME",
    "datetime2": "DATETIME",
    "smalldatetime": "DATETIME",
    "timestamp": "DATETIME",  # SQLite's spelling; T-SQL's timestamp arrives as rowversion
    "datetimeoffset": "STRING",  # its local time, 7 fractional digits and its offset
    "char": "STRING",
    "varchar": "STRING",
    "nchar": "STRING",
    "nvarchar": "STRING",
    "text": "STRING",
    "ntext": "STRING",
    "sysname": "STRING",
    "uniqueidentifier": "STRING",  # upper-case text, as SQL Server shows it
    "xml": "STRING",
    "sql_variant": "STRING",  # converted to nvarchar by the reader
    "hierarchyid": "STRING",  # read as its path text, e.g. /1/3/
    "geometry": "STRING",  # planar WKT: not a valid GEOGRAPHY in general
    "geography": "GEOGRAPHY",  # WKT
    "binary": "BYTES",
    "varbinary": "BYTES",
    "image": "BYTES",
    "rowversion": "BYTES",
}


def column_type(column: ColumnSpec) -> str | None:
    """The BigQuery type a column is written as: its source type's, STRING when masked by
    hashing or truncation, None when ``drop``ped (not carried)."""
    if column.mask == "drop":
        return None
    if column.mask == "hash" or (column.mask or "").startswith("truncate:"):
        return "STRING"
    return bigquery_type(column.source_type, column.precision, column.scale)
