"""A plugin's own repository runs Tallyflow's shipped conformance suite (docs/ingest.md,
"Adding a source"): ``tests/fixtures/plugin_repo`` (a source whose objects are not files, and
a mapping in code) is installed so its entry points are real, and ``pytest
--tallyflow-conformance`` runs in it, in a fresh process, as its author runs it. The same
repository with its source broken on purpose fails the suite, saying why."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

from tests.plugin_site import install

PROJECT = Path(__file__).parents[3]
REPO = PROJECT / "tests" / "fixtures" / "plugin_repo"
# The checks the suite collects for the repository: one for broken plugins, six for its
# source, two for its mapping; and the repository's own two tests.
CONFORMANCE_CHECKS = 1 + 6 + 2
DATABASE_CHECKS = 2 + 1
OWN_TESTS = 2


def _suite_is_installed() -> bool:
    """Whether the installed Tallyflow registers the suite (pytest11). An editable install made
    before the entry point existed does not, until it is installed again."""
    points = distribution("tallyflow").entry_points
    return any(p.group == "pytest11" for p in points)


@pytest.fixture()
def repo(tmp_path: Path) -> tuple[Path, Path]:
    copy = tmp_path / "repo"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    install(site, copy)
    return copy, site


def _pytest(repo: Path, site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("TALLYFLOW_DATABASE_URL", "PYTEST_ADDOPTS")}
    environ.update(PYTHONPATH=f"{site}{os.pathsep}{PROJECT}", **env)
    load = [] if _suite_is_installed() else ["-p", "tallyflow.testing.conformance"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfs", *load,
         "--tallyflow-conformance", *args],
        cwd=repo, env=environ, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL)


def _passed(ran: subprocess.CompletedProcess[str]) -> None:
    for name in ("batch-table::lists_the_golden_object", "batch-table::listing_is_stable",
                 "batch-table::opens_what_it_lists", "batch-table::missing_is_a_source_error",
                 "meter-readings::ships_a_golden_fixture", "no_plugin_is_broken"):
        assert re.search(rf"tallyflow-conformance::{name} PASSED", ran.stdout), name


def test_the_plugin_repository_passes_the_shipped_suite(repo: tuple[Path, Path]) -> None:
    """Without a database: the checks of the source and the mapping that need none pass, the
    others are skipped, saying why."""
    ran = _pytest(*repo, "-v")
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    assert f"{CONFORMANCE_CHECKS - DATABASE_CHECKS + OWN_TESTS} passed, {DATABASE_CHECKS} " \
        "skipped" in ran.stdout, ran.stdout[-3000:]
    _passed(ran)
    assert "needs PostgreSQL: set TALLYFLOW_DATABASE_URL" in ran.stdout


@pytest.mark.slow  # a scratch database migrated in a fresh process: about 15 s of the 30
def test_the_plugin_repository_passes_the_shipped_suite_through_the_loader(
    repo: tuple[Path, Path], database_url: str
) -> None:
    ran = _pytest(*repo, "-v", TALLYFLOW_DATABASE_URL=database_url)
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    assert f"{CONFORMANCE_CHECKS + OWN_TESTS} passed" in ran.stdout, ran.stdout[-3000:]
    _passed(ran)
    for name in ("batch-table::ingests_the_golden_batch", "batch-table::reingest",
                 "meter-readings::ingests_its_golden_records"):
        assert re.search(rf"tallyflow-conformance::{name} PASSED", ran.stdout), name


def test_a_broken_source_fails_the_suite_saying_why(repo: tuple[Path, Path]) -> None:
    """Versions that change at every listing: the suite fails, naming the check and the rule;
    without a database the checks that need one are skipped, saying so."""
    ran = _pytest(*repo, BATCHES_PLUGIN_BREAK="versions")
    assert ran.returncode == 1, ran.stdout[-3000:]
    assert "FAILED tallyflow-conformance::batch-table::listing_is_stable" in ran.stdout
    # the repository's own test of the same check, through the fixture, fails as well
    assert "FAILED tests/test_batches.py::test_listing_is_stable_through_the_fixture" \
        in ran.stdout
    assert "listing twice gave other objects or versions" in ran.stdout
    assert "a version must change only when the object's bytes do" in ran.stdout
    assert "2 failed, 6 passed, 3 skipped" in ran.stdout, ran.stdout[-3000:]


def test_without_the_flag_the_suite_collects_nothing(repo: tuple[Path, Path]) -> None:
    copy, site = repo
    environ = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{PROJECT}"}
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p",
         "tallyflow.testing.conformance", "--collect-only", "-q"],
        cwd=copy, env=environ, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout[-2000:]
    assert "tallyflow-conformance" not in ran.stdout
    assert f"{OWN_TESTS} tests collected" in ran.stdout


def test_a_name_nobody_registers_fails_saying_what_is(repo: tuple[Path, Path]) -> None:
    ran = _pytest(*repo, "--tallyflow-source", "batch-tabel")
    assert ran.returncode == 1, ran.stdout[-3000:]
    assert "FAILED tallyflow-conformance::batch-tabel" in ran.stdout
    assert "'batch-tabel' is not a registered source or mapping; registered: sources" \
        in ran.stdout and "'batch-table'" in ran.stdout
