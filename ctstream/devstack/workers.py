"""``ctstream worker`` child processes, for the demo, the tests and the benchmarks.

Each worker started here runs ``python -m ctstream worker --config FILE`` with its own
web port (``CTSTREAM_WEB__PORT``, a free loopback port) and its own data directory
(``CTSTREAM_APP__DATA_DIR=<workdir>/data-<index>``); its stdout and stderr go to
``<workdir>/worker-<index>.log``. Everything else comes from the config and the
inherited environment.

Its state is read from its web view (``/api/status/``): :func:`worker_status`, and the
waits :func:`wait_until_polling` / :func:`wait_until_polled` built on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctstream.devstack.probes import LOOPBACK, free_port
from ctstream.errors import CtstreamError

__all__ = [
    "WorkerProcess",
    "fetch_worker_status",
    "start_worker",
    "stop_worker",
    "wait_until_polled",
    "wait_until_polling",
    "worker_status",
    "workers_running",
]


@dataclass
class WorkerProcess:
    """A running (or exited) ``ctstream worker`` child: its process, web port and log."""

    proc: subprocess.Popen[bytes]
    web_port: int
    log: Path


def start_worker(config: Path, workdir: Path, index: int) -> WorkerProcess:
    """``ctstream worker`` as a child process with its own web port and data dir."""
    env = dict(os.environ)
    port = free_port()
    env["CTSTREAM_WEB__PORT"] = str(port)
    env["CTSTREAM_APP__DATA_DIR"] = str(workdir / f"data-{index}")
    log_path = workdir / f"worker-{index}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "-m", "ctstream", "worker", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return WorkerProcess(proc, port, log_path)


def stop_worker(worker: WorkerProcess, sig: signal.Signals = signal.SIGTERM) -> int:
    """Stop a worker (SIGTERM: clean; SIGKILL: a crash); returns its exit status.

    A worker still running 30 s after the signal is killed.
    """
    if worker.proc.poll() is None:
        worker.proc.send_signal(sig)
    try:
        return worker.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        return worker.proc.wait(timeout=10)


@contextlib.contextmanager
def workers_running(config: Path, count: int, workdir: Path) -> Iterator[list[WorkerProcess]]:
    """``count`` workers of ``config`` (indexes 0..count-1) for the ``with`` block; on exit
    all get SIGTERM at once, then each is waited for as :func:`stop_worker` does."""
    procs: list[WorkerProcess] = []
    try:
        for i in range(count):
            procs.append(start_worker(config, workdir, i))
        yield procs
    finally:
        for worker in procs:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        for worker in procs:
            stop_worker(worker)


def fetch_worker_status(port: int, timeout: float = 5.0) -> dict[str, Any]:
    """The JSON of the worker's ``/api/status/`` on loopback ``port``; raises ``OSError``
    when it does not answer and ``ValueError`` when the answer is not JSON."""
    url = f"http://{LOOPBACK}:{port}/api/status/"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def worker_status(port: int, timeout: float = 2.0) -> dict[str, Any] | None:
    """As :func:`fetch_worker_status`, but None when the worker does not answer (yet)."""
    try:
        return fetch_worker_status(port, timeout)
    except (OSError, ValueError):
        return None


async def wait_until_polling(
    workers: list[WorkerProcess],
    tables: list[str],
    timeout: float,  # noqa: ASYNC109
) -> None:
    """Until every table has been polled once by some worker; fail fast if one died.

    Raises :class:`CtstreamError` quoting the end of the log of a worker that exited, or
    naming the tables polled so far when ``timeout`` passes.
    """
    deadline = time.monotonic() + timeout
    while True:
        polled: set[str] = set()
        for worker in workers:
            if worker.proc.poll() is not None:
                tail = worker.log.read_text(errors="replace").splitlines()[-15:]
                raise CtstreamError(
                    f"worker exited with status {worker.proc.returncode}; its log ends:\n"
                    + "\n".join(tail)
                )
            status = await asyncio.to_thread(worker_status, worker.web_port)
            for name, table in (status or {}).get("tables", {}).items():
                if table.get("polls"):
                    polled.add(name)
        if polled >= set(tables):
            return
        if time.monotonic() > deadline:
            raise CtstreamError(
                f"workers did not start polling within {timeout:.0f}s "
                f"(polled so far: {sorted(polled)}); see {workers[0].log}"
            )
        await asyncio.sleep(0.5)


async def wait_until_polled(
    workers: list[WorkerProcess], tables: list[str], version: int, deadline: float
) -> None:
    """Until the workers' pollers have read every table up to ``version``, or until
    ``deadline`` (a ``time.monotonic()`` value) passes, whichever comes first."""
    while time.monotonic() < deadline:
        saved: dict[str, int] = {}
        for worker in workers:
            status = await asyncio.to_thread(worker_status, worker.web_port)
            for name, table in (status or {}).get("tables", {}).items():
                saved[name] = max(saved.get(name, -1), table.get("saved_version") or -1)
        if all(saved.get(t, -1) >= version for t in tables):
            return
        await asyncio.sleep(0.25)
