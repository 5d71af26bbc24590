"""Handing a fetched message to its streams without four tasks per message (patch 12).

faust's fetch loop delivers every message with
``await self.wait_first(callback(message), self.suspend_flow.wait())``, so that a
rebalance can interrupt a delivery that blocks (a stream's queue full, flow control
suspended). mode's ``Service.wait_first`` wraps each of those, and the service's
``stopped`` and ``crashed`` events, in a task and ``asyncio.wait``s for the first — four
tasks created and three cancelled per message, although a delivery almost never blocks.

``wait_first`` here runs the delivery coroutine at once instead. If it finishes without
suspending (the usual case), the others are closed unstarted and no task is made. If it
suspends, the coroutine — already under way — goes to mode's own ``wait_first`` wrapped
in :class:`_Resumed`, which hands the awaited future to the task and continues the same
coroutine from there, so a rebalance interrupts it exactly as before. Only calls whose
first argument is a coroutine take this path; waits on events (``Service.wait``) and a
service already stopped or crashed go to mode's version unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from mode.services import WaitResults


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


def wrap_wait_first(mode_wait_first: Callable[..., Any]) -> Callable[..., Any]:
    """``Service.wait_first`` (on faust's ``Consumer``), its first coroutine run eagerly."""

    async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:  # noqa: ASYNC109
        """mode's ``Service.wait_first``, the first coroutine run eagerly (module docstring)."""
        first = coros[0] if coros else None
        if not asyncio.iscoroutine(first) or self._stopped.is_set() or self._crashed.is_set():
            return await mode_wait_first(self, *coros, timeout=timeout)
        try:
            yielded = first.send(None)
        except BaseException as exc:
            for other in coros[1:]:
                if asyncio.iscoroutine(other):
                    other.close()  # never started: nothing to clean up, and no warning
            if isinstance(exc, StopIteration):
                return WaitResults([first], [exc.value], False)
            raise  # as mode's wait_first would raise the delivery's error
        return await mode_wait_first(self, _Resumed(first, yielded), *coros[1:], timeout=timeout)

    return wait_first
