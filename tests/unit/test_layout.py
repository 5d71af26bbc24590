"""The package's layout holds: imports run one way, and every module stays small.

The direction (docs/architecture.md): errors → models → settings, logging, retry →
source, bigquery, streams (peers that never import each other) → devstack → agents →
web → worker → commands → cli. A module may import its own layer's package and any layer
below it, never one above; no module imports a private name of another module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "ctstream"

# Top-level package or module of ctstream → its layer; higher layers may import lower ones.
LAYERS: dict[str, int] = {
    "errors": 0,
    "models": 1,
    "settings": 2,
    "logging": 2,
    "retry": 2,
    "source": 3,
    "bigquery": 3,
    "streams": 3,
    "devstack": 4,
    "agents": 5,
    "web": 6,
    "worker": 7,
    "commands": 8,
    "cli": 9,
    "__main__": 10,
}
# What each bottom module may import besides itself.
LEAVES = {"errors": set(), "models": {"errors"}}
MAX_LINES = 420


def part_of(module: str) -> str:
    """``ctstream.streams.topics`` → ``streams``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def imports(module: str, path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, imported ctstream module, names taken from it) of every import, also those
    inside functions and ``TYPE_CHECKING`` blocks."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ctstream"):
                    yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([target] if target else [])])
            if target.startswith("ctstream"):
                yield node.lineno, target, [a.name for a in node.names]


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {part_of(module) for module, _ in modules()} - {""}
    assert parts <= set(LAYERS), f"give {sorted(parts - set(LAYERS))} a layer in this test"


def test_imports_run_one_way() -> None:
    wrong: list[str] = []
    for module, path in modules():
        here = part_of(module)
        if not here:
            continue  # ctstream/__init__.py: the version only
        for line, target, _ in imports(module, path):
            there = part_of(target)
            if not there or there == here:
                continue
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
            if here in LEAVES and there not in LEAVES[here]:
                wrong.append(f"{where}: {here} may import only {sorted(LEAVES[here]) or 'nothing'}")
            elif LAYERS[there] > LAYERS[here]:
                wrong.append(f"{where}: {here} (layer {LAYERS[here]}) is below {there}")
            elif LAYERS[there] == LAYERS[here]:
                wrong.append(f"{where}: {here} and {there} are peers and never import each other")
    assert not wrong, "imports against the layout (docs/architecture.md):\n" + "\n".join(wrong)


def test_no_module_imports_a_private_name_of_another() -> None:
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line} takes {name} from {target}"
        for module, path in modules()
        for line, target, names in imports(module, path)
        for name in names
        if name.startswith("_") and not name.startswith("__") and target != module
    ]
    assert not wrong, "private names used outside their module:\n" + "\n".join(wrong)


def test_modules_stay_small() -> None:
    big = {
        str(path.relative_to(PACKAGE.parent)): lines
        for _, path in modules()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not big, f"modules over {MAX_LINES} lines (split them by idea): {big}"
