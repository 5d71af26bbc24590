"""The SQL Server dialect's T-SQL, proven with sqlglot's tsql tokenizer and parser.

sqlglot cannot parse ``CHANGETABLE(CHANGES …)`` nor ``SET TRANSACTION ISOLATION LEVEL
SNAPSHOT``: those are checked token by token against a benign reference; the rest is parsed.
"""

from __future__ import annotations

import random
import re
import struct
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
import sqlglot
from hypothesis import given
from hypothesis import strategies as st
from sqlglot import TokenType, exp
from sqlglot.dialects.dialect import Dialect as SqlglotDialect

from ctstream.models import ColumnSpec, TableSpec
from ctstream.source.dialects import dialect_for
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
