"""Which driver opens a SQL Server DSN: rewriting ``Driver=`` to the wheel's library, the
distribution lookup, doctor's one-line description, and connect-error messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ctstream.errors import ConfigError, SourceError
from ctstream.source import odbc_driver
from ctstream.source.dialects.mssql import MssqlDialect
from ctstream.source.odbc_driver import (
    DRIVER_NAME,
    connect_failure,
    describe_driver,
    driver_folder,
    find_wheel_driver,
    login_timeout,
    with_driver,
)

LIB = Path("/opt/wheel/libs/linux/debian_ubuntu/x86_64/lib/libmsodbcsql-18.6.so.2.1")
PASSWORD = "Zebra-Quartz-7731!"
DSN = f"Driver={{{DRIVER_NAME}}};Server=db.example.com,1433;UID=ct;PWD={{{PASSWORD}}}"


@dataclass
class Host:
    """This host's drivers as a test sets them."""

    registered: set[str] = field(default_factory=set)
    wheel: Path | None = LIB


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Host:
    state = Host()
    monkeypatch.setattr(
        odbc_driver,
        "registered_drivers",
        lambda: frozenset(name.casefold() for name in state.registered),
    )
    monkeypatch.setattr(odbc_driver, "wheel_driver", lambda: state.wheel)
    return state


# --- rewriting -------------------------------------------------------------------------


def test_a_registered_driver_leaves_the_dsn_unchanged() -> None:
    assert with_driver(DSN, [DRIVER_NAME], LIB) == DSN
    assert with_driver(DSN, [DRIVER_NAME.upper()], None) == DSN


def test_an_unregistered_driver_is_replaced_by_the_wheel_library() -> None:
    assert with_driver(DSN, ["SQLite3"], LIB) == (
        f"Driver={{{LIB}}};Server=db.example.com,1433;UID=ct;PWD={{{PASSWORD}}}"
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        # no braces, other key case, spaces around the key and value
        (
            f"DRIVER={DRIVER_NAME};Server=x",
            f"DRIVER={{{LIB}}};Server=x",
        ),
        (
            f"Server=x; driver = {{ {DRIVER_NAME.lower()} }} ;Encrypt=yes",
            f"Server=x; driver ={{{LIB}}};Encrypt=yes",
        ),
        # a ';' and '=' inside a braced password are kept as they are
        (
            f"PWD={{a;Driver={DRIVER_NAME}}};Driver={{{DRIVER_NAME}}}",
            f"PWD={{a;Driver={DRIVER_NAME}}};Driver={{{LIB}}}",
        ),
    ],
)
def test_keys_are_case_insensitive_and_braces_are_respected(given: str, expected: str) -> None:
    assert with_driver(given, [], LIB) == expected


@pytest.mark.parametrize(
    "dsn",
    [
        "Driver={ODBC Driver 17 for SQL Server};Server=x;PWD=p",
        "Driver=FreeTDS;Server=x",
        "Driver=/opt/microsoft/msodbcsql18/lib64/libmsodbcsql-18.3.so.3.1;Server=x",
        "Driver={ODBC Driver 18 for SQL Server (test)};Server=x",
        "DSN=warehouse;UID=ct;PWD=p",
        "Driver=SQLite3;Database=./demo.db",
    ],
)
def test_other_drivers_paths_and_data_sources_are_untouched(dsn: str) -> None:
    assert with_driver(dsn, [], LIB) == dsn
    assert with_driver(dsn, [], None) == dsn  # nothing to find, nothing to refuse


def test_no_driver_anywhere_is_a_non_retriable_error_saying_what_to_install() -> None:
    with pytest.raises(SourceError) as caught:
        with_driver(DSN, ["SQLite3"], None)
    message = str(caught.value)
    assert not caught.value.retriable
    assert DRIVER_NAME in message
    assert "pip install 'ctstream[mssql]'" in message
    assert "msodbcsql18" in message
    assert PASSWORD not in message and "db.example.com" not in message


def test_the_dialect_uses_this_hosts_drivers(host: Host) -> None:
    dialect = MssqlDialect()
    assert dialect.connection_string(DSN).startswith(f"Driver={{{LIB}}};")
    host.registered = {DRIVER_NAME}
    assert dialect.connection_string(DSN) == DSN
    host.registered, host.wheel = set(), None
    with pytest.raises(SourceError, match="ctstream\\[mssql\\]"):
        dialect.connection_string(DSN)
    other = "Driver=FreeTDS;Server=x"
    assert dialect.connection_string(other) == other


def test_the_dialect_does_not_look_up_drivers_for_other_dsns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def boom() -> frozenset[str]:
        raise AssertionError("looked up")

    monkeypatch.setattr(odbc_driver, "registered_drivers", boom)
    monkeypatch.setattr(odbc_driver, "wheel_driver", boom)
    assert MssqlDialect().connection_string("Driver=FreeTDS;Server=x") == "Driver=FreeTDS;Server=x"


# --- finding the wheel's library -------------------------------------------------------


@pytest.mark.parametrize(
    ("os_release", "folder"),
    [
        ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n', "debian_ubuntu"),
        ("ID=ubuntu\nID_LIKE=debian\n", "debian_ubuntu"),
        ('ID="rocky"\nID_LIKE="rhel centos fedora"\n', "rhel"),
        ('ID="rhel"\n', "rhel"),
        ('ID="amzn"\nID_LIKE="centos rhel fedora"\n', "rhel"),
        ('ID="opensuse-leap"\nID_LIKE="suse opensuse"\n', "suse"),
        ('ID="sles"\n', "suse"),
        ("ID=linuxmint\nID_LIKE=ubuntu\n", "debian_ubuntu"),
        ("ID=arch\n", None),
        ("", None),
    ],
)
def test_the_distribution_picks_the_wheels_folder(os_release: str, folder: str | None) -> None:
    assert driver_folder(os_release) == folder


def _wheel(root: Path, files: list[str]) -> Path:
    for name in files:
        path = root / "linux" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return root


def test_the_newest_library_of_the_distribution_and_machine_is_chosen(tmp_path: Path) -> None:
    libs = _wheel(
        tmp_path,
        [
            "debian_ubuntu/x86_64/lib/libmsodbcsql-18.6.so.2.1",
            "rhel/x86_64/lib/libmsodbcsql-18.4.so.1.1",
            "rhel/x86_64/lib/libmsodbcsql-18.10.so.1.1",
            "rhel/x86_64/lib/libodbcinst.so.2",
            "rhel/aarch64/lib/libmsodbcsql-18.11.so.1.1",
        ],
    )
    rhel = find_wheel_driver(libs, "rhel", "x86_64")
    assert rhel == (libs / "linux/rhel/x86_64/lib/libmsodbcsql-18.10.so.1.1").resolve()
    assert rhel is not None and rhel.is_absolute()
    assert find_wheel_driver(libs, "rhel", "aarch64") is not None
    # unknown distribution or a folder the wheel lacks: the Debian/Ubuntu (glibc) build
    debian = (libs / "linux/debian_ubuntu/x86_64/lib/libmsodbcsql-18.6.so.2.1").resolve()
    assert find_wheel_driver(libs, None, "x86_64") == debian
    assert find_wheel_driver(libs, "alpine", "x86_64") == debian
    assert find_wheel_driver(libs, "debian_ubuntu", "ppc64le") is None
    assert find_wheel_driver(tmp_path / "nowhere", "rhel", "x86_64") is None


# --- doctor's description --------------------------------------------------------------


def test_describe_a_registered_driver(host: Host) -> None:
    host.registered = {DRIVER_NAME}
    assert describe_driver(DSN) == f"{DRIVER_NAME} registered with unixODBC"


def test_describe_the_wheel_library(host: Host) -> None:
    assert describe_driver(DSN) == (
        f"libmsodbcsql-18.6.so.2.1 from the mssql-python-odbc wheel at {LIB}"
    )


def test_describe_no_driver(host: Host) -> None:
    host.wheel = None
    text = describe_driver(DSN)
    assert text.startswith(f"{DRIVER_NAME}: none found: pip install 'ctstream[mssql]'")
    assert "msodbcsql18" in text


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("Driver=FreeTDS;Server=x;PWD=hunter22", "FreeTDS (as named in source.dsn)"),
        ("DSN=warehouse;PWD=hunter22", "the driver of ODBC data source 'warehouse' (odbc.ini)"),
        ("Server=x;PWD=hunter22", "source.dsn names no driver (no Driver= or DSN= key)"),
    ],
)
def test_describe_other_dsns_without_the_password(host: Host, dsn: str, expected: str) -> None:
    assert describe_driver(dsn) == expected


# --- login timeout and connect errors --------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "seconds"),
    [
        ("Driver=x;Server=y", 0),
        ("Driver=x;LoginTimeout=3", 3),
        ("Driver=x;Connection Timeout={7}", 7),
        ("Driver=x;connect timeout=12", 12),
    ],
)
def test_login_timeout_from_the_dsn(dsn: str, seconds: int) -> None:
    assert login_timeout(dsn) == seconds


@pytest.mark.parametrize("value", ["3s", "-1", "1.5", ""])
def test_a_login_timeout_that_is_not_whole_seconds_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="login timeout") as caught:
        login_timeout(f"Driver=x;LoginTimeout={value};PWD={PASSWORD}")
    assert PASSWORD not in str(caught.value)


_SSL = (
    "08001 [08001] [Microsoft][ODBC Driver 18 for SQL Server]SSL Provider: "
    "[error:0A00010B:SSL routines::wrong version number] (-1) (SQLDriverConnect)"
)


@pytest.mark.parametrize(
    ("driver_message", "says"),
    [
        (_SSL, "TLS handshake failed (Encrypt=yes)"),
        (
            "08001 [Microsoft][ODBC Driver 18 for SQL Server]SSL Provider: "
            "[error:0A000086:SSL routines::certificate verify failed:self-signed certificate]",
            "certificate is not trusted",
        ),
        (
            "08001 [Microsoft][ODBC Driver 18 for SQL Server]Client unable to establish "
            "connection because an error was encountered during handshakes before login.",
            "pre-login/TLS handshake",
        ),
        ("HY000 [Microsoft][ODBC Driver 18 for SQL Server]Protocol error in TDS stream", "TDS"),
        ("HYT00 [Microsoft][ODBC Driver 18 for SQL Server]Login timeout expired", "timeout"),
    ],
)
def test_obscure_driver_errors_are_explained(driver_message: str, says: str) -> None:
    text = connect_failure(DSN, "mssql", driver_message)
    assert text.startswith("cannot connect to the source (mssql, server db.example.com,1433): ")
    assert says in text
    assert driver_message in text  # the driver's own words stay
    assert PASSWORD not in text


def test_other_errors_keep_the_generic_advice() -> None:
    text = connect_failure("Driver=SQLite3;Database=/tmp/x.db", "sqlite", "IM002 no such thing")
    assert text == (
        "cannot connect to the source (sqlite, server /tmp/x.db): IM002 no such thing; "
        "check source.dsn and that the database is up"
    )


def test_a_password_echoed_by_a_driver_is_scrubbed() -> None:
    text = connect_failure(DSN, "mssql", f"28000 Login failed; password was {PASSWORD}")
    assert PASSWORD not in text and "***" in text
