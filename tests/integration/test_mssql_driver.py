"""Microsoft's ODBC Driver 18 from the mssql-python-odbc wheel, for real, with no server.

The driver loads through pyodbc and unixODBC; a SourceReader with the ``mssql`` dialect
opens it for a DSN naming ``ODBC Driver 18 for SQL Server``; failures say what happened,
name the server and never the password: a closed port (fast, thanks to the DSN's
``LoginTimeout``, which ctstream passes to pyodbc as the login timeout: the driver itself
reads no timeout key from a connection string) and ``Encrypt=yes`` against a listener
that does not speak TLS.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import platform
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pyodbc
import pytest
from pydantic import SecretStr

from ctstream.errors import SourceUnavailable
from ctstream.settings import SourceSettings
from ctstream.source import odbc_driver
from ctstream.source.odbc_driver import DRIVER_NAME, describe_driver, wheel_driver
from ctstream.source.reader import SourceReader

_PLATFORM_OK = sys.platform.startswith("linux") and platform.machine() == "x86_64"
_WHEEL = importlib.util.find_spec("mssql_python_odbc") is not None

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not _PLATFORM_OK,
        reason=f"the mssql-python-odbc extra is for Linux x86_64 only, not "
        f"{sys.platform}/{platform.machine()}",
    ),
    pytest.mark.skipif(
        _PLATFORM_OK and not _WHEEL,
        reason="mssql-python-odbc is not installed: pip install 'ctstream[mssql]'",
    ),
]

PASSWORD = "Zebra-Quartz-7731!"
LOGIN_TIMEOUT_S = 3
STEP_TIMEOUT_S = 30.0  # every wait in here ends; a failing driver must not hang the run


@pytest.fixture
def library() -> str:
    path = wheel_driver()
    if path is None:
        pytest.skip("the installed mssql-python-odbc wheel has no build for this host")
    return str(path)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening, held by the test
    so that nothing else can take it meanwhile."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
def wheel_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Open the wheel's library even on a host that also registered the driver."""
    monkeypatch.setattr(odbc_driver, "registered_drivers", frozenset)


def _dsn(port: int, extra: str = "") -> str:
    return (
        f"Driver={{{DRIVER_NAME}}};Server=127.0.0.1,{port};Database=shop;UID=ctstream;"
        f"PWD={{{PASSWORD}}};LoginTimeout={LOGIN_TIMEOUT_S}{extra}"
    )


async def _connect_error(dsn: str) -> tuple[SourceUnavailable, float]:
    reader = SourceReader(SourceSettings(dialect="mssql", dsn=SecretStr(dsn), tables=["dbo.t"]))
    started = time.monotonic()
    try:
        with pytest.raises(SourceUnavailable) as caught:
            await asyncio.wait_for(reader.database_info(), STEP_TIMEOUT_S)
    finally:
        await reader.close()
    return caught.value, time.monotonic() - started


def _assert_no_secret(exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    assert PASSWORD not in str(exc)
    assert PASSWORD not in repr(exc.args)
    assert PASSWORD not in caplog.text


def test_the_wheel_library_loads_through_pyodbc(library: str, closed_port: int) -> None:
    dsn = f"Driver={{{library}}};Server=127.0.0.1,{closed_port};UID=u;PWD={{{PASSWORD}}}"
    with pytest.raises(pyodbc.Error) as caught:
        pyodbc.connect(dsn, timeout=2)
    message = str(caught.value)
    # The driver's own error: unixODBC loaded it (a library that fails to load gives
    # "[unixODBC][Driver Manager]Can't open lib ...").
    assert "[Microsoft][ODBC Driver 18 for SQL Server]" in message, message
    assert "Can't open lib" not in message


def test_doctor_names_the_library_the_reader_opens(library: str, wheel_only: None) -> None:
    text = describe_driver(_dsn(1433))
    assert text == f"{library.rsplit('/', 1)[-1]} from the mssql-python-odbc wheel at {library}"
    assert PASSWORD not in text


async def test_a_closed_port_fails_fast_naming_the_server(
    library: str, closed_port: int, wheel_only: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    exc, elapsed = await _connect_error(_dsn(closed_port))
    message = str(exc)
    assert exc.retriable
    assert f"server 127.0.0.1,{closed_port}" in message, message
    assert "[Microsoft][ODBC Driver 18 for SQL Server]" in message  # the wheel's driver ran
    assert "login timeout" in message
    assert elapsed < LOGIN_TIMEOUT_S + 5, f"took {elapsed:.1f} s"
    _assert_no_secret(exc, caplog)


# --- Encrypt=yes against something that is not SQL Server with TLS ---------------------


def _prelogin_response(encryption: int) -> bytes:
    """A TDS PRELOGIN answer: VERSION and ENCRYPTION options (1 = ENCRYPT_ON)."""
    options = bytes([0x00, 0, 11, 0, 6, 0x01, 0, 17, 0, 1, 0xFF])
    payload = options + bytes([16, 0, 0, 0, 0, 0]) + bytes([encryption])
    return bytes([0x04, 0x01]) + (8 + len(payload)).to_bytes(2, "big") + b"\0\0\1\0" + payload


async def _serve(mode: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await reader.read(4096)  # the client's PRELOGIN (or its TLS hello, if strict)
            if mode == "garbage":
                writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4)
            elif mode == "no-tls":
                # Claims encryption, then answers the TLS hello (sent inside TDS packets)
                # with bytes that are not TLS.
                writer.write(_prelogin_response(encryption=1))
                await writer.drain()
                await reader.read(4096)
                junk = b"this is not a TLS record"
                writer.write(bytes([0x12, 0x01, 0, 8 + len(junk), 0, 0, 1, 0]) + junk)
            await writer.drain()
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()


@asynccontextmanager
async def _plain_listener(mode: str) -> AsyncIterator[int]:
    server = await asyncio.start_server(lambda r, w: _serve(mode, r, w), host="127.0.0.1", port=0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), STEP_TIMEOUT_S)


@pytest.mark.parametrize(
    ("mode", "encrypt", "says"),
    [
        ("no-tls", "yes", "the TLS handshake failed (Encrypt=yes)"),
        ("garbage", "strict", "the TLS handshake failed (Encrypt=strict)"),
        ("close", "yes", "closed the connection during the pre-login/TLS handshake"),
        ("garbage", "yes", "not SQL Server's protocol (TDS)"),
    ],
)
async def test_encrypt_against_a_plain_listener_says_what_failed(
    library: str,
    wheel_only: None,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    encrypt: str,
    says: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with _plain_listener(mode) as port:
        exc, elapsed = await _connect_error(_dsn(port, f";Encrypt={encrypt}"))
    message = str(exc)
    assert exc.retriable
    assert says in message, message
    assert f"server 127.0.0.1,{port}" in message, message
    assert "[Microsoft][ODBC Driver 18 for SQL Server]" in message
    assert elapsed < LOGIN_TIMEOUT_S + 5, f"took {elapsed:.1f} s"
    _assert_no_secret(exc, caplog)
