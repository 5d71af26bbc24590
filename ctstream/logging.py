"""Log lines, plain or JSON, with ctstream's fields (table, attempt, …) on every line.

Code logs structured fields as ``extra={"ctstream": {"table": "items", "attempt": 3}}``.
The plain format appends them as ``key=value``; the JSON format puts them in the object.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

import orjson

PLAIN = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"


def fields(record: logging.LogRecord) -> dict[str, Any]:
    extra = getattr(record, "ctstream", None)
    return dict(extra) if isinstance(extra, dict) else {}


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(PLAIN)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = fields(record)
        if extra:
            line += " [" + " ".join(f"{k}={v}" for k, v in extra.items()) + "]"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
            **fields(record),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


def logging_config(
    log_format: str, level: str, levels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the worker (also handed to faust's worker).

    ``levels``: single loggers' levels over ``level`` (``app.log_levels``); their records
    go through the root's handler like any other.
    """
    formatter = JsonFormatter if log_format == "json" else PlainFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"ctstream": {"()": formatter}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "ctstream",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": level.upper(), "handlers": ["default"]},
        "loggers": {name: {"level": lvl.upper()} for name, lvl in (levels or {}).items()},
    }
