"""Catalog I/O: read files, compare with the database, apply in one transaction, export.

The rules are ``tallyflow.models.catalog``; how an apply works: ``tallyflow.tasks.catalog.apply``.
"""

from tallyflow.tasks.catalog.apply import ApplyResult, Ids, apply_catalog, apply_documents
from tallyflow.tasks.catalog.coupons import (
    APPLIED_FILTERS,
    CouponRefused,
    applied_coupon_object,
    applied_coupon_row,
    applied_coupons_page,
    apply_coupon,
    coupon_rows,
    number_text,
    terminate_applied_coupon,
    terminate_coupon,
)
from tallyflow.tasks.catalog.export import EXPORT_FILES, export_catalog, write_catalog
from tallyflow.tasks.catalog.files import CATALOG_SUFFIXES, LoadedDocument, load_documents
from tallyflow.tasks.catalog.plan_versions import finalized_versions, plan_history
from tallyflow.tasks.catalog.reads import (
    CatalogQuery,
    catalog_page,
    catalog_row,
    customer_deleted,
    customer_id,
    customer_relations,
    customers_by_external_id,
    key_exists,
    metric_codes,
    plan_deleted,
    soft_delete_add_on,
    soft_delete_customer,
    soft_delete_plan,
    stored_document,
    subscription_owners,
    waiting_plan,
)

__all__ = [
    "APPLIED_FILTERS",
    "CouponRefused",
    "applied_coupon_object",
    "applied_coupon_row",
    "coupon_rows",
    "number_text",
    "applied_coupons_page",
    "apply_coupon",
    "terminate_applied_coupon",
    "terminate_coupon",
    "CATALOG_SUFFIXES",
    "EXPORT_FILES",
    "ApplyResult",
    "CatalogQuery",
    "Ids",
    "LoadedDocument",
    "apply_catalog",
    "apply_documents",
    "catalog_page",
    "catalog_row",
    "customer_deleted",
    "customer_id",
    "customer_relations",
    "customers_by_external_id",
    "export_catalog",
    "finalized_versions",
    "key_exists",
    "load_documents",
    "metric_codes",
    "plan_deleted",
    "plan_history",
    "soft_delete_add_on",
    "soft_delete_customer",
    "soft_delete_plan",
    "stored_document",
    "subscription_owners",
    "waiting_plan",
    "write_catalog",
]
