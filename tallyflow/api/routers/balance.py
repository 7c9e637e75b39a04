"""A balance a gateway can ask on every request: ``GET /api/v1/tallyflow/customers/{id}/balance``
(docs/architecture.md §19, docs/wallets.md).

Served from ``running_usage`` (kept by ``tallyflow wallets refresh-balances``), never by
rating the period on the request: one query, a few indexed rows. ``allowed``: the ongoing
balance covers the usage so far, with ``TALLYFLOW_BALANCE_OVERDRAFT_CENTS``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy import Engine

from tallyflow.api.deps import AUTH, get_engine
from tallyflow.api.lago import LagoJSON, not_found
from tallyflow.infra.settings import get_settings
from tallyflow.tasks.wallets import WalletError, customer_balance

router = APIRouter(tags=["tallyflow"])


@router.get("/api/v1/tallyflow/customers/{external_customer_id}/balance", dependencies=AUTH)
def balance(external_customer_id: str, engine: Engine = Depends(get_engine)) -> LagoJSON:
    """The customer's running balance and whether usage may go on (``allowed``)."""
    overdraft = get_settings().balance_overdraft_cents
    try:
        with engine.connect() as conn:
            answer = customer_balance(conn, external_customer_id, overdraft)
    except WalletError:
        raise not_found("customer") from None
    return LagoJSON({"balance": answer})
