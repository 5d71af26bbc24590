"""Readiness probes for local services: free ports, TCP, Kafka metadata, HTTP.

Each probe makes one attempt within its timeout and answers True or False; none raises
for a service that is down or slow. Probes are blocking and may be called from any
thread, also while an event loop runs in it (a Kafka probe then runs its own loop in a
worker thread and leaves the caller's loop untouched).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

LOOPBACK = "127.0.0.1"
PROBE_TIMEOUT_S = 2.0

_T = TypeVar("_T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def tcp_open(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One probe: does ``host:port`` accept a TCP connection within ``timeout``?"""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def kafka_ready(bootstrap: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
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


def http_ready(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
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
