"""Lago's ``/api/v1/customers``: list, get, create or update (Lago's POST upserts), change,
and DELETE (Lago's soft delete, ``Customers::DestroyService``).

DELETE does what Lago's ``Customers::TerminateRelationsService`` does, at once rather than in
a job: live subscriptions are terminated (a pending one canceled) through the subscription
lifecycle, applied coupons terminated, active wallets terminated (what is left voided, as
``DELETE /wallets/{id}``); then the customer is marked deleted and no longer listed or found.
Nothing is deleted: invoices, fees, credit notes and the wallet ledger keep naming the
customer's row (the ledger triggers forbid it anyway). docs/api.md "Deleting a customer".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Depends
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool

from tallyflow.api.deps import get_engine
from tallyflow.api.lago import LagoJSON, invalid, iso
from tallyflow.api.objects import CUSTOMERS, catalog_one, wallets_of
from tallyflow.api.routers.catalog import catalog_router

router = catalog_router(CUSTOMERS, upsert=True)

# The subscriptions still in force or still to start (terminated and canceled ones stay).
_LIVE_SUBSCRIPTIONS = text(
    "select s.external_id from subscriptions s join customers c on c.id = s.customer_id"
    " where c.external_id = :c and s.terminated_at is null"
    " and s.status in ('active', 'pending') order by s.id")
_ACTIVE_COUPONS = text(
    "select a.lago_id from applied_coupons a join customers c on c.id = a.customer_id"
    " where c.external_id = :c and a.status = 'active' order by a.id")
# The mark lives in the stored document (no column: the digest is left as it was, so
# applying the same document again changes nothing and the customer stays deleted).
_MARK = text(
    "update customers set document = document"
    " || jsonb_build_object('deleted_at', cast(:at as text)),"
    " updated_at = now() where external_id = :c and (document ->> 'deleted_at') is null")


@router.delete("/{external_id}")
async def delete_customer(external_id: str, engine: Engine = Depends(get_engine)) -> LagoJSON:
    """Lago's soft delete: relations ended, the customer hidden; 404 when unknown or already
    deleted (as Lago's ``find_by`` on kept customers). A rerun after a crash converges: each
    step skips what it already ended."""
    customer = catalog_one(engine, CUSTOMERS, external_id)
    return await run_in_threadpool(_delete, engine, external_id, customer)


def _delete(engine: Engine, external_id: str, customer: dict[str, Any]) -> LagoJSON:
    from tallyflow.api.routers.wallets import terminate_wallet
    from tallyflow.tasks.catalog import terminate_applied_coupon
    from tallyflow.tasks.subscriptions import LifecycleError, terminate_subscription

    now = datetime.now(UTC).replace(microsecond=0)
    with engine.connect() as conn:
        subscriptions = list(conn.execute(_LIVE_SUBSCRIPTIONS, {"c": external_id}).scalars())
    for subscription in subscriptions:
        try:
            terminate_subscription(engine, subscription, now=now)
        except LifecycleError as exc:
            raise invalid({"subscription": [exc.message]}) from exc
    with engine.begin() as conn:
        for lago_id in conn.execute(_ACTIVE_COUPONS, {"c": external_id}).scalars().all():
            terminate_applied_coupon(conn, str(lago_id), now)
    for wallet in wallets_of(engine, external_id):
        if wallet["status"] == "active":
            terminate_wallet(str(wallet["lago_id"]), engine)
    with engine.begin() as conn:
        conn.execute(_MARK, {"c": external_id, "at": iso(now)})
    return LagoJSON({"customer": {**customer, "deleted_at": iso(now)}})
