"""Lago's catalog routes of one kind: list and get (reads), create (POST) and change (PUT).

- ``POST`` of an object whose key exists answers 422 ``value_already_exist`` (Lago's), except
  customers, which Lago's POST creates or updates (only the keys sent), and subscriptions,
  where it is Lago's plan change.
- ``PUT`` sets only the body's fields in the stored document (top-level fields; a given
  ``charges`` list is the plan's charges) and applies the result; the key cannot change.

The resources' routers (billable_metrics, plans, customers, subscriptions, taxes) build on
this one and add what is theirs (a plan's DELETE, a subscription's terminate).
"""

from __future__ import annotations

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
from tallyflow.api.documents import (
    apply_one,
    check_plan_live,
    document_of,
    merged,
    plan_change,
    plan_input,
    stored,
)
from tallyflow.api.lago import INVALID, LagoError, LagoJSON, invalid, page_args, paginated
from tallyflow.api.objects import CatalogKind, catalog_list, catalog_one
from tallyflow.api.schemas import document_request, query_parameters, request_body
from tallyflow.models.catalog import PLAN, SUBSCRIPTION
from tallyflow.tasks.catalog import key_exists


def catalog_router(kind: CatalogKind, *, upsert: bool = False) -> APIRouter:
    """The four routes of one kind (``upsert``: POST of an existing key changes it)."""
    router = APIRouter(prefix=f"/api/v1/{kind.path}", tags=["catalog"], dependencies=AUTH)
    _reads(router, kind)
    _writes(router, kind, upsert)
    return router


def _reads(router: APIRouter, kind: CatalogKind) -> None:
    filters = query_parameters({name: None for name in kind.query.filters},
                               {name: kind.allowed.get(name, ()) for name in kind.query.lists})

    @router.get("", name=f"list_{kind.many}", openapi_extra=filters)
    def list_objects(request: Request, paging: Paging = Depends(page_params),
                     engine: Engine = Depends(get_engine)) -> LagoJSON:
        lists = [*kind.query.lists, *(f"{name}[]" for name in kind.query.lists)]
        only_params(request, (*kind.query.filters, *lists))
        page, per_page = page_args(paging.page, paging.per_page)
        where = {k: v for k, v in request.query_params.items() if k in kind.query.filters}
        rows, total = catalog_list(engine, kind, where, page, per_page, _any_of(request, kind))
        return LagoJSON(paginated(kind.many, rows, page, per_page, total))

    @router.get("/{key}", name=f"get_{kind.one}")
    def get_object(request: Request, key: str,
                   engine: Engine = Depends(get_engine)) -> LagoJSON:
        only_params(request)
        return LagoJSON({kind.one: catalog_one(engine, kind, key)})


def _any_of(request: Request, kind: CatalogKind) -> dict[str, list[str]]:
    """The list filters' values (``status[]=a&status[]=b``, or ``status=a``), else the kind's
    defaults; a value Lago does not have is refused by name."""
    chosen: dict[str, list[str]] = {}
    for name in kind.query.lists:
        given = [*request.query_params.getlist(name),
                 *request.query_params.getlist(f"{name}[]")]
        if any(v not in kind.allowed.get(name, (v,)) for v in given):
            raise invalid({name: [INVALID]})
        values = given or list(kind.defaults.get(name, ()))
        if values:
            chosen[name] = values
    return chosen


def _writes(router: APIRouter, kind: CatalogKind, upsert: bool) -> None:
    body_schema = request_body(document_request(kind.one))

    @router.post("", name=f"create_{kind.one}", openapi_extra=body_schema)
    async def create(body: Any = Depends(document_body),
                     engine: Engine = Depends(get_engine)) -> LagoJSON:
        document = document_of(body, kind.one)
        return await run_in_threadpool(_create, engine, kind, upsert, document)

    @router.put("/{key}", name=f"update_{kind.one}", openapi_extra=body_schema)
    async def update(key: str, body: Any = Depends(document_body),
                     engine: Engine = Depends(get_engine)) -> LagoJSON:
        changes = document_of(body, kind.one)
        return await run_in_threadpool(_update, engine, kind, key, changes)


def _create(engine: Engine, kind: CatalogKind, upsert: bool,
            document: dict[str, Any]) -> LagoJSON:
    """Lago's POST: a new object; for customers (``upsert``) an existing one with only the
    keys sent changed; for subscriptions an existing external_id is a plan change."""
    key = document.get(kind.key)
    exists = isinstance(key, str) and key_exists(engine, kind.table, kind.key, key)
    if kind.one == SUBSCRIPTION:
        check_plan_live(engine, document.get("plan_code"))
        if exists and plan_change(engine, document):
            return LagoJSON({kind.one: catalog_one(engine, kind, str(key))})
        exists = False  # canceled before it started: subscribed again, from this document
    elif exists and not upsert:
        raise invalid({kind.key: ["value_already_exist"]})
    elif exists and "deleted_at" in stored(engine, kind.table, kind.key, key):
        # a deleted customer keeps its row (and so its external_id) for its ledger
        raise LagoError(422, "validation_errors", {kind.key: ["value_already_exist"]},
                        extra={"tallyflow_messages": {kind.key: [
                            "this customer was deleted; its external_id stays taken"]}})
    if kind.one == PLAN:
        document = plan_input(engine, document)
    document = merged(stored(engine, kind.table, kind.key, key) if exists else {}, document)
    apply_one(engine, kind.one, document)
    answer = catalog_one(engine, kind, str(key))
    if answer.get("status") == "canceled":  # apply subscribes again only on a change
        raise LagoError(422, "validation_errors", {"external_id": ["value_already_exist"]},
                        extra={"tallyflow_messages": {"external_id": [
                            "this subscription was canceled with this very document: change"
                            " it (its subscription_at) to subscribe again"]}})
    return LagoJSON({kind.one: answer})


def _update(engine: Engine, kind: CatalogKind, key: str, changes: dict[str, Any]) -> LagoJSON:
    """Lago's PUT: only the keys sent change (a given ``charges`` list is the plan's
    charges: the ones with an ``id`` of this plan's, the others new)."""
    catalog_one(engine, kind, key)  # 404 when unknown (or deleted)
    document = stored(engine, kind.table, kind.key, key)
    if changes.get(kind.key, key) != key:
        raise invalid({kind.key: ["cannot_be_changed"]})
    if kind.one == SUBSCRIPTION and "plan_code" in changes:
        check_plan_live(engine, changes["plan_code"])
    if kind.one == PLAN:
        changes = plan_input(engine, changes)
    apply_one(engine, kind.one, merged(document, changes))
    return LagoJSON({kind.one: catalog_one(engine, kind, key)})
