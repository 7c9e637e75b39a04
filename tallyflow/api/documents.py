"""Catalog writes of the API: a Lago document applied as ``tallyflow apply`` applies a file.

Every write goes through ``tasks.catalog.apply_documents``: the validation and the single
all-or-nothing transaction of ``tallyflow apply``, so a body the API accepts is a file
``apply`` accepts, and ``tallyflow catalog export`` shows the result. The database is the
catalog: files and the API both write it; ``apply`` changes only what its files name.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from tallyflow.api.lago import LagoError, invalid, not_found
from tallyflow.models.catalog import WALLET, CatalogError
from tallyflow.tasks.catalog import LoadedDocument, apply_documents, plan_deleted, stored_document

SOURCE = "request"  # the "file" an API document is reported from


def document_of(body: Any, kind: str) -> dict[str, Any]:
    """The document of ``{kind: {...}}``: 400 without it, 422 for any other top-level key."""
    if not isinstance(body, dict) or not isinstance(body.get(kind), dict):
        raise LagoError(400, "missing_parameter", {kind: ["value_is_mandatory"]})
    unknown = sorted(set(body) - {kind})
    if unknown:
        raise invalid({name: ["unknown_field"] for name in unknown})
    return dict(body[kind])


def error_details(kind: str, errors: list[CatalogError]) -> dict[str, list[str]]:
    """Lago's ``error_details`` from apply's errors: ``{json.path: [message]}`` (the path
    inside the object; other documents' paths are kept whole)."""
    details: dict[str, list[str]] = {}
    for error in errors:
        path = error.path.removeprefix(f"{kind}.") if error.path != kind else kind
        details.setdefault(path or kind, []).append(error.message)
    return details


def apply_one(engine: Engine, kind: str, document: dict[str, Any]) -> None:
    """Apply one Lago document as ``tallyflow apply`` would; 422 with every error."""
    from tallyflow.tasks.wallets import open_catalog_wallets

    result = apply_documents(engine, [LoadedDocument(SOURCE, 0, {kind: document})])
    if not result.ok:
        raise invalid(error_details(kind, result.errors))
    if kind == WALLET:
        open_catalog_wallets(engine)  # as `tallyflow apply` does: granted credits at once


def stored(engine: Engine, table: str, column: str, key: Any) -> dict[str, Any]:
    """The stored document of the row with this key; 404 ``<kind>_not_found``."""
    found = stored_document(engine, table, column, key)
    if found is None:
        raise not_found(table.removesuffix("s") if table != "taxes" else "tax")
    return found[1]


def check_plan_live(engine: Engine, code: Any) -> None:
    """A subscription may not be created on a soft-deleted plan."""
    if plan_deleted(engine, code):
        raise invalid({"plan_code": ["plan_not_found"]})
