"""Handing a fetched message to its streams without four tasks per message (a speed fix).

faust's fetch loop (``Consumer._drain_messages``) delivers every message with
``await self.wait_first(callback(message), self.suspend_flow.wait())``, so that a
rebalance can interrupt a delivery that blocks (a stream's queue full, flow control
suspended). ``Service.wait_first`` wraps each of those, and the service's ``stopped`` and
``crashed`` events, in a task and ``asyncio.wait``s for the first — four tasks created and
three cancelled per message, although a delivery almost never blocks. Without them the
dedup stage went from 0.26 to 0.15 ms of worker CPU per event (``benchmarks.stages``).

``eager_wait_first`` runs the delivery coroutine at once instead. If it finishes without
suspending (the usual case), the others are closed unstarted and no task is made. If it
suspends, the coroutine — already under way — goes to faust's own ``wait_first`` wrapped
in :class:`_Resumed`, which hands the awaited future to the task and continues the same
coroutine from there, so a rebalance interrupts it exactly as before. Only calls whose
first argument is a coroutine take this path; waits on events (``Service.wait``) and a
service already stopped or crashed go to faust's version unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

from faust.transport.consumer import Consumer
from mode.services import WaitResults

_original_wait_first = Consumer.wait_first


class _Resumed:
    """Awaitable continuing a coroutine that already ran up to its first suspension."""

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self._coro, self._yielded
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # CancelledError included: the coroutine decides
                try:
                    value = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as done:
                    return done.value


async def eager_wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:  # noqa: ASYNC109
    """``Service.wait_first``, the first coroutine run eagerly (see the module docstring)."""
    first = coros[0] if coros else None
    if not asyncio.iscoroutine(first) or self._stopped.is_set() or self._crashed.is_set():
        return await _original_wait_first(self, *coros, timeout=timeout)
    try:
        yielded = first.send(None)
    except BaseException as exc:
        for other in coros[1:]:
            if asyncio.iscoroutine(other):
                other.close()  # never started: nothing to clean up, and no warning
        if isinstance(exc, StopIteration):
            return WaitResults([first], [exc.value], False)
        raise  # as faust's wait_first would raise the delivery's error
    return await _original_wait_first(self, _Resumed(first, yielded), *coros[1:], timeout=timeout)


def apply() -> None:
    Consumer.wait_first = eager_wait_first  # type: ignore[method-assign]
