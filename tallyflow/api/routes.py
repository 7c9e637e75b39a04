"""Read paths and wallet top-ups of the Lago-compatible API.

Every figure comes from the function the CLI prints it with: current usage from
``tasks.usage.current_usage`` (``tallyflow usage``), wallets from
``tasks.wallets.wallet_overview`` (``tallyflow wallets show``), invoices from
``tasks.invoice_documents`` (``tallyflow invoices list/show``). Query parameters Lago has and
Tallyflow does not are refused by name (422), never ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fastapi import Depends, FastAPI, Request
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool

from tallyflow.api.lago import (
    LagoError,
    LagoJSON,
    catalog_object,
    invalid,
    iso,
    not_found,
    page_args,
    paginated,
    read_json,
)
from tallyflow.models.rating.money import exact_number, from_minor
from tallyflow.models.wallets import cents_value, credits_text

PAGING = ("page", "per_page")
MAX_BODY = 1024 * 1024  # a catalog document or a top-up: far below this


def only_params(request: Request, allowed: Iterable[str]) -> None:
    unknown = sorted(set(request.query_params) - set(allowed) - set(PAGING))
    if unknown:
        raise invalid({name: ["not_supported"] for name in unknown})


def register(app: FastAPI, engine: Engine, auth: Callable[[Request], None]) -> None:
    deps = [Depends(auth)]

    # ---------------------------------------------------------------- catalog reads
    for spec in CATALOG:
        _catalog_routes(app, engine, deps, spec)

    # ---------------------------------------------------------------- current usage
    @app.get("/api/v1/customers/{external_customer_id}/current_usage", tags=["usage"],
             dependencies=deps)
    def current_usage(request: Request, external_customer_id: str,
                      external_subscription_id: str | None = None) -> LagoJSON:
        """Lago's `customer_usage`: the subscription's current period, every event so far (the
        same code as `tallyflow usage`)."""
        from tallyflow.tasks.usage import current_usage as usage_of

        only_params(request, ["external_subscription_id"])
        if not external_subscription_id:
            raise invalid({"external_subscription_id": ["value_is_mandatory"]})
        with engine.connect() as conn:
            owner = conn.execute(
                text("select c.external_id from subscriptions s join customers c"
                     " on c.id = s.customer_id where s.external_id = :s"),
                {"s": external_subscription_id},
            ).scalar()
            known = conn.execute(text("select 1 from customers where external_id = :c"),
                                 {"c": external_customer_id}).first()
        if known is None:
            raise not_found("customer")
        if owner != external_customer_id:
            raise not_found("subscription")
        try:
            usage = usage_of(engine, external_subscription_id, datetime.now(UTC))
        except LookupError:
            raise not_found("subscription") from None
        except ValueError as exc:  # the subscription has not started or has ended
            raise LagoError(405, "no_active_subscription", error=str(exc)) from None
        return LagoJSON({"customer_usage": _with_total_units(usage)})

    # ---------------------------------------------------------------- wallets
    @app.get("/api/v1/wallets", tags=["wallets"], dependencies=deps)
    def list_wallets(request: Request, external_customer_id: str | None = None,
                     page: int | None = None, per_page: int | None = None) -> LagoJSON:
        only_params(request, ["external_customer_id"])
        if not external_customer_id:
            raise invalid({"external_customer_id": ["value_is_mandatory"]})
        page, per_page = page_args(page, per_page)
        return LagoJSON(paginated("wallets", wallets_of(engine, external_customer_id),
                                  page, per_page))

    @app.get("/api/v1/wallets/{lago_id}", tags=["wallets"], dependencies=deps)
    def get_wallet(request: Request, lago_id: str) -> LagoJSON:
        only_params(request, [])
        return LagoJSON({"wallet": wallet_by_id(engine, lago_id)})

    @app.get("/api/v1/wallets/{lago_id}/wallet_transactions", tags=["wallets"],
             dependencies=deps)
    def list_transactions(request: Request, lago_id: str, page: int | None = None,
                          per_page: int | None = None) -> LagoJSON:
        only_params(request, [])
        page, per_page = page_args(page, per_page)
        wallet_id = _wallet_row(engine, lago_id)["id"]
        rows, total = transactions(engine, wallet_id, page, per_page)
        return LagoJSON(paginated("wallet_transactions", rows, page, per_page, total))

    @app.post("/api/v1/wallet_transactions", tags=["wallets"], dependencies=deps)
    async def create_transaction(request: Request) -> LagoJSON:
        """A top-up: paid credits (pending until paid, as in Lago) and granted credits
        (settled at once). With an ``Idempotency-Key`` header, a retry posts nothing more."""
        body = await read_json(request, MAX_BODY)
        posted = await run_in_threadpool(top_up, engine, body,
                                         request.headers.get("idempotency-key"))
        return LagoJSON({"wallet_transactions": posted})

    # ---------------------------------------------------------------- invoices
    @app.get("/api/v1/invoices", tags=["invoices"], dependencies=deps)
    def list_invoices(request: Request, external_customer_id: str | None = None,
                      status: str | None = None, page: int | None = None,
                      per_page: int | None = None) -> LagoJSON:
        from tallyflow.tasks.invoicing import list_invoices as invoices

        only_params(request, ["external_customer_id", "status"])
        page, per_page = page_args(page, per_page)
        if status is not None and status not in ("draft", "finalized"):
            raise invalid({"status": ["invalid_value"]})
        found = invoices(engine, customer=external_customer_id, status=status,
                         limit=1_000_000)
        body = paginated("invoices", found, page, per_page)
        body["invoices"] = lago_invoices(engine, body["invoices"])
        return LagoJSON(body)

    @app.get("/api/v1/invoices/{lago_id}", tags=["invoices"], dependencies=deps)
    def get_invoice(request: Request, lago_id: str) -> LagoJSON:
        from tallyflow.tasks.invoicing import find_invoice

        only_params(request, [])
        invoice = find_invoice(engine, lago_id)
        if invoice is None:
            raise not_found("invoice")
        return LagoJSON({"invoice": lago_invoices(engine, [invoice])[0]})

    from tallyflow.api import writes  # it builds on this module's catalog specs

    writes.register(app, engine, deps)


def lago_invoices(engine: Engine, invoices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The CLI's invoice objects with what Lago's clients require besides: the customer's
    ``created_at``, ``updated_at`` and ``applicable_timezone``, and a draft's ``number`` as
    an empty string (Tallyflow numbers an invoice when it is finalized)."""
    ids = sorted({i["customer"]["external_id"] for i in invoices})
    with engine.connect() as conn:
        customers = {r.external_id: r for r in conn.execute(
            text("select id, external_id, timezone, created_at, updated_at from customers"
                 " where external_id = any(:ids)"), {"ids": ids})}
    out = []
    for invoice in invoices:
        row = customers.get(invoice["customer"]["external_id"])
        extra = {} if row is None else {
            "lago_id": str(row.id), "created_at": iso(row.created_at),
            "updated_at": iso(row.updated_at), "applicable_timezone": row.timezone or "UTC"}
        out.append({**invoice, "number": invoice["number"] or "",
                    "customer": {**extra, **invoice["customer"]}})
    return out


def _with_total_units(usage: dict[str, Any]) -> dict[str, Any]:
    """Lago's ``total_aggregated_units`` beside ``units`` (the same figure here: Tallyflow
    does not bill the pricing units that make them differ in Lago)."""
    for charge in usage.get("charges_usage", []):
        charge.setdefault("total_aggregated_units", charge["units"])
        for item in charge.get("filters", []):
            item.setdefault("total_aggregated_units", item["units"])
        for group in charge.get("grouped_usage") or []:
            group.setdefault("total_aggregated_units", group["units"])
            for item in group.get("filters", []):
                item.setdefault("total_aggregated_units", item["units"])
    return usage


# ------------------------------------------------------------------------ catalog objects


class CatalogSpec:
    def __init__(self, path: str, one: str, many: str, table: str, key: str,
                 filters: dict[str, str] | None = None,
                 extra: Callable[[Any], dict[str, Any]] | None = None,
                 columns: str = "", join: str = "", hidden: str = "",
                 first: str = "t.id desc") -> None:
        self.path, self.one, self.many, self.table, self.key = path, one, many, table, key
        self.first = first  # which row a key names when several share it
        self.filters = filters or {}
        self.extra = extra or (lambda row: {})
        self.columns = columns
        self.hidden = hidden  # rows not shown (a soft-deleted plan)
        self.join = join


def _customer_extra(row: Any) -> dict[str, Any]:
    return {"applicable_timezone": row.timezone or "UTC", "sequential_id": row.id}


def _subscription_status(row: Any) -> str:
    """Lago's status now, from the row's moments (a downgrade's planned end is not yet a
    termination; its new row is pending until it starts)."""
    from tallyflow.models.lifecycle import effective_end, status_at

    if row.status == "canceled":
        return "canceled"
    starts = row.started_at or row.subscription_at
    return str(status_at(starts, effective_end(row.terminated_at, row.ending_at),
                         datetime.now(UTC)))


def _subscription_extra(row: Any) -> dict[str, Any]:
    return {
        "lago_customer_id": str(row.customer_id),
        "external_customer_id": row.customer_external_id,
        "plan_code": row.plan_code,
        "status": _subscription_status(row),
        "started_at": iso(row.subscription_at),
        "subscription_at": iso(row.subscription_at),
        # a canceled subscription never started: Lago gives canceled_at, no terminated_at
        "terminated_at": iso(row.terminated_at) if row.status != "canceled" else None,
        "canceled_at": iso(row.terminated_at) if row.status == "canceled" else None,
        "billing_time": row.billing_time,
    }


def _metric_extra(row: Any) -> dict[str, Any]:
    return {"filters": row.document.get("filters") or []}


CATALOG = [
    CatalogSpec("billable_metrics", "billable_metric", "billable_metrics", "billable_metrics",
                "code", extra=_metric_extra),
    CatalogSpec("plans", "plan", "plans", "plans", "code", hidden="t.deleted_at is not null"),
    CatalogSpec("customers", "customer", "customers", "customers", "external_id",
                extra=_customer_extra),
    CatalogSpec(
        "subscriptions", "subscription", "subscriptions", "subscriptions", "external_id",
        filters={"external_customer_id": "c.external_id", "plan_code": "p.code"},
        extra=_subscription_extra,
        columns=", c.external_id as customer_external_id, p.code as plan_code",
        join=" from subscriptions t join customers c on c.id = t.customer_id"
             " join plans p on p.id = t.plan_id",
        # the row in force now, as Lago's GET finds the active subscription (a plan change
        # keeps the external_id on several rows; a canceled one only when nothing else is)
        first="(t.status <> 'canceled') desc, (coalesce(t.started_at, t.subscription_at)"
              " <= now() and coalesce(least(t.terminated_at, t.ending_at), 'infinity')"
              " >= now()) desc, t.id desc",
    ),
    CatalogSpec("taxes", "tax", "taxes", "taxes", "code"),
]


def catalog_rows(engine: Engine, spec: CatalogSpec, where: dict[str, str],
                 page: int, per_page: int) -> tuple[list[dict[str, Any]], int]:
    source = spec.join or f" from {spec.table} t"
    clauses = [f"{spec.filters[name]} = :{name}" for name in where]
    if spec.hidden:
        clauses.append(f"not ({spec.hidden})")
    condition = (" where " + " and ".join(clauses)) if clauses else ""
    params: dict[str, Any] = {**where, "limit": per_page, "offset": (page - 1) * per_page}
    with engine.connect() as conn:
        total = int(conn.execute(text(f"select count(*){source}{condition}"), params).scalar_one())
        rows = conn.execute(
            text(f"select t.*{spec.columns}{source}{condition} order by t.id"
                 " limit :limit offset :offset"),
            params,
        ).all()
    return [_object(spec, row) for row in rows], total


def catalog_one(engine: Engine, spec: CatalogSpec, key: str) -> dict[str, Any]:
    source = spec.join or f" from {spec.table} t"
    with engine.connect() as conn:
        shown = f" and not ({spec.hidden})" if spec.hidden else ""
        row = conn.execute(
            # the latest row: a plan change keeps the external_id on a new subscription row
            text(f"select t.*{spec.columns}{source} where t.{spec.key} = :k{shown}"
                 f" order by {spec.first} limit 1"),
            {"k": key}).first()
    if row is None:
        raise not_found(spec.one)
    return _object(spec, row)


def _object(spec: CatalogSpec, row: Any) -> dict[str, Any]:
    return catalog_object(row.document, row.id, row.created_at, row.updated_at,
                          **spec.extra(row))


def _catalog_routes(app: FastAPI, engine: Engine, deps: list[Any], spec: CatalogSpec) -> None:
    @app.get(f"/api/v1/{spec.path}", tags=["catalog"], dependencies=deps,
             name=f"list_{spec.many}")
    def list_objects(request: Request, page: int | None = None,
                     per_page: int | None = None) -> LagoJSON:
        only_params(request, spec.filters)
        page, per_page = page_args(page, per_page)
        where = {k: v for k, v in request.query_params.items() if k in spec.filters}
        rows, total = catalog_rows(engine, spec, where, page, per_page)
        return LagoJSON(paginated(spec.many, rows, page, per_page, total))

    @app.get(f"/api/v1/{spec.path}/{{key}}", tags=["catalog"], dependencies=deps,
             name=f"get_{spec.one}")
    def get_object(request: Request, key: str) -> LagoJSON:
        only_params(request, [])
        return LagoJSON({spec.one: catalog_one(engine, spec, key)})


# ------------------------------------------------------------------------ wallets


def _wallet_row(engine: Engine, lago_id: str) -> dict[str, Any]:
    if not lago_id.isdigit():
        raise not_found("wallet")
    with engine.connect() as conn:
        row = conn.execute(
            text("select w.id, w.code, w.customer_id, w.status, c.external_id from wallets w"
                 " join customers c on c.id = w.customer_id where w.id = :w"),
            {"w": int(lago_id)},
        ).first()
    if row is None:
        raise not_found("wallet")
    return dict(row._mapping)


def wallets_of(engine: Engine, external_customer_id: str) -> list[dict[str, Any]]:
    from tallyflow.tasks.wallets import WalletError, wallet_overview

    try:
        overview = wallet_overview(engine, external_customer_id, limit=0)
    except WalletError:
        raise not_found("customer") from None
    with engine.connect() as conn:
        customer_id = conn.execute(text("select id from customers where external_id = :c"),
                                   {"c": external_customer_id}).scalar_one()
    return [{**w, "lago_customer_id": str(customer_id)} for w in overview["wallets"]]


def wallet_by_id(engine: Engine, lago_id: str) -> dict[str, Any]:
    row = _wallet_row(engine, lago_id)
    for wallet in wallets_of(engine, row["external_id"]):
        if wallet["lago_id"] == str(row["id"]):
            return wallet
    raise not_found("wallet")


_TRANSACTIONS = text(
    """
    select t.id, t.wallet_id, t.direction, t.status, t.source, t.credits, t.granted_credits,
           t.amount_cents, t.created_at, t.settled_at, w.currency, w.priority
    from wallet_transactions t join wallets w on w.id = t.wallet_id
    where t.wallet_id = :w order by t.id desc limit :limit offset :offset
    """
)


def transaction_object(row: Any) -> dict[str, Any]:
    from tallyflow.tasks.wallets import transaction_status

    return {
        "lago_id": str(row.id),
        "lago_wallet_id": str(row.wallet_id),
        "lago_invoice_id": None,
        "status": row.status,
        "source": row.source,
        "transaction_status": transaction_status(row.source, row.status, row.credits,
                                                  row.granted_credits),
        "transaction_type": row.direction,
        "amount": format(from_minor(row.amount_cents, row.currency), "f"),
        "amount_cents": cents_value(row.amount_cents),
        "credit_amount": credits_text(row.credits),
        "priority": row.priority,
        "settled_at": iso(row.settled_at),
        "created_at": iso(row.created_at),
    }


def transactions(engine: Engine, wallet_id: int, page: int,
                 per_page: int) -> tuple[list[dict[str, Any]], int]:
    with engine.connect() as conn:
        total = int(conn.execute(
            text("select count(*) from wallet_transactions where wallet_id = :w"),
            {"w": wallet_id}).scalar_one())
        rows = conn.execute(_TRANSACTIONS, {"w": wallet_id, "limit": per_page,
                                            "offset": (page - 1) * per_page}).all()
    return [transaction_object(r) for r in rows], total


# Lago's top-up fields Tallyflow does not carry out: refused when they hold a value.
_TOP_UP_UNSUPPORTED = ("voided_credits", "invoice_requires_successful_payment", "metadata",
                       "name", "ignore_paid_top_up_limits", "purchase_order_number",
                       "payment_method", "invoice_custom_section")


def _credits(value: Any, name: str, problems: dict[str, list[str]]) -> Decimal:
    if value is None:
        return Decimal(0)
    number = exact_number(value.strip() if isinstance(value, str) else value)
    if number is None or number < 0:
        problems[name] = ["invalid_value"]
        return Decimal(0)
    return number


def top_up(engine: Engine, body: Any, key: str | None) -> list[dict[str, Any]]:
    from tallyflow.tasks.wallets import WalletError
    from tallyflow.tasks.wallets import top_up as post_top_up

    if not isinstance(body, dict) or set(body) != {"wallet_transaction"} or not isinstance(
            transaction := body.get("wallet_transaction"), dict):
        raise LagoError(400, "missing_parameter", {"wallet_transaction": ["value_is_mandatory"]})
    problems: dict[str, list[str]] = {}
    known = {"wallet_id", "paid_credits", "granted_credits", *_TOP_UP_UNSUPPORTED}
    for name in sorted(set(transaction) - known):
        problems[name] = ["unknown_field"]
    for name in _TOP_UP_UNSUPPORTED:
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
    wallet = _wallet_row(engine, wallet_id)
    if wallet["status"] != "active":
        raise invalid({"wallet_id": ["wallet_is_terminated"]})
    if paid + granted <= 0:
        raise invalid({"paid_credits": ["invalid_value"], "granted_credits": ["invalid_value"]})
    try:
        done = post_top_up(engine, wallet["external_id"], paid, granted,
                           wallet_code=wallet["code"], key=f"api:{key}" if key else None)
    except WalletError as exc:
        raise LagoError(422, "validation_errors", {"wallet_transaction": [str(exc)]}) from None
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                select t.id, t.wallet_id, t.direction, t.status, t.source, t.credits,
                       t.granted_credits, t.amount_cents, t.created_at, t.settled_at,
                       w.currency, w.priority
                from wallet_transactions t join wallets w on w.id = t.wallet_id
                where t.idempotency_key in (:granted, :paid) order by t.id
                """
            ),
            {"granted": f"{done.idempotency_key}:granted", "paid": f"{done.idempotency_key}:paid"},
        ).all()
    return [transaction_object(r) for r in rows]
