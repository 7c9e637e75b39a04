"""The documentation site builds without a warning, and the README stays a front page."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).parents[2]
README_LINES = 250


def test_the_readme_is_a_front_page() -> None:
    lines = (PROJECT / "README.md").read_text().splitlines()
    assert len(lines) <= README_LINES, f"README.md has {len(lines)} lines: move reference to docs/"


def test_the_site_builds_strict_without_a_warning(tmp_path: Path) -> None:
    """`make docs`: mkdocs-material, --strict (a link to a missing page or anchor, a page left
    out of the navigation, fail it); and not one WARNING line either."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "site" / "ingest" / "index.html").is_file()


def test_every_guide_is_in_the_navigation() -> None:
    import yaml

    def pages(nav: object) -> set[str]:
        if isinstance(nav, str):
            return {nav}
        if isinstance(nav, list):
            return set().union(*(pages(item) for item in nav))
        if isinstance(nav, dict):
            return set().union(*(pages(item) for item in nav.values()))
        return set()

    config = yaml.safe_load((PROJECT / "mkdocs.yml").read_text())
    assert pages(config["nav"]) == {p.name for p in (PROJECT / "docs").glob("*.md")}


def _configuration_table(text: str) -> list[str]:
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def test_the_readme_and_operations_show_one_configuration() -> None:
    """The README's configuration table is the operations guide's, row for row."""
    readme = _configuration_table((PROJECT / "README.md").read_text())
    guide = _configuration_table((PROJECT / "docs" / "operations.md").read_text())
    assert readme and readme == guide
