"""Catalog I/O: read files, compare with the database, apply in one transaction, export.

The rules are ``tallyflow.models.catalog``; how an apply works: ``tallyflow.tasks.catalog.apply``.
"""

from tallyflow.tasks.catalog.apply import ApplyResult, Ids, apply_catalog, apply_documents
from tallyflow.tasks.catalog.export import EXPORT_FILES, export_catalog, write_catalog
from tallyflow.tasks.catalog.files import CATALOG_SUFFIXES, LoadedDocument, load_documents
from tallyflow.tasks.catalog.plan_versions import finalized_versions, plan_history

__all__ = [
    "finalized_versions",
    "plan_history",
    "ApplyResult",
    "CATALOG_SUFFIXES",
    "EXPORT_FILES",
    "Ids",
    "LoadedDocument",
    "apply_catalog",
    "apply_documents",
    "export_catalog",
    "load_documents",
    "write_catalog",
]
