"""Lago's pinned OpenAPI document (tests/fixtures/lago_openapi/) as a response checker.

``violations(method, path, status, body)`` names every way an answer departs from Lago's
schema for that operation and status: what ``jsonschema`` finds (types, enums, required
keys; formats are not checked: Tallyflow's ``lago_id`` is its row id, not a UUID), and each
key Lago's schema declares nullable that the answer omits (Lago writes unset fields as
``null``, and so must Tallyflow). An operation or status Lago does not define is not
checked. The API tests' clients call it on every answer (``conftest.py``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).parents[2] / "fixtures" / "lago_openapi" / "openapi.yaml"
URN = "urn:lago-openapi"
METHODS = ("get", "post", "put", "patch", "delete")


@functools.cache
def spec() -> dict[str, Any]:
    with SPEC_PATH.open() as handle:
        loaded: dict[str, Any] = yaml.load(handle, Loader=yaml.CSafeLoader)
    return loaded


@functools.cache
def _registry() -> Registry:
    resource: Resource = Resource.from_contents(spec(), default_specification=DRAFT202012)
    return Registry().with_resource(URN, resource)


@functools.cache
def _routes() -> list[tuple[re.Pattern[str], str, int]]:
    """Lago's path templates as patterns, the most literal first (``/events/batch`` before
    ``/events/{transaction_id}``)."""
    routes = []
    for template in spec()["paths"]:
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        literal = sum(1 for part in template.split("/") if part and "{" not in part)
        routes.append((re.compile(f"^/api/v1{pattern}$"), template, literal))
    return sorted(routes, key=lambda route: -route[2])


def lago_operation(method: str, path: str) -> str | None:
    """Lago's template of a request path (``/api/v1/wallets/7`` -> ``/wallets/{lago_id}``)
    when Lago defines that method on it."""
    for pattern, template, _ in _routes():
        if pattern.match(path) and method.lower() in spec()["paths"][template]:
            return template
    return None


def _deref(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        ref = node["$ref"].removeprefix("#/").split("/")
        found: Any = spec()
        for part in ref:
            found = found[part]
        node = found
    return node


def response_schema(method: str, template: str, status: int) -> dict[str, Any] | None:
    responses = spec()["paths"][template][method.lower()].get("responses", {})
    answer = responses.get(str(status))
    if answer is None:
        return None
    schema = _deref(answer).get("content", {}).get("application/json", {}).get("schema")
    return schema if isinstance(schema, dict) else None


def _rebased(node: Any) -> Any:
    """The schema with its ``$ref``s pointing into the whole document."""
    if isinstance(node, dict):
        return {
            k: (URN + v if k == "$ref" and v.startswith("#") else _rebased(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rebased(item) for item in node]
    return node


# Departures from Lago's schema that are known and written down (docs/api.md, "Lago's
# response schema: the differences"): (the answer's place, as a pattern over
# "<place>: <message>", with /N for list indexes) -> why. A test checks each is documented.
DIFFERENCES: dict[str, str] = {
    # Tallyflow writes rates as exact decimal strings (docs/architecture.md §7)
    r"(taxes_rate|tax_rate|/rate|/previous_value): '[0-9.]+' is not of type 'number'": (
        "rates are strings"
    ),
    # exact amounts as decimal strings (docs/architecture.md §7)
    r"/precise_[a-z_]+: '.*' is not of type 'number'": "precise amounts are strings",
    # null where Lago's schema says a string Tallyflow has no value for
    r"/(payment_dispute_lost_at|file_url|billing_entity_code|lago_item_id|lago_organization_id"
    r"|tax_description): None is not of type 'string'": "null for a value Tallyflow does not have",
    # required keys of objects Tallyflow does not answer yet
    r"/customers?(/N)?: '(slug|sequential_id)' is a required property": "customer slug",
    r"/wallets?(/N)?: '(balance|invoice_requires_successful_payment)' is a required "
    r"property": "wallet balance",
    r"/charges/N: 'created_at' is a required property": "charge created_at",
    r"subscriptions?(/N)?: '(on_termination_invoice|lago_customer_id|external_customer_id|"
    r"created_at)' is a required property": "subscription termination settings",
    r"/(fees/N|fee): '(total_aggregated_units|sub_total_excluding_taxes_precise_amount_cents|"
    r"sub_total_excluding_taxes_amount_cents|precise_unit_amount|payment_status)' is a "
    r"required property": "fee totals",
    r"/(fees/N|fee)/item: 'item_type' is a required property": "fee item_type",
    r"/fees/N: 'invoiceable' is a required property": "estimated fee invoiceable",
    r"applied_taxes/N: '(lago_id|created_at|amount_currency|amount_cents)' is a required "
    r"property": "applied tax ids",
    r"/wallet_transactions/N: '(payment_method|metadata|invoice_requires_successful_payment)"
    r"' is a required property": "wallet transaction payment fields",
    r"/wallet_transactions/N/source: 'initial' is not one of": "wallet transaction source",
    r"/alerts?(/N)?/billable_metric: '(aggregation_type|recurring|created_at)' is a required "
    r"property": "alert metric summary",
    r"/applied_coupons?(/N)?: 'credits' is a required property": "applied coupon credits",
    # an event's properties are echoed as sent (Lago's schema types some keys)
    r"/events?(/N)?/properties/": "event properties as sent",
    # Lago's schema: a oneOf whose branches both match (an integer is a number too; an
    # alert is also an alert list with no key required): its own defect
    r"is valid under each of": "spec: oneOf",
    # current usage's bucket of the events no filter matches
    r"/filters/N/(invoice_display_name|values): None is not of type": "usage rest bucket",
    # a draft invoice has no number yet
    r"/sequential_id: None is not of type 'integer'": "draft sequential_id",
}


def violations(method: str, path: str, status: int, body: Any) -> list[str]:
    """Every departure of one answer from Lago's schema (empty when it conforms), less the
    documented ``DIFFERENCES``."""
    return [
        v
        for v in all_violations(method, path, status, body)
        if not any(
            re.search(pattern, re.sub(r"/[0-9]+(?=[/:])", "/N", v)) for pattern in DIFFERENCES
        )
    ]


def all_violations(method: str, path: str, status: int, body: Any) -> list[str]:
    """Every departure of one answer from Lago's schema."""
    template = lago_operation(method, path)
    if template is None:
        return []
    schema = response_schema(method, template, status)
    if schema is None:
        return []
    where = f"{method.upper()} {template} {status}"
    validator = Draft202012Validator(_rebased(schema), registry=_registry())
    errors = [_deepest(error) for error in validator.iter_errors(body)]
    found = [
        f"{where}: {_location(error.absolute_path)}: {_message(error.message)}"
        for error in errors
        if not _null_enum(error)
    ]
    found += [
        f"{where}: {location}: missing, Lago's schema has it nullable (send null)"
        for location in _missing_nullable(schema, body, "")
    ]
    return found


def _deepest(error: Any) -> Any:
    """A oneOf/anyOf failure says where within the closest branch (not "valid under none")."""
    while error.context:
        # the branch that got furthest into the answer is the one meant
        error = max(
            error.context, key=lambda e: (len(e.absolute_path), e is best_match(error.context))
        )
    return error


def _message(text: str) -> str:
    """jsonschema's message, the instance's repr cut short (its verdict is at the end)."""
    return text if len(text) <= 200 else f"{text[:80]} ... {text[-120:]}"


def _null_enum(error: Any) -> bool:
    """Lago's schema allows null (``type: [string, "null"]``) and lists an ``enum`` without
    it: its own inconsistency, not the answer's."""
    kind = error.schema.get("type") if isinstance(error.schema, dict) else None
    return (
        error.validator == "enum"
        and error.instance is None
        and isinstance(kind, list)
        and "null" in kind
    )


def _location(path: Any) -> str:
    return "/" + "/".join(str(part) for part in path)


def _nullable(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if isinstance(kind, list) and "null" in kind:
        return True
    return bool(schema.get("nullable")) or any(
        _deref(branch).get("type") == "null"
        for branch in (*schema.get("oneOf", ()), *schema.get("anyOf", ()))
    )


def _missing_nullable(schema: dict[str, Any], value: Any, at: str) -> Iterator[str]:
    schema = _deref(schema)
    for branch in schema.get("allOf", ()):
        yield from _missing_nullable(branch, value, at)
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            sub = _deref(sub)
            if name not in value:
                if _nullable(sub):
                    yield f"{at}/{name}"
            elif name != "properties":  # the user's own document (a charge's, an event's)
                yield from _missing_nullable(sub, value[name], f"{at}/{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _missing_nullable(schema["items"], item, f"{at}/{index}")


# --- the part of Lago's document the API serves (tallyflow/api/lago_openapi.json) ---------

PACKAGE_COPY = Path(__file__).parents[3] / "tallyflow" / "api" / "lago_openapi.json"
COMMIT = "120da1213306145141d3dd34022dd47a3216c911"  # getlago/lago-openapi, openapi.yaml


def served_operations(paths: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Lago's templates and methods among the API's routes (method, path)."""
    served: dict[str, list[str]] = {}
    for method, path in paths:
        template = lago_operation(method, re.sub(r"\{[^}]+\}", "x", path))
        if template is not None:
            served.setdefault(template, []).append(method.lower())
    return {template: sorted(set(methods)) for template, methods in sorted(served.items())}


def subset(paths: list[tuple[str, str]]) -> dict[str, Any]:
    """Lago's responses for the served operations and the components they name: what the
    served OpenAPI document shows and what the API fills unset fields from."""
    document = spec()
    chosen: dict[str, Any] = {}
    for template, methods in served_operations(paths).items():
        chosen[template] = {
            m: {"responses": document["paths"][template][m]["responses"]} for m in methods
        }
    components: dict[str, dict[str, Any]] = {}
    pending = list(_refs(chosen))
    while pending:
        ref = pending.pop()
        _, _, group, name = ref.split("/")
        if name in components.setdefault(group, {}):
            continue
        components[group][name] = document["components"][group][name]
        pending.extend(_refs(components[group][name]))
    return {
        "openapi": document["openapi"],
        "info": {
            "version": document["info"]["version"],
            "source": f"getlago/lago-openapi {COMMIT} openapi.yaml",
        },
        "paths": chosen,
        "components": {
            group: dict(sorted(items.items())) for group, items in sorted(components.items())
        },
    }


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def app_paths() -> list[tuple[str, str]]:
    """The API's routes (method, path), as its OpenAPI document lists them."""
    from fastapi.openapi.utils import get_openapi
    from sqlalchemy import create_engine

    from tallyflow.api.app import create_app
    from tallyflow.api.settings import ApiSettings

    settings = ApiSettings(
        bucket="memory://unused", commit_seconds=1.0, commit_events=1, max_body_bytes=1
    )
    app = create_app(
        create_engine("postgresql+psycopg://unused@127.0.0.1/unused"), settings, load=False
    )  # never connects: only its routes are read
    paths = get_openapi(title="", version="", routes=app.routes)["paths"]
    return [(method, path) for path, operations in paths.items() for method in operations]


if __name__ == "__main__":  # python tests/tallyflow/api/lago_spec.py: rewrite the package copy
    import json

    PACKAGE_COPY.write_text(json.dumps(subset(app_paths()), indent=1, sort_keys=True) + "\n")
