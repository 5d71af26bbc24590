"""Shared fixtures for tests on the real local stack (broker, emulator, SQLite ODBC): one
stack per session, used by tests/integration and tests/faults."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ctstream.devstack.local_stack import StackInfo, stack_running
from tests.integration.fault_proxy import FaultProxy, fault_proxy
from tests.integration.harness import Harness


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """One broker and one emulator for the whole session; tests use unique names."""
    with stack_running(tmp_path_factory.mktemp("stack")) as info:
        yield info


@pytest.fixture
async def make_harness(stack: StackInfo, tmp_path: Path) -> AsyncIterator[type[Harness] | object]:
    made: list[Harness] = []

    def make(tables: dict[str, str], **kwargs: object) -> Harness:
        harness = Harness(stack, tmp_path / f"h{len(made)}", tables, **kwargs)  # type: ignore[arg-type]
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


@pytest.fixture
async def bigquery_proxy(stack: StackInfo) -> AsyncIterator[tuple[FaultProxy, str]]:
    """The emulator behind a proxy: faults on demand (fault_proxy.py), and a record of the
    table creates and updates sent to it. Yields the proxy and its endpoint."""
    async with fault_proxy(stack.bigquery_endpoint) as proxy_and_endpoint:
        yield proxy_and_endpoint
