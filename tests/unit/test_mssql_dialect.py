"""The SQL Server dialect's T-SQL, proven with sqlglot's tsql tokenizer and parser.

sqlglot cannot parse ``CHANGETABLE(CHANGES …)`` nor ``SET TRANSACTION ISOLATION LEVEL
SNAPSHOT``: those are checked token by token against a benign reference; the rest is parsed.
"""

from __future__ import annotations

import contextlib
import random
import re
import sqlite3
import struct
from collections import Counter
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlglot import TokenType, exp
from sqlglot.dialects.dialect import Dialect as SqlglotDialect

from ctstream.models import ColumnSpec, JsonValue, TableSpec
from ctstream.source.dialects import dialect_for
from ctstream.source.dialects.chunks import nested_positions, nested_range
from ctstream.source.dialects.mssql import MssqlDialect, quote_mssql
from ctstream.source.dialects.mssql_values import (
    SQL_SS_TIMESTAMPOFFSET,
    decode_datetimeoffset,
    select_expression,
)

TSQL = SqlglotDialect.get_or_raise("tsql")
D = MssqlDialect()

HOSTILE = [
    "]", "]]", "[", "[]", "a]; DROP TABLE x; --", "/* c */", "*/", "--", "'", '"', "a.b",
    "\n", "\t", "\r\n", "a\rb", "\u202eevil\u202c", "\u200f", "a\u200db",
    "\U0001f469\u200d\U0001f467", "\U0001f600" * 64, "SELECT", "CHANGETABLE", "CHANGES", "ct", "t",
    "ORDER BY", " ", " lead", "trail ", "x" * 128, "é" * 128, "N'x'", "@p", "@@ROWCOUNT",
    "?", "??", "$", "$1", "\\", "a\\]b\\", "%s", "{0}", "GO", "ct.SYS_CHANGE_VERSION",
    "t].[x", "x], ?) AS ct --",
]  # fmt: skip
POOL = "][;'\"-/*?@$\\.,() \n\t\rNabXY09_é中\u202e\u200d\u200b\ufeff\U0001f600\U0001f3f3\ufe0f"
KEY_TYPES = ["int", "bigint", "nvarchar", "uniqueidentifier", "hierarchyid", "sql_variant"]
VALUE_TYPES = [*KEY_TYPES, "decimal(18,2)", "geography", "geometry", "xml", "datetimeoffset"]


def units(name: str) -> int:
    return len(name.encode("utf-16-le")) // 2


def random_name(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return rng.choice(HOSTILE)
    target = rng.randint(1, rng.choice([8, 30, 128]))  # in UTF-16 code units
    name = ""
    while units(name) < target:
        c = rng.choice(POOL) if rng.random() < 0.7 else chr(rng.randint(1, 0x10FFFF))
        if 0xD800 <= ord(c) <= 0xDFFF or units(name + c) > 128:
            continue  # not representable, or too long: see test_unrepresentable_names
        name += c
    return name


def make_spec(
    schema: str, table: str, columns: list[tuple[str, str, int | None]], object_id: int = 7
) -> TableSpec:
    cols = tuple(ColumnSpec(n, ty, nullable=k is None, key_ordinal=k) for n, ty, k in columns)
    return TableSpec(f"{schema}.{table}", schema, table, cols, object_id=object_id)


def random_spec(rng: random.Random) -> TableSpec:
    """1-3 key columns (key order shuffled against column order), 0-4 value columns."""
    n_keys, n_values = rng.randint(1, 3), rng.randint(0, 4)
    names: dict[str, str] = {}  # distinct as SQL Server's default collation sees them
    while len(names) < n_keys + n_values:
        name = random_name(rng)
        names.setdefault(name.casefold(), name)
    ordinals: list[int | None] = [*rng.sample(range(1, n_keys + 1), n_keys), *[None] * n_values]
    rng.shuffle(ordinals)
    columns = [
        (n, rng.choice(KEY_TYPES if k else VALUE_TYPES), k)
        for n, k in zip(names.values(), ordinals, strict=True)
    ]
    return make_spec(random_name(rng), random_name(rng), columns, rng.randint(1, 2**31 - 1))


def benign(spec: TableSpec) -> TableSpec:
    """The same table shape (types, key order) with plain names."""
    cols = [(f"c{i}", c.source_type, c.key_ordinal) for i, c in enumerate(spec.columns)]
    return make_spec("plain_schema", "plain_table", cols)


def names(spec: TableSpec) -> tuple[list[str], list[str]]:
    keys = [c.name for c in spec.key_columns]
    return keys, [c.name for c in spec.columns if c.key_ordinal is None]


def token_shape(sql: str) -> tuple[list[str], list[tuple[str, str]], int]:
    """(identifiers, structure with identifiers blanked, ``?`` markers); no `;`, no comments."""
    toks = TSQL.tokenize(sql)
    assert toks, sql
    assert not [t for t in toks if t.comments], f"comment in {sql!r}"
    assert not [t for t in toks if t.token_type == TokenType.SEMICOLON], f"';' in {sql!r}"
    identifiers = [t.text for t in toks if t.token_type == TokenType.IDENTIFIER]
    shape = [
        (t.token_type.name, "" if t.token_type == TokenType.IDENTIFIER else t.text) for t in toks
    ]
    markers = sum(t.token_type == TokenType.PLACEHOLDER for t in toks)
    return identifiers, shape, markers


def parse_one(sql: str) -> exp.Expr:
    trees = sqlglot.parse(sql, read="tsql")
    assert len(trees) == 1 and trees[0] is not None, sql
    return trees[0]


def tables(tree: exp.Expr) -> set[tuple[str, str]]:
    return {(t.db, t.name) for t in tree.find_all(exp.Table)}


def quoted(tree: exp.Expr) -> Counter[str]:
    return Counter(i.name for i in tree.find_all(exp.Identifier) if i.quoted)


def without_changetable(sql: str) -> str:
    """Replace ``CHANGETABLE(…)`` (found by tokens, not by text) with a plain table name."""
    toks = TSQL.tokenize(sql)
    start = next(
        i for i, t in enumerate(toks) if (t.token_type, t.text) == (TokenType.VAR, "CHANGETABLE")
    )
    depth = 0
    for end in range(start + 1, len(toks)):
        depth += {TokenType.L_PAREN: 1, TokenType.R_PAREN: -1}.get(toks[end].token_type, 0)
        if depth == 0:
            return sql[: toks[start].start] + "ct_changes" + sql[toks[end].end + 1 :]
    raise AssertionError(f"unbalanced CHANGETABLE in {sql!r}")


def references(spec: TableSpec, selected: list[str]) -> list[str]:
    """``selected`` columns as the select list names them: each as often as the
    expression reading it refers to it (a sql_variant's, a shape's more than once)."""
    columns = {c.name: c for c in spec.columns}
    return [n for n in selected for _ in range(select_expression("«»", columns[n]).count("«»"))]


def check_spec(spec: TableSpec) -> None:
    """Every per-table statement: exact identifiers, benign structure, parses where it can."""
    ref = benign(spec)
    keys, others = names(spec)
    read_keys, read_others = references(spec, keys), references(spec, others)
    s, t = spec.schema or "", spec.table
    changes, ref_changes = D.changes_query(spec), D.changes_query(ref)
    snap, ref_snap = D.snapshot_query(spec), D.snapshot_query(ref)
    health, ref_health = D.table_health(spec, 41), D.table_health(ref, 41)
    mvv, ref_mvv = D.min_valid_version(spec), D.min_valid_version(ref)
    assert (changes.key_count, changes.value_columns) == (len(keys), tuple(others))
    assert (snap.key_count, snap.value_columns) == (len(keys), tuple(others))
    assert health.params == (41,) and mvv.params == (spec.object_id,)
    join_ids = [k for k in keys for _ in ("t", "ct")]  # t.[k] = ct.[k]
    cases = [
        (changes.sql, ref_changes.sql, [*read_keys, *read_others, s, t, s, t, *join_ids],
         changes.last_version_params),
        (snap.sql, ref_snap.sql, [*read_keys, *read_others, s, t], 0),
        (health.sql, ref_health.sql, [s, t], 1),
        (mvv.sql, ref_mvv.sql, [], 1),
    ]  # fmt: skip
    for sql, ref_sql, expected_ids, n_params in cases:
        ids, shape, markers = token_shape(sql)
        assert ids == expected_ids, sql
        assert shape == token_shape(ref_sql)[1], sql
        assert markers == n_params, sql
    # The parts sqlglot can parse: the tree names exactly the intended tables and columns.
    tree = parse_one(without_changetable(changes.sql))
    assert tables(tree) == {(s, t), ("", "ct_changes")}
    assert quoted(tree) == Counter([*read_keys, *read_others, s, t, *keys, *keys])
    # A shape's SRID property (t.[g].STSrid) parses as a column of "table" g in "db" t.
    owners = {c.db if c.name == "STSrid" else c.table for c in tree.find_all(exp.Column)}
    assert owners == {"t", "ct"}
    tree = parse_one(snap.sql)
    assert tables(tree) == {(s, t)}
    assert quoted(tree) == Counter([*read_keys, *read_others, s, t])
    tree = parse_one(without_changetable(health.sql))
    assert tables(tree) == {("", "ct_changes"), ("sys", "dm_tran_commit_table")}
    assert not quoted(tree)
    assert isinstance(parse_one(mvv.sql).find(exp.Placeholder), exp.Placeholder)


def test_protocol_and_registry() -> None:
    assert isinstance(dialect_for("mssql"), MssqlDialect) and D.name == "mssql"


@pytest.mark.parametrize("name", HOSTILE)
def test_quote_keeps_hostile_names_exactly(name: str) -> None:
    quoted_name = quote_mssql(name)
    assert quoted_name == "[" + name.replace("]", "]]") + "]"
    assert (
        token_shape(f"SELECT t.{quoted_name} FROM {quoted_name}.{quoted_name} AS t")[0]
        == [name] * 3
    )


HAND_SPECS = [
    make_spec(
        name, name, [(name, "int", 1), ("k]2", "hierarchyid", 2), ("v" + name[1:], "xml", None)]
    )
    for name in HOSTILE
]


@pytest.mark.parametrize("spec", HAND_SPECS, ids=range(len(HAND_SPECS)))
def test_hand_written_hostile_specs(spec: TableSpec) -> None:
    check_spec(spec)


FUZZ_SPECS = 1000


@pytest.mark.parametrize("seed", range(10))
def test_fuzzed_hostile_specs(seed: int) -> None:
    rng = random.Random(f"mssql-dialect-{seed}")
    for _ in range(FUZZ_SPECS // 10):
        spec = random_spec(rng)
        try:
            check_spec(spec)
        except AssertionError as exc:
            raise AssertionError(f"{spec!r}: {exc}") from exc


def test_statement_shapes() -> None:
    spec = make_spec(
        "dbo",
        "items",
        [("b", "int", 2), ("a", "nvarchar", 1), ("g", "geography", None),
         ("m", "geometry", None), ("h", "hierarchyid", None), ("x", "XML", None),
         ("v", "sql_variant", None), ("d", "decimal(18,2)", None)],
    )  # fmt: skip
    variant = select_expression("t.[v]", spec.columns[6])
    no_wkb = "CAST('' AS varbinary(max))"
    converted = f"CAST(t.[g].STSrid AS binary(4)) + COALESCE(t.[g].AsBinaryZM(), {no_wkb}), "
    converted += f"CAST(t.[m].STSrid AS binary(4)) + COALESCE(t.[m].AsBinaryZM(), {no_wkb}), "
    converted += "t.[h].ToString(), "
    converted += f"CONVERT(nvarchar(max), t.[x]), {variant}, t.[d]"
    assert D.changes_query(spec).sql == (
        "SELECT ct.SYS_CHANGE_OPERATION, ct.SYS_CHANGE_VERSION, ct.[a], ct.[b], "
        f"{converted} FROM CHANGETABLE(CHANGES [dbo].[items], ?) AS ct "
        "LEFT JOIN [dbo].[items] AS t ON t.[a] = ct.[a] AND t.[b] = ct.[b] "
        "ORDER BY ct.SYS_CHANGE_VERSION"
    )
    assert D.changes_query(spec).last_version_params == 1
    # The shapes (positions 2 and 3 after the two keys) are converted in Python.
    assert [i for i, _ in D.changes_query(spec).converts] == [2, 3]
    assert [i for i, _ in D.snapshot_query(spec).converts] == [2, 3]
    tree_keys = make_spec("s", "t", [("h", "hierarchyid", 1), ("v", "sql_variant", 2)])
    key_variant = select_expression("ct.[v]", tree_keys.columns[1])
    assert D.changes_query(tree_keys).sql.startswith(
        "SELECT ct.SYS_CHANGE_OPERATION, ct.SYS_CHANGE_VERSION, ct.[h].ToString(), "
        f"{key_variant} FROM"
    )
    assert D.snapshot_query(spec).sql == (
        f"SELECT t.[a], t.[b], {converted} FROM [dbo].[items] AS t"
    )
    assert (
        "DATEDIFF_BIG(SECOND, MIN(tc.commit_time), SYSUTCDATETIME())" in D.table_health(spec, 3).sql
    )


@pytest.mark.parametrize(
    ("source_type", "scale", "expected"),
    [
        ("datetime2", 7, "CONVERT(varchar(27), t.[c], 121)"),
        ("time", 7, "CONVERT(varchar(16), t.[c], 121)"),
        ("datetime2", 6, "t.[c]"),  # microseconds: read exactly as a datetime
        ("datetime2", 0, "t.[c]"),
        ("time", 3, "t.[c]"),
        ("datetimeoffset", 7, "t.[c]"),  # the output converter writes its text
        ("datetime", 3, "t.[c]"),
    ],
)
def test_time_reads(source_type: str, scale: int, expected: str) -> None:
    column = ColumnSpec("c", source_type, precision=27, scale=scale)
    assert select_expression("t.[c]", column) == expected
    parse_one(f"SELECT {expected} FROM x AS t")


def test_sql_variant_read_keeps_its_base_type_and_value() -> None:
    sql = select_expression("t.[v]", ColumnSpec("v", "sql_variant"))
    tree = parse_one(f"SELECT {sql} FROM x AS t")
    assert quoted(tree) == Counter({"v": sql.count("t.[v]")})
    # A NULL stays NULL; the text is JSON with the base type and an escaped value.
    assert sql.startswith('CASE WHEN t.[v] IS NULL THEN NULL ELSE CONCAT(N\'{"base_type":"\', ')
    assert "STRING_ESCAPE(" in sql and sql.endswith("'json'), N'\"}') END")
    # The conversion styles that keep each base type's value.
    for fragment in (
        "WHEN 'float' THEN CONVERT(nvarchar(30), CAST(t.[v] AS float), 3)",
        "WHEN 'real' THEN CONVERT(nvarchar(30), CAST(t.[v] AS real), 3)",
        "WHEN 'datetime2' THEN CONVERT(nvarchar(27), CAST(t.[v] AS datetime2(7)), 121)",
        "WHEN 'datetimeoffset' THEN CONVERT(nvarchar(34), CAST(t.[v] AS datetimeoffset(7)), 121)",
        "WHEN 'time' THEN CONVERT(nvarchar(16), CAST(t.[v] AS time(7)), 121)",
        "WHEN 'varbinary' THEN CONVERT(nvarchar(max), CAST(t.[v] AS varbinary(8000)), 1)",
        "WHEN 'money' THEN CONVERT(nvarchar(30), CAST(t.[v] AS money), 2)",
        "ELSE CONVERT(nvarchar(max), t.[v]) END",
    ):
        assert fragment in sql


@pytest.mark.parametrize(
    ("statement", "expected_tables"),
    [
        (D.database_info(), {"databases", "change_tracking_databases"}),
        (D.tracked_table("a]; --", "?"), {"change_tracking_tables", "tables", "schemas"}),
        (D.tracked_tables(), {"change_tracking_tables", "tables", "schemas"}),
        (D.columns("a]; --", "?"), {"columns", "tables", "schemas", "types", "indexes",
                                    "index_columns"}),
        (D.current_version(), set()),
        (D.cleanup_backlog(), {"dm_tran_commit_table"}),
    ],
)  # fmt: skip
def test_catalog_statements_parse(statement: Any, expected_tables: set[str]) -> None:
    ids, _, markers = token_shape(statement.sql)
    assert ids == [] and markers == len(statement.params)
    tree = parse_one(statement.sql)
    assert tables(tree) == {("sys", name) for name in expected_tables}
    assert not quoted(tree)


def test_catalog_names_are_bound_parameters() -> None:
    assert D.tracked_table("a]; --", "?").params == ("a]; --", "?")
    assert D.columns("s", "t").sql == D.columns("a]; --", "?").sql
    assert D.tracked_table("s", "t").sql == D.tracked_table("x'y", "z").sql
    assert "ORDER BY c.column_id" in D.columns("s", "t").sql


@pytest.mark.parametrize(
    "name",
    ["", "x" * 129, "\U0001f600" * 64 + "x", "é" * 129, "a\x00b", "\x00", "\ud800", "a\udfffb"],
)
def test_unrepresentable_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError) as info:
        quote_mssql(name)
    assert repr(name) in str(info.value)
    spec = make_spec("dbo", "t", [(name, "int", 1)])
    for build in (D.changes_query, D.snapshot_query):
        with pytest.raises(ValueError, match="identifier"):
            build(spec)


def test_length_limit_counts_utf16_code_units() -> None:
    assert quote_mssql("\U0001f600" * 64) == "[" + "\U0001f600" * 64 + "]"  # 128 units
    assert quote_mssql("x" * 128) == "[" + "x" * 128 + "]"


def test_split_name_and_missing_schema() -> None:
    assert D.split_name("dbo.items") == ("dbo", "items")
    assert D.split_name("a]b.[c d]") == ("a]b", "[c d]")
    for bad in ("items", ".items", "dbo."):
        with pytest.raises(ValueError, match=r"dbo\.items") as info:
            D.split_name(bad)
        assert repr(bad) in str(info.value)
    no_schema = TableSpec("items", None, "items", (ColumnSpec("id", "int", key_ordinal=1),))
    for call in (D.changes_query, D.snapshot_query, lambda s: D.table_health(s, 1)):
        with pytest.raises(ValueError, match="schema"):
            call(no_schema)
    with pytest.raises(ValueError, match="schema"):
        D.tracked_table(None, "items")
    keyless = make_spec("dbo", "t", [("v", "int", None)])
    with pytest.raises(ValueError, match="primary key"):
        D.changes_query(keyless)
    with pytest.raises(ValueError, match="object id"):
        D.min_valid_version(TableSpec("dbo.t", "dbo", "t", no_schema.columns))


@pytest.mark.parametrize("timeout", [0, 1, 5000, -1, 2**31 - 1])
def test_session_sql(timeout: int) -> None:
    isolation, lock = D.session_sql(timeout)
    assert isolation == "SET TRANSACTION ISOLATION LEVEL SNAPSHOT"
    assert [(t.token_type.name, t.text) for t in TSQL.tokenize(isolation)] == [
        ("SET", "SET"), ("VAR", "TRANSACTION"), ("VAR", "ISOLATION"), ("VAR", "LEVEL"),
        ("VAR", "SNAPSHOT"),
    ]  # fmt: skip
    assert lock == f"SET LOCK_TIMEOUT {timeout}"
    tree = parse_one(lock)
    assert isinstance(tree, exp.Set) and not quoted(tree)


@pytest.mark.parametrize("timeout", [-2, 2**31, True, False, 1.5, "5000", "1; DROP TABLE x", None])
def test_session_sql_refuses_bad_timeouts(timeout: Any) -> None:
    with pytest.raises(ValueError, match="lock timeout"):
        D.session_sql(timeout)


DTO_TEXT = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{7}) ([+-])(\d\d):(\d\d)")


def pack_dto(*fields: int) -> bytes:
    return struct.pack("<6hI2h", *fields)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ((2024, 2, 29, 23, 59, 58, 123456700, -5, -30), "2024-02-29 23:59:58.1234567 -05:30"),
        ((1, 1, 1, 0, 0, 0, 0, 14, 0), "0001-01-01 00:00:00.0000000 +14:00"),
        ((9999, 12, 31, 12, 0, 0, 999999900, 0, 0), "9999-12-31 12:00:00.9999999 +00:00"),
        ((2020, 6, 1, 8, 15, 0, 0, 5, 45), "2020-06-01 08:15:00.0000000 +05:45"),
        ((2020, 6, 1, 8, 15, 0, 100, 0, -30), "2020-06-01 08:15:00.0000001 -00:30"),
    ],
)
def test_datetimeoffset_converter(fields: tuple[int, ...], expected: str) -> None:
    assert decode_datetimeoffset(pack_dto(*fields)) == expected


@given(
    st.datetimes(),  # naive: the struct holds the local time
    st.integers(0, 9_999_999),
    st.integers(-14 * 60, 14 * 60),
)
def test_datetimeoffset_text_keeps_every_field(
    local: datetime, ticks: int, offset_minutes: int
) -> None:
    """Every field of the driver's struct is in the text: 100 ns ticks and the offset."""
    sign = -1 if offset_minutes < 0 else 1
    tz_hour, tz_minute = divmod(abs(offset_minutes), 60)
    fields = (local.year, local.month, local.day, local.hour, local.minute, local.second,
              ticks * 100, sign * tz_hour, sign * tz_minute)  # fmt: skip
    text = decode_datetimeoffset(pack_dto(*fields))
    assert text is not None
    match = re.fullmatch(
        r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{7}) ([+-])(\d\d):(\d\d)", text
    )
    assert match is not None, text
    *parts, ticks_text, sign_text, hh, mm = match.groups()
    assert tuple(map(int, parts)) == fields[:6] and int(ticks_text) == ticks
    minutes = (int(hh) * 60 + int(mm)) * (-1 if sign_text == "-" else 1)
    assert minutes == offset_minutes


def test_configure_connection_registers_converter() -> None:
    calls: list[tuple[int, Any]] = []

    class FakeConnection:
        def add_output_converter(self, sqltype: int, func: Any) -> None:
            calls.append((sqltype, func))

    D.configure_connection(FakeConnection())
    assert calls == [(SQL_SS_TIMESTAMPOFFSET, decode_datetimeoffset)] and calls[0][0] == -155
    assert decode_datetimeoffset(None) is None


# --- chunked snapshots ---------------------------------------------------------------


def nested_ids(keys: list[str]) -> list[str]:
    """The key columns as a nested key range names them: each but the last twice."""
    return [k for k in keys[:-1] for _ in (0, 1)] + keys[-1:]


def renamed(spec: TableSpec) -> TableSpec:
    """``benign(spec)`` keeping every column's precision and scale."""
    columns = tuple(replace(c, name=f"c{i}") for i, c in enumerate(spec.columns))
    return replace(
        spec, name="plain_schema.plain_table", schema="plain_schema", table="plain_table",
        columns=columns,
    )  # fmt: skip


def check_chunk_statements(spec: TableSpec) -> None:
    """The largest key and a chunk: exact identifiers, benign structure, one parameter
    per marker, parsed trees naming exactly the intended table and columns."""
    ref = renamed(spec)
    keys, others = names(spec)
    read_keys, read_others = references(spec, keys), references(spec, others)
    s, t = spec.schema or "", spec.table
    bound, ref_bound = D.snapshot_upper_bound(spec), D.snapshot_upper_bound(ref)
    assert (bound.key_count, bound.value_columns, bound.params) == (len(keys), (), ())
    ids, shape, markers = token_shape(bound.sql)
    assert ids == [*read_keys, s, t, *keys], bound.sql
    assert shape == token_shape(ref_bound.sql)[1] and markers == 0
    tree = parse_one(bound.sql)
    assert tables(tree) == {(s, t)}
    assert quoted(tree) == Counter([*read_keys, s, t, *keys])
    refusal = D.chunk_refusal(spec)
    if any(c.source_type == "sql_variant" for c in spec.key_columns):
        assert refusal is not None and "sql_variant" in refusal and "whole table" in refusal
        with pytest.raises(ValueError, match="sql_variant"):
            D.snapshot_chunk_query(spec, None, tuple(range(len(keys))), 5)
        return
    assert refusal is None
    upper = tuple(f"u{i}" for i in range(len(keys)))
    after = tuple(f"a{i}" for i in range(len(keys)))
    for start in (None, after):
        chunk = D.snapshot_chunk_query(spec, start, upper, 17)
        ref_chunk = D.snapshot_chunk_query(ref, start, upper, 17)
        assert (chunk.key_count, chunk.value_columns) == (len(keys), tuple(others))
        assert chunk.converts == D.snapshot_query(spec).converts
        ranges = nested_ids(keys) * (1 if start is None else 2)
        ids, shape, markers = token_shape(chunk.sql)
        assert ids == [*read_keys, *read_others, s, t, *ranges, *keys], chunk.sql
        assert shape == token_shape(ref_chunk.sql)[1], chunk.sql
        positions = [i for i in range(len(keys) - 1) for _ in (0, 1)] + [len(keys) - 1]
        expected = [after[i] for i in positions] if start else []
        assert chunk.params == (17, *expected, *(upper[i] for i in positions))
        assert markers == len(chunk.params)
        tree = parse_one(chunk.sql)
        assert tables(tree) == {(s, t)}
        assert quoted(tree) == Counter([*read_keys, *read_others, s, t, *ranges, *keys])
        assert len(list(tree.find_all(exp.Placeholder))) == len(chunk.params)


@pytest.mark.parametrize("spec", HAND_SPECS, ids=range(len(HAND_SPECS)))
def test_chunk_statements_of_hand_written_hostile_specs(spec: TableSpec) -> None:
    check_chunk_statements(spec)


@pytest.mark.parametrize("seed", range(10))
def test_chunk_statements_of_fuzzed_hostile_specs(seed: int) -> None:
    rng = random.Random(f"mssql-chunks-{seed}")
    for _ in range(FUZZ_SPECS // 10):
        spec = random_spec(rng)
        try:
            check_chunk_statements(spec)
        except AssertionError as exc:
            raise AssertionError(f"{spec!r}: {exc}") from exc


def test_chunk_statements_exactly() -> None:
    one = make_spec("dbo", "items", [("v", "xml", None), ("id", "bigint", 1)])
    assert D.snapshot_upper_bound(one).sql == (
        "SELECT TOP (1) t.[id] FROM [dbo].[items] AS t ORDER BY t.[id] DESC"
    )
    chunk = D.snapshot_chunk_query(one, (41,), (99,), 500)
    assert chunk.sql == (
        "SELECT TOP (?) t.[id], CONVERT(nvarchar(max), t.[v]) FROM [dbo].[items] AS t "
        "WHERE t.[id] > ? AND t.[id] <= ? ORDER BY t.[id]"
    )
    assert chunk.params == (500, 41, 99)
    first = D.snapshot_chunk_query(one, None, (99,), 500)
    assert first.sql == chunk.sql.replace("t.[id] > ? AND ", "")
    assert first.params == (500, 99)

    three = make_spec(
        "s", "t", [("v", "int", None), ("c", "datetime", 3), ("a", "int", 1), ("b", "varchar", 2)]
    )
    assert D.snapshot_upper_bound(three).sql == (
        "SELECT TOP (1) t.[a], t.[b], t.[c] FROM [s].[t] AS t "
        "ORDER BY t.[a] DESC, t.[b] DESC, t.[c] DESC"
    )
    after, upper = (1, "x", "2024-01-01T00:00:00.003000"), (9, "y", "2025-01-01T00:00:00.000000")
    chunk = D.snapshot_chunk_query(three, after, upper, 3)
    b, c = "CAST(? AS varchar(max))", "CAST(CAST(? AS datetime2(7)) AS datetime)"
    assert chunk.sql == (
        "SELECT TOP (?) t.[a], t.[b], t.[c], t.[v] FROM [s].[t] AS t WHERE "
        f"t.[a] >= ? AND (t.[a] > ? OR (t.[b] >= {b} AND (t.[b] > {b} OR t.[c] > {c}))) AND "
        f"t.[a] <= ? AND (t.[a] < ? OR (t.[b] <= {b} AND (t.[b] < {b} OR t.[c] <= {c}))) "
        "ORDER BY t.[a], t.[b], t.[c]"
    )
    assert chunk.params == (3, 1, 1, "x", "x", after[2], 9, 9, "y", "y", upper[2])


CHUNK_KEY_TYPES = [
    ("tinyint", None), ("smallint", None), ("int", None), ("bigint", None), ("bit", None),
    ("decimal", 5), ("numeric", 0), ("money", 4), ("smallmoney", 4), ("float", None),
    ("real", None), ("char", None), ("varchar", None), ("nchar", None), ("nvarchar", None),
    ("binary", None), ("varbinary", None), ("rowversion", None), ("uniqueidentifier", None),
    ("hierarchyid", None), ("date", None), ("time", 3), ("time", 7), ("datetime2", 0),
    ("datetime2", 7), ("datetimeoffset", 7), ("datetime", 3), ("smalldatetime", 0),
]  # fmt: skip


@pytest.mark.parametrize(("source_type", "scale"), CHUNK_KEY_TYPES)
def test_every_comparable_key_type_makes_chunks(source_type: str, scale: int | None) -> None:
    cols = (
        ColumnSpec("a", "int", nullable=False, key_ordinal=2),
        ColumnSpec("k", source_type, nullable=False, key_ordinal=1, precision=18, scale=scale),
        ColumnSpec("v", "nvarchar"),
    )
    spec = TableSpec("dbo.t", "dbo", "t", cols, object_id=3)
    assert D.chunk_refusal(spec) is None
    check_chunk_statements(spec)
    chunk = D.snapshot_chunk_query(spec, ("a", "b"), ("c", "d"), 2)
    # The leading key column, compared four times, each time with its parameter as is or
    # converted to the column's type.
    tree = parse_one(chunk.sql)
    compared = [
        node.expression
        for node in tree.find_all(exp.GT, exp.GTE, exp.LT, exp.LTE)
        if isinstance(node.this, exp.Column) and node.this.name == "k"
    ]
    assert len(compared) == 4
    for operand in compared:
        placeholder = operand if isinstance(operand, exp.Placeholder) else operand.this
        while isinstance(placeholder, exp.Cast):
            placeholder = placeholder.this
        assert isinstance(placeholder, exp.Placeholder)


@pytest.mark.parametrize(
    "source_type", ["sql_variant", "geography", "geometry", "xml", "image", "MyClrType"]
)
def test_keys_that_cannot_bound_chunks_are_refused(source_type: str) -> None:
    spec = make_spec("dbo", "t", [("a", "int", 1), ("k]", source_type, 2)])
    refusal = D.chunk_refusal(spec)
    assert refusal is not None
    assert "'k]'" in refusal and "'dbo.t'" in refusal and "whole table" in refusal
    with pytest.raises(ValueError, match="whole table"):
        D.snapshot_chunk_query(spec, None, (1, 2), 10)


def typed_spec(*columns: tuple[str, str, int | None, int | None]) -> TableSpec:
    cols = tuple(
        ColumnSpec(n, ty, nullable=False, key_ordinal=i + 1, precision=p, scale=s)
        for i, (n, ty, p, s) in enumerate(columns)
    )
    return TableSpec("dbo.t", "dbo", "t", cols, object_id=3)


def test_key_parameters_bind_what_compares_as_stored() -> None:
    spec = typed_spec(
        ("i", "bigint", 19, 0), ("f", "float", 53, None), ("b", "bit", 1, 0),
        ("d", "decimal", 38, 10), ("m", "money", 19, 4), ("y", "varbinary", None, None),
        ("dt", "date", 10, 0), ("tm", "time", 16, 6), ("t7", "time", 16, 7),
        ("ts", "datetime", 23, 3), ("d2", "datetime2", 27, 7), ("o", "datetimeoffset", 34, 7),
        ("u", "uniqueidentifier", None, None), ("h", "hierarchyid", None, None),
        ("s", "nvarchar", None, None), ("r", "rowversion", None, None),
    )  # fmt: skip
    key: list[JsonValue] = [
        -(2**63), 0.1, True, "12345678901234567890123456.1234567890", "-3.5000", "AP8=",
        "2024-02-29", "23:59:59.999999", "23:59:59.9999999", "2024-01-01T00:00:00.003000",
        "0001-01-01 00:00:00.0000001", "2024-02-29 23:59:58.1234567 -05:30",
        "6F9619FF-8B86-D011-B42D-00C04FC964FF", "/1/3/", "ü\U0001f600]'", "AAAAAAAAB9E=",
    ]  # fmt: skip
    params = D.key_parameters(spec, key)
    assert params == (
        -(2**63), 0.1, True, Decimal("12345678901234567890123456.1234567890"),
        Decimal("-3.5000"), b"\x00\xff", *key[6:15], b"\x00" * 6 + b"\x07\xd1",
    )  # fmt: skip
    assert [type(p) for p in params[:6]] == [int, float, bool, Decimal, Decimal, bytes]


@pytest.mark.parametrize(
    ("source_type", "scale", "value"),
    [
        ("bigint", 0, "1"), ("bigint", 0, 1.0), ("bigint", 0, True), ("bit", 0, 1),
        ("float", None, "1.5"), ("decimal", 2, "abc"), ("decimal", 2, 1.5),
        ("decimal", 2, "NaN"), ("varbinary", None, "not base64!"), ("varbinary", None, 5),
        ("date", 0, "2024-13-01"), ("date", 0, 20240101), ("time", 3, "25:00:00"),
        ("datetime2", 3, "yesterday"), ("nvarchar", None, 5), ("uniqueidentifier", None, None),
    ],
)  # fmt: skip
def test_key_parameters_refuse_values_no_read_carries(
    source_type: str, scale: int | None, value: Any
) -> None:
    spec = typed_spec(("a", "int", 10, 0), ("k]", source_type, 18, scale))
    with pytest.raises(ValueError, match=r"'dbo\.t'"):
        D.key_parameters(spec, [1, value])


@pytest.mark.parametrize("key", [[], [1], [1, 2, 3], "ab", (1, None)])
def test_key_parameters_need_one_value_per_key_column(key: Any) -> None:
    spec = typed_spec(("a", "int", 10, 0), ("b", "int", 10, 0))
    with pytest.raises(ValueError, match=r"'dbo\.t'"):
        D.key_parameters(spec, key)
    if len(key) != 2:
        with pytest.raises(ValueError, match=r"'dbo\.t'"):
            D.snapshot_chunk_query(spec, None, tuple(key), 5)
        with pytest.raises(ValueError, match=r"'dbo\.t'"):
            D.snapshot_chunk_query(spec, tuple(key), (1, 2), 5)


@pytest.mark.parametrize("limit", [0, -5, True, 2.0, "10", None])
def test_chunk_limit_is_an_int_of_at_least_one(limit: Any) -> None:
    spec = make_spec("dbo", "t", [("a", "int", 1)])
    with pytest.raises(ValueError, match="limit"):
        D.snapshot_chunk_query(spec, None, (1,), limit)


def test_masks_do_not_change_how_keys_compare() -> None:
    plain = make_spec("dbo", "t", [("a", "varbinary", 1), ("b", "date", 2), ("v", "int", None)])
    masked = TableSpec(
        plain.name,
        plain.schema,
        plain.table,
        tuple(replace(c, mask="hash", target=f"x_{c.name}") for c in plain.columns),
        object_id=plain.object_id,
    )
    assert D.key_parameters(masked, ["AQ==", "2024-01-01"]) == (b"\x01", "2024-01-01")
    assert D.snapshot_chunk_query(masked, None, (b"\x01", "x"), 3).sql == (
        D.snapshot_chunk_query(plain, None, (b"\x01", "x"), 3).sql
    )


@settings(max_examples=300)
@given(
    st.integers(1, 4).flatmap(
        lambda n: st.tuples(*[st.lists(st.integers(0, 2), min_size=n, max_size=n)] * 3)
    )
)
def test_nested_ranges_compare_as_row_values(
    rows: tuple[list[int], list[int], list[int]],
) -> None:
    """The nested form holds exactly when the row-value comparison does (evaluated by
    SQLite, which reads this part of T-SQL alike)."""
    row, after, upper = rows
    refs = [f"c{i}" for i in range(len(row))]
    positions = nested_positions(len(row))
    above = nested_range(refs, ["?"] * len(refs), ">", ">")
    within = nested_range(refs, ["?"] * len(refs), "<", "<=")
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.execute(f"CREATE TABLE x ({', '.join(refs)})")
        conn.execute(f"INSERT INTO x VALUES ({', '.join('?' for _ in refs)})", row)
        params = [after[i] for i in positions] + [upper[i] for i in positions]
        found = conn.execute(f"SELECT count(*) FROM x WHERE {above} AND {within}", params)
        assert found.fetchone()[0] == (tuple(after) < tuple(row) <= tuple(upper))


def test_nested_range_refuses_what_it_cannot_write() -> None:
    for strict, last, refs in [("=", "=", ["a"]), (">", "<", ["a"]), (">", ">", [])]:
        with pytest.raises(ValueError, match="nested_range"):
            nested_range(refs, ["?"] * len(refs), strict, last)
    with pytest.raises(ValueError, match="markers"):
        nested_range(["a", "b"], ["?"], ">", ">")


def test_row_estimate_reads_the_storage_engines_count() -> None:
    spec = make_spec("dbo", "items", [("id", "int", 1)], object_id=42)
    stmt = D.row_estimate(spec)
    assert stmt.params == (42,) and stmt.sql.count("?") == 1
    assert tables(parse_one(stmt.sql)) == {("sys", "partitions")}
    assert "index_id IN (0, 1)" in stmt.sql  # the heap or the clustered index, once
    unresolved = make_spec("dbo", "items", [("id", "int", 1)])
    unresolved = TableSpec(unresolved.name, "dbo", "items", unresolved.columns)
    assert D.row_estimate(unresolved).params == ()
