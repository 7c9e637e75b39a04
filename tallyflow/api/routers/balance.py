"""A balance a gateway can ask on every request: ``GET /api/v1/tallyflow/customers/{id}/balance``
(docs/architecture.md §19 and §22, docs/wallets.md).

Served from ``running_usage`` (kept by ``tallyflow wallets refresh-balances``), never by
rating the period on the request: one query, a few indexed rows, and none at all while the
app's ``BalanceCache`` holds the customer's answer (at most ``balance_cache_seconds``, 0.5 s,
old). ``allowed``: the ongoing balance covers the usage so far, with
``TALLYFLOW_BALANCE_OVERDRAFT_CENTS``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Engine

from tallyflow.api.balances import BalanceCache
from tallyflow.api.deps import AUTH, get_engine
from tallyflow.api.lago import LagoJSON, not_found
from tallyflow.tasks.wallets import WalletError

router = APIRouter(tags=["tallyflow"])


@router.get("/api/v1/tallyflow/customers/{external_customer_id}/balance", dependencies=AUTH)
async def balance(external_customer_id: str, request: Request,
                  engine: Engine = Depends(get_engine)) -> LagoJSON:
    """The customer's running balance and whether usage may go on (``allowed``)."""
    balances: BalanceCache = request.app.state.balances
    answer = await balances.get(engine, external_customer_id)
    if isinstance(answer, WalletError):
        raise not_found("customer")
    return LagoJSON({"balance": answer})
