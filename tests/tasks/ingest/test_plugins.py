"""docs/ingest.md's "Adding a source", done as a reader would: its files are taken from the guide
itself, installed (a path-based distribution, so ``importlib.metadata`` sees the entry points
as for ``pip install``; nothing is left in the venv), and ingested through from the CLI, in a
fresh process as a user runs it. A broken plugin next to it is reported, not fatal."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tests.plugin_site import install

PROJECT = Path(__file__).parents[3]
GUIDE = PROJECT / "docs" / "ingest.md"
_BLOCK = re.compile(r"^```(\w+) file=(\S+)\n(.*?)^```$", re.S | re.M)


def guide_files() -> dict[str, str]:
    section = GUIDE.read_text().split("## Adding a source", 1)[1].split("\n## ", 1)[0]
    return {path: body for _lang, path, body in _BLOCK.findall(section)}


def _tallyflow(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    from prefect.settings import get_current_settings

    api = get_current_settings().api.url  # the session's test server: start no other
    assert api, "the Prefect test harness is running"
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{PROJECT}", "PREFECT_API_URL": api,
           "TALLYFLOW_HOME": str(site.parent / "home")}
    return subprocess.run([sys.executable, "-m", "tallyflow.cli", *args], env=env, cwd=PROJECT,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    files = guide_files()
    package = tmp_path / "tallyflow-manifest"
    for path, body in files.items():
        if path.startswith(("tallyflow_manifest/", "pyproject.toml")):
            target = package / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
    site = tmp_path / "site"
    install(site, package)
    # A second plugin whose module does not exist: reported, and everything else works.
    broken = site / "tallyflow_broken-0.1.dist-info"
    broken.mkdir()
    (broken / "METADATA").write_text("Metadata-Version: 2.1\nName: tallyflow-broken\n"
                                     "Version: 0.1\n")
    (broken / "entry_points.txt").write_text("[tallyflow.sources]\nbroken = no_such_module:X\n")
    return site


def test_the_guide_has_the_files_it_describes() -> None:
    assert set(guide_files()) == {
        "openai_usage.yaml", "tallyflow_manifest/__init__.py", "pyproject.toml",
        "tallyflow_manifest/openai_usage.golden.jsonl",
        "tallyflow_manifest/openai_usage.expected.json",
    }


def test_plugin_from_the_guide_lists_and_ingests_from_the_cli(
    engine: Engine, prefect_harness: None, site: Path, tmp_path: Path
) -> None:
    listed = _tallyflow(site, "sources", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    described = json.loads(listed.stdout)
    kinds = {s["kind"]: s for s in described["sources"]}
    assert kinds["manifest"]["origin"] == "tallyflow-manifest"
    assert [o["name"] for o in kinds["manifest"]["options"]] == ["manifest"]
    assert "openai-usage-coded" in {m["name"] for m in described["mappings"]}
    assert [(b["name"], b["error"].split(":")[0]) for b in described["broken"]] == [
        ("broken", "ModuleNotFoundError")
    ]

    exports = tmp_path / "exports"
    exports.mkdir()
    golden = site / "tallyflow_manifest" / "openai_usage.golden.jsonl"
    (exports / "day1.jsonl").write_bytes(golden.read_bytes())
    (exports / "manifest.json").write_text('{"day1.jsonl": "sha-1"}')
    ran = _tallyflow(site, "ingest", str(exports), "--source", "manifest", "--option",
                     "manifest=manifest.json", "--mapping", "openai-usage-coded", "--json")
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout.strip().splitlines()[-1])
    assert (summary["objects"], summary["accepted"], summary["rejected"]) == (1, 3, 1)
    assert "PluginWarning" in ran.stderr and "no_such_module" in ran.stderr
    with engine.connect() as conn:
        events = conn.execute(text(
            "select e.row_number, e.sub_index, e.transaction_id, o.source_kind,"
            " o.source_spec->>'mapping' from events e join ingest_objects o on o.id = e.object_id"
            " order by e.row_number, e.sub_index")).all()
        reject = conn.execute(text("select row_number, reason, raw from rejected_rows")).one()
    assert [tuple(e) for e in events] == [
        (1, 0, "u-1:input", "manifest", "openai-usage-coded"),
        (1, 1, "u-1:output", "manifest", "openai-usage-coded"),
        (2, 0, "u-2:input", "manifest", "openai-usage-coded"),
    ]
    assert reject[:2] == (3, "no_usage")
    assert reject[2] == golden.read_text().splitlines()[2]

    # An option the source does not have is refused by name, before any run.
    wrong = _tallyflow(site, "ingest", str(exports), "--source", "manifest", "--option",
                       "manifest_file=x.json")
    assert wrong.returncode == 1
    assert "error: source 'manifest' options: manifest_file: Extra inputs are not permitted" \
        in wrong.stderr
    # A generic setting the source does not use is refused too, never ignored.
    ignored = _tallyflow(site, "ingest", str(exports), "--source", "manifest", "--pattern", "*.x")
    assert ignored.returncode == 1
    assert "error: source 'manifest' does not take pattern (given '*.x')" in ignored.stderr


def test_installed_plugins_pass_the_conformance_suite(site: Path) -> None:
    """The conformance suite, run where the plugin is installed, runs its fixture too: every
    source check for the guide's source (its SourceError, its object's own URL for
    reingest-object) and both mapping checks for its mapping."""
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{PROJECT}"}
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/tasks/ingest/test_sources_conformance.py", "-k", "manifest or openai-usage-coded"],
        env=env, cwd=PROJECT, capture_output=True, text=True, timeout=600,
    )
    assert ran.returncode == 0, ran.stdout[-3000:]
    assert "8 passed" in ran.stdout, ran.stdout[-2000:]
