"""The one typed settings model: a TOML file plus ``CTSTREAM_`` environment variables.

Every key of the file can be set by environment as ``CTSTREAM_<SECTION>__<KEY>``
(environment wins over the file). Secrets are ``SecretStr``. Settings are validated once,
at start; a bad value fails with the key's dotted name and the form it expects.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from ctstream.errors import ConfigError
from ctstream.settings.fields import (
    MASK,
    Duration,
    MaskRule,
    dsn_pairs,
    dsn_parts,
    mask_dsn,
    parse_duration,
)
from ctstream.settings.kafka import KafkaSettings, TopicRetention
from ctstream.settings.sections import (
    ALL_ROLES,
    AppSettings,
    BigQuerySettings,
    BigQueryTableOptions,
    CrashPoint,
    DedupSettings,
    FaultSettings,
    LogLevel,
    Role,
    SinkSettings,
    WebSettings,
)
from ctstream.settings.source import SnapshotMode, SourceSettings

__all__ = [
    "ALL_ROLES",
    "AppSettings",
    "BigQuerySettings",
    "BigQueryTableOptions",
    "CrashPoint",
    "DedupSettings",
    "Duration",
    "FaultSettings",
    "KafkaSettings",
    "LogLevel",
    "MaskRule",
    "Problem",
    "Role",
    "Settings",
    "SettingsCheck",
    "SinkSettings",
    "SnapshotMode",
    "SourceSettings",
    "TopicRetention",
    "WebSettings",
    "check_settings",
    "dsn_pairs",
    "dsn_parts",
    "load_settings",
    "mask_dsn",
    "masked_settings",
    "parse_duration",
]


class Settings(BaseSettings):
    """All of ctstream's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="CTSTREAM_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    app: AppSettings = AppSettings()
    source: SourceSettings
    kafka: KafkaSettings = KafkaSettings()
    dedup: DedupSettings = DedupSettings()
    sink: SinkSettings = SinkSettings()
    bigquery: BigQuerySettings
    web: WebSettings = WebSettings()
    faults: FaultSettings = FaultSettings()

    @model_validator(mode="after")
    def _bigquery_tables_are_source_tables(self) -> Settings:
        selection = self.source.selection
        unknown = sorted(t for t in self.bigquery.tables if not selection.selects(t))
        if unknown:
            names = ", ".join(map(repr, unknown))
            raise ValueError(
                f"bigquery.tables names tables that source.tables does not select: {names}"
            )
        return self

    @model_validator(mode="after")
    def _merges_wait_for_writes(self) -> Settings:
        if self.bigquery.compact_settle < 2 * self.sink.request_timeout:
            raise ValueError(
                "bigquery.compact_settle must be at least twice sink.request_timeout "
                f"({2 * self.sink.request_timeout:.0f} s): a merge must not pass over a "
                "row still being written"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's content arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "missing":
        return f"{key}: required, not set"
    if kind == "extra_forbidden":
        return f"{key}: unknown key (check the spelling; see docs/configuration.md)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "literal_error":
        return f"{key}: {message} (got {error.get('input')!r})"
    return f"{key}: {message}"


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (if any), apply environment and ``overrides``; validate.

    Raises ConfigError naming every bad key and the form it expects. Secrets are never
    echoed: pydantic's input values are left out of the message.
    """
    data: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {file} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    try:
        return Settings(**data)
    except ValidationError as exc:
        problems = "\n  ".join(_describe(dict(e)) for e in exc.errors())
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"invalid configuration{where}:\n  {problems}") from None
    except SettingsError as exc:
        raise ConfigError(str(_environment_problem(exc, environment_names()))) from None


# --- checking without starting: every problem, and the settings with secrets masked -----

ENV_PREFIX = "CTSTREAM_"
# Pydantic's own messages that do not say what form is expected.
_EXPECTED = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string in quotes",
    "list_type": 'a list, e.g. ["a", "b"]; in the environment as JSON',
    "dict_type": 'a table, e.g. { key = "value" }; in the environment as JSON',
    "model_type": "a table of keys, see docs/configuration.md",
    "model_attributes_type": "a table of keys, see docs/configuration.md",
    "path_type": "a file path",
}
# A model validator's message that starts by naming the key it is about.
_LEADING_KEY = re.compile(r"^([a-z_]+(?:\.[A-Za-z0-9_\-\"']+)+)(:)?\s+")
# Settings whose values are masked even when they are not SecretStr.
_SECRET_NAME = re.compile(r"password|passwd|secret|token|credentials_json|private_key|api_key")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the configuration: ``key`` (a dotted key such as
    ``source.poll_interval``, or the config file's path) and ``message`` (what is wrong and
    the form expected). Never quotes a secret's value."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


@dataclass(frozen=True, slots=True)
class SettingsCheck:
    """The result of :func:`check_settings`: the settings when valid (else None), every
    problem found, and the names (never the values) of the ``CTSTREAM_`` variables set."""

    settings: Settings | None
    problems: tuple[Problem, ...]
    environment: tuple[str, ...]

    @property
    def valid(self) -> bool:
        return self.settings is not None and not self.problems


def environment_names() -> tuple[str, ...]:
    """The names of the ``CTSTREAM_`` environment variables set now, sorted."""
    return tuple(sorted(n for n in os.environ if n.upper().startswith(ENV_PREFIX)))


def check_settings(path: Path | str) -> SettingsCheck:
    """Read and validate the TOML file at ``path`` with the environment, as
    :func:`load_settings` does, without raising: every problem is returned, each naming
    its key and the form expected. Connects to nothing."""
    names = environment_names()
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return SettingsCheck(None, (Problem(str(file), _NO_FILE),), names)
    except (OSError, UnicodeDecodeError) as exc:
        problem = Problem(str(file), f"cannot be read ({type(exc).__name__}); {_NO_FILE}")
        return SettingsCheck(None, (problem,), names)
    except tomllib.TOMLDecodeError as exc:
        problem = Problem(str(file), f"not valid TOML: {exc}; see docs/configuration.md")
        return SettingsCheck(None, (problem,), names)
    try:
        return SettingsCheck(Settings(**data), (), names)
    except ValidationError as exc:
        return SettingsCheck(None, tuple(_problem(dict(e)) for e in exc.errors()), names)
    except SettingsError as exc:
        return SettingsCheck(None, (_environment_problem(exc, names),), names)


_NO_FILE = "does not exist (expected the path of a TOML config file)"


def _problem(error: dict[str, Any]) -> Problem:
    """A pydantic error as a Problem, never quoting the input (it may be a secret)."""
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc)
    kind = error["type"]
    if kind == "missing":
        variable = ENV_PREFIX + "__".join(loc).upper()
        return Problem(key, f"required, not set (expected in the file or as {variable})")
    if kind == "extra_forbidden":
        return Problem(key, "unknown key" + _did_you_mean(loc) + "; see docs/configuration.md")
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "literal_error":
        message = message.replace("Input should be", "expected")
        return Problem(key, f"{message} (got {error.get('input')!r})")
    if kind in _EXPECTED:
        message = f"{message} (expected {_EXPECTED[kind]})"
    leading = _LEADING_KEY.match(message)
    if leading and (not key or leading.group(1).startswith(key + ".")):
        key, message = leading.group(1), message[leading.end() :].removeprefix("is ")
    return Problem(key or "(top level)", message)


def _did_you_mean(loc: list[str]) -> str:
    """`` (did you mean 'x'?)`` for a misspelt key of a known section, else ``""``."""
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _environment_problem(exc: SettingsError, names: tuple[str, ...]) -> Problem:
    """A variable of the environment that pydantic-settings could not parse as JSON."""
    found = re.search(r'field "([^"]+)"', str(exc))
    section = found.group(1) if found else ""
    prefix = f"{ENV_PREFIX}{section}".upper()
    suspects = [n for n in names if n.upper().startswith(prefix)]
    cause = exc.__cause__
    why = f": {cause}" if isinstance(cause, json.JSONDecodeError) else ""
    return Problem(
        section or "(environment)",
        f"a {prefix}__… variable is not valid JSON{why} (expected JSON for lists and tables, "
        f"e.g. CTSTREAM_SOURCE__TABLES='[\"dbo.items\"]'; set now: {', '.join(suspects)})",
    )


def masked_settings(settings: Settings) -> dict[str, Any]:
    """The settings as JSON-able data with every secret masked: ``SecretStr`` values,
    settings whose name says password, secret or token, and the secret values inside
    ``source.dsn`` (``PWD=``, ``Password=``...; the rest of the DSN stays readable)."""
    data: dict[str, Any] = settings.model_dump(mode="json")
    _mask_by_name(settings, data)
    data["source"]["dsn"] = mask_dsn(settings.source.dsn.get_secret_value())
    return data


def _mask_by_name(model: BaseModel, data: dict[str, Any]) -> None:
    """Mask, in ``model``'s dump ``data``, the set settings whose name looks secret (in
    nested sections too; not the keys of tables such as ``source.mask``, which name
    columns)."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            _mask_by_name(value, data[name])
        elif value is not None and _SECRET_NAME.search(name):
            data[name] = MASK
