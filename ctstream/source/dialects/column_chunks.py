"""Snapshot chunks bounded by one column's values (``source.chunk_columns``) instead of
the key: for a table whose key cannot bound a chunk, or whose user chose another column.

The column may repeat values, so a chunk is every row whose value is above ``after`` (the
previous chunk's last value; no lower bound for the first chunk) and at most ``upto``:
the largest value among the next ``limit`` rows in the column's order, capped by
``upper`` (the largest value when the snapshot began). A value shared by many rows is
read whole, so a chunk can hold more than ``limit`` rows; one holding fewer read every
row left. The cursor saved after a chunk is its last row's value: no row above it was
read, every row up to it was.

Rows changed after the snapshot's start version (``since``) are left out of every chunk
and its ``upto``: Change Tracking carries them. A changed value could otherwise move a
row already read into a range still to read, and the snapshot would send it twice and
count it twice, while BigQuery holds it once and the snapshot's completion waits for
that count forever. Every statement is one query; values are bound parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from ctstream.models import ColumnSpec, JsonValue, TableSpec
from ctstream.models.column_types import bigquery_type
from ctstream.source.dialects.chunks import check_limit

# What to do about a refused chunk column (each message ends with it).
_FIX = (
    "set it to a NOT NULL column of a comparable type (ideally indexed), or remove the "
    "entry to read the snapshot by the primary key (whole when the key cannot bound chunks)"
)


def find_column(spec: TableSpec, name: str) -> ColumnSpec | None:
    """The column ``name`` as the catalog describes it (masks and targets ignored: it is
    compared as the source stores it); None when ``spec`` has none of that name."""
    return next((c for c in spec.catalog_columns if c.name == name), None)


def column_refusal(
    spec: TableSpec,
    name: str,
    never_null: Callable[[ColumnSpec], bool],
    type_problem: Callable[[ColumnSpec], str | None],
) -> str | None:
    """None when column ``name`` of ``spec`` can bound chunks: it exists, holds no NULL
    (declared NOT NULL, or ``never_null``) and its type passes the dialect's check
    (``type_problem``: why not, as a phrase after "column 'c' ", or None). Else a
    sentence naming the setting, the table and the column, what is wrong and what to do."""
    column = find_column(spec, name)
    if column is None:
        what = f"table {spec.name!r} has no column {name!r}"
    elif column.nullable and not never_null(column):
        what = (
            f"column {name!r} may hold NULL (it is not declared NOT NULL), and a NULL is in "
            "no range of values"
        )
    elif (problem := type_problem(column)) is not None:
        what = f"column {name!r} {problem}"
    else:
        return None
    return (
        f'source.chunk_columns."{spec.name}" = {name!r}: {what}; the snapshot of '
        f"{spec.name!r} is refused: {_FIX}"
    )


def bound_spec(spec: TableSpec, name: str) -> TableSpec:
    """``spec`` with column ``name`` alone as its one-column key: how the largest value is
    read (as a chunk row reads it) and carried as a one-value cursor."""
    column = find_column(spec, name)
    if column is None:
        raise ValueError(f"table {spec.name!r} has no column {name!r}")
    return replace(spec, columns=(replace(column, key_ordinal=1),))


def checked_column(
    spec: TableSpec,
    name: str,
    after: Sequence[object] | None,
    upper: Sequence[object],
    limit: int,
    since: int,
    refusal: str | None,
) -> ColumnSpec:
    """The chunk column of a chunk query once ``limit`` is valid, the dialect did not
    refuse the column (``refusal``), ``after`` (unless None) and ``upper`` hold one value
    each and ``since`` is a version; ValueError saying which is not."""
    check_limit(limit)
    if refusal is not None:
        raise ValueError(refusal)
    for bound in (upper,) if after is None else (after, upper):
        if len(bound) != 1:
            raise ValueError(
                f"table {spec.name!r}: a chunk bound of column {name!r} is one value, "
                f"not {len(bound)}"
            )
    # type() rather than isinstance(): a bool is an int too.
    if type(since) is not int:
        raise ValueError(f"table {spec.name!r}: start version {since!r} is not an int")
    column = find_column(spec, name)
    assert column is not None  # no refusal: it exists
    return column


def column_target(
    spec: TableSpec, name: str, cursor: Sequence[JsonValue]
) -> tuple[ColumnSpec, str, JsonValue]:
    """(the column, its BigQuery type, the value) of a cursor as read (one value, in a
    sequence as keys travel); ValueError naming the table when it is no such cursor."""
    column = find_column(spec, name)
    if column is None:
        raise ValueError(f"table {spec.name!r} has no column {name!r}")
    if isinstance(cursor, str | bytes) or len(cursor) != 1 or cursor[0] is None:
        raise ValueError(
            f"table {spec.name!r}: a chunk bound of column {name!r} is one value that is "
            f"not NULL, not {cursor!r}"
        )
    return column, bigquery_type(column.source_type, column.precision, column.scale), cursor[0]


def column_range(
    *,
    select: str,
    table: str,
    column: str,
    marker: str,
    unchanged: Callable[[str], str],
    after: Sequence[object] | None,
    upper: Sequence[object],
    limit: int,
    since: int,
    top: bool,
) -> tuple[str, tuple[object, ...]]:
    """(SQL, parameters in marker order) of one chunk, its rows in ``column``'s order.

    ``select`` reads the columns of alias ``t`` from ``table`` (quoted); ``column`` is
    the quoted column name; ``marker`` the text a bound value of it is compared through
    (``?`` or a CAST of ``?``); ``unchanged(alias)`` a condition, holding exactly one
    ``?`` (the start version), true when the row of ``alias`` did not change after it.
    ``top``: T-SQL's ``TOP (n)`` instead of ``LIMIT n``.
    """

    def lower(alias: str) -> str:
        return "" if after is None else f"{alias}.{column} > {marker} AND "

    first, last = ("TOP (?) ", "") if top else ("", " LIMIT ?")
    # The next rows in the column's order: their largest value bounds the chunk. Ordered
    # and capped rather than MAX(): T-SQL has no MAX of a bit.
    following = (
        f"SELECT {first}n.{column} FROM {table} AS n "
        f"WHERE {lower('n')}n.{column} <= {marker} AND {unchanged('n')} "
        f"ORDER BY n.{column}{last}"
    )
    one, only = ("TOP (1) ", "") if top else ("", " LIMIT 1")
    upto = f"SELECT {one}x.{column} FROM ({following}) AS x ORDER BY x.{column} DESC{only}"
    sql = (
        f"SELECT {select} FROM {table} AS t "
        f"WHERE {lower('t')}t.{column} <= ({upto}) AND {unchanged('t')} ORDER BY t.{column}"
    )
    low: tuple[object, ...] = () if after is None else (after[0],)
    inner = (*low, upper[0], since)
    params = (*low, limit, *inner, since) if top else (*low, *inner, limit, since)
    return sql, params
