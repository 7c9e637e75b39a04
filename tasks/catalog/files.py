"""Reading catalog files: JSON and YAML, numbers as Decimal (never float), one error per bad
file."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from tallyflow.models.catalog import (
    KINDS,
    CatalogError,
    CatalogValidationError,
    loads,
)

CATALOG_SUFFIXES = (".json", ".yaml", ".yml")
_KIND_RANK = {kind: rank for rank, kind in enumerate(KINDS)}


class LoadedDocument(NamedTuple):
    """One envelope read from a file; ``position`` is its place among the file's documents."""

    file: str
    position: int
    envelope: Any


class _CatalogYamlLoader(yaml.SafeLoader):
    """SafeLoader that never produces floats or datetimes.

    Floats become ``Decimal`` (built from the text, so no digit is lost); timestamps stay text
    so the models see the same value whether the file is YAML or JSON.
    """


_CatalogYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
    text = str(loader.construct_scalar(node)).replace("_", "")
    try:
        number = Decimal(text)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        raise yaml.constructor.ConstructorError(
            None, None, f"{text!r} is not a finite number", node.start_mark
        )
    return number


def _read_file(path: Path) -> list[Any]:
    """The envelopes of one file: a JSON envelope or list, or YAML (one, a list, multi-doc)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = loads(text)
        except ValueError as exc:
            raise ValueError(f"invalid JSON: {exc}") from exc
        return data if isinstance(data, list) else [data]
    try:
        parts = list(yaml.load_all(text, Loader=_CatalogYamlLoader))
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid YAML: {exc}".replace("\n", " ")) from exc
    documents: list[Any] = []
    for part in parts:
        if part is None:  # an empty document, e.g. after a trailing '---'
            continue
        documents.extend(part if isinstance(part, list) else [part])
    return documents


def _catalog_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[CatalogError]]:
    files: list[Path] = []
    errors: list[CatalogError] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file()
                    and p.suffix.lower() in CATALOG_SUFFIXES
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        elif path.is_file():
            if path.suffix.lower() in CATALOG_SUFFIXES:
                files.append(path)
            else:
                errors.append(
                    CatalogError(
                        str(path), ".", "not a catalog file (expected .json, .yaml or .yml)"
                    )
                )
        else:
            errors.append(CatalogError(str(path), ".", "no such file or folder"))
    unique = list(dict.fromkeys(files))
    return unique, errors


def _kind_rank(envelope: Any) -> int:
    if isinstance(envelope, dict) and len(envelope) == 1:
        return _KIND_RANK.get(next(iter(envelope)), len(KINDS))
    return len(KINDS)


def _load(paths: Iterable[str | Path]) -> tuple[list[LoadedDocument], list[CatalogError]]:
    files, errors = _catalog_files(paths)
    documents: list[LoadedDocument] = []
    for path in files:
        try:
            envelopes = _read_file(path)
        except (OSError, ValueError) as exc:
            errors.append(CatalogError(str(path), ".", str(exc)))
            continue
        documents.extend(LoadedDocument(str(path), i, e) for i, e in enumerate(envelopes))
    file_order = {str(path): position for position, path in enumerate(files)}
    documents.sort(key=lambda d: (_kind_rank(d.envelope), file_order[d.file], d.position))
    return documents, errors


def load_documents(paths: Iterable[str | Path]) -> list[LoadedDocument]:
    """Read files and folders (recursively) of catalog documents, ordered for applying.

    Order: billable metrics, plans, customers, subscriptions, wallets (each kind refers only to
    earlier kinds), then by file and position. Raises ``CatalogValidationError`` listing every
    file that cannot be read; unknown envelopes are left for validation to report.
    """
    documents, errors = _load(paths)
    if errors:
        raise CatalogValidationError(errors)
    return documents


_CatalogYamlLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)
