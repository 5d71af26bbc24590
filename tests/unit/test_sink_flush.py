"""A batch's tables are written side by side, at most ``sink.tables_at_once`` at a time,
and a table that fails fails the batch only after the others' writes ended."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ctstream.agents.sink import BigQuerySink, SinkBatch
from ctstream.errors import SinkError
from ctstream.settings.sections import SinkSettings


class Writes:
    """Stands in for BigQuerySink.write: notes how many run at once and which ended."""

    def __init__(self, fail: str | None = None) -> None:
        self.running = 0
        self.most = 0
        self.ended: list[str] = []
        self.fail = fail

    async def __call__(self, table: str, restricted: bool, items: Any, *rest: Any) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            for _ in range(3):  # let the others start before this one ends
                await asyncio.sleep(0)
            if table == self.fail:
                raise SinkError(f"{table}: refused")
            await asyncio.sleep(0.01)
            self.ended.append(table)
        finally:
            self.running -= 1


def sink_with(writes: Writes, tables_at_once: int) -> BigQuerySink:
    none: Any = None
    sink = BigQuerySink(
        none, SinkSettings(tables_at_once=tables_at_once), {}, none, none, none, none, none
    )
    sink.write = writes  # type: ignore[method-assign]
    return sink


def batch_of(tables: int) -> SinkBatch:
    return SinkBatch(
        size=tables, tables={(f"t{i}", False, -1): [({}, None)] for i in range(tables)}
    )


@pytest.mark.parametrize(("tables", "at_once"), [(1, 8), (20, 8), (20, 1), (3, 8)])
async def test_tables_are_written_side_by_side_within_the_limit(tables: int, at_once: int) -> None:
    writes = Writes()
    await asyncio.wait_for(sink_with(writes, at_once).flush(batch_of(tables)), 10)
    assert writes.most == min(tables, at_once)
    assert sorted(writes.ended) == sorted(f"t{i}" for i in range(tables))


async def test_a_failed_table_fails_the_batch_after_the_others_ended() -> None:
    writes = Writes(fail="t3")
    with pytest.raises(SinkError, match="t3: refused"):
        await asyncio.wait_for(sink_with(writes, 4).flush(batch_of(10)), 10)
    assert sorted(writes.ended) == sorted(f"t{i}" for i in range(10) if i != 3)
    assert writes.running == 0
