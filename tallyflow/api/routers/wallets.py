"""Lago's wallets: ``/api/v1/wallets`` (list, get, create, change, terminate), a wallet's
transactions, and ``POST /api/v1/wallet_transactions`` (a top-up).

Wallets are read by ``tasks.wallets.wallet_overview`` (``tallyflow wallets show``), written
as catalog documents (``tallyflow apply``) and topped up by ``tasks.wallets.top_up``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from tallyflow.api.deps import (
    AUTH,
    Paging,
    document_body,
    get_engine,
    only_params,
    page_params,
)
from tallyflow.api.documents import apply_one, document_of, merged, stored
from tallyflow.api.lago import (
    INVALID,
    LagoError,
    LagoJSON,
    invalid,
    not_found,
    page_args,
    paginated,
    row_id,
)
from tallyflow.api.objects import (
    wallet_by_id,
    wallet_row,
    wallets_of,
)
from tallyflow.api.schemas import (
    TOP_UP_SUPPORTED,
    TOP_UP_UNSUPPORTED,
    WalletTransactionRequest,
    document_request,
    query_parameters,
    request_body,
)
from tallyflow.models.catalog import WALLET, format_datetime, wallet_code
from tallyflow.models.lago.resources import WalletTransaction
from tallyflow.models.rating.money import exact_number
from tallyflow.tasks.wallets import (
    customer_wallet_id,
    top_up_transactions,
    transaction_object,
    transactions_page,
)

router = APIRouter(prefix="/api/v1", tags=["wallets"], dependencies=AUTH)
# Lago's list filters of a wallet's transactions and their values
# (app/controllers/api/v1/wallet_transactions_controller.rb)
TRANSACTION_VALUES = {"status": ("pending", "settled", "failed"),
                      "transaction_type": ("inbound", "outbound"),
                      "transaction_status": ("purchased", "granted", "voided", "invoiced")}
_WALLET_BODY = request_body(document_request(WALLET))


@router.get("/wallets")
def list_wallets(request: Request, external_customer_id: str | None = None,
                 paging: Paging = Depends(page_params),
                 engine: Engine = Depends(get_engine)) -> LagoJSON:
    only_params(request, ("external_customer_id",))
    if not external_customer_id:
        raise invalid({"external_customer_id": ["value_is_mandatory"]})
    page, per_page = page_args(paging.page, paging.per_page)
    # a customer has a handful of wallets: the overview's list, paged here
    return LagoJSON(paginated("wallets", wallets_of(engine, external_customer_id),
                              page, per_page))


@router.get("/wallets/{lago_id}")
def get_wallet(request: Request, lago_id: str, engine: Engine = Depends(get_engine)) -> LagoJSON:
    only_params(request)
    return LagoJSON({"wallet": wallet_by_id(engine, lago_id)})


@router.get("/wallets/{lago_id}/wallet_transactions",
            openapi_extra=query_parameters(TRANSACTION_VALUES))
def list_transactions(request: Request, lago_id: str, paging: Paging = Depends(page_params),
                      engine: Engine = Depends(get_engine)) -> LagoJSON:
    only_params(request, tuple(TRANSACTION_VALUES))
    page, per_page = page_args(paging.page, paging.per_page)
    filters = {k: v for k, v in request.query_params.items() if k in TRANSACTION_VALUES}
    wrong = sorted(k for k, v in filters.items() if v not in TRANSACTION_VALUES[k])
    if wrong:
        raise invalid({name: [INVALID] for name in wrong})
    wallet_id = wallet_row(engine, lago_id)["id"]
    rows, total = transactions_page(engine, wallet_id, page, per_page, filters)
    return LagoJSON(paginated("wallet_transactions", [transaction_object(r) for r in rows],
                              page, per_page, total))


@router.post("/wallet_transactions", openapi_extra=request_body(WalletTransactionRequest))
async def create_transaction(request: Request, body: Any = Depends(document_body),
                             engine: Engine = Depends(get_engine)) -> LagoJSON:
    """A top-up: paid credits (pending until paid, as in Lago) and granted credits
    (settled at once). With an ``Idempotency-Key`` header, a retry posts nothing more."""
    posted = await run_in_threadpool(top_up, engine, body,
                                     request.headers.get("idempotency-key"))
    return LagoJSON({"wallet_transactions": posted})


@router.post("/wallets", openapi_extra=_WALLET_BODY)
async def create_wallet(body: Any = Depends(document_body),
                        engine: Engine = Depends(get_engine)) -> LagoJSON:
    document = document_of(body, WALLET)
    return await run_in_threadpool(_create_wallet, engine, document)


@router.put("/wallets/{lago_id}", openapi_extra=_WALLET_BODY)
async def update_wallet(lago_id: str, body: Any = Depends(document_body),
                        engine: Engine = Depends(get_engine)) -> LagoJSON:
    changes = document_of(body, WALLET)

    def edit(document: dict[str, Any]) -> dict[str, Any]:
        for name in ("external_customer_id", "code"):
            if name in changes and changes[name] != document.get(name):
                raise invalid({name: ["cannot_be_changed"]})
        return merged(document, changes)

    def work() -> LagoJSON:
        _change(engine, lago_id, edit)
        return LagoJSON({"wallet": wallet_by_id(engine, lago_id)})

    return await run_in_threadpool(work)


@router.delete("/wallets/{lago_id}")
def terminate_wallet(lago_id: str, engine: Engine = Depends(get_engine)) -> LagoJSON:
    """Lago's terminate: the wallet ends now and what is left is voided (the same path
    as its ``expiration_at`` passing: one ``expiration`` transaction)."""
    from tallyflow.tasks.wallets import expire_wallets

    now = datetime.now(UTC).replace(microsecond=0)
    wallet = wallet_by_id(engine, lago_id)
    if wallet["status"] != "active":
        return LagoJSON({"wallet": wallet_by_id(engine, lago_id)})
    _change(engine, lago_id,
            lambda document: {**document, "expiration_at": format_datetime(now)})
    expire_wallets(engine, now)
    return LagoJSON({"wallet": wallet_by_id(engine, lago_id)})


def _wallet_id(engine: Engine, customer: str, code: str) -> str:
    found = customer_wallet_id(engine, customer, code)
    return "" if found is None else str(found)


def _create_wallet(engine: Engine, document: dict[str, Any]) -> LagoJSON:
    customer = document.get("external_customer_id")
    code = document.get("code") or wallet_code(document.get("name"))
    if isinstance(customer, str) and _wallet_id(engine, customer, code):
        raise invalid({"code": ["value_already_exist"]})
    apply_one(engine, WALLET, document)
    return LagoJSON({"wallet": wallet_by_id(engine, _wallet_id(engine, str(customer), code))})


def _change(engine: Engine, lago_id: str,
            edit: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    number = row_id(lago_id)
    if number is None:
        raise not_found("wallet")
    apply_one(engine, WALLET, edit(stored(engine, "wallets", "id", number)))


# ------------------------------------------------------------------------ top-ups


def _credits(value: Any, name: str, problems: dict[str, list[str]]) -> Decimal:
    if value is None:
        return Decimal(0)
    number = exact_number(value.strip() if isinstance(value, str) else value)
    if number is None or number < 0:
        problems[name] = ["value_is_invalid"]
        return Decimal(0)
    return number


def check_top_up(body: Any) -> tuple[str, Decimal, Decimal]:
    """Lago's ``{"wallet_transaction": {...}}`` -> (wallet_id, paid, granted); 400 without
    it, 422 with every faulty field (unknown, not supported when given, not a number)."""
    if not isinstance(body, dict) or set(body) != {"wallet_transaction"} or not isinstance(
            transaction := body.get("wallet_transaction"), dict):
        raise LagoError(400, "missing_parameter", {"wallet_transaction": ["value_is_mandatory"]})
    problems: dict[str, list[str]] = {}
    for name in sorted(set(transaction) - {*TOP_UP_SUPPORTED, *TOP_UP_UNSUPPORTED}):
        problems[name] = ["unknown_field"]
    for name in TOP_UP_UNSUPPORTED:
        if transaction.get(name) not in (None, False, [], {}):
            problems[name] = ["not_supported"]
    paid = _credits(transaction.get("paid_credits"), "paid_credits", problems)
    granted = _credits(transaction.get("granted_credits"), "granted_credits", problems)
    wallet_id = transaction.get("wallet_id")
    if not isinstance(wallet_id, str) or not wallet_id:
        problems["wallet_id"] = ["value_is_mandatory"]
    if problems:
        raise invalid(problems)
    assert isinstance(wallet_id, str)
    return wallet_id, paid, granted


def top_up(engine: Engine, body: Any, key: str | None) -> list[WalletTransaction]:
    from tallyflow.tasks.invoicing import issue_credit_invoices
    from tallyflow.tasks.wallets import WalletError
    from tallyflow.tasks.wallets import top_up as post_top_up

    wallet_id, paid, granted = check_top_up(body)
    wallet = wallet_row(engine, wallet_id)
    if wallet["status"] != "active":
        raise invalid({"wallet_id": ["wallet_is_terminated"]})
    if paid + granted <= 0:
        raise invalid({"paid_credits": [INVALID], "granted_credits": [INVALID]})
    try:
        done = post_top_up(engine, wallet["external_id"], paid, granted,
                           wallet_code=wallet["code"], key=f"api:{key}" if key else None)
    except WalletError as exc:
        raise LagoError(422, "validation_errors", {"wallet_transaction": [str(exc)]}) from None
    # Lago bills paid credits at once (wallet_transactions/create_from_params_service.rb ->
    # BillPaidCreditJob -> invoices/paid_credit_service.rb): the credit invoice is issued now,
    # not at the next close. Once per ledger row (tasks/invoicing/credit.py), so a retry with
    # the same Idempotency-Key, or one after a crash here, issues it once.
    issue_credit_invoices(engine, [int(wallet["customer_id"])])
    return [transaction_object(r) for r in top_up_transactions(engine, done.idempotency_key)]
