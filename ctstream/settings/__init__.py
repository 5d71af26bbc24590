"""The one typed settings model: a TOML file plus ``CTSTREAM_`` environment variables.

Every key of the file can be set by environment as ``CTSTREAM_<SECTION>__<KEY>``
(environment wins over the file). Secrets are ``SecretStr``. Settings are validated once,
at start; a bad value fails with the key's dotted name and the form it expects.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ctstream.errors import ConfigError
from ctstream.settings.fields import Duration, MaskRule, dsn_pairs, parse_duration
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
    "Role",
    "Settings",
    "SinkSettings",
    "SnapshotMode",
    "SourceSettings",
    "TopicRetention",
    "WebSettings",
    "dsn_pairs",
    "load_settings",
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
