"""The upstream functions ctstream's patches depend on are the ones they were verified with.

On a new faust-streaming, mode-streaming or aiokafka, the first test lists exactly which
functions changed and which ctstream code to re-read with each.
"""

from __future__ import annotations

import re
from pathlib import Path

import ctstream
from ctstream.streams.faust_compat import apply_patches
from ctstream.streams.faust_compat.fingerprints import (
    UPSTREAM,
    Upstream,
    changed_upstream,
    upstream_source,
)
from ctstream.streams.faust_compat.patching import original_of
from ctstream.streams.faust_compat.register import PATCHES
from ctstream.streams.faust_compat.versions import installed_versions

STREAMS = Path(ctstream.__file__).parent / "streams"


def test_every_upstream_function_is_the_verified_one() -> None:
    apply_patches()  # a patched attribute is still hashed as upstream wrote it
    changed = changed_upstream()
    installed = ", ".join(f"{name} {version}" for name, version in installed_versions().items())
    assert not changed, (
        f"Upstream source changed under ctstream's patches (installed: {installed}).\n"
        "Re-read each of these, and the ctstream code named with it:\n"
        + "\n".join(
            f"  {upstream.where}  (verified {upstream.sha256}, now {now})\n"
            f"      -> {upstream.read_by}"
            for upstream, now in changed
        )
        + "\nThen set the new digests in ctstream/streams/faust_compat/fingerprints.py "
        "(python -m ctstream.streams.faust_compat.fingerprints prints them), the versions in "
        "faust_compat/versions.py and the pins in pyproject.toml; docs/faust-patches.md says "
        "what each patch is for and when it can go."
    )


def test_every_patched_function_is_fingerprinted() -> None:
    fingerprinted = {upstream.where for upstream in UPSTREAM}
    for patch in PATCHES:
        original = original_of(patch.owner, patch.name)
        assert f"{original.__module__}:{original.__qualname__}" in fingerprinted, patch.where


def test_each_entry_names_code_that_exists() -> None:
    for upstream in UPSTREAM:
        files = re.findall(r"[\w/]+\.py", upstream.read_by) or ["(none named)"]
        for file in files:
            assert (STREAMS / file).exists(), f"{upstream.where}: {file}"


def test_a_patched_function_is_hashed_as_upstream_wrote_it() -> None:
    apply_patches()
    source = upstream_source("faust.transport.consumer:Consumer._new_offset")
    assert "gap_for_tp" in source  # faust's, not ctstream's new_offset


def test_a_change_or_a_missing_function_is_reported() -> None:
    entries = [
        Upstream("faust.transport.consumer:Consumer.getmany", "0" * 16, "here"),
        Upstream("faust.transport.consumer:Consumer.renamed", UPSTREAM[0].sha256, "there"),
        UPSTREAM[0],
    ]
    changed = changed_upstream(entries)
    assert [upstream.read_by for upstream, _ in changed] == ["here", "there"]
    assert changed[1][1].startswith("missing: AttributeError")
