"""The T-SQL of snapshot chunks bounded by a column's values (``source.chunk_columns``),
proven as the key chunks are (test_mssql_dialect.py): exact identifiers against a benign
reference of the same shape, hostile names hand-written and fuzzed, one parameter per
marker, and the parse tree (with ``CHANGETABLE(…)``, which sqlglot cannot read, replaced
by a table name) naming exactly the intended table and columns."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from sqlglot import exp

from ctstream.models import ColumnSpec, TableSpec
from ctstream.source.dialects.chunks import MSSQL_KEY_MARKERS, base_type
from ctstream.source.dialects.mssql import MssqlDialect
from tests.unit.test_mssql_dialect import (
    CHUNK_KEY_TYPES,
    FUZZ_SPECS,
    HAND_SPECS,
    make_spec,
    names,
    parse_one,
    quoted,
    random_spec,
    references,
    renamed,
    tables,
    token_shape,
    without_changetable,
)

D = MssqlDialect()
SINCE = 41


def without_changetables(sql: str) -> str:
    while "CHANGETABLE(CHANGES" in sql:
        sql = without_changetable(sql)
    return sql


def chunkable(column: ColumnSpec) -> bool:
    return base_type(column) in MSSQL_KEY_MARKERS


def check_column_statements(spec: TableSpec, column: str) -> None:
    """The largest value of ``column`` and a chunk of its values: exact identifiers,
    benign structure, one parameter per marker, parsed trees naming exactly the intended
    table and columns; or, for a column that cannot bound chunks, a refusal."""
    ref = renamed(spec)
    index = next(i for i, c in enumerate(spec.columns) if c.name == column)
    ref_column = ref.columns[index].name
    found = spec.columns[index]
    keys, others = names(spec)
    s, t, c = spec.schema or "", spec.table, column
    refusal = D.column_refusal(spec, column)
    if found.nullable or not chunkable(found):
        assert refusal is not None
        assert refusal.startswith(f'source.chunk_columns."{spec.name}" = {column!r}: ')
        assert f"the snapshot of {spec.name!r} is refused" in refusal
        assert ("may hold NULL" if found.nullable else base_type(found)) in refusal
        with pytest.raises(ValueError, match="refused"):
            D.column_chunk_query(spec, column, None, ("u",), 5, SINCE)
        return
    assert refusal is None

    bound, ref_bound = D.column_upper_bound(spec, column), D.column_upper_bound(ref, ref_column)
    assert (bound.key_count, bound.value_columns, bound.params) == (1, (), ())
    read = references(spec, [column])
    ids, shape, markers = token_shape(bound.sql)
    assert ids == [*read, s, t, c], bound.sql
    assert shape == token_shape(ref_bound.sql)[1] and markers == 0
    tree = parse_one(bound.sql)
    assert tables(tree) == {(s, t)} and quoted(tree) == Counter([*read, s, t, c])

    selected = [*references(spec, keys), *references(spec, others), s, t]
    join = [k for k in keys for _ in (0, 1)]  # ct.[k] = n.[k]
    for after in (None, ("a",)):
        chunk = D.column_chunk_query(spec, column, after, ("u",), 17, SINCE)
        ref_chunk = D.column_chunk_query(ref, ref_column, after, ("u",), 17, SINCE)
        assert (chunk.key_count, chunk.value_columns) == (len(keys), tuple(others))
        assert chunk.converts == D.snapshot_query(spec).converts
        lower = [] if after is None else [c]
        ids, shape, markers = token_shape(chunk.sql)
        expected_ids = [
            *selected, *lower, c,  # t.c > ? AND t.c <= (
            c, c, s, t, *lower, c, s, t, *join, c, c,  # the next 17 rows' largest value
            s, t, *join, c,  # AND NOT EXISTS (…) ORDER BY t.c
        ]  # fmt: skip
        assert ids == expected_ids, chunk.sql
        assert shape == token_shape(ref_chunk.sql)[1], chunk.sql
        low = () if after is None else ("a",)
        assert chunk.params == (*low, 17, *low, "u", SINCE, SINCE)
        assert markers == len(chunk.params)
        # Parsed without the two CHANGETABLE(CHANGES [s].[t], ?) and their markers.
        tree = parse_one(without_changetables(chunk.sql))
        assert tables(tree) == {(s, t), ("", "ct_changes")}
        in_tree = Counter(ids)
        in_tree.subtract([s, t, s, t])
        assert quoted(tree) == +in_tree
        assert len(list(tree.find_all(exp.Placeholder))) == len(chunk.params) - 2


@pytest.mark.parametrize("spec", HAND_SPECS, ids=range(len(HAND_SPECS)))
def test_column_statements_of_hand_written_hostile_specs(spec: TableSpec) -> None:
    for column in spec.columns:
        not_null = replace(
            spec, columns=tuple(replace(o, nullable=o is not column) for o in spec.columns)
        )
        check_column_statements(not_null, column.name)
        check_column_statements(spec, column.name)  # nullable where make_spec made it so


@pytest.mark.parametrize("seed", range(10))
def test_column_statements_of_fuzzed_hostile_specs(seed: int) -> None:
    rng = random.Random(f"mssql-column-chunks-{seed}")
    for _ in range(FUZZ_SPECS // 10):
        spec = random_spec(rng)
        chosen = rng.choice(spec.columns)
        if rng.random() < 0.8:
            columns = tuple(replace(o, nullable=False) if o is chosen else o for o in spec.columns)
            spec = replace(spec, columns=columns)
        try:
            check_column_statements(spec, chosen.name)
        except AssertionError as exc:
            raise AssertionError(f"{spec!r} / {chosen.name!r}: {exc}") from exc


def test_column_statements_exactly() -> None:
    spec = make_spec("dbo", "items", [("v", "xml", None), ("k", "sql_variant", 1)])
    spec = replace(spec, columns=(*spec.columns, ColumnSpec("g", "datetime", nullable=False)))
    assert D.chunk_refusal(spec) is not None  # the key alone cannot bound chunks
    assert D.column_upper_bound(spec, "g").sql == (
        "SELECT TOP (1) t.[g] FROM [dbo].[items] AS t ORDER BY t.[g] DESC"
    )
    g = "CAST(CAST(? AS datetime2(7)) AS datetime)"
    chunk = D.column_chunk_query(spec, "g", ("2024-01-01T00:00:00",), ("2025-01-01",), 500, 9)
    select = D.snapshot_query(spec).sql.removesuffix(" FROM [dbo].[items] AS t")
    changed = (
        "NOT EXISTS (SELECT 1 FROM CHANGETABLE(CHANGES [dbo].[items], ?) AS ct "
        "WHERE ct.[k] = {}.[k])"
    )
    assert chunk.sql == (
        f"{select} FROM [dbo].[items] AS t WHERE t.[g] > {g} AND t.[g] <= "
        "(SELECT TOP (1) x.[g] FROM (SELECT TOP (?) n.[g] FROM [dbo].[items] AS n "
        f"WHERE n.[g] > {g} AND n.[g] <= {g} AND {changed.format('n')} ORDER BY n.[g]) AS x "
        f"ORDER BY x.[g] DESC) AND {changed.format('t')} ORDER BY t.[g]"
    )
    assert chunk.params == ("2024-01-01T00:00:00", 500, "2024-01-01T00:00:00", "2025-01-01", 9, 9)
    first = D.column_chunk_query(spec, "g", None, ("2025-01-01",), 500, 9)
    assert first.sql == chunk.sql.replace(f"t.[g] > {g} AND ", "").replace(f"n.[g] > {g} AND ", "")
    assert first.params == (500, "2025-01-01", 9, 9)


@pytest.mark.parametrize(("source_type", "scale"), CHUNK_KEY_TYPES)
def test_every_comparable_key_type_may_be_a_chunk_column(
    source_type: str, scale: int | None
) -> None:
    cols = (
        ColumnSpec("a", "sql_variant", nullable=False, key_ordinal=1),
        ColumnSpec("g", source_type, nullable=False, precision=18, scale=scale),
        ColumnSpec("v", "nvarchar"),
    )
    spec = TableSpec("dbo.t", "dbo", "t", cols, object_id=3)
    check_column_statements(spec, "g")
    tree = parse_one(
        without_changetables(D.column_chunk_query(spec, "g", ("a",), ("b",), 2, 1).sql)
    )
    compared = [
        node.expression
        for node in tree.find_all(exp.GT, exp.GTE, exp.LT, exp.LTE)
        if isinstance(node.this, exp.Column) and node.this.name == "g"
    ]
    assert len(compared) == 4  # t.g > ?, t.g <= (…), n.g > ?, n.g <= ?
    for operand in compared:
        if isinstance(operand, exp.Subquery):
            continue  # the largest value of the next rows: the column itself
        while isinstance(operand, exp.Cast):
            operand = operand.this
        assert isinstance(operand, exp.Placeholder)


@pytest.mark.parametrize(
    "source_type", ["sql_variant", "geography", "geometry", "xml", "image", "MyClrType"]
)
def test_columns_that_cannot_bound_chunks_are_refused(source_type: str) -> None:
    spec = make_spec("dbo", "t", [("a", "int", 1)])
    spec = replace(spec, columns=(*spec.columns, ColumnSpec("g]", source_type, nullable=False)))
    refusal = D.column_refusal(spec, "g]")
    assert refusal is not None
    assert "'g]'" in refusal and "'dbo.t'" in refusal and source_type.lower() in refusal
    assert "source.chunk_columns" in refusal and "NOT NULL column" in refusal
    assert "has no column 'nope'" in (D.column_refusal(spec, "nope") or "")


def test_column_parameters_bind_what_compares_as_stored() -> None:
    spec = make_spec("dbo", "t", [("a", "int", 1)])
    extra = (
        ColumnSpec("d", "decimal", nullable=False, precision=38, scale=10),
        ColumnSpec("y", "varbinary", nullable=False),
        ColumnSpec("s", "nvarchar", nullable=False),
    )
    spec = replace(spec, columns=(*spec.columns, *extra))
    assert D.column_parameters(spec, "d", ["-3.5000"]) == (Decimal("-3.5000"),)
    assert D.column_parameters(spec, "y", ["AP8="]) == (b"\x00\xff",)
    assert D.column_parameters(spec, "s", ["ü]'"]) == ("ü]'",)
    bad: list[tuple[str, Any]] = [
        ("d", [1.5]), ("y", ["not base64!"]), ("s", [5]), ("s", []), ("s", ["a", "b"]),
        ("s", [None]), ("s", "ab"), ("nope", ["x"]),
    ]  # fmt: skip
    for column, cursor in bad:
        with pytest.raises(ValueError, match=r"'dbo\.t'"):
            D.column_parameters(spec, column, cursor)
