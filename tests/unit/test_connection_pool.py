"""The source connection pool: bounded, reused, and a failed lease's connection closed."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from ctstream.source.connection_pool import ConnectionPool


class Connection:
    def __init__(self, number: int) -> None:
        self.number, self.closed = number, False

    async def close(self) -> None:
        self.closed = True


def pool_of(size: int) -> tuple[ConnectionPool, list[Connection]]:
    made: list[Connection] = []
    counter = itertools.count()

    async def open_connection() -> Any:
        await asyncio.sleep(0)
        made.append(Connection(next(counter)))
        return made[-1]

    return ConnectionPool(open_connection, size), made


async def test_connections_are_reused_and_bounded() -> None:
    pool, made = pool_of(2)
    active = 0
    most = 0

    async def read() -> None:
        nonlocal active, most
        async with pool.lease():
            active += 1
            most = max(most, active)
            await asyncio.sleep(0.01)
            active -= 1

    await asyncio.wait_for(asyncio.gather(*(read() for _ in range(10))), timeout=5)
    assert most == 2 and len(made) == 2  # two at a time, the same two throughout
    assert not any(c.closed for c in made)


async def test_a_failed_lease_closes_its_connection() -> None:
    pool, made = pool_of(1)
    with pytest.raises(RuntimeError):
        async with pool.lease():
            raise RuntimeError("the read failed")
    async with pool.lease() as conn:
        assert conn is made[1]
    assert made[0].closed and not made[1].closed


async def test_close_closes_idle_connections_and_those_leased_when_returned() -> None:
    pool, made = pool_of(2)
    async with pool.lease():
        pass  # made[0] goes back idle
    async with pool.lease() as leased:
        async with pool.lease():
            pass
        await pool.close()
        assert made[0].closed or made[1].closed
    assert leased.closed and all(c.closed for c in made)


def test_size_must_be_positive() -> None:
    async def never() -> Any:
        raise AssertionError

    with pytest.raises(ValueError, match="at least 1"):
        ConnectionPool(never, 0)
