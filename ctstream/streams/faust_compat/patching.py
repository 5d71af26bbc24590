"""The one way an attribute of a faust, mode or aiokafka class is replaced.

A :class:`Patch` is data: the class, the attribute, a factory that is handed the function it
replaces and returns the replacement, the patch's number in docs/faust-patches.md and what
kind of change it is. :func:`apply_patch` is the only code that sets such an attribute:

- it refuses an attribute the class does not define (through its bases, as an instance
  would find it) or one that is not a plain function, raising
  :class:`~ctstream.errors.UnverifiedDependency`: a renamed upstream method stops the
  worker at start instead of the fix becoming an attribute nobody calls;
- it marks the replacement with an :class:`AppliedPatch` (attribute ``ctstream_patch``)
  holding the patch and upstream's function, so applying again changes nothing, and
  :func:`original_of` and :func:`applied_patch` can always tell what was there before.

Nothing here keeps state of its own: what is patched is read off the classes.
"""

from __future__ import annotations

import enum
import importlib.metadata
import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ctstream.errors import UnverifiedDependency

PATCH_MARK = "ctstream_patch"

# The distribution that installs each top-level module a patch may touch.
DISTRIBUTION_OF_MODULE = types.MappingProxyType(
    {"faust": "faust-streaming", "mode": "mode-streaming", "aiokafka": "aiokafka"}
)

Factory = Callable[[Any], Callable[..., Any]]


class PatchKind(enum.Enum):
    """How a replacement relates to upstream's function."""

    REPLACED = "replaced"  # ctstream's own function in its place; upstream's is not called
    WRAPPED = "wrapped"  # calls upstream's function, with something before or after
    COPIED = "copied"  # upstream's steps copied and changed; upstream's is not called


@dataclass(frozen=True)
class Patch:
    """One attribute of an upstream class and what ctstream puts there."""

    number: int  # in docs/faust-patches.md
    owner: type
    name: str
    factory: Factory  # upstream's function → the replacement
    kind: PatchKind

    @property
    def where(self) -> str:
        """``module:Class.attribute`` of the attribute this patch sets."""
        return f"{self.owner.__module__}:{self.owner.__qualname__}.{self.name}"


@dataclass(frozen=True)
class AppliedPatch:
    """What :func:`apply_patch` put on a replacement: its patch and what it replaced."""

    patch: Patch
    original: Callable[..., Any]


def replaced_by(replacement: Callable[..., Any]) -> Factory:
    """A factory for a patch that never calls upstream's function: ``replacement`` itself."""

    def factory(original: Any) -> Callable[..., Any]:
        return replacement

    return factory


def _current(owner: type, name: str) -> Any:
    """The attribute as ``owner`` defines it (its own or a base's), unbound; None if absent."""
    try:
        return inspect.getattr_static(owner, name)
    except AttributeError:
        return None


def applied_patch(owner: type, name: str) -> AppliedPatch | None:
    """The mark of ctstream's patch on ``owner.name``; None if upstream's is there."""
    mark = getattr(_current(owner, name), PATCH_MARK, None)
    return mark if isinstance(mark, AppliedPatch) else None


def original_of(owner: type, name: str) -> Callable[..., Any]:
    """Upstream's function for ``owner.name``, whether or not a patch replaced it."""
    mark = applied_patch(owner, name)
    if mark is not None:
        return mark.original
    current = _current(owner, name)
    if current is None:
        raise _refusal(owner, name, "defined")
    if not inspect.isfunction(current):
        raise _refusal(owner, name, "a plain function")
    return current


def build_replacement(patch: Patch) -> Callable[..., Any]:
    """The function ``patch`` would install, built on upstream's, without installing it."""
    return _checked_replacement(patch, original_of(patch.owner, patch.name))


def apply_patch(patch: Patch) -> AppliedPatch:
    """Set ``patch.owner.<name>`` to the patch's replacement, once; returns its mark.

    Raises :class:`~ctstream.errors.UnverifiedDependency` if the class does not define the
    attribute as a plain function, ValueError if another patch holds it already.
    """
    owner, name = patch.owner, patch.name
    mark = applied_patch(owner, name)
    if mark is not None:
        if mark.patch is not patch:
            raise ValueError(f"{patch.where} is held by patch {mark.patch.number} already")
        return mark
    try:
        original = original_of(owner, name)
    except UnverifiedDependency as exc:
        raise UnverifiedDependency(f"faust patch {patch.number}: {exc}") from None
    replacement = _checked_replacement(patch, original)
    applied = AppliedPatch(patch, original)
    setattr(replacement, PATCH_MARK, applied)
    setattr(owner, name, replacement)
    return applied


def _checked_replacement(patch: Patch, original: Callable[..., Any]) -> Callable[..., Any]:
    replacement = patch.factory(original)
    if not inspect.isfunction(replacement):  # a partial or a callable object would not bind
        raise TypeError(f"patch {patch.number} ({patch.where}) made {replacement!r}, no function")
    return replacement


def _refusal(owner: type, name: str, expected: str) -> UnverifiedDependency:
    top = owner.__module__.partition(".")[0]
    distribution = DISTRIBUTION_OF_MODULE.get(top, top)
    try:
        installed = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        installed = "not installed"
    return UnverifiedDependency(
        f"{owner.__module__}.{owner.__qualname__}.{name} is not {expected} in the installed "
        f"{distribution} {installed}: ctstream's patch of it (docs/faust-patches.md) cannot be "
        "applied. Install the version ctstream verified (pyproject.toml pins it)."
    )
