"""Export: the catalog as Lago-shaped files (plans as they were at a moment, with --at)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import (
    Engine,
)

from tallyflow.models.catalog import (
    ADD_ON,
    APPLIED_COUPON,
    BILLABLE_METRIC,
    BILLING_ENTITY,
    COUPON,
    CUSTOMER,
    KINDS,
    PLAN,
    SUBSCRIPTION,
    TAX,
    WALLET,
    dumps,
    loads,
)
from tallyflow.tasks.catalog import plan_versions
from tallyflow.tasks.catalog.files import CATALOG_SUFFIXES
from tallyflow.tasks.catalog.state import _keyed_documents

# The file name per kind when exporting to a folder.
EXPORT_FILES = {
    TAX: "taxes.json",
    BILLING_ENTITY: "billing_entities.json",
    BILLABLE_METRIC: "billable_metrics.json",
    PLAN: "plans.json",
    CUSTOMER: "customers.json",
    SUBSCRIPTION: "subscriptions.json",
    WALLET: "wallets.json",
    ADD_ON: "add_ons.json",
    COUPON: "coupons.json",
    APPLIED_COUPON: "applied_coupons.json",
}


def export_catalog(engine: Engine, at: datetime | None = None) -> list[dict[str, Any]]:
    """The stored catalog as Lago envelopes, in apply order; applying them changes nothing.

    ``at``: plans as they were at that moment (their version in force then; plans created
    later left out). Only plans are versioned: the other kinds are shown as they are now."""
    envelopes: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for kind in KINDS:
            if kind == PLAN and at is not None:
                envelopes.extend({kind: body} for body in plan_versions.plan_documents_at(conn, at))
                continue
            envelopes.extend(
                {kind: loads(document)} for _, _, _, document in _keyed_documents(conn, kind)
            )
    return envelopes


def write_catalog(envelopes: Sequence[dict[str, Any]], target: str | Path) -> list[Path]:
    """Write an export: to a ``.json``/``.yaml`` file as one list, or to a folder as one JSON
    file per kind (``billable_metrics.json``, ``plans.json``, ...). Returns the files written."""
    target = Path(target)
    if target.suffix.lower() in CATALOG_SUFFIXES:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_render(list(envelopes), target.suffix.lower()), encoding="utf-8")
        return [target]
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in KINDS:
        path = target / EXPORT_FILES[kind]
        path.write_text(_render([e for e in envelopes if kind in e], ".json"), encoding="utf-8")
        written.append(path)
    return written


def _render(envelopes: list[dict[str, Any]], suffix: str) -> str:
    if suffix == ".json":
        return dumps(envelopes, indent=2) + "\n"
    return yaml.dump(envelopes, Dumper=_CatalogYamlDumper, sort_keys=True, allow_unicode=True)


class _CatalogYamlDumper(yaml.SafeDumper):
    """Writes ``Decimal`` as a YAML number from its exact text."""


_CatalogYamlDumper.add_representer(
    Decimal,
    lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:float", format(value, "f")),
)
