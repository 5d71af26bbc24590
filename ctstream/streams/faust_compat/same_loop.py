"""faust's Kafka consumer on the worker's event loop instead of a thread of its own.

Not a fix, speed (patch 15, docs/faust-patches.md). faust runs aiokafka's consumer in a
dedicated thread with a second event loop (``mode.threads.ServiceThread``): every fetch is
a call handed from one thread to the other, and the two threads contend for the GIL and
for the machine's cores. Here that service runs as a task of the worker's own loop. mode's
thread machinery stays as it is (the method queue, the ``call_soon_threadsafe`` hand-offs,
which work within one loop as well); only the thread is replaced, by ``LoopTask``.

What the thread gave: fetching and heartbeats went on while the worker's loop was busy.
ctstream's agents work in batches and leave blocking work (database, HTTP) to executor
threads, so the loop comes back to aiokafka's tasks within milliseconds; a step holding
the loop longer than the session timeout would now cost the worker its partitions.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger("ctstream.faust")


class LoopTask:
    """Stands in for mode's ``WorkerThread``: runs the service's ``_serve`` as a task of
    the loop that started it."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.task: asyncio.Task[None] | None = None
        self.is_stopped = threading.Event()  # as WorkerThread's, for whoever checks it

    def start(self) -> None:
        self.task = self.service.parent_loop.create_task(self._run())

    async def _run(self) -> None:
        try:
            await self.service._serve()
        except asyncio.CancelledError:
            raise
        except Exception:
            # _serve has reported the crash (to the starter and the app); what is left is
            # what WorkerThread does: let a stop waiting for the shutdown go on.
            log.debug("%s ended by a crash", self.service.label, exc_info=True)
            self.service.set_shutdown()
        finally:
            self.is_stopped.set()

    def stop(self) -> None:
        """Nothing to join: ``_serve`` ends on its own once the service is stopped."""

    def is_alive(self) -> bool:
        return self.task is not None and not self.task.done()


def new_consumer_thread(self: Any) -> Any:
    """faust's ``Consumer._new_consumer_thread``, with the consumer's loop as the thread's."""
    return faust_aiokafka.AIOKafkaConsumerThread(
        self, loop=self.loop, thread_loop=self.loop, Worker=LoopTask, beacon=self.beacon
    )


async def gather_remaining_tasks(self: Any) -> None:
    """Nothing: mode would cancel every task left on the thread's loop, which is now the
    worker's. aiokafka's own tasks end with the consumer's ``stop``, which runs before."""
