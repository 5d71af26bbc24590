"""Value types of the settings: durations, ODBC connection strings, the section base."""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
)

from ctstream.models.masking import check_rule

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """``"500ms"``, ``"1s"``, ``"10m"``, ``"2h"``, ``"7d"`` or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '500ms', '1s', '10m', '2h' or '7d'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError("expected a duration such as '500ms', '1s', '10m', '2h' or '7d'")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("expected a finite duration greater than zero")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
MaskRule = Annotated[str, AfterValidator(check_rule)]
_DSN_PAIR = re.compile(r"^\s*[A-Za-z][A-Za-z0-9 _-]*\s*=\s*(\{[^}]*\}|[^;]*)\s*$")


def dsn_parts(dsn: str) -> list[str]:
    """The ``Key=Value`` parts of an ODBC connection string, as written: joined with ``;``
    they give ``dsn`` back exactly."""
    # Split on ';' outside braces: ODBC lets a value hold ';' as in PWD={a;b}.
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in dsn:
        if char == "{":
            depth += 1
        elif char == "}":
            depth = max(0, depth - 1)
        if char == ";" and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def dsn_pairs(dsn: str) -> dict[str, str]:
    """Split an ODBC connection string into ``{lower-case key: value}``; raise if malformed."""
    pairs: dict[str, str] = {}
    for part in dsn_parts(dsn):
        if not part.strip():
            continue
        if not _DSN_PAIR.match(part):
            raise ValueError(
                "expected an ODBC connection string of Key=Value pairs separated by ';', "
                "e.g. 'Driver=SQLite3;Database=./demo.db'"
            )
        key, _, value = part.partition("=")
        pairs[key.strip().lower()] = value.strip()
    return pairs


MASK = "**********"
_DSN_SECRET_KEY = re.compile(r"pwd|passw|secret|token")


def mask_dsn(dsn: str) -> str:
    """The ODBC connection string with the value of every secret key masked (``PWD``,
    ``Password``, ``KeyStoreSecret``, any key naming a password, secret or token); keys
    and the other values as written. A string that does not parse is masked whole."""
    try:
        dsn_pairs(dsn)
    except ValueError:
        return MASK
    masked = []
    for part in dsn_parts(dsn):
        key, sep, _ = part.partition("=")
        if sep and _DSN_SECRET_KEY.search(key.lower()):
            part = f"{key}={MASK}"
        masked.append(part)
    return ";".join(masked)


class Section(BaseModel):
    """A settings section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
