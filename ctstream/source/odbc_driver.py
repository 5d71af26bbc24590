"""Which ODBC driver opens a SQL Server DSN, and what to say when a connection fails.

A DSN naming ``Driver={ODBC Driver 18 for SQL Server}`` is opened, in this order, with:

1. the driver of that name registered with unixODBC (``odbcinst.ini``, as listed by
   ``pyodbc.drivers()``): the DSN is used unchanged;
2. ``libmsodbcsql-18.*.so.*`` from Microsoft's ``mssql-python-odbc`` wheel (the
   ``ctstream[mssql]`` extra): the DSN's ``Driver`` value becomes that library's absolute
   path, for the build matching this host's distribution (``/etc/os-release``: Debian and
   Ubuntu, RHEL and its relatives, SUSE) and machine;
3. neither: :class:`SourceError` (not retriable) saying what to install.

A DSN naming any other driver, a library path, or no driver (``DSN=``) is left alone.
Both lookups run once per process, on first use, and are cached. Nothing here logs a DSN
or puts one in an error: it may hold a password.
"""

from __future__ import annotations

import functools
import importlib
import platform
import re
import sys
from collections.abc import Collection
from pathlib import Path

import pyodbc

from ctstream.errors import ConfigError, SourceError
from ctstream.settings import dsn_pairs, dsn_parts

__all__ = [
    "DRIVER_NAME",
    "connect_failure",
    "describe_driver",
    "driver_folder",
    "find_wheel_driver",
    "login_timeout",
    "registered_drivers",
    "resolve_driver",
    "wheel_driver",
    "with_driver",
]

DRIVER_NAME = "ODBC Driver 18 for SQL Server"
WHEEL = "mssql-python-odbc"
INSTALL_HINT = (
    "pip install 'ctstream[mssql]' (Linux x86_64) or install msodbcsql18 from Microsoft's "
    "repository (https://learn.microsoft.com/sql/connect/odbc/linux-mac/"
    "installing-the-microsoft-odbc-driver-for-sql-server)"
)

# Keys naming the login timeout in seconds (SQL_ATTR_LOGIN_TIMEOUT); Microsoft's driver
# reads none of them from a connection string, so ctstream sets the attribute itself.
_TIMEOUT_KEYS = ("logintimeout", "login timeout", "connect timeout", "connection timeout")
_SERVER_KEYS = ("server", "address", "addr", "servername", "database")
_MACHINES = {"x86_64": ("x86_64", "amd64"), "aarch64": ("aarch64", "arm64")}
_VERSION = re.compile(r"libmsodbcsql-(\d+)\.(\d+)\.so")
_FAMILIES = (  # os-release ID / ID_LIKE words → the wheel's folder under libs/linux/
    ("alpine", ("alpine",)),
    ("rhel", ("rhel", "fedora", "centos", "rocky", "almalinux", "ol", "amzn", "mariner")),
    ("suse", ("suse", "sles", "opensuse", "opensuse-leap", "opensuse-tumbleweed")),
    ("debian_ubuntu", ("debian", "ubuntu")),
)


def _unbrace(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == "{" and value[-1] == "}":
        value = value[1:-1]
    return value.strip()


def _names_our_driver(value: str) -> bool:
    return _unbrace(value).casefold() == DRIVER_NAME.casefold()


@functools.cache
def registered_drivers() -> frozenset[str]:
    """Driver names registered with unixODBC (case-folded); read once per process."""
    return frozenset(name.casefold() for name in pyodbc.drivers())


def driver_folder(os_release: str) -> str | None:
    """The wheel's folder (``debian_ubuntu``, ``rhel``, ``suse``, ``alpine``) for the
    distribution an ``/etc/os-release`` text describes; None when it names none of them."""
    words: list[str] = []
    for line in os_release.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("ID", "ID_LIKE"):
            words += value.strip().strip("\"'").lower().split()
    for word in words:  # ID first, then ID_LIKE in its order
        for folder, ids in _FAMILIES:
            if word in ids:
                return folder
    return None


def find_wheel_driver(libs_dir: Path, folder: str | None, machine: str) -> Path | None:
    """The newest ``libmsodbcsql-18.*.so.*`` under ``libs_dir/linux/<folder>/<machine>/lib``.

    An unknown distribution (``folder`` None, or a folder the wheel lacks) gets the
    Debian/Ubuntu build (glibc), else the only one the wheel has; None when the wheel has
    no build for ``machine``.
    """
    linux = libs_dir / "linux"
    present = sorted(p.name for p in linux.iterdir() if p.is_dir()) if linux.is_dir() else []
    if folder not in present:
        if "debian_ubuntu" in present:
            folder = "debian_ubuntu"
        elif len(present) == 1:
            folder = present[0]
        else:
            return None
    candidates: list[tuple[tuple[int, int], Path]] = []
    for arch in _MACHINES.get(machine, (machine,)):
        for path in (linux / str(folder) / arch / "lib").glob("libmsodbcsql-18.*.so*"):
            match = _VERSION.match(path.name)
            if match and path.is_file():
                candidates.append(((int(match[1]), int(match[2])), path.resolve()))
    return max(candidates)[1] if candidates else None


@functools.cache
def wheel_driver() -> Path | None:
    """``libmsodbcsql`` from the installed ``mssql-python-odbc`` wheel for this host, or
    None (wheel not installed, not Linux, or no build for this machine); found once per
    process."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        package = importlib.import_module("mssql_python_odbc")
        libs_dir = Path(package.get_libs_dir())
    except (ImportError, AttributeError):
        return None
    try:
        os_release = Path("/etc/os-release").read_text(encoding="utf-8", errors="replace")
    except OSError:
        os_release = ""
    return find_wheel_driver(libs_dir, driver_folder(os_release), platform.machine())


def _missing(detail: str) -> SourceError:
    return SourceError(
        f"source.dsn names the ODBC driver {{{DRIVER_NAME}}}, which {detail}; {INSTALL_HINT}"
    )


def _ours(parts: list[str]) -> list[int]:
    """Indexes of the parts that are ``Driver=`` naming :data:`DRIVER_NAME`."""
    return [
        i
        for i, part in enumerate(parts)
        if part.partition("=")[0].strip().casefold() == "driver"
        and _names_our_driver(part.partition("=")[2])
    ]


def with_driver(dsn: str, registered: Collection[str], wheel: Path | None) -> str:
    """``dsn`` with the driver that opens it (the module's order), given the registered
    driver names and the wheel's library; raises SourceError when none can.

    Only ``Driver`` values naming :data:`DRIVER_NAME` (any case, with or without braces)
    are replaced, by ``{<absolute path>}``; every other character of ``dsn`` is kept.
    """
    parts = dsn_parts(dsn)
    ours = _ours(parts)
    if not ours or DRIVER_NAME.casefold() in {name.casefold() for name in registered}:
        return dsn
    if wheel is None:
        raise _missing(_why_missing())
    for i in ours:
        key = parts[i].partition("=")[0]
        parts[i] = f"{key}={{{wheel}}}"
    return ";".join(parts)


def _why_missing() -> str:
    if sys.platform.startswith("linux"):
        return (
            f"is not registered with unixODBC (odbcinst -q -d) and the {WHEEL} wheel "
            f"is not installed or has no build for {platform.machine()}"
        )
    return f"is not registered with the ODBC driver manager ({sys.platform})"


def resolve_driver(dsn: str) -> str:
    """``dsn`` as :func:`with_driver` makes it with this host's drivers (looked up once,
    and only for a DSN naming :data:`DRIVER_NAME`)."""
    if not _ours(dsn_parts(dsn)):
        return dsn
    try:
        registered = registered_drivers()
    except pyodbc.Error:  # the driver manager cannot list drivers: try the wheel
        registered = frozenset()
    if DRIVER_NAME.casefold() in registered:
        return dsn
    return with_driver(dsn, (), wheel_driver())


def _pairs(dsn: str) -> list[tuple[str, str]]:
    return [(p.partition("=")[0], p.partition("=")[2]) for p in dsn_parts(dsn) if "=" in p]


def describe_driver(dsn: str) -> str:
    """One line for ``ctstream doctor``: which driver opens ``dsn`` (never the DSN itself).

    For a DSN naming :data:`DRIVER_NAME`: "ODBC Driver 18 for SQL Server registered with
    unixODBC", "libmsodbcsql-18.6.so.2.1 from the mssql-python-odbc wheel at <path>", or
    "ODBC Driver 18 for SQL Server: none found: <what to install>". Otherwise the driver
    as the DSN names it, a data source (``DSN=``), or that the DSN names no driver.
    Never raises.
    """
    drivers = [_unbrace(v) for k, v in _pairs(dsn) if k.strip().casefold() == "driver"]
    if not drivers:
        sources = [_unbrace(v) for k, v in _pairs(dsn) if k.strip().casefold() == "dsn"]
        if sources:
            return f"the driver of ODBC data source {sources[0]!r} (odbc.ini)"
        return "source.dsn names no driver (no Driver= or DSN= key)"
    name = drivers[0]
    if not _names_our_driver(name):
        return f"{name} (as named in source.dsn)"
    try:
        if DRIVER_NAME.casefold() in registered_drivers():
            return f"{DRIVER_NAME} registered with unixODBC"
    except pyodbc.Error as exc:
        return f"{DRIVER_NAME}: the ODBC driver manager cannot list drivers ({exc})"
    wheel = wheel_driver()
    if wheel is not None:
        return f"{wheel.name} from the {WHEEL} wheel at {wheel}"
    return f"{DRIVER_NAME}: none found: {INSTALL_HINT}"


def login_timeout(dsn: str) -> int:
    """Seconds to wait for a login (0: the driver's default, 15 s for Microsoft's), from
    the DSN's ``LoginTimeout`` (or ``Login Timeout``, ``Connect Timeout``, ``Connection
    Timeout``); ConfigError when it is not a whole number of seconds."""
    pairs = dsn_pairs(dsn)
    for key in _TIMEOUT_KEYS:
        if key in pairs:
            raw = _unbrace(pairs[key])
            if not raw.isdigit():
                raise ConfigError(
                    f"source.dsn: the login timeout ({key}) must be a whole number of "
                    f"seconds, not {raw!r}"
                )
            return int(raw)
    return 0


def _target(dsn: str) -> str | None:
    pairs = dsn_pairs(dsn)
    for key in _SERVER_KEYS:
        if pairs.get(key):
            where = _unbrace(pairs[key])
            port = _unbrace(pairs.get("port", ""))
            return f"{where},{port}" if port and "," not in where else where
    return None


def _scrub(text: str, dsn: str) -> str:
    """``text`` with the DSN's password replaced, in case a driver ever echoes it."""
    for key in ("pwd", "password"):
        secret = _unbrace(dsn_pairs(dsn).get(key, ""))
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def _explain(message: str, dsn: str) -> str | None:
    """What a driver's connect error means, when it is one of the obscure ones."""
    lowered = message.lower()
    encrypt = _unbrace(dsn_pairs(dsn).get("encrypt", "")).lower() or "yes"
    if "ssl provider" in lowered or "ssl routines" in lowered:
        if "certificate verify failed" in lowered or "self-signed" in lowered:
            return (
                "the TLS handshake failed: the server's certificate is not trusted by this "
                "host; install the CA certificate that signed it in the system's CA store "
                "(TrustServerCertificate=yes skips the check, which is unsafe)"
            )
        return (
            f"the TLS handshake failed (Encrypt={encrypt}): the server did not complete TLS; "
            "check that Server names SQL Server's port and that SQL Server has a TLS "
            "certificate configured, and that no proxy on the path intercepts the port"
        )
    if "handshakes before login" in lowered:
        return (
            f"the server closed the connection during the pre-login/TLS handshake "
            f"(Encrypt={encrypt}): check that Server names a SQL Server port and that the "
            "server accepts encrypted connections (TLS 1.2 or later)"
        )
    if "protocol error in tds stream" in lowered:
        return (
            "the server's answer is not SQL Server's protocol (TDS): check that Server "
            "names a SQL Server port"
        )
    if "can't open lib" in lowered or "data source name not found" in lowered:
        return (
            "the ODBC driver named in source.dsn is not installed or not registered with "
            "unixODBC (`odbcinst -q -d` lists those that are): for SQLite install "
            "libsqliteodbc, for SQL Server `pip install 'ctstream[mssql]'`"
        )
    if "login timeout expired" in lowered:
        return (
            "no login within the login timeout (the server refused the connection or did "
            "not answer): check the server's name and port, that it is up and that no "
            "firewall blocks the port (LoginTimeout=<seconds> in source.dsn sets the wait)"
        )
    return None


def connect_failure(dsn: str, dialect: str, driver_message: str) -> str:
    """The message for a failed connect: the server ``dsn`` names, what the driver's error
    means when ctstream can tell, and the driver's own words; never the password."""
    try:
        target = _target(dsn)
        explained = _explain(driver_message, dsn)
    except ValueError:  # malformed DSN: the driver's words are all there is
        target, explained = None, None
    where = f"{dialect}, server {target}" if target else dialect
    head = f"cannot connect to the source ({where}): "
    if explained:
        text = f"{head}{explained} (driver: {driver_message})"
    else:
        text = f"{head}{driver_message}; check source.dsn and that the database is up"
    try:
        return _scrub(text, dsn)
    except ValueError:
        return text
