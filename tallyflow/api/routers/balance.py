"""A balance a gateway can ask on every request: ``GET /api/v1/tallyflow/customers/{id}/balance``
(docs/architecture.md §19 and §22, docs/wallets.md).

Served from ``running_usage`` (kept by ``tallyflow wallets refresh-balances``), never by
rating the period on the request: one query, a few indexed rows, and none at all while the
app's ``BalanceCache`` holds the customer's answer (at most ``balance_cache_seconds``, 0.5 s,
old). ``allowed``: the ongoing balance covers the usage so far, with
``TALLYFLOW_BALANCE_OVERDRAFT_CENTS``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Engine

from tallyflow.api.balances import BalanceCache
from tallyflow.api.deps import AUTH, get_engine
from tallyflow.api.keys import KeyCache
from tallyflow.api.lago import LagoJSON, not_found
from tallyflow.models.lago.results import CustomerBalance
from tallyflow.tasks.wallets import WalletError

router = APIRouter(tags=["tallyflow"])
_HEAD, _TAIL = "/api/v1/tallyflow/customers/", "/balance"


@router.get("/api/v1/tallyflow/customers/{external_customer_id}/balance", dependencies=AUTH)
async def balance(external_customer_id: str, request: Request,
                  engine: Engine = Depends(get_engine)) -> LagoJSON:
    """The customer's running balance and whether usage may go on (``allowed``)."""
    balances: BalanceCache = request.app.state.balances
    answer = await balances.get(engine, external_customer_id)
    if isinstance(answer, WalletError):
        raise not_found("customer")
    return LagoJSON({"balance": answer})


class BalanceFastPath:
    """ASGI middleware: a balance read whose key and answer the app's caches hold, answered
    before FastAPI's routing (no thread, no query: docs/architecture.md §22); any other
    request goes on to the routes unchanged."""

    def __init__(self, app: Any, keys: KeyCache, balances: BalanceCache) -> None:
        self.app, self.keys, self.balances = app, keys, balances

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        answer = self._cached(scope) if scope["type"] == "http" else None
        if answer is None:
            await self.app(scope, receive, send)
            return
        await LagoJSON({"balance": answer})(scope, receive, send)

    def _cached(self, scope: Any) -> CustomerBalance | None:
        path: str = scope["path"]
        if scope["method"] != "GET" or not path.startswith(_HEAD) or not path.endswith(_TAIL):
            return None
        customer = path[len(_HEAD):-len(_TAIL)]
        if not customer or "/" in customer:
            return None
        header = dict(reversed(scope["headers"])).get(b"authorization", b"").decode("latin-1")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip() or self.keys.get(key.strip()) is None:
            return None
        answer = self.balances.fresh(customer)
        return answer if isinstance(answer, dict) else None  # an unknown customer: the route
