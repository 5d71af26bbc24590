from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import orjson
import pytest

from ctstream.agents.dedup import restricted_copy
from ctstream.bigquery.drift import reconcile
from ctstream.bigquery.schema import table_schema
from ctstream.errors import ConfigError
from ctstream.models import ChangeEvent, ColumnSpec, TableSpec
from ctstream.models.masking import Masker, check_rule, hash_value, protect
from ctstream.settings import load_settings

KEY = b"a-key-of-24-characters!!"
SSN = ColumnSpec("ssn", "TEXT", nullable=False, key_ordinal=1)
COLUMNS = (
    SSN,
    ColumnSpec("email", "TEXT"),
    ColumnSpec("phone", "varchar(20)"),
    ColumnSpec("notes", "TEXT"),
    ColumnSpec("name", "TEXT"),
    ColumnSpec("age", "INTEGER"),
)
PEOPLE = TableSpec("people", None, "people", COLUMNS)
TEXT = ["ssn", "email", "phone", "notes", "name"]
RULES = {"ssn": "hash", "email": "hash", "phone": "truncate:3", "notes": "null", "name": "drop"}


def masked() -> TableSpec:
    return protect(PEOPLE, RULES, ["age"], text_columns=TEXT)


@pytest.mark.parametrize("rule", ["hash", "null", "drop", "truncate:1", "truncate:40"])
def test_rules_accepted(rule: str) -> None:
    assert check_rule(rule) == rule


@pytest.mark.parametrize("rule", ["", "HASH", "sha256", "truncate", "truncate:0", "truncate:-1"])
def test_bad_rules_name_the_expected_form(rule: str) -> None:
    with pytest.raises(ValueError, match="expected 'hash', 'null', 'drop' or 'truncate:N'"):
        check_rule(rule)


def test_every_rule_applied_to_rows_and_keys() -> None:
    masker = Masker(masked(), KEY)
    row = {"ssn": "123-45", "email": "a@x", "phone": "555-0100", "notes": "n", "name": "Al"}
    out = masker.row({**row, "age": 40})
    expected_hash = hmac.new(KEY, orjson.dumps("a@x"), hashlib.sha256).hexdigest()
    assert out == {
        "ssn": hash_value(KEY, "123-45"),
        "email": expected_hash,
        "phone": "555",
        "notes": None,
        "age": 40,
    }
    assert masker.key(("123-45",)) == (out["ssn"],)  # the key is hashed like its column
    assert masker.row({"ssn": "1", "email": None})["email"] is None  # NULL stays NULL


def test_hashes_equal_for_equal_inputs_and_differ_otherwise() -> None:
    assert hash_value(KEY, "a@x") == hash_value(KEY, "a@x")
    assert hash_value(KEY, "a@x") != hash_value(KEY, "b@x")
    assert hash_value(KEY, "a@x") != hash_value(b"another-key-of-24-chars!", "a@x")
    assert hash_value(KEY, 1) != hash_value(KEY, "1")  # typed, as the unique id is


def test_a_hashing_masker_needs_a_key() -> None:
    with pytest.raises(ValueError, match=r"no source\.mask_key"):
        Masker(masked(), None)


def test_bigquery_types_follow_the_masks() -> None:
    spec = masked()
    fields = {f.name: f.field_type for f in table_schema(spec)}
    assert fields["ssn"] == "STRING" and fields["email"] == "STRING"
    assert fields["phone"] == "STRING" and fields["age"] == "INT64"
    assert "name" not in fields  # dropped: no column at all
    assert reconcile(spec, table_schema(spec)).notes() == []


def test_policy_tags_go_on_their_columns() -> None:
    tag = "projects/p/locations/eu/taxonomies/1/policyTags/2"
    fields = {f.name: f for f in table_schema(masked(), {"email": tag})}
    assert fields["email"].policy_tags is not None
    assert list(fields["email"].policy_tags.names) == [tag]
    assert fields["phone"].policy_tags is None


@pytest.mark.parametrize(
    ("rules", "restricted", "message"),
    [
        ({"ssn": "null"}, [], r"source.mask.'people'.ssn: 'ssn' is a primary-key column"),
        ({"ssn": "truncate:2"}, [], "primary-key column; it may only be hashed"),
        ({"ssn": "drop"}, [], "primary-key column"),
        ({"age": "truncate:2"}, [], "truncate applies to text columns; 'age' is INTEGER"),
        ({"nope": "hash"}, [], r"source.mask.'people': table 'people' has no column 'nope'"),
        ({}, ["nope"], r"source.restricted.'people': table 'people' has no column 'nope'"),
        ({}, ["ssn"], "the restricted copy needs its key"),
    ],
)
def test_settings_that_cannot_stay_correct_are_refused(
    rules: dict[str, str], restricted: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        protect(PEOPLE, rules, restricted, text_columns=TEXT)


def test_a_column_gone_at_the_source_loses_its_rule_while_running() -> None:
    spec = protect(PEOPLE, {"gone": "hash"}, ["gone"], strict=False, text_columns=TEXT)
    assert spec.restricted == () and all(c.mask is None for c in spec.columns)


def test_the_restricted_copy_has_its_own_table_and_nulls() -> None:
    spec = masked()
    copy = spec.restricted_copy()
    assert (copy.bq_table, copy.base_bq_table) == ("people_restricted", "people")
    event = ChangeEvent("id", "people", 0.0, "t", "U", 3, ["k"], {"ssn": "k", "age": 4})
    out = ChangeEvent.from_bytes(restricted_copy(event, spec))
    assert out.row == {"ssn": "k", "age": None} and out.key == ["k"]
    delete = ChangeEvent("id", "people", 0.0, "t", "D", 4, ["k"], {"ssn": "k"})
    assert ChangeEvent.from_bytes(restricted_copy(delete, spec)).row == {"ssn": "k"}


BASE = """
[source]
dsn = "Driver=SQLite3;Database=x.db"
tables = ["people", "orders_*"]
{source}
[bigquery]
project = "p"
dataset = "d"
{bigquery}
"""


def load(tmp_path: Path, source: str, bigquery: str = "") -> Any:
    path = tmp_path / "c.toml"
    path.write_text(BASE.format(source=source, bigquery=bigquery), "utf-8")
    return load_settings(path)


GOOD_KEY = 'mask_key = "0123456789abcdef"'


def test_every_mode_loads(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        f'{GOOD_KEY}\nrestricted = {{ "orders_1" = ["city"] }}\n[source.mask.people]\n'
        'a = "hash"\nb = "null"\nc = "drop"\nd = "truncate:4"',
        '[bigquery.tables.people]\npolicy_tags = { a = "projects/p/locations/eu/taxonomies/1/'
        'policyTags/2" }',
    )
    assert settings.source.mask["people"] == {
        "a": "hash",
        "b": "null",
        "c": "drop",
        "d": "truncate:4",
    }
    assert "0123456789abcdef" not in repr(settings) + str(settings.model_dump())


@pytest.mark.parametrize(
    ("source", "bigquery", "message"),
    [
        ('[source.mask.people]\na = "sha1"', "", r"source.mask.people.a: .*'truncate:N'"),
        ('[source.mask.people]\na = "hash"', "", "source.mask_key: required to hash people.a"),
        ('mask_key = "short"', "", "source.mask_key: expected at least 16 characters"),
        (f'{GOOD_KEY}\n[source.mask.other]\na = "hash"', "", "source.mask: names 'other'"),
        ('restricted = { "other" = ["a"] }', "", "source.restricted: names 'other'"),
        ('restricted = { "people" = [] }', "", "source.restricted.people"),
        (
            'restricted = { "people" = ["a"] }\n[source.mask.people]\na = "drop"',
            "",
            "source.restricted.people: a dropped by source.mask",
        ),
        (
            "",
            '[bigquery.tables.people]\npolicy_tags = { a = "pii" }',
            "bigquery.tables.people.policy_tags.a",
        ),
    ],
)
def test_bad_and_contradictory_settings_name_the_key(
    tmp_path: Path, source: str, bigquery: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, source, bigquery)
