"""tasks/ is grouped by feature into rooms, and a room is entered only through its ``__init__``
(docs/architecture.md §8, issue 25 item 1).

Every module under ``tallyflow/`` is parsed (the linked folders included) and two things fail:
a ``_private`` name imported from another package (siblings inside one package may share
them), and a module inside a tasks/ room imported from outside that room, other than through
the names its ``__init__`` binds. The documented aliases (``tallyflow.tasks.sources``,
``tallyflow.tasks.plugins``) are the only exception, and they give the same objects as the
room.
"""

from __future__ import annotations

import ast
import importlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "tallyflow"
# Old public paths kept for plugins: alias module -> the module it re-exports.
ALIASES = {
    "tallyflow.tasks.sources": "tallyflow.tasks.ingest.sources",
    "tallyflow.tasks.plugins": "tallyflow.tasks.ingest.plugins",
}


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name, through the links (os.walk follows them)."""
    found: dict[str, Path] = {}
    for folder, dirs, files in os.walk(PACKAGE, followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for file in files:
            if file.endswith(".py"):
                path = Path(folder) / file
                parts = list(path.relative_to(ROOT).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts.pop()
                found[".".join(parts)] = path
    return found


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return name in modules and modules[name].name == "__init__.py"


def room_of(name: str, modules: dict[str, Path]) -> str | None:
    """The tasks/ room a module belongs to: its package right under tallyflow.tasks, or the
    loose module itself. None outside tasks/."""
    parts = name.split(".")
    if parts[:2] != ["tallyflow", "tasks"] or len(parts) < 3:
        return None
    return ".".join(parts[:3])


def package_of(name: str, modules: dict[str, Path]) -> str:
    """Where a module's private names may be shared: its tasks/ room, else its own package."""
    room = room_of(name, modules)
    if room is not None:
        return room
    return name if _is_package(name, modules) else name.rpartition(".")[0]


def bindings(init: Path, imported: bool = True) -> set[str]:
    """The names a package's ``__init__`` binds: its interface (``imported=False``: only the
    names the module itself defines)."""
    names: set[str] = set()
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.ImportFrom) and imported:
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _absolute(node: ast.ImportFrom, name: str, modules: dict[str, Path]) -> str | None:
    if node.level == 0:
        return node.module
    base = name if _is_package(name, modules) else name.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{node.module}" if node.module else base


def crossings(modules: dict[str, Path], sources: dict[str, str]) -> list[str]:
    """Every import that breaks a rule, as ``importer: what``. ``sources`` maps module names to
    their text (a test can add one)."""
    broken: list[str] = []
    for name, text in sorted(sources.items()):
        if name in ALIASES:
            continue
        mine, my_room = package_of(name, modules), room_of(name, modules)
        for node in ast.walk(ast.parse(text)):
            targets: list[tuple[str, str | None]]
            if isinstance(node, ast.Import):
                targets = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = _absolute(node, name, modules)
                if module is None or not module.startswith("tallyflow"):
                    continue
                targets = [(module, alias.name) for alias in node.names]
            else:
                continue
            for module, taken in targets:
                if not module.startswith("tallyflow"):
                    continue
                room = room_of(module, modules)
                if taken is not None and taken.startswith("_") and package_of(module, modules) \
                        != mine and not module.startswith(mine + "."):
                    broken.append(f"{name}: private {module}.{taken}")
                    continue
                if room is None or room == my_room:
                    continue
                if module != room:
                    broken.append(f"{name}: {module} (a module inside {room})")
                elif taken is not None and _is_package(room, modules) \
                        and taken not in bindings(modules[room]):
                    broken.append(f"{name}: {room}.{taken} (not in its __init__)")
    return broken


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return _modules()


def test_rooms_are_entered_only_through_their_init(modules: dict[str, Path]) -> None:
    sources = {name: path.read_text() for name, path in modules.items()}
    assert crossings(modules, sources) == []


@pytest.mark.parametrize(
    ("importer", "line", "why"),
    [
        ("tallyflow.flows.billing", "from tallyflow.tasks.usage.rating import rated_usage",
         "tallyflow.tasks.usage.rating (a module inside tallyflow.tasks.usage)"),
        ("tallyflow.tasks.invoicing.close", "from tallyflow.tasks.usage import _not_there",
         "private tallyflow.tasks.usage._not_there"),
        ("tallyflow.cli.usage", "from tallyflow.tasks.usage import rating",
         "tallyflow.tasks.usage.rating (not in its __init__)"),
        ("tallyflow.api.routes", "import tallyflow.tasks.wallets.ledger",
         "tallyflow.tasks.wallets.ledger (a module inside tallyflow.tasks.wallets)"),
        ("tallyflow.tasks.ingest.load", "from ..runs.retry import is_transient",
         "tallyflow.tasks.runs.retry (a module inside tallyflow.tasks.runs)"),
        ("tallyflow.cli.ops", "from tallyflow.models.rating.pricing import _x",
         "private tallyflow.models.rating.pricing._x"),
    ],
)
def test_a_crossing_fails(modules: dict[str, Path], importer: str, line: str, why: str) -> None:
    assert crossings(modules, {importer: line}) == [f"{importer}: {why}"]


@pytest.mark.parametrize(
    ("importer", "line"),
    [
        # siblings inside one room share modules and private names
        ("tallyflow.tasks.invoicing.close", "from tallyflow.tasks.invoicing.inputs import _Group"),
        ("tallyflow.tasks.invoicing.advance.issue",
         "from tallyflow.tasks.invoicing.writing import _json"),
        # the way in: names the room's __init__ binds, a module among them
        ("tallyflow.cli.ingest", "from tallyflow.tasks.ingest import plugins, SourceSpec"),
        ("tallyflow.tasks.invoicing.close", "from tallyflow.tasks.usage import rate_subscription"),
        # a loose module is its own room
        ("tallyflow.cli.exports", "from tallyflow.tasks.exports import export"),
    ],
)
def test_the_ways_in_pass(modules: dict[str, Path], importer: str, line: str) -> None:
    assert crossings(modules, {importer: line}) == []


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_an_alias_gives_the_objects_of_the_new_home(alias: str) -> None:
    old, new = importlib.import_module(alias), importlib.import_module(ALIASES[alias])
    defined = bindings(Path(str(new.__file__)), imported=False)
    public = {name for name in defined if not name.startswith("_")}
    assert public <= set(old.__all__), f"{alias} lacks {sorted(public - set(old.__all__))}"
    for name in old.__all__:
        assert getattr(old, name) is getattr(new, name), name


def test_the_layout_section_lists_every_room() -> None:
    """docs/architecture.md §8 names each room; a room added or removed is documented there."""
    from benchmarks.import_arrows import figures

    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text[text.index("## 8. Layout"):]
    section = section[: section.find("\n## ", 1) if "\n## " in section[1:] else len(section)]
    listed = {
        row.split("`")[1].removeprefix("tasks/").removesuffix("/").removesuffix(".py")
        for row in section.splitlines()
        if row.startswith("| `tasks/")
    }
    assert listed == set(figures(ROOT).rooms)
