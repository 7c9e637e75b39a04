"""No function over 80 lines in the package's source (docs/architecture.md §1, "Function size").

A long function mixes reading, deciding and writing; split it into read (SQL, typed rows) ->
decide (a pure function in ``models/``) -> write (SQL). Migrations are left out (a migration is
a frozen script, read top to bottom); tests and benchmarks are outside the walked tree.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 80
# The package's source: the linked top-level folders and tallyflow's own modules.
SOURCE = ("tasks", "models", "flows", "deployments", "tallyflow")
# (path, function) allowed over the limit: none. An entry here is a debt with a reason beside it.
ALLOWED: set[tuple[str, str]] = set()


def long_functions(root: Path, limit: int = LIMIT) -> list[tuple[str, str, int]]:
    """Every function (methods and nested ones too) longer than ``limit`` lines, counted from
    its ``def`` to its last line, docstring included: ``(path, name, lines)``."""
    found: list[tuple[str, str, int]] = []
    for folder in SOURCE:
        base = root / folder
        if not base.is_dir() or base.is_symlink():
            continue
        for path in sorted(base.rglob("*.py")):
            relative = path.relative_to(root)
            if "migrations" in relative.parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > limit:
                        found.append((relative.as_posix(), node.name, lines))
    return found


def test_no_function_is_over_80_lines() -> None:
    over = [f for f in long_functions(ROOT) if (f[0], f[1]) not in ALLOWED]
    assert not over, "functions over 80 lines (split read -> decide -> write):\n" + "\n".join(
        f"  {path}: {name} ({lines} lines)" for path, name, lines in over
    )


def test_the_allowlist_names_only_functions_still_too_long() -> None:
    long = {(path, name) for path, name, _ in long_functions(ROOT)}
    assert not ALLOWED - long, f"no longer over the limit, drop them: {sorted(ALLOWED - long)}"


def test_the_walk_sees_every_folder() -> None:
    # the linked folders are real in an installed tree and symlinks in the repository: either
    # way each is walked once, through its own name
    walked = {path.split("/")[0] for path, _, _ in long_functions(ROOT, limit=0)}
    assert walked == set(SOURCE)


def test_a_long_function_is_found(tmp_path: Path) -> None:
    package = tmp_path / "tasks"
    package.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    (package / "long.py").write_text(f"def short():\n    pass\n\n\ndef too_long():\n{body}\n")
    migrations = tmp_path / "tasks" / "migrations"
    migrations.mkdir()
    (migrations / "0001.py").write_text(f"def upgrade():\n{body}\n")
    assert long_functions(tmp_path) == [("tasks/long.py", "too_long", LIMIT + 1)]
