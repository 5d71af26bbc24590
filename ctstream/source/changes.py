"""What one read of a table yields: its changes (or rows) as :class:`SourceChange` batches.

A read is opened by ``SourceReader.changes``, ``snapshot``, ``snapshot_bound`` or
``snapshot_chunk`` inside its transaction; iterate ``batches()`` inside that context.
Rows are fetched with ``fetchmany`` and never loaded whole; every value is made
JSON-native once, here (``models.values.normalise``), so the unique id, the Kafka payload
and the BigQuery row agree. A query that reads exactly (the SQLite dialect's) ends each
row with an odd-row column, and its values are made exact here too
(``source.sqlite_values``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ctstream.models import JsonValue, Operation, TableSpec, normalise
from ctstream.source.dialects import ChangeQuery, SnapshotQuery
from ctstream.source.dialects.base import Converts
from ctstream.source.dialects.sqlite import ExactChangeQuery, ExactSnapshotQuery
from ctstream.source.sqlite_values import ExactRead


class SourceChange(NamedTuple):
    """One fetched change (a tuple: made for every row, it costs a third of a dataclass)."""

    operation: Operation
    version: int
    key: tuple[JsonValue, ...]
    row: dict[str, JsonValue]  # deletes: key columns only


# Values whose JSON-native form is themselves (``normalise`` returns them unchanged);
# a float too unless it is NaN or infinite (no comparison with those holds).
_AS_IS = frozenset({type(None), bool, int, str})
_INFINITY = float("inf")


def rows_to_changes(
    rows: Sequence[Any],
    spec: TableSpec,
    key_count: int,
    values: tuple[str, ...],
    converts: Converts = (),
) -> list[SourceChange]:
    """Result rows (operation, version, key columns, other columns) → changes; a delete
    keeps its key columns only. ``converts`` replace the driver's non-NULL values of
    their positions (the query's)."""
    key_names = tuple(c.name for c in spec.key_columns)
    names = key_names + values
    key_end = 2 + key_count
    as_is, inf = _AS_IS, _INFINITY
    batch: list[SourceChange] = []
    append = batch.append
    for r in rows:
        op = r[0]
        deleted = op == "D"  # a delete carries its key only
        # Most values need no conversion: the type test is inline, normalise for the rest.
        cells = [
            v if type(v) in as_is or (type(v) is float and -inf < v < inf) else normalise(v)
            for v in (r[2:key_end] if deleted else r[2:])
        ]
        if converts:
            for i, convert in converts:
                if i < len(cells) and (raw := r[2 + i]) is not None:
                    cells[i] = convert(raw)
        row: dict[str, JsonValue] = dict(zip(key_names if deleted else names, cells, strict=True))
        append(SourceChange(op, int(r[1]), tuple(cells[:key_count]), row))
    return batch


def exact_rows_to_changes(
    rows: Sequence[Any],
    spec: TableSpec,
    key_count: int,
    values: tuple[str, ...],
    exact: ExactRead,
) -> list[SourceChange]:
    """``rows_to_changes`` for rows that end with ``exact``'s odd-row column: values read
    as text are converted, and a row whose odd-row column is set is rebuilt from it."""
    key_names = tuple(c.name for c in spec.key_columns)
    names = key_names + values
    key_end = 2 + key_count
    as_is, inf = _AS_IS, _INFINITY
    rebuild = exact.rebuild
    # Positions of values read as text: REAL columns' printf text, others' (with their
    # conversion); a delete's row holds its key columns only.
    reals, others = exact.reals, exact.converts
    key_reals = tuple(i for i in reals if i < key_count)
    key_others = tuple((i, f) for i, f in others if i < key_count)
    batch: list[SourceChange] = []
    append = batch.append
    for r in rows:
        op = r[0]
        deleted = op == "D"  # a delete carries its key only
        cells = [
            v if type(v) in as_is or (type(v) is float and -inf < v < inf) else normalise(v)
            for v in (r[2:key_end] if deleted else r[2:-1])
        ]
        odd = r[-1]
        if odd is not None:
            rebuild(cells, odd)
        else:
            for i in key_reals if deleted else reals:
                if (text := cells[i]) is not None:
                    number = float(text)
                    cells[i] = number if -inf < number < inf else normalise(number)
            if others:
                for i, convert in key_others if deleted else others:
                    if (value := cells[i]) is not None:
                        cells[i] = convert(value)
        row: dict[str, JsonValue] = dict(zip(key_names if deleted else names, cells, strict=True))
        append(SourceChange(op, int(r[1]), tuple(cells[:key_count]), row))
    return batch


@dataclass(slots=True)
class ChangeSet:
    """An open read of one table's changes; iterate :meth:`batches` inside the context."""

    spec: TableSpec
    last_version: int
    min_valid_version: int
    current_version: int
    _cursor: Any
    _query: ChangeQuery
    _fetch_size: int

    async def batches(self) -> AsyncIterator[list[SourceChange]]:
        query = self._query
        await self._cursor.execute(query.sql, *((self.last_version,) * query.last_version_params))
        while rows := await self._cursor.fetchmany(self._fetch_size):
            if isinstance(query, ExactChangeQuery):
                yield exact_rows_to_changes(
                    rows, self.spec, query.key_count, query.value_columns, query.exact
                )
            else:
                yield rows_to_changes(
                    rows, self.spec, query.key_count, query.value_columns, query.converts
                )


@dataclass(slots=True)
class SnapshotSet:
    """An open read of a table's rows (all of them, a chunk of them, or its largest key)
    at ``version``; its rows come as operation 'S'."""

    spec: TableSpec
    version: int
    min_valid_version: int
    _cursor: Any
    _query: SnapshotQuery
    _fetch_size: int

    async def batches(self) -> AsyncIterator[list[SourceChange]]:
        query = self._query
        prefix = ("S", self.version)
        await self._cursor.execute(query.sql, *query.params)
        while rows := await self._cursor.fetchmany(self._fetch_size):
            prefixed = [(*prefix, *r) for r in rows]
            if isinstance(query, ExactSnapshotQuery):
                yield exact_rows_to_changes(
                    prefixed, self.spec, query.key_count, query.value_columns, query.exact
                )
            else:
                yield rows_to_changes(
                    prefixed, self.spec, query.key_count, query.value_columns, query.converts
                )
