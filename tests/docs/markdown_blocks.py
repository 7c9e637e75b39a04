"""The fenced blocks of a Markdown page, and what the documentation tests do with each.

The convention (docs/development.md, "Documentation and its examples"):

- ```` ```bash ```` and ```` ```python ```` blocks are examples: they are run;
- a block whose info string names a file (```` ```yaml file=openai_usage.yaml ````) is written to
  that path instead of being run;
- a block preceded by the line ``<!-- not-runnable: REASON -->`` is skipped, and the reason
  must be given;
- ``sh``, ``shell``, ``console`` and ``zsh`` blocks are refused (write ``bash``, or mark them),
  so that no shell example escapes the tests by its language tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RUN = ("bash", "python")
REFUSED = ("sh", "shell", "console", "zsh", "shell-session", "py", "python3")
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_MARK = re.compile(r"^<!--\s*not-runnable:(?P<reason>.*?)-->\s*$")
_FILE = re.compile(r"(?:^|\s)file=(?P<path>\S+)")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    info: str
    body: str
    not_runnable: str | None  # the reason given, "" when the marker has none; None: unmarked

    @property
    def file(self) -> str | None:
        found = _FILE.search(self.info)
        return found.group("path") if found else None

    @property
    def where(self) -> str:
        return f"{self.page.name}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.lang in RUN and self.file is None and self.not_runnable is None


def blocks(page: Path) -> list[Block]:
    """Every fenced block of the page, in order (CommonMark fences: ``` or ~~~, closed by a
    fence of the same character at least as long)."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence = opening.group("fence")
        info = opening.group("info").strip()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            closing = lines[i].strip()
            if closing.startswith(fence[0] * len(fence)) and not closing.strip(fence[0]):
                break
            body.append(lines[i])
            i += 1
        i += 1
        previous = start - 1
        while previous >= 0 and not lines[previous].strip():
            previous -= 1
        mark = _MARK.match(lines[previous].strip()) if previous >= 0 else None
        found.append(Block(
            page=page, line=start + 1, lang=info.split()[0].lower() if info else "", info=info,
            body="\n".join(body) + "\n",
            not_runnable=mark.group("reason").strip() if mark else None,
        ))
    return found


def problems(page: Path) -> list[str]:
    """What breaks the convention on a page: a mark without a reason, a mark on a block that
    would not run anyway, a shell block under another language tag."""
    found = []
    for block in blocks(page):
        if block.not_runnable == "":
            found.append(f"{block.where}: not-runnable without a reason")
        elif block.not_runnable is not None and (block.lang not in RUN or block.file):
            found.append(f"{block.where}: not-runnable on a block that is not an example "
                         f"({block.info!r})")
        if block.lang in REFUSED:
            found.append(f"{block.where}: a {block.lang!r} block: write bash (or python), or "
                         "mark it not-runnable with its reason")
    return found
