"""Install a plugin package as pip would, for what Tallyflow reads of it: a dist-info with its
entry points next to the importable package, in a folder put on ``PYTHONPATH`` (nothing is
left in the venv, and no build backend or network is needed)."""

from __future__ import annotations

import tomllib
from pathlib import Path


def install(site: Path, package: Path) -> None:
    """``package``: a project folder (pyproject.toml and its package folders)."""
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    name = project["name"].replace("-", "_")
    info = site / f"{name}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = []
    for group, points in project.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {value}" for key, value in points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for item in package.iterdir():
        if item.is_dir() and (item / "__init__.py").is_file():
            (site / item.name).symlink_to(item, target_is_directory=True)
