"""Catalog writes of the API: a Lago document applied as ``tallyflow apply`` applies a file.

Every write goes through ``tasks.catalog.apply_documents``: the validation and the single
all-or-nothing transaction of ``tallyflow apply``, so a body the API accepts is a file
``apply`` accepts, and ``tallyflow catalog export`` shows the result. The database is the
catalog: files and the API both write it; ``apply`` changes only what its files name.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Engine
from sqlalchemy.exc import DataError

from tallyflow.api.lago import INVALID, LagoError, invalid, not_found, row_id
from tallyflow.models.catalog import MODELS, PLAN, WALLET, CatalogError, Charge
from tallyflow.tasks.catalog import (
    LoadedDocument,
    apply_documents,
    key_exists,
    metric_codes,
    plan_deleted,
    stored_document,
    waiting_plan,
)

SOURCE = "request"  # the "file" an API document is reported from


# The envelope as Lago's own JavaScript template sends it (``createBillableMetric({
# billableMetric })``, docs.getlago.com templates/per-token): taken as Lago's key. Lago's
# ``params.expect(billable_metric: ...)`` answers it 400; the template is meant to work.
ENVELOPE_ALIASES = {"billable_metric": "billableMetric"}


def document_of(body: Any, kind: str) -> dict[str, Any]:
    """The document of ``{kind: {...}}``: 400 without it, 422 for any other top-level key."""
    alias = ENVELOPE_ALIASES.get(kind)
    if isinstance(body, dict) and alias in body and kind not in body:
        body = {kind: body[alias], **{k: v for k, v in body.items() if k != alias}}
    if not isinstance(body, dict) or not isinstance(body.get(kind), dict):
        raise LagoError(400, "missing_parameter", {kind: ["value_is_mandatory"]})
    unknown = sorted(set(body) - {kind})
    if unknown:
        raise invalid({name: ["unknown_field"] for name in unknown})
    return unset_nulls(kind, _numbers_as_text(kind, dict(body[kind])))


# Decimal fields Lago's API also takes as JSON numbers (its JavaScript template sends
# ``paid_credits: 100.0``). The API reads numbers exactly (``read_json``), so their text is
# the number sent; catalog files keep the rule of decimal strings.
_NUMBER_FIELDS = {WALLET: ("rate_amount", "paid_credits", "granted_credits")}


def _numbers_as_text(kind: str, document: dict[str, Any]) -> dict[str, Any]:
    for name in _NUMBER_FIELDS.get(kind, ()):
        value = document.get(name)
        if isinstance(value, int | Decimal) and not isinstance(value, bool):
            document[name] = format(Decimal(value), "f")
    return document


def _known(model: type[BaseModel]) -> set[str]:
    return {name for field, info in model.model_fields.items()
            for name in (field, info.alias) if name}


def unset_nulls(kind: str, document: dict[str, Any]) -> dict[str, Any]:
    """Lago's answers hold every key its schema has as ``null`` (``tallyflow.api.openapi``),
    and its clients send objects back as answered: a ``null`` for a field Tallyflow does not
    carry is that field unset, so it is dropped (a value there is still refused by name, as
    apply refuses it). A ``null`` for a field Tallyflow carries is kept (it clears it)."""
    model = MODELS.get(kind)
    if model is None:
        return document
    known = _known(model)
    out = {k: v for k, v in document.items() if v is not None or k in known}
    if kind == PLAN and isinstance(out.get("charges"), list):
        charge_known = _known(Charge)
        out["charges"] = [{k: v for k, v in c.items() if v is not None or k in charge_known}
                          if isinstance(c, dict) else c for c in out["charges"]]
    return out


# A catalog error's reason, as apply words it -> Lago's code for it (the first that matches);
# any other reason is ``value_is_invalid``. The sentence itself stays readable in
# ``tallyflow_messages`` beside Lago's ``error_details`` (docs/api.md).
_CODES = (
    ("is required", "value_is_mandatory"),
    ("unknown field", "unknown_field"),
    ("not supported", "not_supported"),
    ("duplicate", "value_already_exist"),
    ("cannot change", "cannot_be_changed"),
    ("cannot move", "cannot_be_changed"),
    ("differs from the currency", "currencies_does_not_match"),
    ("bills in", "currencies_does_not_match"),
    ("unknown currency", "invalid_currency"),
    ("valid datetime", "invalid_date"),
    ("timezone offset", "invalid_date"),
    ("Input should be a valid", "invalid_type"),
    ("must be an integer, not", "invalid_type"),
    ("must be a number, not", "invalid_type"),
    ("must be an object", "invalid_type"),
)
# A reference to an object that does not exist: Lago answers 404 ``<resource>_not_found``.
_MISSING = (("unknown plan ", "plan"), ("unknown customer ", "customer"),
            ("unknown billable metric ", "billable_metric"), ("unknown tax ", "tax"),
            ("unknown billing entity ", "billing_entity"))


def error_code(message: str) -> str:
    """Lago's code for one of apply's reasons."""
    for words, code in _CODES:
        if words in message:
            return code
    return INVALID


def error_details(kind: str, errors: list[CatalogError]) -> dict[str, list[str]]:
    """apply's errors by JSON path inside the object (other documents' paths kept whole):
    ``{path: [sentence]}``."""
    details: dict[str, list[str]] = {}
    for error in errors:
        path = error.path.removeprefix(f"{kind}.") if error.path != kind else kind
        details.setdefault(path or kind, []).append(error.message)
    return details


def catalog_refusal(kind: str, errors: list[CatalogError]) -> LagoError:
    """Lago's answer to a refused document: 404 ``<resource>_not_found`` when it names an
    object that does not exist, else 422 with Lago's codes per field; the sentences stay in
    ``tallyflow_messages`` (not Lago's; its clients ignore it)."""
    messages = error_details(kind, errors)
    for error in errors:
        for words, resource in _MISSING:
            if error.message.startswith(words):
                return LagoError(404, f"{resource}_not_found", extra={
                    "tallyflow_messages": messages})
    codes = {path: sorted({error_code(m) for m in found}) for path, found in messages.items()}
    return LagoError(422, "validation_errors", codes,
                     extra={"tallyflow_messages": messages})


def apply_one(engine: Engine, kind: str, document: dict[str, Any]) -> None:
    """Apply one Lago document as ``tallyflow apply`` would; 422 (or 404) with every error."""
    from tallyflow.tasks.catalog import customer_deleted
    from tallyflow.tasks.wallets import open_catalog_wallets

    if customer_deleted(engine, document.get("external_customer_id")):
        raise not_found("customer")  # deleted (DELETE /customers/{id}): nothing new for it
    try:
        result = apply_documents(engine, [LoadedDocument(SOURCE, 0, {kind: document})])
    except DataError as exc:  # a number past its column (nothing written: one transaction)
        raise LagoError(422, "validation_errors", {kind: [INVALID]}, extra={
            "tallyflow_messages": {kind: [str(exc.orig).splitlines()[0]]}}) from None
    if not result.ok:
        raise catalog_refusal(kind, result.errors)
    if kind == WALLET:
        open_catalog_wallets(engine)  # as `tallyflow apply` does: granted credits at once


# Objects inside a document that Lago's updates change key by key (its customer upsert sets
# ``shipping_address.city`` alone); any other given field replaces the stored one whole.
_MERGED_OBJECTS = frozenset({"shipping_address", "billing_configuration"})


# Read-only fields of every answer (apply takes them with no effect): not stored, so an
# object sent back as it was answered changes nothing.
ANSWER_FIELDS = frozenset({"lago_id", "created_at", "updated_at"})


def merged(document: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The stored document with only the keys sent changed (Lago's upsert and update set
    the keys present, ``app/services/customers/upsert_from_api_service.rb``); the answer's
    read-only fields are left out."""
    out = {k: v for k, v in document.items() if k not in ANSWER_FIELDS}
    for name, value in changes.items():
        if name in ANSWER_FIELDS:
            continue
        old = out.get(name)
        if name in _MERGED_OBJECTS and isinstance(old, dict) and isinstance(value, dict):
            out[name] = {**old, **value}
        else:
            out[name] = value
    return out


def stored(engine: Engine, table: str, column: str, key: Any) -> dict[str, Any]:
    """The stored document of the row with this key; 404 ``<kind>_not_found``."""
    found = stored_document(engine, table, column, key)
    if found is None:
        raise not_found(table.removesuffix("s") if table != "taxes" else "tax")
    return found[1]


def check_plan_live(engine: Engine, code: Any) -> None:
    """A subscription may not be created on a soft-deleted plan: Lago's 404, as for a plan
    that never existed (its ``Plan.parents.find_by`` skips deleted plans)."""
    if plan_deleted(engine, code):
        raise not_found("plan")


# A charge's fields that Lago answers and its clients send back: read-only here (the charge's
# id is its place in the list, docs/api.md), dropped so a round trip changes nothing.
_CHARGE_ANSWER_FIELDS = ("id", "lago_id", "lago_billable_metric_id", "created_at")


def plan_input(engine: Engine, plan: dict[str, Any]) -> dict[str, Any]:
    """A plan body as Lago's clients send it, in apply's terms: each charge names its metric
    by ``billable_metric_code`` (``billable_metric_id`` may be the metric's ``lago_id``, as
    Lago's template sends it, or its code), and the answer's read-only fields are dropped."""
    charges = plan.get("charges")
    if not isinstance(charges, list):
        return plan
    ids = [row_id(c["billable_metric_id"]) for c in charges
           if isinstance(c, dict) and isinstance(c.get("billable_metric_id"), str)]
    known = metric_codes(engine, [i for i in ids if i is not None])
    return {**plan, "charges": [_charge_input(c, known) for c in charges]}


def _charge_input(charge: Any, known: dict[int, str]) -> Any:
    if not isinstance(charge, dict):
        return charge  # apply names the fault
    out = {k: v for k, v in charge.items() if k not in _CHARGE_ANSWER_FIELDS}
    given = out.get("billable_metric_id")
    if isinstance(given, str):
        number = row_id(given)
        # a metric's code wins over a row id that happens to be spelled the same
        if number is not None and given not in known.values() and number in known:
            out["billable_metric_id"] = known[number]
        if out.get("billable_metric_code") == out["billable_metric_id"]:
            del out["billable_metric_code"]  # the answer's copy: the charge's form is kept
    return out


def plan_change(engine: Engine, document: dict[str, Any]) -> bool:
    """Lago's POST of a subscription whose external_id exists: the same customer moves to
    ``plan_code`` (upgrade at once, downgrade at the period end, as
    ``tallyflow subscriptions change-plan``); the same plan changes nothing
    (``app/services/subscriptions/create_service.rb``). Other fields that differ from the
    stored ones are refused by name (``PUT`` changes them). False for a subscription
    canceled before it started: the document subscribes again, as Lago's create does (and
    ``tallyflow apply``)."""
    from tallyflow.api.objects import SUBSCRIPTIONS, catalog_one
    from tallyflow.tasks.subscriptions import LifecycleError, change_plan

    key = str(document["external_id"])
    current = catalog_one(engine, SUBSCRIPTIONS, key)  # the row in force now
    if current["status"] == "canceled":
        return False
    if current["status"] == "terminated":  # Lago starts a new one; Tallyflow keeps the id's
        raise LagoError(422, "validation_errors", {"external_id": ["value_already_exist"]},
                        extra={"tallyflow_messages": {"external_id": [
                            "this subscription is terminated: subscribe under a new"
                            " external_id"]}})
    if document.get("external_customer_id", current.get("external_customer_id")) != current.get(
            "external_customer_id"):
        raise invalid({"external_id": ["value_already_exist"]})
    plan_code = document.get("plan_code")
    if not isinstance(plan_code, str) or not plan_code:
        raise invalid({"plan_code": ["value_is_mandatory"]})
    if not key_exists(engine, "plans", "code", plan_code):
        raise not_found("plan")
    fixed = {"external_id", "external_customer_id", "plan_code"}
    differ = sorted(name for name, value in document.items()
                    if name not in fixed and current.get(name) != value)
    if differ:
        raise invalid({name: ["cannot_be_changed"] for name in differ})
    if plan_code in (current.get("plan_code"), waiting_plan(engine, key)):
        return True  # nothing to change, or a retry of a downgrade that waits
    try:
        change_plan(engine, key, plan_code)
    except LifecycleError as exc:
        raise LagoError(422, "validation_errors", {"plan_code": [INVALID]},
                        extra={"tallyflow_messages": {"plan_code": [exc.message]}}) from None
    return True
