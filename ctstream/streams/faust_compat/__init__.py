"""faust, mode and aiokafka held at one door.

Everything ctstream changes in or reads from the private parts of faust-streaming,
mode-streaming and aiokafka lives in this package, and nowhere else
(tests/unit/test_faust_door.py enforces it):

- :func:`apply_patches` applies every patch of register.PATCHES (docs/faust-patches.md
  says what each does, why, and when it can go), each through patching.apply_patch;
- :func:`check_versions` compares the installed versions with the verified ones;
- internals.py holds an accessor for each private name the rest of ctstream reads, and
  batch_steps.py the per-message steps of faust and mode that ctstream does in bulk;
- fingerprints.py holds the hash of every upstream function the above depend on.

Importing this package imports neither faust nor the patches: :func:`check_versions` can
name a wrong version even where faust itself would fail to import.
"""

from __future__ import annotations

from ctstream.streams.faust_compat.versions import check_versions

__all__ = ["apply_patches", "check_versions"]


def apply_patches() -> None:
    """Apply every faust, mode and aiokafka patch; applying again changes nothing.

    Call it before the app builds its consumer and conductor (ctstream.agents.install does).
    Raises :class:`~ctstream.errors.UnverifiedDependency` if an attribute a patch replaces
    is not there (an upstream version other than the verified one).
    """
    from ctstream.streams.faust_compat.register import apply_all

    apply_all()
