"""docker/compose.yaml and docker/ctstream.toml agree: every service that runs ctstream with
the mounted config gets, from compose alone, an environment under which that config loads.

The environment is what compose would give the container: the image's ``CTSTREAM_``
variables (docker/Dockerfile's ``ENV``) overridden by the service's ``environment``, with
``${VAR}``, ``${VAR:-default}``, ``${VAR-default}`` and ``$$`` resolved as compose does
against an outer environment (empty: the defaults the stack starts with out of the box).
The config is loaded through ctstream's own settings loader with exactly that environment.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctstream.settings import Settings, dsn_pairs, load_settings

DOCKER = Path(__file__).resolve().parents[2] / "docker"
COMPOSE = DOCKER / "compose.yaml"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --- compose's variable interpolation --------------------------------------------------


def interpolate(text: str, outer: Mapping[str, str]) -> str:
    """Resolve compose's interpolation in ``text`` against ``outer``: ``$$`` → ``$``;
    ``$VAR`` and ``${VAR}`` → its value or ""; ``${VAR:-d}`` → d when unset or empty;
    ``${VAR-d}`` → d when unset; ``${VAR:?msg}`` / ``${VAR?msg}`` → an error (defaults
    may themselves hold interpolations, as in compose)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            end = _closing_brace(text, i + 2)
            out.append(_expression(text[i + 2 : end], outer))
            i = end + 1
        elif match := _NAME.match(text, i + 1):
            out.append(outer.get(match.group(), ""))
            i = match.end()
        else:
            raise ValueError(f"compose would reject a lone '$' in {text!r}; write '$$'")
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    for j in range(start, len(text)):
        if text.startswith("${", j):
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    raise ValueError(f"unclosed '${{' in {text!r}")


def _expression(body: str, outer: Mapping[str, str]) -> str:
    match = _NAME.match(body)
    if match is None:
        raise ValueError(f"not a variable: ${{{body}}}")
    name, rest = match.group(), body[match.end() :]
    value = outer.get(name)
    for op in (":-", "-", ":?", "?", ":+", "+"):
        if rest.startswith(op):
            arg = rest[len(op) :]
            unset_or_empty = not value if op.startswith(":") else value is None
            if op.endswith("-"):
                return interpolate(arg, outer) if unset_or_empty else str(value)
            if op.endswith("?"):
                if unset_or_empty:
                    raise ValueError(f"compose stops: {name} is required ({arg})")
                return str(value)
            return "" if unset_or_empty else interpolate(arg, outer)
    if rest:
        raise ValueError(f"unsupported interpolation ${{{body}}}")
    return value or ""


def test_interpolation_helper_follows_compose() -> None:
    outer = {"SET": "x", "EMPTY": ""}
    assert interpolate("a$$b", outer) == "a$b"
    assert interpolate("${SET}-$SET-${UNSET}", outer) == "x-x-"
    assert interpolate("${UNSET:-d}|${EMPTY:-d}|${EMPTY-d}|${SET:-d}", outer) == "d|d||x"
    assert interpolate("PWD={${UNSET:-p!w}};X=1", outer) == "PWD={p!w};X=1"
    assert interpolate("${UNSET:-${SET}y}", outer) == "xy"
    with pytest.raises(ValueError, match="required"):
        interpolate("${UNSET:?set it}", outer)


# --- what compose gives a service ------------------------------------------------------


def compose_file() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))  # handles `<<: *anchor`
    assert isinstance(loaded, dict)
    return loaded


def image_environment() -> dict[str, str]:
    """The ``CTSTREAM_`` variables docker/Dockerfile's final stage sets with ``ENV``."""
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    final = re.split(r"^FROM\s", text, flags=re.MULTILINE)[-1]
    found: dict[str, str] = {}
    for line in final.splitlines():
        words = line.split(None, 1)
        if len(words) == 2 and words[0].upper() == "ENV":
            for pair in shlex.split(words[1]):
                key, sep, value = pair.partition("=")
                if sep and key.upper().startswith("CTSTREAM_"):
                    found[key] = value
    return found


def service_environment(service: dict[str, Any], outer: Mapping[str, str]) -> dict[str, str]:
    """The environment compose gives ``service``'s container (ctstream's variables of the
    image, then the service's ``environment``), interpolated against ``outer``."""
    assert "env_file" not in service, "this test does not model env_file; extend it"
    env = image_environment()
    raw = service.get("environment") or {}
    if isinstance(raw, list):  # ["KEY=value", "KEY"]: a bare KEY passes the outer one
        raw = {k: v if sep else None for k, sep, v in (str(e).partition("=") for e in raw)}
    for key, value in raw.items():
        if value is None:  # `KEY:` without a value passes the outer variable through
            if key in outer:
                env[key] = outer[key]
            continue
        scalar = str(value).lower() if isinstance(value, bool) else str(value)
        env[key] = interpolate(scalar, outer)
    return env


def ctstream_services(compose: dict[str, Any]) -> dict[str, tuple[dict[str, Any], Path]]:
    """Every service whose command runs ctstream with ``--config``: name → (service, the
    host file mounted at that path)."""
    found: dict[str, tuple[dict[str, Any], Path]] = {}
    for name, service in compose["services"].items():
        command = service.get("command") or []
        if isinstance(command, str):
            command = shlex.split(command)
        entrypoint = service.get("entrypoint")
        if isinstance(entrypoint, str):
            entrypoint = shlex.split(entrypoint)
        runs_ctstream = (entrypoint is None and service.get("image") == "ctstream:local") or bool(
            entrypoint and Path(entrypoint[0]).name == "ctstream"
        )
        flags = [f for f in ("--config", "-c") if f in command]
        if not runs_ctstream or not flags:
            continue
        flag = flags[0]
        target = command[command.index(flag) + 1]
        mounts = {}
        for volume in service.get("volumes") or []:
            source, _, rest = str(volume).partition(":")
            mounts[rest.partition(":")[0]] = DOCKER / source
        assert target in mounts, f"{name}: --config {target} is not a mounted file"
        found[name] = (service, mounts[target])
    return found


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.upper().startswith("CTSTREAM_"):
            monkeypatch.delenv(name)
    return monkeypatch


def load_as_compose_would(
    monkeypatch: pytest.MonkeyPatch, name: str, outer: Mapping[str, str]
) -> tuple[Settings, dict[str, str]]:
    service, config = ctstream_services(compose_file())[name]
    env = service_environment(service, outer)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(config), env


SERVICES = sorted(ctstream_services(compose_file()))


def test_the_worker_runs_ctstream_with_the_mounted_config() -> None:
    assert "worker" in SERVICES
    _, config = ctstream_services(compose_file())["worker"]
    assert config == DOCKER / "ctstream.toml"


@pytest.mark.parametrize("name", SERVICES)
def test_config_loads_with_the_environment_compose_gives(
    clean_environment: pytest.MonkeyPatch, name: str
) -> None:
    compose = compose_file()
    settings, env = load_as_compose_would(clean_environment, name, outer={})
    service = compose["services"][name]

    # The web server is reachable through a loopback-only published port, with a token.
    if settings.web.enabled:
        assert settings.web.token is not None
        assert len(settings.web.token.get_secret_value()) >= 16
        assert "CTSTREAM_WEB__TOKEN" in env, "the token comes from compose, not the file"
        ports = [str(p) for p in service.get("ports") or []]
        assert ports, f"{name}: the web port is not published"
        for port in ports:
            assert port.rsplit(":", 1)[-1] == str(settings.web.port)
            assert port.split(":", 1)[0] in LOOPBACK, f"{name}: {port} is not loopback only"

    # The DSN is the environment's, and its password is the SQL Server's SA password.
    dsn = settings.source.dsn.get_secret_value()
    assert dsn == env["CTSTREAM_SOURCE__DSN"]
    pairs = dsn_pairs(dsn)
    sa_password = service_environment(compose["services"]["sqlserver"], {})["MSSQL_SA_PASSWORD"]
    assert pairs["pwd"].removeprefix("{").removesuffix("}").replace("}}", "}") == sa_password
    assert pairs["uid"] == "sa"
    assert pairs["server"].partition(",")[0] in compose["services"]
    assert settings.source.dialect == "mssql"

    # Kafka and the BigQuery emulator are the compose services of those names.
    host, _, port = settings.kafka.bootstrap_servers.partition(":")
    assert host in compose["services"] and port == "9092"
    assert settings.bigquery.endpoint == "http://bigquery:9050"
    assert "bigquery" in compose["services"]


def test_own_token_and_password_from_the_outer_environment(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    outer = {"CTSTREAM_WEB_TOKEN": "t0ken-of-my-own-choosing", "MSSQL_SA_PASSWORD": "Mine-Pass-42"}
    settings, _ = load_as_compose_would(clean_environment, "worker", outer)
    assert settings.web.token is not None
    assert settings.web.token.get_secret_value() == outer["CTSTREAM_WEB_TOKEN"]
    assert "PWD={Mine-Pass-42}" in settings.source.dsn.get_secret_value()
