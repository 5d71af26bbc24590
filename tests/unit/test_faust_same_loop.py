"""faust's consumer service on the worker's loop (ctstream/streams/faust_compat/same_loop.py).

mode's real ServiceThread machinery runs with ``LoopTask`` in place of its thread: the
service built by faust, a service of the same kind started and stopped, and one whose
start fails.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import faust
import pytest
from aiokafka.errors import KafkaConnectionError
from mode.threads import QueueServiceThread, WorkerThread

from ctstream.streams.faust_compat import apply_patches
from ctstream.streams.faust_compat import same_loop as faust_same_loop
from ctstream.streams.faust_compat.same_loop import LoopTask


@pytest.fixture
def app() -> Iterator[Any]:
    apply_patches()
    # Port 9 (discard) on loopback: nothing listens there, a connection is refused at once.
    yield faust.App("ctstream-test-same-loop", broker="kafka://127.0.0.1:9", web_enabled=False)


def mode_threads() -> list[threading.Thread]:
    """mode's own threads now running (any other thread, an executor's say, is left out)."""
    return [t for t in threading.enumerate() if isinstance(t, WorkerThread)]


class Echo(QueueServiceThread):
    """A service of the consumer's kind: calls are queued to it with ``call_thread``."""

    _gather_remaining_tasks = faust_same_loop.gather_remaining_tasks

    async def where(self) -> tuple[threading.Thread, asyncio.AbstractEventLoop]:
        return threading.current_thread(), asyncio.get_running_loop()


async def test_the_consumer_faust_builds_runs_on_the_consumers_loop(app: Any) -> None:
    consumer_thread = app.consumer._thread
    assert consumer_thread.thread_loop is consumer_thread.parent_loop is app.consumer.loop
    assert consumer_thread.Worker is LoopTask


async def test_a_queued_call_runs_on_the_callers_loop_and_thread_and_stop_ends_it() -> None:
    loop = asyncio.get_running_loop()
    bystander = asyncio.create_task(asyncio.sleep(60))
    service = Echo(loop=loop, thread_loop=loop, Worker=LoopTask)
    await asyncio.wait_for(service.start(), 10)
    assert mode_threads() == []  # no thread was started
    assert await asyncio.wait_for(service.call_thread(service.where), 10) == (
        threading.current_thread(),
        loop,
    )
    await asyncio.wait_for(service.stop(), 10)
    assert service._thread is not None
    assert service._thread.is_stopped.is_set()
    assert not service._thread.is_alive()
    # mode would have cancelled every task left on the "thread's" loop: the caller's.
    assert not bystander.done()
    bystander.cancel()


async def test_a_consumer_that_cannot_connect_fails_its_start_without_a_thread(app: Any) -> None:
    consumer_thread = app.consumer._thread
    bystander = asyncio.create_task(asyncio.sleep(60))
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(consumer_thread.start(), 30)
    assert mode_threads() == []
    # The crash is reported to the starter first; the task ends after mode's shutdown steps.
    await asyncio.wait_for(consumer_thread._thread.task, 10)
    assert consumer_thread._thread.is_stopped.is_set()
    assert consumer_thread._shutdown.is_set()  # a stop waiting for the shutdown goes on
    assert not bystander.done()
    bystander.cancel()
