"""Encrypted connections to SQL Server by default.

ODBC Driver 17 for SQL Server does not encrypt unless asked (Driver 18 does by default),
so for the ``mssql`` dialect a DSN without an ``Encrypt`` key gets ``Encrypt=yes``. A DSN
that turns encryption off, or that trusts any server certificate
(``TrustServerCertificate=yes``), is used as given but logged as a warning — without the
DSN, which may hold a password.
"""

from __future__ import annotations

import hashlib
import logging

from ctstream.settings import dsn_pairs

__all__ = ["SecureDsn"]

log = logging.getLogger(__name__)

_OFF = {"no", "false", "0", "optional"}  # Driver 18 also knows "strict" and "mandatory"
_TRAILING = "; \t\r\n"
_ON = {"yes", "true", "1"}


def _value(pairs: dict[str, str], key: str) -> str | None:
    value = pairs.get(key)
    return None if value is None else value.strip("{}").strip().lower()


class SecureDsn:
    """Makes the connection string to use; warns about an insecure one once per DSN."""

    def __init__(self) -> None:
        self._warned: set[str] = set()  # digests of the DSNs warned about

    def __call__(self, dsn: str, dialect: str) -> str:
        """``dsn`` as given, with ``Encrypt=yes`` added for mssql when it has no Encrypt."""
        problems = insecurities(dsn, dialect)
        digest = hashlib.sha256(dsn.encode("utf-8")).hexdigest()
        if problems and digest not in self._warned:
            self._warned.add(digest)
            for problem in problems:
                log.warning("INSECURE SOURCE CONNECTION: %s", problem)
        if dialect == "mssql" and _value(dsn_pairs(dsn), "encrypt") is None:
            return dsn.rstrip(_TRAILING) + ";Encrypt=yes"
        return dsn


def insecurities(dsn: str, dialect: str) -> list[str]:
    """What is insecure about ``dsn`` (never the DSN itself: it may hold a password)."""
    if dialect != "mssql":
        return []
    pairs = dsn_pairs(dsn)
    encrypt = _value(pairs, "encrypt")
    trust = _value(pairs, "trustservercertificate")
    problems = []
    if encrypt in _OFF:
        problems.append(
            f"source.dsn has Encrypt={encrypt}: the connection to SQL Server (its data and "
            "the login) is not encrypted; remove the key or set Encrypt=yes"
        )
    if trust in _ON:
        problems.append(
            "source.dsn has TrustServerCertificate=yes: the SQL Server certificate is NOT "
            "validated, so anyone on the network path can pose as the server; install the "
            "server's CA certificate on this host and set TrustServerCertificate=no"
        )
    return problems
