"""``ctstream config check``: validate a config file and the environment, connecting to
nothing.

Prints the effective settings (file, then environment over it, then defaults) with every
secret masked, or every problem found, one per line as ``key: problem (expected …)``.
Exit status 0 when the configuration is valid, 2 when it is not. A secret's value is
never printed: ``SecretStr`` settings and values whose key names a password, secret or
token print as ``**********``, and ``source.dsn`` keeps its keys but masks ``PWD``,
``Password`` and other secret values. ``--json`` prints one object::

    {"valid": true, "settings": {...}, "problems": [], "environment": ["CTSTREAM_..."]}

with ``settings`` null when invalid and ``problems`` a list of ``{"key", "message"}``.
``environment`` names (never shows) the ``CTSTREAM_`` variables that were set.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ctstream.settings import SettingsCheck, check_settings, masked_settings

VALID = 0
INVALID = 2


def run(args: argparse.Namespace) -> int:
    """``ctstream config check --config FILE [--json]``: 0 when valid, else 2."""
    result = check_settings(args.config)
    if args.json:
        print(json.dumps(as_json(result), indent=2))
    elif result.valid:
        print(render(result, args.config))
    else:
        print(render_problems(result, args.config), file=sys.stderr)
    return VALID if result.valid else INVALID


def as_json(result: SettingsCheck) -> dict[str, Any]:
    """The ``--json`` object of a check (secrets masked)."""
    return {
        "valid": result.valid,
        "settings": masked_settings(result.settings) if result.settings is not None else None,
        "problems": [{"key": p.key, "message": p.message} for p in result.problems],
        "environment": list(result.environment),
    }


def render_problems(result: SettingsCheck, path: str) -> str:
    """``ctstream: config FILE is invalid`` and one ``key: problem`` line per problem."""
    count = len(result.problems)
    lines = [f"ctstream: config {path} is invalid ({count} problem{'s' * (count != 1)}):"]
    lines += [f"  {problem}" for problem in result.problems]
    lines.append(_environment_line(result))
    return "\n".join(lines)


def render(result: SettingsCheck, path: str) -> str:
    """The valid settings, secrets masked: a ``[section]`` line, then ``key = value`` per
    setting with the value as JSON (durations in seconds; ``null``: not set)."""
    lines = [f"config {path} is valid", _environment_line(result)]
    if result.settings is not None:
        for section, values in masked_settings(result.settings).items():
            lines += ["", f"[{section}]"]
            lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines)


def _environment_line(result: SettingsCheck) -> str:
    if not result.environment:
        return "environment: no CTSTREAM_ variables set"
    return "environment (over the file): " + ", ".join(result.environment)
