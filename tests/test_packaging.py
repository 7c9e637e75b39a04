"""Packaging a Python user expects (docs/architecture.md §1): one import namespace.

The user's top-level folders are linked into the ``tallyflow`` package; the wheel must carry
them only under ``tallyflow/`` (nothing generic such as ``models`` at the top of site-packages),
with the data files the code reads at run time, and a process running the CLI and the flows must
load each module once, under its package name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINKED = ("models", "tasks", "flows", "migrations", "deployments", "examples")


def test_the_linked_folders_point_at_the_user_layout() -> None:
    for name in LINKED:
        link = ROOT / "tallyflow" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve(), name


def _build_wheel(tmp_path: Path) -> Path:
    """The wheel, built from a copy: setuptools writes build/ next to the sources."""
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
    return wheel


def test_the_wheel_installs_one_namespace_with_its_data(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"tallyflow"}
    for needed in (
        "tallyflow/flows/billing.py",
        "tallyflow/models/rating/pricing.py",
        "tallyflow/migrations/env.py",
        "tallyflow/migrations/versions/0001_catalog_and_ingestion.py",
        "tallyflow/deployments/prefect.yaml",
        "tallyflow/tasks/invoicing/templates/invoice.html",
        "tallyflow/tasks/invoicing/templates/document.html",  # the head invoice.html extends
        "tallyflow/tasks/ingest/mappings/openai_chat.yaml",
        "tallyflow/tasks/ingest/mappings/openai_chat.golden.jsonl",
        "tallyflow/tasks/ingest/mappings/openai_chat.expected.json",
        "tallyflow/cli/main.py",
        "tallyflow/infra/db.py",
        "tallyflow/infra/no_tls_ca.pem",
        "tallyflow/examples/mistral/plan.json",
        "tallyflow/examples/demo/customers.yaml",
        "tallyflow/plugin.py",
        "tallyflow/testing/conformance.py",
        "tallyflow/testing/golden/lago.jsonl",
        "tallyflow/testing/golden/lago.expected.json",
    ):
        assert needed in names, needed
    # the conformance suite is a pytest plugin of the installed package (pytest11)
    (points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    entry_points = zipfile.ZipFile(wheel).read(points).decode()
    assert "[pytest11]\ntallyflow.testing.conformance = tallyflow.testing.conformance" \
        in entry_points, entry_points


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


@pytest.mark.slow
def test_the_demo_runs_from_the_wheel_outside_the_repository(tmp_path: Path) -> None:
    """What a user who ``pip install``s the wheel gets: ``tallyflow demo`` works from any folder
    (the example catalogs are package data), on the embedded PostgreSQL it starts itself."""
    wheel = _build_wheel(tmp_path)
    # Nothing of this checkout or this test session leaks in (a PYTHONPATH naming the clone
    # would show pip the clone's metadata as an installed tallyflow).
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TALLYFLOW_", "PREFECT_", "PYTHON"))}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, env=env)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
           "--disable-pip-version-check"]
    subprocess.run([*pip, "-c", str(ROOT / "constraints.txt"), str(wheel)],
                   check=True, capture_output=True, timeout=600, env=env)
    home = Path(tempfile.mkdtemp(prefix="tfw-", dir="/tmp"))  # short: the socket path
    env["TALLYFLOW_HOME"] = str(home)  # no TALLYFLOW_DATABASE_URL: the embedded server
    env["COLUMNS"] = "250"  # no wrapped paths in what is checked
    tallyflow = str(venv / "bin" / "tallyflow")
    try:
        done = subprocess.run([tallyflow, "demo", "--days", "1"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "3. Ingest: " in done.stdout and "See these runs in the Prefect UI: http" in (
            done.stdout)
        assert str(home) in done.stdout  # the bucket lies in the scratch home
        assert "site-packages/tallyflow/examples/mistral" in done.stdout
    finally:
        for what in (["prefect", "stop"], ["db", "stop"]):
            subprocess.run([tallyflow, *what], env=env, capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)
