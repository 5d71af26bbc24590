"""Processes of the local stack: is a pid still the program we started, and stop it.

A pid is only ever signalled while its command line still contains the expected marker:
after a reboot or a crash the pid in a state file may belong to an unrelated program,
which counts as gone and is left alone. Children this process started are reaped when
seen exited, so that none stays a zombie and their exit is seen at once.

* :class:`ChildProcesses` — the children one owner (a :class:`LocalStack`) started;
* :func:`pid_alive` / :func:`terminate` — check and stop pids by marker;
* :func:`log_tail` — the end of a child's log, for error messages.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from ctstream.errors import StackError

POLL_S = 0.05  # how often a wait loop looks again
TAIL_LINES = 30
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class ChildProcesses:
    """The child processes one owner started, by pid; thread-safe.

    A registered child is polled (and so reaped) by :meth:`alive`; children stay
    registered until they are seen exited.
    """

    def __init__(self) -> None:
        self._by_pid: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def add(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._by_pid[proc.pid] = proc

    def alive(self, pid: int) -> bool | None:
        """True/False for a registered child (reaped and forgotten once exited); None
        when ``pid`` is not one of these children."""
        with self._lock:
            child = self._by_pid.get(pid)
        if child is None:
            return None
        if child.poll() is None:
            return True
        with self._lock:
            self._by_pid.pop(pid, None)
        return False


def pid_alive(pid: int, marker: str, children: ChildProcesses | None = None) -> bool:
    """True when ``pid`` is a live (not zombie) process whose command line has ``marker``.

    A pid whose command line does not match is treated as gone: after a reboot or a crash
    the pid in a state file may belong to an unrelated process that must not be signalled.
    ``children``, when given, answers for the pids it holds; any other exited child of
    this process is reaped too.
    """
    if pid <= 0:
        return False
    if children is not None:
        known = children.alive(pid)
        if known is not None:
            return known
    try:  # our own child not tracked by a Popen: reap it if it has exited
        reaped, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    else:
        if reaped == pid:
            return False
    if Path("/proc/self").is_dir():
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


def _wait_gone(
    pids: dict[int, str], deadline: float, children: ChildProcesses | None
) -> dict[int, str]:
    """Poll until every pid is gone or the deadline passes; returns those still alive."""
    alive = dict(pids)
    while True:
        alive = {pid: m for pid, m in alive.items() if pid_alive(pid, m, children)}
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(POLL_S)


def terminate(pids: dict[int, str], timeout: float, children: ChildProcesses | None = None) -> None:
    """Stop ``{pid: marker}``: SIGTERM, wait up to ``timeout`` s, then SIGKILL and wait
    five seconds more. Pids already gone (or now another program) are skipped.

    Raises :class:`StackError` when a process outlives SIGKILL.
    """
    alive = {pid: m for pid, m in pids.items() if pid_alive(pid, m, children)}
    for pid in alive:
        _signal(pid, signal.SIGTERM)
    alive = _wait_gone(alive, time.monotonic() + timeout, children)
    for pid in alive:
        _signal(pid, signal.SIGKILL)
    alive = _wait_gone(alive, time.monotonic() + 5.0, children)
    if alive:
        raise StackError(f"processes {sorted(alive)} did not exit after SIGKILL")


def log_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a child's log (at most its last 16 KiB), without
    terminal colour codes; a note instead when the log is missing or empty."""
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
