"""How a failed poll is reported: loudly while running, quietly when the worker stops.

A worker stopping closes the source connection under a running read; that is expected
(nothing was saved, the next owner of the table polls again) and must not look like a
fault in the log.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from ctstream.agents.poll import TablePoller
from ctstream.agents.stats import PollStats
from ctstream.devstack.crash_points import CrashPoints
from ctstream.models import TableSpec


def _poller(should_stop: bool) -> TablePoller:
    spec = TableSpec("accounts", None, "accounts", ())
    registry: Any = SimpleNamespace(specs={"accounts": spec})
    none: Any = None
    poller = TablePoller(
        SimpleNamespace(should_stop=should_stop),
        none,
        registry,
        none,
        none,
        none,
        PollStats(),
        CrashPoints(),
    )

    async def closed_under_the_read(_spec: TableSpec) -> None:
        raise RuntimeError("the connection has been closed")

    poller._run = closed_under_the_read  # type: ignore[method-assign]
    return poller


@pytest.mark.parametrize(
    ("should_stop", "level", "with_traceback"),
    [(False, logging.ERROR, True), (True, logging.INFO, False)],
)
async def test_a_failed_poll_is_an_error_unless_the_worker_is_stopping(
    caplog: pytest.LogCaptureFixture, should_stop: bool, level: int, with_traceback: bool
) -> None:
    poller = _poller(should_stop)
    with caplog.at_level(logging.INFO, logger="ctstream.poll"):
        await poller.run("accounts")  # never raises
    [record] = [r for r in caplog.records if r.name == "ctstream.poll"]
    assert record.levelno == level
    assert (record.exc_info is not None) is with_traceback
    assert "accounts" in record.getMessage()
    assert poller.stats.last_error["accounts"] == "RuntimeError: the connection has been closed"
