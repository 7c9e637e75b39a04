"""Packaging a Python user expects (docs/architecture.md §1): one import namespace.

The user's top-level folders are linked into the ``tallyflow`` package; the wheel must carry
them only under ``tallyflow/`` (nothing generic such as ``models`` at the top of site-packages),
with the data files the code reads at run time, and a process running the CLI and the flows must
load each module once, under its package name.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINKED = ("models", "tasks", "flows", "migrations", "deployments")


def test_the_linked_folders_point_at_the_user_layout() -> None:
    for name in LINKED:
        link = ROOT / "tallyflow" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve(), name


def test_the_wheel_installs_one_namespace_with_its_data(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ next to the sources.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("tallyflow", *LINKED):
        shutil.copytree(ROOT / name, source / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
         str(source)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("tallyflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"tallyflow"}
    for needed in (
        "tallyflow/flows/billing.py",
        "tallyflow/models/rating/pricing.py",
        "tallyflow/migrations/env.py",
        "tallyflow/migrations/versions/0001_catalog_and_ingestion.py",
        "tallyflow/deployments/prefect.yaml",
        "tallyflow/tasks/templates/invoice.html",
        "tallyflow/cli/main.py",
        "tallyflow/infra/db.py",
        "tallyflow/infra/no_tls_ca.pem",
    ):
        assert needed in names, needed


def test_each_module_is_loaded_once_under_its_package_name() -> None:
    code = (
        "import sys\n"
        "import tallyflow.deployments.serve\n"
        "from tallyflow.cli.main import app  # every command's area\n"
        "from tallyflow.deployments.serve import deployment_specs, load_flow\n"
        "for spec in deployment_specs(): load_flow(spec['entrypoint'])\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {LINKED!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout
