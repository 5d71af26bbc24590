"""Log lines carry ctstream's fields, plain or as JSON."""

from __future__ import annotations

import logging
import logging.config

import orjson
import pytest

from ctstream.errors import SinkUnavailable
from ctstream.logging import JsonFormatter, PlainFormatter, logging_config
from ctstream.retry import retry_forever


def record(message: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("ctstream.sink", logging.WARNING, __file__, 1, message, (), None)
    if extra:
        rec.ctstream = extra
    return rec


def test_plain_lines_end_with_the_fields() -> None:
    line = PlainFormatter().format(record("writing failed", table="items", attempt=3))
    assert line.endswith("ctstream.sink: writing failed [table=items attempt=3]")
    assert "[WARNING]" in line


def test_json_lines_are_one_object_with_the_fields() -> None:
    data = orjson.loads(JsonFormatter().format(record("writing failed", table="items")))
    assert data["message"] == "writing failed" and data["table"] == "items"
    assert data["level"] == "warning" and data["logger"] == "ctstream.sink"
    assert data["time"].endswith("+00:00")


def test_config_picks_the_formatter() -> None:
    assert logging_config("json", "info")["formatters"]["ctstream"]["()"] is JsonFormatter
    assert logging_config("plain", "debug")["root"]["level"] == "DEBUG"


async def test_every_retry_line_names_the_table_and_the_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise SinkUnavailable("503")
        return calls

    with caplog.at_level(logging.WARNING, logger="ctstream.retry"):
        await retry_forever(flaky, "writing", 0.001, 0.002, log_fields={"table": "items"})
    extras = [r.ctstream for r in caplog.records]  # type: ignore[attr-defined]
    assert extras == [{"table": "items", "attempt": 1}, {"table": "items", "attempt": 2}]


@pytest.mark.parametrize("level", ["warning", "error", "info"])
def test_the_worker_keeps_the_root_logger_at_the_configured_level(level: str) -> None:
    # faust's spinner set the root logger to DEBUG at warning and above, so every debug
    # call in the worker built a record (and google-auth hashed each request body).
    import asyncio

    import faust

    from ctstream.worker import faust_worker

    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    loop = asyncio.new_event_loop()
    try:
        app = faust.App("log-level-test", broker="kafka://127.0.0.1:9", web_enabled=False)
        worker = faust_worker(app, loop, level, logging_config("plain", level))
        worker._setup_logging()
        assert root.level == logging.getLevelName(level.upper())
        assert not logging.getLogger("google.auth.transport.requests").isEnabledFor(logging.DEBUG)
        assert all(type(h).__name__ != "SpinnerHandler" for h in root.handlers)
    finally:
        loop.close()
        root.setLevel(saved_level)
        root.handlers[:] = saved_handlers


def test_a_single_loggers_level_goes_over_the_root_level() -> None:
    name = "ctstream.test.per_logger_level"
    config = logging_config("plain", "warning", {name: "debug"})
    assert config["loggers"] == {name: {"level": "DEBUG"}}
    assert logging_config("plain", "info")["loggers"] == {}
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    try:
        logging.config.dictConfig(config)
        assert logging.getLogger(name).isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("ctstream.test.other").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])
        logging.getLogger(name).setLevel(logging.NOTSET)
