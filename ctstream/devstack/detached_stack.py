"""The detached local stack of ``ctstream stack up|down``, remembered in a state file.

:func:`stack_up` starts a :class:`~ctstream.devstack.local_stack.LocalStack` that outlives
the calling process and records its :class:`StackInfo` in ``<base>/stack.json``
(:func:`state_path`; ``base`` defaults to ``./.ctstream``); :func:`stack_down` stops the
stack named there and deletes the file; :func:`running_info` says whether it still runs.

Promises: at most one stack per state file (``stack up`` on a live one returns it); ``up``
and ``down`` on one ``base`` never interleave (they hold ``<base>/stack.lock``); the state
file is replaced atomically; a stale or damaged state file counts as no stack, and half a
stack (one process left) is stopped before a new one starts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from ctstream.devstack.local_stack import LocalStack
from ctstream.devstack.processes import POLL_S
from ctstream.devstack.stack_info import StackInfo
from ctstream.errors import StackError

__all__ = ["StackUp", "running_info", "stack_down", "stack_up", "state_path"]

STATE_DIR = ".ctstream"
STATE_FILE = "stack.json"
LOCK_FILE = "stack.lock"


class StackUp(NamedTuple):
    """What :func:`stack_up` did: ``already_running`` is True when it found a live stack
    (named by the state file) and returned that instead of starting another one."""

    info: StackInfo
    already_running: bool


def state_path(base: Path | None = None) -> Path:
    """The state file of the detached stack: ``<base>/stack.json``; ``base`` defaults to
    ``./.ctstream`` in the current directory."""
    return (base if base is not None else Path.cwd() / STATE_DIR) / STATE_FILE


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
        stack = LocalStack()
        if old is not None:
            if LocalStack.is_running(old):
                return StackUp(old, already_running=True)
            stack.stop(old)  # half a stack is no stack
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
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


def _base(base_dir: Path | None) -> Path:
    return state_path(base_dir).parent.resolve()


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
                time.sleep(POLL_S)
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
