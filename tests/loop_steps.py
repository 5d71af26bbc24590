"""Stepping an asyncio loop in tests without sleeping."""

from __future__ import annotations

import asyncio


async def after_scheduled_callbacks(rounds: int = 5) -> None:
    """Until the loop has run what was scheduled so far, ``rounds`` times (call_soon is FIFO)."""
    loop = asyncio.get_running_loop()
    for _ in range(rounds):
        barrier = loop.create_future()
        loop.call_soon(barrier.set_result, None)
        await asyncio.wait_for(barrier, 5)
