"""Catalog writes of the Lago-compatible API: POST creates, PUT changes, DELETE ends.

Every write goes through ``tasks.catalog.apply_documents``: the validation and the single
all-or-nothing transaction of ``tallyflow apply``, so a body the API accepts is a file
``apply`` accepts, and ``tallyflow catalog export`` shows the result. The database is the
catalog: files and the API both write it; ``apply`` changes only what its files name.

- ``POST`` of an object whose key exists answers 422 ``value_already_exist`` (Lago's), except
  customers, which Lago's POST creates or updates.
- ``PUT`` merges the body's fields into the stored document (top-level fields; a given
  ``charges`` list replaces the plan's charges) and applies the result; the key cannot change.
- ``DELETE /plans/{code}`` soft-deletes a plan without live subscriptions;
  ``DELETE /wallets/{lago_id}`` terminates the wallet now (what is left is voided, as at its
  ``expiration_at``). ``DELETE /subscriptions/{external_id}`` (terminate) is wired where the
  subscription lifecycle lives (``tasks.lifecycle.terminate_subscription``), not here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from sqlalchemy import Engine, Text, cast, select, text
from starlette.concurrency import run_in_threadpool

from tallyflow.api import routes
from tallyflow.api.lago import LagoError, LagoJSON, invalid, not_found, read_json
from tallyflow.models import tables
from tallyflow.models.catalog import (
    BILLABLE_METRIC,
    CUSTOMER,
    PLAN,
    SUBSCRIPTION,
    TAX,
    WALLET,
    CatalogError,
    format_datetime,
    loads,
    wallet_code,
)
from tallyflow.tasks.catalog import LoadedDocument, apply_documents

SOURCE = "request"  # the "file" an API document is reported from


class Kind:
    def __init__(self, path: str, kind: str, key: str, upsert: bool = False) -> None:
        self.path, self.kind, self.key, self.upsert = path, kind, key, upsert
        self.spec = next(s for s in routes.CATALOG if s.one == kind)


KINDS = [
    Kind("billable_metrics", BILLABLE_METRIC, "code"),
    Kind("plans", PLAN, "code"),
    Kind("customers", CUSTOMER, "external_id", upsert=True),
    Kind("subscriptions", SUBSCRIPTION, "external_id"),
    Kind("taxes", TAX, "code"),
]


def _details(kind: str, errors: list[CatalogError]) -> dict[str, list[str]]:
    """Lago's ``error_details`` from apply's errors: ``{json.path: [message]}`` (the path
    inside the object; other documents' paths are kept whole)."""
    details: dict[str, list[str]] = {}
    for error in errors:
        path = error.path.removeprefix(f"{kind}.") if error.path != kind else kind
        details.setdefault(path or kind, []).append(error.message)
    return details


def apply_one(engine: Engine, kind: str, document: dict[str, Any]) -> None:
    """Apply one Lago document as ``tallyflow apply`` would; 422 with every error."""
    from tallyflow.tasks.wallets import open_catalog_wallets

    result = apply_documents(engine, [LoadedDocument(SOURCE, 0, {kind: document})])
    if not result.ok:
        raise invalid(_details(kind, result.errors))
    if kind == WALLET:
        open_catalog_wallets(engine)  # as `tallyflow apply` does: granted credits at once


def _body(body: Any, kind: str) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get(kind), dict):
        raise LagoError(400, "missing_parameter", {kind: ["value_is_mandatory"]})
    unknown = sorted(set(body) - {kind})
    if unknown:
        raise invalid({name: ["unknown_field"] for name in unknown})
    return dict(body[kind])


def _stored(engine: Engine, table: str, column: str, key: Any) -> tuple[int, dict[str, Any]]:
    rows = tables.metadata.tables[table]
    with engine.connect() as conn:
        row = conn.execute(
            select(rows.c.id, cast(rows.c.document, Text).label("document"))
            .where(rows.c[column] == key)
        ).first()
    if row is None:
        raise not_found(table.removesuffix("s") if table != "taxes" else "tax")
    return int(row.id), loads(row.document)


def _exists(engine: Engine, kind: Kind, key: str) -> bool:
    rows = tables.metadata.tables[kind.spec.table]
    with engine.connect() as conn:
        return conn.execute(select(rows.c.id).where(rows.c[kind.key] == key)).first() is not None


def _plan_live(engine: Engine, code: Any) -> None:
    """A subscription may not be created on a soft-deleted plan."""
    with engine.connect() as conn:
        deleted = conn.execute(text("select deleted_at is not null from plans where code = :c"),
                               {"c": code}).scalar()
    if deleted:
        raise invalid({"plan_code": ["plan_not_found"]})


def register(app: FastAPI, engine: Engine, deps: list[Any]) -> None:
    for kind in KINDS:
        _routes(app, engine, deps, kind)
    _wallet_routes(app, engine, deps)

    @app.delete("/api/v1/plans/{code}", tags=["catalog"], dependencies=deps)
    def delete_plan(code: str) -> LagoJSON:
        """Soft delete: kept for the subscriptions and invoices that name it, no longer
        listed. Refused while a subscription on it is live (terminate those first)."""
        plan = routes.catalog_one(engine, KINDS[1].spec, code)
        with engine.begin() as conn:
            live = conn.execute(
                text("select count(*) from subscriptions s join plans p on p.id = s.plan_id"
                     " where p.code = :c and s.terminated_at is null"), {"c": code},
            ).scalar_one()
            if live:
                raise invalid({"plan": ["has_active_subscriptions"]})
            conn.execute(text("update plans set deleted_at = now(), updated_at = now()"
                              " where code = :c and deleted_at is null"), {"c": code})
        return LagoJSON({"plan": {**plan, "deleted_at": routes.iso(datetime.now(UTC))}})


    @app.delete("/api/v1/subscriptions/{external_id}", tags=["catalog"], dependencies=deps)
    async def terminate_subscription(
        external_id: str, on_termination_invoice: str | None = None, status: str | None = None,
    ) -> LagoJSON:
        """Lago's terminate: now, with the termination invoice unless ``skip`` (as
        ``tallyflow subscriptions terminate``); a subscription that has not started is
        canceled (Lago asks for ``status=pending`` there: accepted, and not required)."""
        from tallyflow.tasks.subscriptions import LifecycleError
        from tallyflow.tasks.subscriptions import terminate_subscription as terminate

        if on_termination_invoice not in (None, "generate", "skip"):
            raise invalid({"on_termination_invoice": ["invalid_value"]})
        if status not in (None, "active", "pending"):
            raise invalid({"status": ["invalid_value"]})
        routes.catalog_one(engine, KINDS[3].spec, external_id)  # 404 when unknown

        def work() -> LagoJSON:
            try:
                terminate(engine, external_id, on_termination_invoice=on_termination_invoice)
            except LifecycleError as exc:
                raise invalid({"subscription": [exc.message]}) from exc
            return LagoJSON({"subscription": routes.catalog_one(engine, KINDS[3].spec,
                                                                external_id)})

        return await run_in_threadpool(work)


def _routes(app: FastAPI, engine: Engine, deps: list[Any], kind: Kind) -> None:
    def created(key: str) -> LagoJSON:
        return LagoJSON({kind.kind: routes.catalog_one(engine, kind.spec, key)})

    @app.post(f"/api/v1/{kind.path}", tags=["catalog"], dependencies=deps,
              name=f"create_{kind.kind}")
    async def create(request: Request) -> LagoJSON:
        document = _body(await read_json(request, routes.MAX_BODY), kind.kind)
        key = document.get(kind.key)

        def work() -> LagoJSON:
            if isinstance(key, str) and not kind.upsert and _exists(engine, kind, key):
                raise invalid({kind.key: ["value_already_exist"]})
            if kind.kind == SUBSCRIPTION:
                _plan_live(engine, document.get("plan_code"))
            apply_one(engine, kind.kind, document)
            return created(str(key))

        return await run_in_threadpool(work)

    @app.put(f"/api/v1/{kind.path}/{{key}}", tags=["catalog"], dependencies=deps,
             name=f"update_{kind.kind}")
    async def update(request: Request, key: str) -> LagoJSON:
        changes = _body(await read_json(request, routes.MAX_BODY), kind.kind)

        def work() -> LagoJSON:
            routes.catalog_one(engine, kind.spec, key)  # 404 when unknown (or deleted)
            _, stored = _stored(engine, kind.spec.table, kind.key, key)
            if changes.get(kind.key, key) != key:
                raise invalid({kind.key: ["cannot_be_changed"]})
            if kind.kind == SUBSCRIPTION and "plan_code" in changes:
                _plan_live(engine, changes["plan_code"])
            apply_one(engine, kind.kind, {**stored, **changes})
            return created(key)

        return await run_in_threadpool(work)


def _wallet_routes(app: FastAPI, engine: Engine, deps: list[Any]) -> None:
    def answer(lago_id: str) -> LagoJSON:
        return LagoJSON({"wallet": routes.wallet_by_id(engine, lago_id)})

    def wallet_id(customer: str, code: str) -> str:
        with engine.connect() as conn:
            found = conn.execute(
                text("select w.id from wallets w join customers c on c.id = w.customer_id"
                     " where c.external_id = :c and w.code = :w"), {"c": customer, "w": code},
            ).scalar()
        return "" if found is None else str(found)

    @app.post("/api/v1/wallets", tags=["wallets"], dependencies=deps)
    async def create_wallet(request: Request) -> LagoJSON:
        document = _body(await read_json(request, routes.MAX_BODY), WALLET)

        def work() -> LagoJSON:
            customer = document.get("external_customer_id")
            code = document.get("code") or wallet_code(document.get("name"))
            if isinstance(customer, str) and wallet_id(customer, code):
                raise invalid({"code": ["value_already_exist"]})
            apply_one(engine, WALLET, document)
            return answer(wallet_id(str(customer), code))

        return await run_in_threadpool(work)

    def change(lago_id: str, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        if not lago_id.isdigit():
            raise not_found("wallet")
        _, stored = _stored(engine, "wallets", "id", int(lago_id))
        apply_one(engine, WALLET, edit(stored))

    @app.put("/api/v1/wallets/{lago_id}", tags=["wallets"], dependencies=deps)
    async def update_wallet(request: Request, lago_id: str) -> LagoJSON:
        changes = _body(await read_json(request, routes.MAX_BODY), WALLET)

        def work() -> LagoJSON:
            def edit(stored: dict[str, Any]) -> dict[str, Any]:
                for name in ("external_customer_id", "code"):
                    if name in changes and changes[name] != stored.get(name):
                        raise invalid({name: ["cannot_be_changed"]})
                return {**stored, **changes}

            change(lago_id, edit)
            return answer(lago_id)

        return await run_in_threadpool(work)

    @app.delete("/api/v1/wallets/{lago_id}", tags=["wallets"], dependencies=deps)
    def terminate_wallet(lago_id: str) -> LagoJSON:
        """Lago's terminate: the wallet ends now and what is left is voided (the same path
        as its ``expiration_at`` passing: one ``expiration`` transaction)."""
        from tallyflow.tasks.wallets import expire_wallets

        now = datetime.now(UTC).replace(microsecond=0)
        wallet = routes.wallet_by_id(engine, lago_id)
        if wallet["status"] != "active":
            return answer(lago_id)
        change(lago_id, lambda stored: {**stored, "expiration_at": format_datetime(now)})
        expire_wallets(engine, now)
        return answer(lago_id)
