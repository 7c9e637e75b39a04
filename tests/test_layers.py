"""The layers of docs/architecture.md §1: imports only point down, checked by import-linter.

``make lint`` runs ``lint-imports`` (so CI fails on a backwards import); these tests run the same
contracts, prove that they can fail, and keep the domain's short list of allowed libraries.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
# What the pure domain may import besides itself and the standard library.
DOMAIN_MAY_IMPORT = {"pydantic", "sqlalchemy", "yaml", "orjson"}


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / ".importlinter"), "--no-cache"],
        cwd=root, capture_output=True, text=True, timeout=120,
    )


def test_the_import_contracts_hold() -> None:
    done = _lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 5 kept, 0 broken." in done.stdout


def test_a_backwards_import_breaks_the_contracts(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy(ROOT / ".importlinter", copy)
    # The package as installed: the linked folders become real ones in the copy.
    shutil.copytree(ROOT / "tallyflow", copy / "tallyflow", symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__"))
    retry = copy / "tallyflow" / "tasks" / "runs" / "retry.py"
    retry.write_text(retry.read_text() + "\n\ndef _bad() -> None:\n"
                     "    from tallyflow.cli import ingest  # noqa: F401\n"
                     "    from tallyflow import plugin  # noqa: F401\n")
    done = _lint_imports(copy)
    assert done.returncode != 0
    assert "Nothing imports the command line BROKEN" in done.stdout
    assert "tallyflow.tasks.runs.retry -> tallyflow.cli.ingest" in done.stdout
    assert "Nothing imports the plugin surface (plugins do) BROKEN" in done.stdout
    assert "tallyflow.tasks.runs.retry -> tallyflow.plugin" in done.stdout


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "path", sorted((ROOT / "models").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_the_domain_imports_only_itself_and_plain_libraries(path: Path) -> None:
    foreign = {
        name
        for name in _imports(path)
        if not (name == "tallyflow.models" or name.startswith("tallyflow.models."))
        and name.split(".")[0] not in DOMAIN_MAY_IMPORT
        and name.split(".")[0] not in sys.stdlib_module_names
    }
    assert not foreign, f"{path.relative_to(ROOT)} imports {sorted(foreign)}"


@pytest.mark.parametrize("name", ["models", "tasks", "flows"])
def test_a_linked_folder_imported_top_level_is_refused_in_one_line(name: str) -> None:
    """Item 8 of issue 25: ``import tasks`` from the repository root would load a second copy of
    every module (the folders are the tallyflow package's, through the links)."""
    done = subprocess.run(
        [sys.executable, "-c", f"import {name}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        f"ImportError: import tallyflow.{name}, not {name}: {name}/ is linked into the tallyflow"
        f" package (tallyflow/{name} -> ../{name}); imported under both names, every module"
        " would load twice"
    )


@pytest.mark.parametrize("name", ["models", "tasks", "flows"])
def test_the_linked_folders_import_as_the_package(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import tallyflow.{name} as m; print(m.__name__)"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"tallyflow.{name}"
