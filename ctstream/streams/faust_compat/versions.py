"""The faust-streaming, mode-streaming and aiokafka versions ctstream's patches are verified with.

A worker checks the installed versions at start (:func:`check_versions`, called by
ctstream/worker.py before the app is made). Another version stops it with
:class:`~ctstream.errors.UnverifiedDependency`, unless ``app.allow_unverified_versions`` is
set (environment: :data:`ALLOW_UNVERIFIED_VARIABLE`), which makes the mismatch a warning:
a trial run. Verifying a new version means re-reading what the fingerprint test lists
(tests/unit/test_faust_fingerprints.py), then updating :data:`VERIFIED`, the pins in
pyproject.toml and the hashes in fingerprints.py together.
"""

from __future__ import annotations

import importlib.metadata
import logging
import types
from collections.abc import Mapping

from ctstream.errors import UnverifiedDependency

log = logging.getLogger("ctstream.faust")

VERIFIED: Mapping[str, str] = types.MappingProxyType(
    {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1", "aiokafka": "0.14.0"}
)
# The setting app.allow_unverified_versions, as ctstream/settings/ reads it from the environment.
ALLOW_UNVERIFIED_VARIABLE = "CTSTREAM_APP__ALLOW_UNVERIFIED_VERSIONS"


def installed_versions() -> dict[str, str | None]:
    """distribution → its installed version (None: not installed), for each of VERIFIED."""
    installed: dict[str, str | None] = {}
    for distribution in VERIFIED:
        try:
            installed[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            installed[distribution] = None
    return installed


def unverified(installed: Mapping[str, str | None]) -> list[str]:
    """One line per distribution whose installed version is not the verified one."""
    return [
        f"{name} {installed.get(name) or '(not installed)'} is installed; "
        f"ctstream's faust patches are verified with {name} {version}"
        for name, version in VERIFIED.items()
        if installed.get(name) != version
    ]


def check_versions(allow_unverified: bool) -> None:
    """Raise :class:`~ctstream.errors.UnverifiedDependency` if an installed version is not
    the verified one; with ``allow_unverified``, log a warning instead (a trial run)."""
    mismatches = unverified(installed_versions())
    if not mismatches:
        return
    found = "; ".join(mismatches)
    if allow_unverified:
        log.warning(
            "TRIAL RUN with unverified dependencies (%s=true): %s. The faust patches may "
            "no longer hold: see docs/faust-patches.md",
            ALLOW_UNVERIFIED_VARIABLE,
            found,
        )
        return
    raise UnverifiedDependency(
        f"{found}. Install the verified versions (ctstream's pyproject.toml pins them), or "
        f"set {ALLOW_UNVERIFIED_VARIABLE}=true for a trial run anyway."
    )
