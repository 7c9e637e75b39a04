"""Lago's ``/api/v1/customers``: list, get, create or update (Lago's POST upserts), change,
and DELETE (Lago's soft delete, ``Customers::DestroyService``).

DELETE does what Lago's ``Customers::TerminateRelationsService`` does, at once rather than in
a job: live subscriptions are terminated (a pending one canceled) through the subscription
lifecycle, applied coupons terminated, active wallets terminated (what is left voided, as
``DELETE /wallets/{id}``); then the customer is marked deleted and no longer listed or found.
Nothing is deleted: invoices, fees, credit notes and the wallet ledger keep naming the
customer's row (the ledger triggers forbid it anyway). docs/api.md "Known differences".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Depends
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from tallyflow.api.deps import get_engine
from tallyflow.api.documents import apply_one, stored
from tallyflow.api.lago import LagoJSON, invalid, iso
from tallyflow.api.objects import CUSTOMERS, catalog_one, wallets_of
from tallyflow.api.routers.catalog import catalog_router
from tallyflow.models.catalog import WALLET, format_datetime

router = catalog_router(CUSTOMERS, upsert=True)


@router.delete("/{external_id}")
async def delete_customer(external_id: str, engine: Engine = Depends(get_engine)) -> LagoJSON:
    """Lago's soft delete: relations ended, the customer hidden; 404 when unknown or already
    deleted (as Lago's ``find_by`` on kept customers). A rerun after a crash converges: each
    step skips what it already ended, and the mark comes last."""
    customer = catalog_one(engine, CUSTOMERS, external_id)
    return await run_in_threadpool(_delete, engine, external_id, customer)


def _delete(engine: Engine, external_id: str, customer: dict[str, Any]) -> LagoJSON:
    from tallyflow.tasks.catalog import (
        customer_relations,
        soft_delete_customer,
        terminate_applied_coupon,
    )
    from tallyflow.tasks.subscriptions import LifecycleError, terminate_subscription

    now = datetime.now(UTC).replace(microsecond=0)
    subscriptions, coupons = customer_relations(engine, external_id)
    for subscription in subscriptions:
        try:
            terminate_subscription(engine, subscription, now=now)
        except LifecycleError as exc:
            raise invalid({"subscription": [exc.message]}) from exc
    with engine.begin() as conn:
        for lago_id in coupons:
            terminate_applied_coupon(conn, lago_id, now)
    _terminate_wallets(engine, external_id, now)
    soft_delete_customer(engine, external_id, iso(now))
    return LagoJSON({"customer": {**customer, "deleted_at": iso(now)}})


def _terminate_wallets(engine: Engine, external_id: str, now: datetime) -> None:
    """Each active wallet ends now, the way ``DELETE /wallets/{id}`` ends one: its
    ``expiration_at`` set to now, then the expiry voids what is left (one transaction)."""
    from tallyflow.tasks.wallets import expire_wallets

    active = [int(w["lago_id"]) for w in wallets_of(engine, external_id)
              if w["status"] == "active"]
    for number in active:
        document = stored(engine, "wallets", "id", number)
        apply_one(engine, WALLET, {**document, "expiration_at": format_datetime(now)})
    if active:
        expire_wallets(engine, now)
