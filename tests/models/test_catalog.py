"""Catalog validation without a database: Lago payloads parse, invalid ones say where and why."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tallyflow.models.catalog import (
    Catalog,
    CatalogError,
    Plan,
    digest,
    dumps,
    loads,
    normalise,
    parse_body,
    validate_documents,
)
from tallyflow.models.rating.charge_models import compute_charge, parse_properties

ROOT = Path(__file__).resolve().parents[2]
MISTRAL = ROOT / "examples" / "mistral"


def mistral(name: str) -> dict[str, Any]:
    return loads((MISTRAL / f"{name}.json").read_text())


def with_changes(envelope: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of an envelope with top-level body fields replaced (None deletes)."""
    result = copy.deepcopy(envelope)
    body = next(iter(result.values()))
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return result


METRIC = mistral("billable_metric")
PLAN = mistral("plan")
CUSTOMER = mistral("customer")
BASE = [METRIC, PLAN, CUSTOMER]


def metric(**changes: Any) -> dict[str, Any]:
    body = {"code": "m2", "name": "Metric", "aggregation_type": "sum_agg", "field_name": "x"}
    body.update(changes)
    return {"billable_metric": {k: v for k, v in body.items() if v is not None}}


def plan(*charges: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"code": "p2", "name": "Plan", "interval": "monthly",
                            "amount_cents": 0, "amount_currency": "USD", "charges": list(charges)}
    body.update(changes)
    return {"plan": {k: v for k, v in body.items() if v is not None}}


def charge(model: str = "standard", properties: Any = None, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"billable_metric_code": "mistral_tokens", "charge_model": model,
                            "properties": {"amount": "1"} if properties is None else properties}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def ranges(*bounds: tuple[Any, Any], price: Any = "0.1") -> list[dict[str, Any]]:
    return [{"from_value": f, "to_value": t, "per_unit_amount": price, "flat_amount": "0"}
            for f, t in bounds]


def subscription(**changes: Any) -> dict[str, Any]:
    body = {"external_id": "s2", "external_customer_id": "acme",
            "plan_code": "mistral_per_token", "subscription_at": "2025-01-01T00:00:00Z"}
    body.update(changes)
    return {"subscription": {k: v for k, v in body.items() if v is not None}}


def wallet(**changes: Any) -> dict[str, Any]:
    body = {"external_customer_id": "acme", "name": "w2", "currency": "USD",
            "rate_amount": "1.0", "paid_credits": "10", "granted_credits": "0"}
    body.update(changes)
    return {"wallet": {k: v for k, v in body.items() if v is not None}}


def rule(**changes: Any) -> dict[str, Any]:
    body = {"trigger": "interval", "interval": "monthly", "paid_credits": "10"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def errors_for(*envelopes: dict[str, Any]) -> list[CatalogError]:
    """Validate with one file per document (so paths have no list index)."""
    documents = [(f"doc{i}.json", 0, e) for i, e in enumerate(envelopes)]
    return validate_documents(documents).errors


# Each case: (id, extra envelopes applied with the Mistral metric/plan/customer, the JSON path
# of the expected error, a distinctive part of its reason).
INVALID: list[tuple[str, list[dict[str, Any]], str, str]] = [
    # billable metrics
    ("metric-unknown-aggregation", [metric(aggregation_type="avg_agg")],
     "billable_metric.aggregation_type", "unknown aggregation_type 'avg_agg'"),
    ("metric-sum-without-field", [metric(field_name=None)],
     "billable_metric.field_name", "is required for sum_agg"),
    ("metric-unique-count-without-field", [metric(aggregation_type="unique_count_agg",
                                                  field_name=None)],
     "billable_metric.field_name", "is required for unique_count_agg"),
    ("metric-latest-without-field", [metric(aggregation_type="latest_agg", field_name="")],
     "billable_metric.field_name", "is required for latest_agg"),
    ("metric-recurring-count", [metric(aggregation_type="count_agg", recurring=True)],
     "billable_metric.recurring", "count_agg cannot be recurring"),
    ("metric-recurring-max", [metric(aggregation_type="max_agg", recurring=True)],
     "billable_metric.recurring", "max_agg cannot be recurring"),
    ("metric-recurring-latest", [metric(aggregation_type="latest_agg", recurring=True)],
     "billable_metric.recurring", "latest_agg cannot be recurring"),
    ("metric-weighted-sum-without-interval", [metric(aggregation_type="weighted_sum_agg")],
     "billable_metric.weighted_interval", "is required for weighted_sum_agg"),
    ("metric-weighted-interval-unknown", [metric(aggregation_type="weighted_sum_agg",
                                                 weighted_interval="hours")],
     "billable_metric.weighted_interval", "unknown weighted_interval 'hours'"),
    ("metric-rounding-function-unknown", [metric(rounding_function="truncate")],
     "billable_metric.rounding_function", "unknown rounding_function 'truncate'"),
    ("metric-rounding-precision-not-integer", [metric(rounding_function="round",
                                                      rounding_precision=Decimal("2.5"))],
     "billable_metric.rounding_precision", "must be an integer"),
    ("metric-duplicate-filter-key", [metric(filters=[{"key": "a", "values": ["1"]},
                                                     {"key": "a", "values": ["2"]}])],
     "billable_metric.filters[1].key", "duplicate filter key 'a'"),
    ("metric-filter-without-values", [metric(filters=[{"key": "a", "values": []}])],
     "billable_metric.filters[0].values", "at least 1 item"),
    ("metric-missing-code", [metric(code=None)], "billable_metric.code", "is required"),
    ("metric-empty-name", [metric(name="  ")], "billable_metric.name", "must not be empty"),
    ("metric-duplicate-code-in-apply", [copy.deepcopy(METRIC)],
     "billable_metric.code", "duplicate billable_metric 'mistral_tokens' in this apply"),
    # plans and charges
    ("plan-unknown-charge-model", [plan(charge("tiered"))],
     "plan.charges[0].charge_model", "unknown charge_model 'tiered'"),
    ("price-as-json-integer", [plan(charge(properties={"amount": 1}))],
     "plan.charges[0].properties.amount", "got a JSON number"),
    ("price-as-json-float", [plan(charge(properties={"amount": Decimal("0.5")}))],
     "plan.charges[0].properties.amount", "got a JSON number"),
    ("price-not-decimal-text", [plan(charge(properties={"amount": "1e3"}))],
     "plan.charges[0].properties.amount", "must be a decimal string"),
    ("price-negative", [plan(charge(properties={"amount": "-1"}))],
     "plan.charges[0].properties.amount", "must not be negative"),
    ("package-size-zero", [plan(charge("package", {"amount": "1", "package_size": 0}))],
     "plan.charges[0].properties.package_size", "must be at least 1"),
    ("package-size-missing", [plan(charge("package", {"amount": "1"}))],
     "plan.charges[0].properties.package_size", "is required"),
    ("package-negative-free-units", [plan(charge("package", {"amount": "1", "package_size": 10,
                                                             "free_units": -1}))],
     "plan.charges[0].properties.free_units", "must be at least 0"),
    ("graduated-first-range-not-zero", [plan(charge("graduated", {
        "graduated_ranges": ranges((1, 10), (11, None))}))],
     "plan.charges[0].properties.graduated_ranges[0].from_value", "must start at 0"),
    ("graduated-gap", [plan(charge("graduated", {
        "graduated_ranges": ranges((0, 100), (150, None))}))],
     "plan.charges[0].properties.graduated_ranges[1].from_value",
     "must equal the previous to_value (100) or 101"),
    ("graduated-open-range-not-last", [plan(charge("graduated", {
        "graduated_ranges": ranges((0, None), (101, None))}))],
     "plan.charges[0].properties.graduated_ranges[0].to_value", "only the last range may be open"),
    ("graduated-last-range-closed", [plan(charge("graduated", {
        "graduated_ranges": ranges((0, 100), (101, 200))}))],
     "plan.charges[0].properties.graduated_ranges[1].to_value", "the last range must be open"),
    ("graduated-empty-ranges", [plan(charge("graduated", {"graduated_ranges": []}))],
     "plan.charges[0].properties.graduated_ranges", "must be a non-empty list of ranges"),
    ("graduated-price-number", [plan(charge("graduated", {
        "graduated_ranges": ranges((0, None), price=Decimal("0.1"))}))],
     "plan.charges[0].properties.graduated_ranges[0].per_unit_amount", "got a JSON number"),
    ("volume-flat-missing", [plan(charge("volume", {"volume_ranges": [
        {"from_value": 0, "to_value": None, "per_unit_amount": "1"}]}))],
     "plan.charges[0].properties.volume_ranges[0].flat_amount", "is required"),
    ("volume-to-below-from", [plan(charge("volume", {
        "volume_ranges": ranges((0, 0), (1, None))}))],
     "plan.charges[0].properties.volume_ranges[0].to_value", "must be greater than from_value"),
    ("graduated-percentage-rate-number", [plan(charge("graduated_percentage", {
        "graduated_percentage_ranges": [{"from_value": 0, "to_value": None, "rate": 1,
                                         "flat_amount": "0"}]}))],
     "plan.charges[0].properties.graduated_percentage_ranges[0].rate", "got a JSON number"),
    ("percentage-min-above-max", [plan(charge("percentage", {
        "rate": "1", "per_transaction_min_amount": "5", "per_transaction_max_amount": "1"}))],
     "plan.charges[0].properties.per_transaction_max_amount",
     "must be greater than or equal to per_transaction_min_amount"),
    ("dynamic-on-count-metric", [metric(code="calls", aggregation_type="count_agg"),
                                 plan(charge("dynamic", {}, billable_metric_code="calls"))],
     "plan.charges[0].charge_model", "dynamic needs a sum_agg metric; 'calls' is count_agg"),
    ("charge-filter-unknown-key", [plan(charge("standard", {}, filters=[
        {"values": {"region": ["eu"]}, "properties": {"amount": "1"}}]))],
     "plan.charges[0].filters[0].values.region",
     "'region' is not a filter of billable metric 'mistral_tokens'"),
    ("charge-filter-unknown-value", [plan(charge("standard", {}, filters=[
        {"values": {"model": ["mistral-xl"]}, "properties": {"amount": "1"}}]))],
     "plan.charges[0].filters[0].values.model[0]", "'mistral-xl' is not a value of filter"),
    ("charge-filter-price-number", [plan(charge("standard", {}, filters=[
        {"values": {"model": ["mistral-small"]}, "properties": {"amount": 3}}]))],
     "plan.charges[0].filters[0].properties.amount", "got a JSON number"),
    ("charge-filter-duplicate", [plan(charge("standard", {}, filters=[
        {"values": {"model": ["mistral-small"]}, "properties": {"amount": "1"}},
        {"values": {"model": ["mistral-small"]}, "properties": {"amount": "2"}}]))],
     "plan.charges[0].filters[1].values", "same values as filters[0]"),
    ("charge-unknown-metric", [plan(charge(billable_metric_code="nope"))],
     "plan.charges[0].billable_metric_code", "unknown billable metric 'nope'"),
    ("charge-unknown-metric-by-id", [plan(charge(billable_metric_code=None,
                                                 billable_metric_id="nope"))],
     "plan.charges[0].billable_metric_id", "unknown billable metric 'nope'"),
    ("charge-without-metric", [plan(charge(billable_metric_code=None))],
     "plan.charges[0].billable_metric_code", "is required"),
    ("charge-conflicting-metric-refs", [plan(charge(billable_metric_id="other"))],
     "plan.charges[0].billable_metric_id", "conflicts with billable_metric_code"),
    ("charge-not-invoiceable-in-arrears", [plan(charge(invoiceable=False))],
     "plan.charges[0].invoiceable", "only when pay_in_advance is true"),
    ("charge-in-advance-on-max-metric", [metric(code="peak", aggregation_type="max_agg"),
                                         plan(charge(billable_metric_code="peak",
                                                     pay_in_advance=True))],
     "plan.charges[0].pay_in_advance", "not available for max_agg"),
    # pay in advance (Lago's Charge validations)
    ("charge-in-advance-volume", [plan(charge("volume", {"volume_ranges": [
        {"from_value": 0, "to_value": None, "per_unit_amount": "1", "flat_amount": "0"}]},
        pay_in_advance=True))],
     "plan.charges[0].pay_in_advance", "not available for volume charges"),
    ("charge-in-advance-minimum", [plan(charge(pay_in_advance=True, min_amount_cents=100))],
     "plan.charges[0].min_amount_cents", "not compatible with pay_in_advance"),
    ("charge-regroup-in-arrears", [plan(charge(regroup_paid_fees="invoice"))],
     "plan.charges[0].regroup_paid_fees", "only compatible with pay_in_advance true"),
    ("charge-regroup-invoiceable", [plan(charge(pay_in_advance=True,
                                                regroup_paid_fees="invoice"))],
     "plan.charges[0].regroup_paid_fees", "and invoiceable false"),
    ("charge-in-advance-recurring", [metric(code="seats", aggregation_type="unique_count_agg",
                                            field_name="user", recurring=True),
                                     plan(charge(billable_metric_code="seats",
                                                 pay_in_advance=True))],
     "plan.charges[0].pay_in_advance", "not supported yet for recurring metrics"),
    ("charge-negative-minimum", [plan(charge(min_amount_cents=-5))],
     "plan.charges[0].min_amount_cents", "must not be negative"),
    ("plan-bad-interval", [plan(interval="daily")], "plan.interval", "unknown interval 'daily'"),
    ("plan-unknown-currency", [plan(amount_currency="USX")],
     "plan.amount_currency", "unknown currency 'USX'"),
    ("plan-amount-cents-text", [plan(amount_cents="100")],
     "plan.amount_cents", "must be an integer"),
    ("plan-negative-amount", [plan(amount_cents=-1)], "plan.amount_cents", "must not be negative"),
    # customers
    ("customer-unknown-timezone", [{"customer": {"external_id": "c2", "timezone": "Mars/Base"}}],
     "customer.timezone", "unknown IANA timezone 'Mars/Base'"),
    ("customer-unknown-currency", [{"customer": {"external_id": "c2", "currency": "XYZ"}}],
     "customer.currency", "unknown currency 'XYZ'"),
    ("customer-bad-email", [{"customer": {"external_id": "c2", "email": "not-an-email"}}],
     "customer.email", "not a valid email address"),
    # subscriptions
    ("subscription-unknown-plan", [subscription(plan_code="nope")],
     "subscription.plan_code", "unknown plan 'nope'"),
    ("subscription-unknown-customer", [subscription(external_customer_id="ghost")],
     "subscription.external_customer_id", "unknown customer 'ghost'"),
    ("subscription-bad-billing-time", [subscription(billing_time="monthly")],
     "subscription.billing_time", "unknown billing_time 'monthly'"),
    ("subscription-ends-before-start", [subscription(ending_at="2024-12-31T00:00:00Z")],
     "subscription.ending_at", "must be after subscription_at"),
    ("subscription-naive-timestamp", [subscription(subscription_at="2025-01-01T00:00:00")],
     "subscription.subscription_at", "needs a timezone offset"),
    ("subscription-currency-mismatch", [plan(code="eur_plan", amount_currency="EUR"),
                                        subscription(plan_code="eur_plan")],
     "subscription.plan_code", "bills in EUR but customer 'acme' uses USD"),
    # wallets
    ("wallet-unknown-customer", [wallet(external_customer_id="ghost")],
     "wallet.external_customer_id", "unknown customer 'ghost'"),
    ("wallet-currency-differs", [wallet(currency="EUR")],
     "wallet.currency", "EUR differs from the currency of customer 'acme' (USD)"),
    ("wallet-negative-credits", [wallet(paid_credits="-1")],
     "wallet.paid_credits", "must not be negative"),
    ("wallet-zero-rate", [wallet(rate_amount="0")], "wallet.rate_amount", "greater than 0"),
    ("wallet-rate-as-number", [wallet(rate_amount=1)], "wallet.rate_amount", "got a JSON number"),
    ("wallet-priority-out-of-range", [wallet(priority=0)],
     "wallet.priority", "between 1 and 50"),
    ("wallet-rule-bad-trigger", [wallet(recurring_transaction_rules=[rule(trigger="daily")])],
     "wallet.recurring_transaction_rules[0].trigger", "unknown trigger 'daily'"),
    ("wallet-rule-interval-missing", [wallet(recurring_transaction_rules=[
        rule(interval=None)])],
     "wallet.recurring_transaction_rules[0].interval", "required when trigger is interval"),
    ("wallet-rule-threshold-missing", [wallet(recurring_transaction_rules=[
        rule(trigger="threshold", interval=None)])],
     "wallet.recurring_transaction_rules[0].threshold_credits",
     "required when trigger is threshold"),
    ("wallet-rule-target-missing", [wallet(recurring_transaction_rules=[rule(method="target")])],
     "wallet.recurring_transaction_rules[0].target_ongoing_balance",
     "required when method is target"),
    ("wallet-rule-negative-credits", [wallet(recurring_transaction_rules=[
        rule(granted_credits="-5")])],
     "wallet.recurring_transaction_rules[0].granted_credits", "must not be negative"),
    # envelopes
    ("envelope-unknown-kind", [{"fee": {"code": "x"}}], ".", "expected exactly one envelope"),
    ("envelope-two-kinds", [{"plan": {}, "customer": {}}], ".", "expected exactly one envelope"),
    ("envelope-body-not-object", [{"plan": ["x"]}], "plan", "must be an object"),
]


def test_there_are_enough_invalid_cases() -> None:
    assert len(INVALID) >= 30


@pytest.mark.parametrize(("extra", "path", "reason"), [c[1:] for c in INVALID],
                         ids=[c[0] for c in INVALID])
def test_invalid_documents_are_rejected_with_path_and_reason(
    extra: list[dict[str, Any]], path: str, reason: str
) -> None:
    errors = errors_for(*BASE, *extra)
    matching = [e for e in errors if e.path == path and reason in e.message]
    assert matching, f"expected {path}: ...{reason}...; got {[str(e) for e in errors]}"
    assert all(e.file.startswith("doc") for e in errors)
    # the base documents are valid: every error comes from the case's own documents
    assert all(int(e.file[3:-5]) >= len(BASE) for e in errors), [str(e) for e in errors]


def test_mistral_template_parses_as_published() -> None:
    envelopes = [mistral(n) for n in ("billable_metric", "plan", "customer", "subscription",
                                      "wallet")]
    result = validate_documents([(f"{i}.json", 0, e) for i, e in enumerate(envelopes)])
    assert result.errors == []
    kinds = [d.kind for d in result.documents]
    assert kinds == ["billable_metric", "plan", "customer", "subscription", "wallet"]
    plan_model: Plan = result.documents[1].model
    prices = {(f.values["model"][0], f.values["type"][0]): f.properties["amount"]
              for f in plan_model.charges[0].filters}
    assert prices == {("mistral-small", "input"): "1", ("mistral-small", "output"): "3",
                      ("mistral-medium", "input"): "2.7", ("mistral-medium", "output"): "8.1",
                      ("mistral-large", "input"): "4", ("mistral-large", "output"): "12"}
    assert plan_model.charges[0].metric_code == "mistral_tokens"  # via billable_metric_id
    wallet_doc = result.documents[4].document
    assert wallet_doc["code"] == "prepaid_credits"
    assert (wallet_doc["paid_credits"], wallet_doc["granted_credits"]) == ("100.0", "25.0")


VALID_LAGO = [
    metric(code="seats", aggregation_type="unique_count_agg", field_name="user_id",
           recurring=True),
    metric(code="gb_seconds", aggregation_type="weighted_sum_agg", field_name="gb",
           weighted_interval="seconds", recurring=True),
    metric(code="rounded", rounding_function="ceil", rounding_precision=-2),
    metric(code="calls", aggregation_type="count_agg", filters=None, description=None),
    plan(charge("graduated", {"graduated_ranges": [
        {"from_value": 0, "to_value": "10.5", "per_unit_amount": "1", "flat_amount": "2"},
        {"from_value": "10.5", "to_value": None, "per_unit_amount": "0.5",
         "flat_amount": "0"}]}),
         charge("volume", {"volume_ranges": ranges((0, 100), (101, None))}),
         charge("percentage", {"rate": "1.5", "fixed_amount": "0.1",
                               "free_units_per_events": 3,
                               "per_transaction_min_amount": "0.5",
                               "per_transaction_max_amount": "10"}),
         charge("graduated_percentage", {"graduated_percentage_ranges": [
             {"from_value": 0, "to_value": None, "rate": "2", "flat_amount": "0"}]}),
         charge("dynamic", {}),
         charge("standard", {"amount": "0.2", "pricing_group_keys": ["region"]},
                pay_in_advance=False, invoiceable=True, min_amount_cents=0, prorated=False,
                tax_codes=[], lago_id="c1"),
         charge("standard", {}, filters=[
             {"values": {"model": ["__ALL_FILTER_VALUES__"], "type": ["input"]},
              "properties": {"amount": "1"}, "invoice_display_name": "all input"}]),
         code="kitchen_sink", trial_period=Decimal("0"), pay_in_advance=False,
         bill_charges_monthly=None, tax_codes=[], minimum_commitment=None,
         usage_thresholds=[], lago_id="p1", created_at="2024-01-01T00:00:00Z"),
    {"customer": {"external_id": "c_eur", "currency": "EUR", "timezone": "Europe/Paris",
                  "email": "a@example.com,b@example.com", "billing_configuration": {},
                  "legal_name": "Acme SAS", "address_line1": "1 rue", "tax_codes": [],
                  "metadata": [{"key": "k", "value": "v"}]}},
    subscription(external_id="s_anniv", billing_time="anniversary", subscription_at=None,
                 ending_at=None, status="active", plan_overrides=None),
    wallet(code="top", priority=1, expiration_at="2030-01-01T00:00:00Z",
           recurring_transaction_rules=[
               rule(),
               rule(trigger="threshold", interval=None, threshold_credits="5.0",
                    method="target", target_ongoing_balance="100"),
           ]),
]


def test_valid_lago_payloads_parse() -> None:
    assert errors_for(*BASE, *VALID_LAGO) == []


def test_unknown_lago_fields_are_kept() -> None:
    body = dict(PLAN["plan"], lago_id="1a90", created_at="2024-01-01T00:00:00Z")
    model, issues = parse_body("plan", body)
    assert issues == [] and model is not None
    document = normalise(model)
    assert document["lago_id"] == "1a90" and document["created_at"] == "2024-01-01T00:00:00Z"


def test_all_errors_of_an_apply_are_reported_together() -> None:
    errors = errors_for(*BASE,
                        plan(charge(properties={"amount": 1}), interval="daily"),
                        wallet(currency="EUR", rate_amount="0"),
                        subscription(plan_code="nope"))
    paths = sorted(e.path for e in errors)
    assert paths == ["plan.charges[0].properties.amount", "plan.interval",
                     "subscription.plan_code", "wallet.rate_amount"]
    assert [e.file for e in errors] == ["doc3.json", "doc3.json", "doc4.json", "doc5.json"]


def test_paths_in_list_files_carry_the_index() -> None:
    documents = [("all.json", 0, METRIC), ("all.json", 1, plan(interval="daily"))]
    errors = validate_documents(documents).errors
    assert [str(e) for e in errors] == [
        "all.json: [1].plan.interval: unknown interval 'daily'; expected one of: weekly, "
        "monthly, quarterly, semiannual, yearly"
    ]


def test_broken_metric_is_not_also_reported_as_unknown() -> None:
    errors = errors_for(metric(code="m2", aggregation_type="nope"),
                        plan(charge(billable_metric_code="m2")))
    assert [e.path for e in errors] == ["billable_metric.aggregation_type"]


def test_references_are_checked_against_the_existing_catalog() -> None:
    existing = Catalog()
    for envelope in BASE:
        kind, body = next(iter(envelope.items()))
        model, _ = parse_body(kind, body)
        assert model is not None
        existing.put(kind, model)
    ok = validate_documents([("s.json", 0, subscription())], existing)
    assert ok.errors == [] and ok.documents[0].key == ("s2",)
    # a customer switching currency breaks a stored wallet: reported against the database
    wallet_model, _ = parse_body("wallet", wallet()["wallet"])
    assert wallet_model is not None
    existing.put("wallet", wallet_model)
    bad = validate_documents([("c.json", 0, with_changes(CUSTOMER, currency="EUR"))], existing)
    assert [(e.file, e.path) for e in bad.errors] == [
        ("(database) wallet 'acme/w2'", "wallet.currency")
    ]


@pytest.mark.parametrize("before", [False, True])
def test_pay_in_advance_of_an_existing_plan_cannot_change(before: bool) -> None:
    """Accepted on a new plan; flipping it on a stored one would bill a period's fee twice
    (at its start and its end) or never."""
    existing = Catalog()
    stored, _ = parse_body("plan", plan(pay_in_advance=before)["plan"])
    assert stored is not None
    existing.put("plan", stored)
    assert validate_documents([("p.json", 0, plan(pay_in_advance=before))], existing).errors == []
    flipped = validate_documents([("p.json", 0, plan(pay_in_advance=not before))], existing)
    assert [(e.path, "cannot change" in e.message) for e in flipped.errors] == [
        ("plan.pay_in_advance", True)]


def test_subscription_start_defaults_to_now_then_keeps_the_stored_one() -> None:
    first = datetime(2025, 2, 1, 12, 0, tzinfo=UTC)
    documents = [(f"{i}.json", 0, e) for i, e in
                 enumerate([*BASE, subscription(subscription_at=None)])]
    created = validate_documents(documents, now=first)
    assert created.errors == []
    stored = created.documents[-1]
    assert stored.document["subscription_at"] == "2025-02-01T12:00:00Z"
    existing = Catalog().overlay(created.documents)
    later = validate_documents(documents, existing, now=datetime(2025, 3, 1, tzinfo=UTC))
    assert later.documents[-1].digest == stored.digest  # the default did not move


def test_json_numbers_in_properties_are_refused_through_the_charge_model_rules() -> None:
    # files are parsed with Decimal numbers; a price given as a JSON number is still refused
    errors = errors_for(*BASE, plan(charge("graduated", {"graduated_ranges": [
        {"from_value": 0, "to_value": Decimal("10"), "per_unit_amount": "1",
         "flat_amount": Decimal("0.5")},
        {"from_value": 11, "to_value": None, "per_unit_amount": Decimal("1"),
         "flat_amount": "0"}]})))
    assert [(e.path, e.message) for e in errors] == [
        ("plan.charges[0].properties.graduated_ranges[0].flat_amount",
         'must be a decimal string such as "0.12", got a JSON number (0.5)'),
        ("plan.charges[0].properties.graduated_ranges[1].per_unit_amount",
         'must be a decimal string such as "0.12", got a JSON number (1)'),
    ]


def test_range_bounds_may_be_json_numbers_as_in_lago() -> None:
    """Lago's own specs use decimal tiers written as JSON numbers (0-0.1, 0.1-1, 1-open)."""
    text = """{"plan": {"code": "p2", "name": "P", "interval": "monthly", "amount_cents": 0,
      "amount_currency": "USD", "charges": [{"billable_metric_code": "mistral_tokens",
      "charge_model": "graduated", "properties": {"graduated_ranges": [
        {"from_value": 0, "to_value": 0.1, "per_unit_amount": "1", "flat_amount": "0"},
        {"from_value": 0.1, "to_value": 1, "per_unit_amount": "0.5", "flat_amount": "0"},
        {"from_value": 1, "to_value": null, "per_unit_amount": "0.1", "flat_amount": "0"}
      ]}}]}}"""
    result = validate_documents([("f.json", i, e) for i, e in enumerate([*BASE, loads(text)])])
    assert result.errors == []
    stored = result.documents[-1].document["charges"][0]["properties"]
    tiers = stored["graduated_ranges"]
    assert tiers[0]["to_value"] == Decimal("0.1") and tiers[1]["from_value"] == Decimal("0.1")
    priced = compute_charge("graduated", parse_properties("graduated", stored), Decimal("2"))
    assert priced.amount == Decimal("0.1") * 1 + Decimal("0.9") * Decimal("0.5") + Decimal("0.1")


def test_normalised_documents_are_stable_and_digests_ignore_key_order() -> None:
    model, _ = parse_body("plan", PLAN["plan"])
    assert model is not None
    document = normalise(model)
    again, _ = parse_body("plan", loads(dumps(document)))
    assert again is not None and normalise(again) == document
    shuffled = json.loads(json.dumps(document), object_pairs_hook=lambda p: dict(reversed(p)))
    assert digest(shuffled) == digest(document)


def test_json_writer_keeps_decimals_exact_and_refuses_floats() -> None:
    assert dumps({"b": Decimal("0.10"), "a": [1, Decimal("1E+2")]}) == '{"a":[1,100],"b":0.10}'
    assert loads("[0.1]") == [Decimal("0.1")]
    with pytest.raises(TypeError):
        dumps({"x": 0.1})


@pytest.mark.parametrize("fields", [
    {"pay_in_advance": True},
    {"pay_in_advance": True, "invoiceable": False},
    {"pay_in_advance": True, "invoiceable": False, "regroup_paid_fees": "invoice"},
    {"pay_in_advance": True, "invoiceable": True, "regroup_paid_fees": None},
    {"pay_in_advance": False, "regroup_paid_fees": None},
], ids=["in-advance", "not-invoiceable", "regrouped", "regroup-null", "arrears-regroup-null"])
def test_pay_in_advance_charges_lago_accepts_are_accepted(fields: dict[str, Any]) -> None:
    """The combinations Lago's Charge validations accept (charge.rb)."""
    documents = [(f"doc{i}.json", 0, e) for i, e in enumerate([*BASE, plan(charge(**fields))])]
    assert validate_documents(documents).errors == []
