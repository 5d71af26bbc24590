from __future__ import annotations

from pathlib import Path

import pytest

from ctstream.errors import ConfigError
from ctstream.models import TableSelection
from ctstream.settings import load_settings

TRACKED = ["dbo.orders", "dbo.tmp_orders", "dbo.Tmp_x", "sales.items", "sales.tmp_1"]


def test_patterns_with_exclusions_pick_the_right_tables() -> None:
    selection = TableSelection.parse(["dbo.*", "!dbo.tmp_*"])
    assert selection.resolve(TRACKED) == ["dbo.orders"]  # exclusion ignores case: Tmp_x
    assert selection.selects("dbo.new_table")
    assert not selection.selects("dbo.TMP_new")
    assert not selection.selects("sales.items")


def test_names_come_first_and_are_kept_even_when_untracked() -> None:
    selection = TableSelection.parse(["sales.items", "dbo.absent", "sales.*", "!sales.tmp_?"])
    assert selection.resolve(TRACKED) == ["sales.items", "dbo.absent"]
    assert selection.names == ("sales.items", "dbo.absent")


def test_a_name_matched_by_a_pattern_is_listed_once_whatever_its_case() -> None:
    selection = TableSelection.parse(["DBO.Orders", "dbo.*"])
    assert selection.resolve(TRACKED) == ["DBO.Orders", "dbo.Tmp_x", "dbo.tmp_orders"]


def test_unmatched_patterns_are_reported() -> None:
    selection = TableSelection.parse(["dbo.*", "hr.*", "x.[ab]*"])
    assert selection.unmatched_patterns(TRACKED) == ["hr.*", "x.[ab]*"]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["!dbo.tmp_*"], "only exclusions"),
        (["dbo.tmp_a", "!dbo.tmp_*"], "listed by name and excluded"),
    ],
)
def test_contradictions_are_refused(entries: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TableSelection.parse(entries)


BASE = """
[source]
dialect = "{dialect}"
dsn = "Driver=SQLite3;Database=x.db"
{lines}
[bigquery]
project = "p"
dataset = "d"
"""


def load(tmp_path: Path, lines: str, dialect: str = "sqlite") -> object:
    path = tmp_path / "c.toml"
    path.write_text(BASE.format(dialect=dialect, lines=lines), "utf-8")
    return load_settings(path)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ('tables = ["!tmp_*"]', "source.tables: .*only exclusions"),
        ('tables = ["tmp_a", "!tmp_*"]', "source.tables: .*listed by name and excluded"),
        ('tables = ["a\\u0001*"]', "source.tables: .*not a table name or pattern"),
        (
            'tables = ["orders_*"]\ntable_snapshot_mode = { "items" = "never" }',
            "source.table_snapshot_mode: .*does not select: 'items'",
        ),
        ('tables = ["a"]\ndiscover_interval = "0s"', "source.discover_interval"),
    ],
)
def test_bad_selections_fail_at_start_naming_the_key(
    tmp_path: Path, lines: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        load(tmp_path, lines)


def test_mssql_patterns_need_a_schema(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'\*' needs its schema for mssql.*'dbo.\*'"):
        load(tmp_path, 'tables = ["*"]', dialect="mssql")


def test_per_table_options_may_name_tables_a_pattern_selects(tmp_path: Path) -> None:
    settings: object = load(
        tmp_path,
        'tables = ["orders_*", "!orders_tmp"]\ntable_snapshot_mode = { "orders_2" = "never" }\n'
        "discover_interval = '5s'",
    )
    source = settings.source  # type: ignore[attr-defined]
    assert source.snapshot_mode_of("orders_2") == "never"
    assert source.discover and source.discover_interval == 5.0
    assert source.selection.patterns == ("orders_*",)
