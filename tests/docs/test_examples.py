"""Every example of the README and of the guides in docs/ runs, so the documentation cannot rot.

Each page runs on its own: a fresh database on the test server, a scratch working directory
with copies of ``examples/`` and ``tasks/ingest/mappings/``, the venv's ``bin`` first on PATH, and a
scratch ``TALLYFLOW_HOME`` shared by the pages of this test process (one local Prefect server,
stopped at the end). The page's blocks run in order: its bash blocks in one ``bash`` session
with ``set -euo pipefail``, each python block in its own process, file blocks written where
they say. The convention is in docs/development.md, "Documentation and its examples", and in
``tests/docs/markdown_blocks.py``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.docs.markdown_blocks import Block, blocks, problems

PROJECT = Path(__file__).parents[2]
PAGES = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
# What the examples may refer to by a path relative to the repository's root.
COPIED = ("examples", "tasks/ingest/mappings")
TIMEOUT = 900


def _page_id(page: Path) -> str:
    return page.relative_to(PROJECT).as_posix()


def _runnable(page: Path) -> bool:
    return any(block.runs for block in blocks(page))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_the_page_keeps_the_convention(page: Path) -> None:
    assert problems(page) == []


def test_the_convention_is_checked(tmp_path: Path) -> None:
    """The checks can fail: a mark without a reason, a `console` block."""
    page = tmp_path / "page.md"
    page.write_text("<!-- not-runnable: -->\n```bash\nfalse\n```\n\n```console\n$ ls\n```\n"
                    "<!-- not-runnable: a server -->\n```bash\ntallyflow api\n```\n")
    assert problems(page) == [
        "page.md:2: not-runnable without a reason",
        "page.md:6: a 'console' block: write bash (or python), or mark it not-runnable with its "
        "reason",
    ]
    assert [block.runs for block in blocks(page)] == [False, False, False]


def _env(home: Path, database_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PREFECT_API_", "TALLYFLOW_", "PYTEST_", "COV_"))}
    env.update(
        TALLYFLOW_HOME=str(home), TALLYFLOW_DATABASE_URL=database_url,
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")])),
        NO_COLOR="1", COLUMNS="120",
    )
    return env


@pytest.fixture(scope="session")
def docs_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One TALLYFLOW_HOME for every page of this process: the local Prefect server that the
    first flow-running example starts is reused by the others, and stopped here."""
    home = tmp_path_factory.mktemp("docs-home")
    try:
        yield home
    finally:
        env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
        env.update(TALLYFLOW_HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
                   PYTHONPATH=str(PROJECT))
        subprocess.run([str(BIN / "tallyflow"), "prefect", "stop"], env=env, cwd=home,
                       capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


def _script(page_blocks: list[Block], staging: Path) -> str:
    """One bash script for the page: bash blocks inline, python blocks and files from
    ``staging``, each preceded by a marker naming where it comes from."""
    lines = ["set -euo pipefail"]
    for block in page_blocks:
        if block.file and block.not_runnable is None:
            staged = staging / f"{block.line}.file"
            staged.write_text(block.body)
            lines += [f"mkdir -p {shlex.quote(str(Path(block.file).parent))}",
                      f"cp {shlex.quote(str(staged))} {shlex.quote(block.file)}"]
        elif block.runs:
            lines.append(f"echo '::docs {block.where}' >&2")
            if block.lang == "bash":
                lines.append(block.body)
            else:
                staged = staging / f"{block.line}.py"
                staged.write_text(block.body)
                lines.append(f"{shlex.quote(sys.executable)} {shlex.quote(str(staged))}")
    lines.append("echo '::docs done' >&2")
    return "\n".join(lines) + "\n"


@pytest.mark.docs
@pytest.mark.parametrize("page", [page for page in PAGES if _runnable(page)], ids=_page_id)
def test_the_examples_run(page: Path, docs_home: Path, scratch_database: Callable[[], str],
                          tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for name in COPIED:
        shutil.copytree(PROJECT / name, work / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    staging = tmp_path / "blocks"
    staging.mkdir()
    script = staging / "page.sh"
    script.write_text(_script(blocks(page), staging))
    done = subprocess.run(["bash", str(script)], cwd=work,
                          env=_env(docs_home, scratch_database()), capture_output=True,
                          text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    markers = [line for line in done.stderr.splitlines() if line.startswith("::docs ")]
    if done.returncode != 0 or markers[-1:] != ["::docs done"]:
        where = markers[-1].removeprefix("::docs ") if markers else _page_id(page)
        pytest.fail(f"the example at {where} failed (exit {done.returncode}):\n"
                    f"--- stdout (end)\n{done.stdout[-3000:]}\n"
                    f"--- stderr (end)\n{done.stderr[-3000:]}", pytrace=False)
