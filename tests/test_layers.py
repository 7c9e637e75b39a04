"""The layers of docs/architecture.md §1, checked on the source: imports only point down.

A small stand-in for an import-linter contract until the packages move under one namespace:
it reads every module's imports (top level and inside functions) with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "tasks", "flows", "tallyflow", "deployments", "migrations")
CLI = ("tallyflow.cli", "tallyflow.commands")
# What the pure domain may import besides itself and the standard library.
DOMAIN_MAY_IMPORT = {"pydantic", "sqlalchemy", "yaml", "orjson"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def _is(name: str, prefixes: tuple[str, ...] | set[str]) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in prefixes)


def _name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


@pytest.mark.parametrize("path", _modules("models"), ids=_name)
def test_the_domain_imports_only_itself_and_plain_libraries(path: Path) -> None:
    import sys

    foreign = {
        name
        for name in _imports(path)
        if not _is(name, {"models", *DOMAIN_MAY_IMPORT})
        and name.split(".")[0] not in sys.stdlib_module_names
    }
    assert not foreign, f"{_name(path)} imports {sorted(foreign)}"


@pytest.mark.parametrize(
    "path",
    [p for p in _modules(*PACKAGES) if not _is(_name(p), CLI)],
    ids=_name,
)
def test_nothing_imports_the_command_line(path: Path) -> None:
    assert not {n for n in _imports(path) if _is(n, CLI)}, f"{_name(path)} imports the CLI"


@pytest.mark.parametrize("path", _modules("tasks"), ids=_name)
def test_tasks_do_not_import_flows(path: Path) -> None:
    assert not {n for n in _imports(path) if _is(n, ("flows", "deployments"))}


def test_the_check_sees_a_backwards_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from tallyflow.commands import ingest\n")
    assert {n for n in _imports(module) if _is(n, CLI)} == {
        "tallyflow.commands",
        "tallyflow.commands.ingest",
    }


@pytest.mark.parametrize("path", _modules("models", "tasks", "flows"), ids=_name)
def test_nothing_below_imports_the_http_api(path: Path) -> None:
    """`tallyflow api` is an entry point beside the CLI: it calls tasks, nothing calls it."""
    assert not {n for n in _imports(path) if _is(n, ("tallyflow.api",))}
