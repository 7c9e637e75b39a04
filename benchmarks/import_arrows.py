"""How tangled tasks/ is: its rooms, the import arrows between them, the largest modules and
functions (docs/architecture.md §8, issue 25 item 1).

    python benchmarks/import_arrows.py [REPO]    # default: this repository

Reads the source only (ast; nothing is imported), so it runs on any checkout, for example an
older commit in a second worktree, and the figures can be compared.

Method:

- A *room* is an entry right under ``tasks/``: a package (a folder with ``__init__.py``) or a
  loose module. An alias module (its docstring starts with "Alias of") is no room: it holds
  no code, only names re-exported for plugins.
- An *import arrow* is an ordered pair (importer, imported) where the importer is a module under
  ``tasks/`` and the import, anywhere in it (function-level imports count too), names a module
  under ``tasks/`` in another room. ``from tallyflow.tasks.a import b`` points at the module
  ``a.b`` when that is a module, else at ``a``. Counted twice: *module arrows*, distinct pairs of
  modules (what a reader follows from file to file), and *room arrows*, distinct pairs of rooms.
- *Sizes*: lines of each module (``wc -l``), and of each function or method from its ``def`` to
  its last line, decorators excluded.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

TOP = 5  # how many of the largest modules and functions are listed


@dataclass(frozen=True)
class Figures:
    rooms: list[str]
    module_arrows: set[tuple[str, str]]
    room_arrows: set[tuple[str, str]]
    modules: list[tuple[int, str]]  # (lines, module), largest first
    functions: list[tuple[int, str]]  # (lines, module:function), largest first


def _modules(tasks: Path) -> dict[str, Path]:
    """Module name (relative to tallyflow.tasks, '' for tasks/__init__) -> file."""
    found = {}
    for path in sorted(tasks.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(tasks).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_alias(path: Path) -> bool:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return doc.startswith("Alias of")


def _room(module: str) -> str:
    return module.split(".")[0]


def _targets(tree: ast.Module, own: str, is_package: bool, known: set[str]) -> set[str]:
    """The tasks/ modules a module's imports name."""
    found: set[str] = set()
    prefix = "tallyflow.tasks"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(prefix + "."):
                    found.add(alias.name.removeprefix(prefix + "."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = own.split(".") if own else []
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            elif node.module == prefix:
                module = ""
            elif node.module and node.module.startswith(prefix + "."):
                module = node.module.removeprefix(prefix + ".")
            else:
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}" if module else alias.name
                found.add(sub if sub in known else module)
    return {target for target in found if target}


def figures(root: Path) -> Figures:
    tasks = root / "tasks"
    modules = _modules(tasks)
    aliases = {name for name, path in modules.items() if name and _is_alias(path)}
    known = set(modules)
    rooms = sorted({_room(name) for name in known if name and name not in aliases})
    module_arrows: set[tuple[str, str]] = set()
    sizes: list[tuple[int, str]] = []
    functions: list[tuple[int, str]] = []
    for name, path in modules.items():
        text = path.read_text()
        tree = ast.parse(text)
        sizes.append((len(text.splitlines()), str(path.relative_to(root))))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                functions.append((length, f"{path.relative_to(root)}:{node.name}"))
        if not name or name in aliases:
            continue
        for target in _targets(tree, name, path.name == "__init__.py", known):
            target = target if target in known else _room(target)
            if target in aliases or target not in known:
                continue
            if _room(target) != _room(name):
                module_arrows.add((name, target))
    room_arrows = {(_room(a), _room(b)) for a, b in module_arrows}
    return Figures(rooms, module_arrows, room_arrows, sorted(sizes, reverse=True),
                   sorted(functions, reverse=True))


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
    found = figures(root.resolve())
    packages = [r for r in found.rooms if (root / "tasks" / r).is_dir()]
    print(f"rooms: {len(found.rooms)} ({len(packages)} packages, "
          f"{len(found.rooms) - len(packages)} loose modules)")
    print("  " + " ".join(found.rooms))
    print(f"module arrows between rooms: {len(found.module_arrows)}")
    print(f"room arrows: {len(found.room_arrows)}")
    for source in found.rooms:
        targets = sorted(b for a, b in found.room_arrows if a == source)
        if targets:
            print(f"  {source} -> {' '.join(targets)}")
    print("largest modules (lines): "
          + ", ".join(f"{path} {lines}" for lines, path in found.modules[:TOP]))
    print("largest functions (lines): "
          + ", ".join(f"{name} {lines}" for lines, name in found.functions[:TOP]))


if __name__ == "__main__":
    main()
