"""Only ctstream/streams/faust_compat/ touches a private name of faust, mode or aiokafka.

An AST scan of every module of the package outside faust_compat/ reports:

- ``from faust… / mode… / aiokafka… import _name`` (or a private module of theirs);
- ``obj._name`` (one leading underscore), read or written, and ``getattr(obj, "_name")``
  (also set/has/delattr), unless the module defines ``_name`` itself (a def or class, an
  assignment to a name, to ``self._name`` or ``cls._name``, a parameter or an import
  alias) — when ``_name`` occurs in the sources of faust, mode or aiokafka. A name those
  libraries never use is some other library's business, not this test's.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import ctstream

LIBRARIES = ("faust", "mode", "aiokafka")
PACKAGE = Path(ctstream.__file__).parent
DOOR = PACKAGE / "streams" / "faust_compat"
# Private by name, public in effect: namedtuple's API, os._exit.
ALLOWED = frozenset({"_asdict", "_fields", "_field_defaults", "_make", "_replace", "_exit"})
ATTRIBUTE_FUNCTIONS = frozenset({"getattr", "setattr", "hasattr", "delattr"})
IDENTIFIER = re.compile(r"\b_[A-Za-z0-9]\w*")


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@cache
def library_names() -> frozenset[str]:
    """Every identifier with one leading underscore in the libraries' Python and Cython."""
    names: set[str] = set()
    for library in LIBRARIES:
        module_file = importlib.import_module(library).__file__  # faust's lazy module: no spec
        assert module_file is not None, library
        root = Path(module_file).parent
        for path in (*root.rglob("*.py"), *root.rglob("*.pyx")):
            names.update(IDENTIFIER.findall(path.read_text(encoding="utf-8", errors="replace")))
    return frozenset(names)


def defined_in(tree: ast.AST) -> set[str]:
    """The names a module defines itself, anywhere in it."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in {"self", "cls"}
        ):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.partition(".")[0])
    return names


def private_uses(source: str) -> Iterator[tuple[int, str]]:
    """(line, what) for each private name of faust, mode or aiokafka that ``source`` uses."""
    tree = ast.parse(source)
    own = defined_in(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] in LIBRARIES:
                for alias in node.names:
                    if is_private(alias.name) or any(map(is_private, parts)):
                        yield node.lineno, f"from {node.module} import {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in LIBRARIES and any(map(is_private, parts)):
                    yield node.lineno, f"import {alias.name}"
        elif isinstance(node, ast.Attribute):
            if _foreign(node.attr, own):
                yield node.lineno, f"{ast.unparse(node.value)}.{node.attr}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ATTRIBUTE_FUNCTIONS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _foreign(node.args[1].value, own)
        ):
            yield node.lineno, f"{node.func.id}(…, {node.args[1].value!r})"


def _foreign(name: str, own: set[str]) -> bool:
    return is_private(name) and name not in own and name not in ALLOWED and name in library_names()


def upstream_assignments(source: str) -> Iterator[tuple[int, str]]:
    """(line, target) for each attribute set on something imported from the libraries
    (``Consumer.ack = …``, ``faust_aiokafka.Consumer.x = …``): a patch not made through
    faust_compat/patching.py."""
    tree = ast.parse(source)
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in LIBRARIES:
                imported.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in LIBRARIES:
                    imported.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store | ast.Del):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in imported:
                yield node.lineno, ast.unparse(node)


def outside_the_door() -> Iterator[Path]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if DOOR not in path.parents:
            yield path


def test_no_private_name_of_faust_mode_or_aiokafka_is_used_outside_faust_compat() -> None:
    found = [
        f"  {path.relative_to(PACKAGE.parent)}:{line}: {what}"
        for path in outside_the_door()
        for line, what in private_uses(path.read_text(encoding="utf-8"))
    ]
    assert not found, (
        "Private names of faust, mode or aiokafka used outside ctstream/streams/faust_compat/:\n"
        + "\n".join(found)
        + "\nAdd an accessor for each to ctstream/streams/faust_compat/internals.py (or move "
        "the code that needs them into faust_compat/) and call that instead. If a name is "
        "ctstream's own attribute, defined in another module, make it public there."
    )


def test_upstream_classes_are_changed_only_through_apply_patch() -> None:
    found = [
        f"  {path.relative_to(PACKAGE.parent)}:{line}: {target} = …"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, target in upstream_assignments(path.read_text(encoding="utf-8"))
    ]
    assert not found, (
        "Attributes of faust, mode or aiokafka set directly:\n"
        + "\n".join(found)
        + "\nMake each a Patch in ctstream/streams/faust_compat/register.py (applied by "
        "patching.apply_patch) and describe it in docs/faust-patches.md."
    )


def test_the_assignment_scan_finds_a_direct_patch() -> None:
    source = (
        "from faust.transport.consumer import Consumer\n"
        "from faust.transport.drivers import aiokafka as faust_aiokafka\n"
        "Consumer.ack = lambda self, message: True\n"
        "faust_aiokafka.Consumer._new_consumer_thread = None\n"
        "def f(consumer):\n"
        "    consumer._fetch_max_wait_ms = 100\n"  # an instance's: not a patch
    )
    assert sorted(line for line, _ in upstream_assignments(source)) == [3, 4]


def test_the_scan_finds_what_it_must() -> None:
    source = (
        "from faust.streams import _current_event\n"
        "import faust.transport._cython.conductor\n"
        "def f(consumer, app):\n"
        "    consumer._acked.get(1)\n"
        "    app.topics._resubscribe_sleep_lock_seconds = 2.0\n"
        "    return getattr(app, '_consumer', None)\n"
    )
    assert sorted(line for line, _ in private_uses(source)) == [1, 2, 4, 5, 6]


def test_the_scan_leaves_a_modules_own_names_and_other_libraries_alone() -> None:
    source = (
        "import os\n"
        "class Reader:\n"
        "    def __init__(self):\n"
        "        self._acked = []\n"  # its own attribute, though faust has one of that name
        "    def _flush(self):\n"
        "        return self._acked, self.__class__\n"
        "def g(point, client):\n"
        "    client._no_such_name_upstream()\n"
        "    os._exit(0)\n"
        "    return point._replace(x=1)\n"
    )
    assert list(private_uses(source)) == []


def test_the_door_exists_and_the_scan_covers_the_package() -> None:
    scanned = list(outside_the_door())
    assert (DOOR / "internals.py").exists()
    assert PACKAGE / "worker.py" in scanned
    assert not any(DOOR in path.parents for path in scanned)
