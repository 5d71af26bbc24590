"""The one helper that replaces an upstream attribute (streams/faust_compat/patching.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import ctstream
from ctstream.errors import UnverifiedDependency
from ctstream.streams.faust_compat import apply_patches
from ctstream.streams.faust_compat.patching import (
    Patch,
    PatchKind,
    applied_patch,
    apply_patch,
    build_replacement,
    original_of,
    replaced_by,
)
from ctstream.streams.faust_compat.register import PATCHES, applied_patches

REGISTER = Path(ctstream.__file__).parent.parent / "docs" / "faust-patches.md"


def upstream_class() -> type:
    """A fresh class per test, standing in for one of faust's."""

    class Upstream:
        def method(self) -> str:
            return "upstream"

        value = 3

    return Upstream


def wrapping(calls: list[str]) -> Callable[[Any], Callable[..., Any]]:
    def factory(original: Callable[..., Any]) -> Callable[..., Any]:
        calls.append("built")

        def method(self: Any) -> str:
            return f"ctstream over {original(self)}"

        return method

    return factory


def test_a_wrapper_gets_the_original_and_is_applied_once() -> None:
    owner, calls = upstream_class(), []
    upstream = owner.method  # type: ignore[attr-defined]
    patch = Patch(0, owner, "method", wrapping(calls), PatchKind.WRAPPED)
    first = apply_patch(patch)
    second = apply_patch(patch)
    assert first is second and calls == ["built"]
    assert owner().method() == "ctstream over upstream"  # type: ignore[attr-defined]
    assert first.original is upstream is original_of(owner, "method")
    assert applied_patch(owner, "method") is first and first.patch is patch


def test_a_name_the_class_does_not_define_is_refused() -> None:
    owner = upstream_class()
    patch = Patch(0, owner, "renamed_upstream", replaced_by(lambda self: None), PatchKind.REPLACED)
    with pytest.raises(UnverifiedDependency, match="renamed_upstream is not defined"):
        apply_patch(patch)
    assert not hasattr(owner, "renamed_upstream")  # nothing was set


def test_an_attribute_that_is_no_plain_function_is_refused() -> None:
    owner = upstream_class()
    patch = Patch(0, owner, "value", replaced_by(lambda self: None), PatchKind.REPLACED)
    with pytest.raises(UnverifiedDependency, match="value is not a plain function"):
        apply_patch(patch)
    assert owner.value == 3  # type: ignore[attr-defined]


def test_a_factory_must_make_a_function() -> None:
    owner = upstream_class()
    patch = Patch(0, owner, "method", lambda original: print, PatchKind.REPLACED)
    with pytest.raises(TypeError, match="no function"):
        apply_patch(patch)


def test_a_second_patch_of_the_same_attribute_is_refused() -> None:
    owner = upstream_class()
    apply_patch(Patch(1, owner, "method", wrapping([]), PatchKind.WRAPPED))
    with pytest.raises(ValueError, match="held by patch 1 already"):
        apply_patch(Patch(2, owner, "method", wrapping([]), PatchKind.WRAPPED))


def test_an_inherited_attribute_is_patched_on_the_subclass_only() -> None:
    base = upstream_class()
    sub = type("Sub", (base,), {})
    apply_patch(Patch(0, sub, "method", wrapping([]), PatchKind.WRAPPED))
    assert sub().method() == "ctstream over upstream"
    assert base().method() == "upstream"  # type: ignore[attr-defined]
    assert applied_patch(base, "method") is None


def test_build_replacement_installs_nothing() -> None:
    owner = upstream_class()
    patch = Patch(0, owner, "method", wrapping([]), PatchKind.WRAPPED)
    assert build_replacement(patch)(owner()) == "ctstream over upstream"
    assert applied_patch(owner, "method") is None


def test_each_attribute_has_one_patch_and_the_register_describes_each() -> None:
    wheres = [patch.where for patch in PATCHES]
    assert len(set(wheres)) == len(wheres)
    register = REGISTER.read_text(encoding="utf-8")
    numbers = {int(n) for n in re.findall(r"^## (\d+)\b", register, flags=re.MULTILINE)}
    for patch in PATCHES:
        assert patch.number in numbers, f"docs/faust-patches.md has no section {patch.number}"
        assert f"{patch.owner.__qualname__}.{patch.name}" in register, patch.where


def test_apply_patches_applies_every_patch_of_the_register() -> None:
    apply_patches()
    assert [mark.patch for mark in applied_patches()] == list(PATCHES)
