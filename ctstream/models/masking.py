"""Column masking, applied by the poller before a change is produced anywhere.

Rules per column (``source.mask."<table>".<column>``):

- ``hash``: keyed HMAC-SHA256 of the value (hex); equal values give equal hashes, so
  hashed columns still join, and nobody without ``source.mask_key`` can test guesses.
  A primary-key column may be hashed: the Kafka key, the unique id and the BigQuery key
  are then all made from the hash, consistently.
- ``null``: always NULL.
- ``truncate:N``: the first N characters (text columns only).
- ``drop``: the column is not carried at all (nor created in BigQuery).

NULL stays NULL under every rule.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace

import orjson

from ctstream.models.table_spec import ColumnSpec, TableSpec
from ctstream.models.values import JsonValue

MASK_FORM = "expected 'hash', 'null', 'drop' or 'truncate:N' with N ≥ 1"
_TRUNCATE = re.compile(r"^truncate:([1-9][0-9]{0,5})$")


def check_rule(rule: str) -> str:
    """The rule if it is well formed; ValueError naming the expected form otherwise."""
    if rule in ("hash", "null", "drop") or _TRUNCATE.match(rule):
        return rule
    raise ValueError(f"{rule!r}: {MASK_FORM}")


def hash_value(key: bytes, value: JsonValue) -> str:
    """HMAC-SHA256 of a value's canonical JSON (so 1 and "1" differ), as 64 hex digits."""
    return hmac.new(key, orjson.dumps(value), hashlib.sha256).hexdigest()


class Masker:
    """Masks one table's rows and keys by its columns' rules (see ``ColumnSpec.mask``)."""

    def __init__(self, spec: TableSpec, key: bytes | None) -> None:
        self.rules: dict[str, str] = {c.name: c.mask for c in spec.columns if c.mask}
        if "hash" in self.rules.values() and not key:
            raise ValueError(f"table {spec.name!r} hashes columns but no source.mask_key is set")
        self._key = key or b""
        self._key_rules = [c.mask for c in spec.key_columns]

    def __bool__(self) -> bool:
        return bool(self.rules)

    def _apply(self, rule: str, value: JsonValue) -> JsonValue:
        if value is None or rule == "null":
            return None
        if rule == "hash":
            return hash_value(self._key, value)
        # truncate:N (text columns only, checked when the table is described)
        return str(value)[: int(rule.partition(":")[2])]

    def row(self, row: Mapping[str, JsonValue]) -> dict[str, JsonValue]:
        rules = self.rules
        out: dict[str, JsonValue] = {}
        for name, value in row.items():
            rule = rules.get(name)
            if rule is None:
                out[name] = value
            elif rule != "drop":
                out[name] = self._apply(rule, value)
        return out

    def key(self, key: Sequence[JsonValue]) -> tuple[JsonValue, ...]:
        return tuple(
            v if rule is None else self._apply(rule, v)
            for v, rule in zip(key, self._key_rules, strict=True)
        )


def protect(
    spec: TableSpec,
    rules: Mapping[str, str],
    restricted: Sequence[str],
    *,
    strict: bool = True,
    text_columns: Sequence[str] = (),
) -> TableSpec:
    """``spec`` with its columns' mask rules and its restricted copy's columns set.

    Refuses (ValueError naming the setting) what cannot stay correct: a key column masked
    other than by hashing (the unique id and the latest-state view key on it), a key
    column in the restricted copy, truncation of a column that is not text
    (``text_columns``). ``strict``: also refuse columns the table does not have (at start;
    while running, a column dropped at the source just loses its rule).
    """
    names = {c.name for c in spec.columns}
    where = f"source.mask.{spec.name!r}"
    if strict:
        for what, listed in (
            (where, list(rules)),
            (f"source.restricted.{spec.name!r}", restricted),
        ):
            unknown = [c for c in listed if c not in names]
            if unknown:
                raise ValueError(f"{what}: table {spec.name!r} has no column {unknown[0]!r}")
    protected: list[ColumnSpec] = []
    for column in spec.columns:
        rule = rules.get(column.name)
        if rule is not None and column.key_ordinal is not None and rule != "hash":
            raise ValueError(
                f"{where}.{column.name}: {column.name!r} is a primary-key column; it may only "
                "be hashed (the unique id and the latest-state view are made from the key)"
            )
        if rule is not None and rule.startswith("truncate:") and column.name not in text_columns:
            raise ValueError(
                f"{where}.{column.name}: truncate applies to text columns; "
                f"{column.name!r} is {column.source_type}"
            )
        if column.name in restricted and column.key_ordinal is not None:
            raise ValueError(
                f"source.restricted.{spec.name!r}: {column.name!r} is a primary-key column; "
                "the restricted copy needs its key (hash it with source.mask instead)"
            )
        protected.append(replace(column, mask=rule))
    return replace(
        spec,
        columns=tuple(protected),
        restricted=tuple(c for c in restricted if c in names),
    )
