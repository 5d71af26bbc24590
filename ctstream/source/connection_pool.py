"""A bounded pool of source connections: reads of different tables run side by side.

A connection is leased for one statement or one read transaction and returned after it;
one that failed (or was cut short) is closed instead, and the next lease opens a new one.
At most ``size`` connections exist at a time (``source.max_connections``): a lease waits
for a free one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import pyodbc


class ConnectionPool:
    """Connections made by ``open_connection``, at most ``size`` at a time."""

    def __init__(self, open_connection: Callable[[], Awaitable[Any]], size: int) -> None:
        if size < 1:
            raise ValueError(f"a connection pool needs a size of at least 1, not {size}")
        self._open = open_connection
        self._size = size
        self._slots: asyncio.Semaphore | None = None  # made on first use, in the loop
        self._idle: list[Any] = []
        self._generation = 0  # close() ends a generation: older connections are closed

    @property
    def size(self) -> int:
        return self._size

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[Any]:
        """A connection for the duration of the block: an idle one, else a new one.

        Returned when the block ends normally; closed when it raises (an ODBC error may
        leave it unusable, a cancellation mid-statement leaves it busy).
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._size)
        async with self._slots:
            generation = self._generation
            conn = self._idle.pop() if self._idle else await self._open()
            reusable = False
            try:
                yield conn
                reusable = True
            finally:
                if reusable and generation == self._generation:
                    self._idle.append(conn)
                else:
                    await _close(conn)

    async def close(self) -> None:
        """Close the idle connections; those leased now are closed when returned."""
        self._generation += 1
        idle, self._idle = self._idle, []
        for conn in idle:
            await _close(conn)


async def _close(conn: Any) -> None:
    with suppress(pyodbc.Error):
        await conn.close()
