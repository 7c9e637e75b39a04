"""Catalog issues: every problem of an apply, with its file and JSON path.

Collected, never raised one at a time: a person fixing a catalog wants the whole list.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

Loc = tuple[str | int, ...]


class Issue(NamedTuple):
    """One problem inside one document: where (a JSON path as a tuple) and why."""

    loc: Loc
    message: str


@dataclass(frozen=True)
class CatalogError:
    """One problem of an apply, as people read it: ``file: json.path: reason``."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "path": self.path, "message": self.message}


class CatalogValidationError(ValueError):
    """Raised by helpers that cannot return partial results; carries every error found."""

    def __init__(self, errors: Sequence[CatalogError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


def format_path(loc: Iterable[str | int]) -> str:
    """``("plan", "charges", 0, "properties", "amount")`` ->
    ``plan.charges[0].properties.amount``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "."
