"""No silent options: every catalog field is billed, documented as having no effect, or refused
by name. The enumeration test fails when a model gains a field in none of the three."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tallyflow.models.catalog import (
    AddOn,
    BillableMetric,
    BillingEntity,
    Charge,
    ChargeFilterPayload,
    Coupon,
    CouponApplication,
    CouponLimitation,
    Customer,
    LagoModel,
    MetricFilterPayload,
    MinimumCommitment,
    Plan,
    RecurringRule,
    Subscription,
    Tax,
    UsageThreshold,
    Wallet,
    validate_documents,
)
from tests.models.test_catalog import BASE, charge, metric, plan, rule, subscription, wallet

ROOT = Path(__file__).resolve().parents[2]

# Declared fields that are billed (or key an object), and the file that reads them.
CONSUMED: dict[type[LagoModel], dict[str, str]] = {
    BillingEntity: {
        "code": "tasks/catalog/", "name": "tasks/catalog/",
        **{name: "tasks/invoicing/"
           for name in ("document_number_prefix", "tax_codes", "is_default",
                        "invoice_grace_period", "net_payment_term")},
        **{name: "tasks/invoicing/templates/invoice.html"
           for name in ("email", "legal_name", "legal_number", "tax_identification_number",
                        "address_line1", "address_line2", "city", "zipcode", "state",
                        "country", "invoice_footer")},
    },
    # add-ons (one-off invoices): written by the apply, their tax codes read for the fees
    AddOn: {**{name: "tasks/catalog/"
               for name in ("code", "name", "invoice_display_name", "description",
                            "amount_cents", "amount_currency")},
            "tax_codes": "tasks/invoicing/one_off.py"},
    Tax: {name: "tasks/catalog/"
          for name in ("code", "name", "rate", "description", "applied_to_organization")},
    MinimumCommitment: {"amount_cents": "tasks/invoicing/",
                        "invoice_display_name": "tasks/invoicing/"},
    MetricFilterPayload: {"key": "tasks/catalog/", "values": "tasks/catalog/"},
    BillableMetric: {
        name: "tasks/catalog/"
        for name in ("code", "name", "description", "aggregation_type", "field_name",
                     "recurring", "rounding_function", "rounding_precision",
                     "weighted_interval", "filters")
    },
    # charges are written with their plan's version (tasks/catalog/plan_versions.py)
    ChargeFilterPayload: {name: "tasks/catalog/plan_versions.py"
                   for name in ("values", "properties", "invoice_display_name")},
    Charge: {
        "billable_metric_code": "models/catalog/",  # through Charge.metric_code
        "billable_metric_id": "models/catalog/",
        "charge_model": "tasks/catalog/plan_versions.py",
        "properties": "tasks/catalog/plan_versions.py",
        "filters": "tasks/catalog/plan_versions.py",
        "invoice_display_name": "tasks/catalog/plan_versions.py",
        "min_amount_cents": "tasks/catalog/plan_versions.py",
        # ChargeInfo.prorated, priced in models/rating/pricing.py
        "prorated": "tasks/usage/rating.py",
        "tax_codes": "tasks/invoicing/",
        **{name: "tasks/catalog/plan_versions.py"
           for name in ("pay_in_advance", "invoiceable", "regroup_paid_fees")},
    },
    Plan: {
        **{name: "tasks/catalog/"
           for name in ("code", "name", "description", "interval", "amount_currency",
                        "amount_cents", "trial_period")},
        "charges": "tasks/catalog/plan_versions.py",
        **{name: "tasks/invoicing/"
           for name in ("invoice_display_name", "tax_codes", "minimum_commitment",
                        "pay_in_advance", "bill_charges_monthly")},
        "usage_thresholds": "models/progressive.py",  # from the stored document (§20)
    },
    UsageThreshold: {name: "models/progressive.py"
                     for name in ("amount_cents", "recurring", "threshold_display_name")},
    Customer: {
        **{name: "tasks/catalog/"
           for name in ("external_id", "name", "email", "currency", "timezone")},
        "tax_codes": "tasks/invoicing/",
        "invoice_grace_period": "tasks/invoicing/",
        "net_payment_term": "tasks/invoicing/",
        "billing_entity_code": "tasks/invoicing/",
    },
    Subscription: {
        **{name: "tasks/catalog/"
           for name in ("external_id", "external_customer_id", "plan_code", "name",
                        "billing_time", "subscription_at", "ending_at",
                        "on_termination_invoice", "on_termination_credit_note")},
        "usage_thresholds": "models/progressive.py",  # the override of the plan's (§20)
    },
    RecurringRule: {name: "tasks/catalog/"
                    for name in ("trigger", "interval", "method", "paid_credits",
                                 "granted_credits", "threshold_credits",
                                 "target_ongoing_balance", "started_at", "expiration_at")},
    Wallet: {
        **{name: "tasks/catalog/"
           for name in ("external_customer_id", "name", "currency", "rate_amount",
                        "paid_credits", "granted_credits", "priority", "expiration_at",
                        "recurring_transaction_rules")},
        "code": "models/catalog/",  # the wallet's natural key
    },
    Coupon: {
        **{name: "tasks/catalog/apply.py"
           for name in ("code", "name", "description", "coupon_type", "amount_cents",
                        "amount_currency", "percentage_rate", "frequency",
                        "frequency_duration", "reusable", "expiration", "expiration_at")},
        "applies_to": "models/catalog/documents.py",
    },
    CouponLimitation: {name: "models/catalog/documents.py"
                       for name in ("plan_codes", "billable_metric_codes")},
    CouponApplication: {name: "tasks/catalog/coupons.py"
                        for name in ("external_customer_id", "coupon_code", "amount_cents",
                                     "amount_currency", "percentage_rate", "frequency",
                                     "frequency_duration")},
}


@pytest.mark.parametrize("model", list(CONSUMED), ids=lambda m: m.__name__)
def test_every_declared_field_is_consumed_or_refused(model: type[LagoModel]) -> None:
    declared = set(model.model_fields)
    consumed = set(CONSUMED[model])
    refused_values = set(model.NOT_SUPPORTED_VALUES)
    unaccounted = declared - consumed - refused_values
    assert not unaccounted, f"{model.__name__}: {sorted(unaccounted)} are neither consumed, " \
                            f"allowlisted nor refused"
    assert not consumed & refused_values
    assert not (model.NO_EFFECT | set(model.NOT_SUPPORTED)) & declared
    assert not model.NO_EFFECT & set(model.NOT_SUPPORTED)
    for name, where in CONSUMED[model].items():
        path = ROOT / where  # a file, or a package whose modules are searched
        text = "".join(p.read_text() for p in sorted(path.rglob("*.py"))) if path.is_dir() \
            else path.read_text()
        assert re.search(rf"\.{name}\b|\b{name}\b\s*[=:]", text), f"{name} is not read in {where}"


def test_every_model_is_enumerated() -> None:
    models = {cls for cls in LagoModel.__subclasses__()}
    assert models == set(CONSUMED)


def _errors(*envelopes: dict[str, Any]) -> list[tuple[str, str]]:
    documents = [(f"doc{i}.json", 0, e) for i, e in enumerate([*BASE, *envelopes])]
    return [(e.path, e.message) for e in validate_documents(documents).errors]


REFUSED = [
    # (id, envelope, json path, message part)
    ("plan-unknown-tax", plan(tax_codes=["vat"]), "plan.tax_codes[0]", "unknown tax 'vat'"),
    ("commitment-taxes", plan(minimum_commitment={"amount_cents": 100, "tax_codes": ["vat"]}),
     "plan.minimum_commitment.tax_codes", "not supported yet"),
    ("plan-threshold-zero", plan(usage_thresholds=[{"amount_cents": 0}]),
     "plan.usage_thresholds[0].amount_cents", "must be greater than 0"),
    ("plan-two-recurring", plan(usage_thresholds=[{"amount_cents": 5, "recurring": True},
                                                  {"amount_cents": 6, "recurring": True}]),
     "plan.usage_thresholds[1].recurring", "only one recurring"),
    ("subscription-threshold-unknown-field",
     subscription(usage_thresholds=[{"amount_cents": 5, "every": 2}]),
     "subscription.usage_thresholds[0].every", "unknown field"),
    # Lago's bill_charges_monthly: yearly and semiannual plans only (Plan
    # #charges_billed_in_monthly_split_intervals?), without a commitment here
    ("plan-monthly-charges", plan(bill_charges_monthly=True), "plan.bill_charges_monthly",
     "yearly and semiannual plans only, not monthly"),
    ("plan-monthly-charges-commitment",
     plan(bill_charges_monthly=True, interval="yearly", minimum_commitment={"amount_cents": 1}),
     "plan.bill_charges_monthly", "minimum_commitment is not supported yet"),
    ("charge-in-advance-prorated", plan(charge(pay_in_advance=True, prorated=True)),
     "plan.charges[0].prorated", "prorated pay-in-advance charges are not supported yet"),
    ("charge-prorated", plan(charge(prorated=True)), "plan.charges[0].prorated",
     "needs a recurring billable metric"),
    ("charge-not-invoiceable", plan(charge(invoiceable=False)), "plan.charges[0].invoiceable",
     "only when pay_in_advance is true"),
    ("charge-regroup-unknown", plan(charge(pay_in_advance=True, invoiceable=False,
                                           regroup_paid_fees="credit_note")),
     "plan.charges[0].regroup_paid_fees", "unknown regroup_paid_fees 'credit_note'"),
    ("charge-unknown-tax", plan(charge(tax_codes=["vat"])), "plan.charges[0].tax_codes[0]",
     "unknown tax 'vat'"),
    ("charge-unknown", plan(charge(amount_cent=5)), "plan.charges[0].amount_cent",
     "unknown field 'amount_cent'"),
    ("filter-unknown", plan(charge(filters=[{"values": {"model": ["mistral-small"]},
                                             "propertie": {}}])),
     "plan.charges[0].filters[0].propertie", "unknown field"),
    ("metric-expression", metric(expression="round(x)"), "billable_metric.expression",
     "not supported yet"),
    ("metric-unknown", metric(aggregation="sum_agg"), "billable_metric.aggregation",
     "unknown field"),
    ("customer-unknown-tax", {"customer": {"external_id": "c2", "tax_codes": ["vat"]}},
     "customer.tax_codes[0]", "unknown tax 'vat'"),
    ("customer-negative-grace", {"customer": {"external_id": "c2", "invoice_grace_period": -1}},
     "customer.invoice_grace_period", "must not be negative"),
    ("customer-unknown-entity", {"customer": {"external_id": "c2",
                                              "billing_entity_code": "eu"}},
     "customer.billing_entity_code", "unknown billing entity 'eu'"),
    ("entity-numbering", {"billing_entity": {"code": "eu", "name": "EU",
                                             "document_numbering": "per_billing_entity"}},
     "billing_entity.document_numbering", "not supported yet"),
    ("entity-unknown-tax", {"billing_entity": {"code": "eu", "name": "EU",
                                               "tax_codes": ["vat"]}},
     "billing_entity.tax_codes[0]", "unknown tax 'vat'"),
    ("tax-unknown", {"tax": {"code": "vat", "name": "VAT", "rate": "20", "country": "FR"}},
     "tax.country", "unknown field"),
    ("customer-billing-config", {"customer": {"external_id": "c2", "billing_configuration": {
        "invoice_grace_period": 3}}}, "customer.billing_configuration", "not supported yet"),
    ("customer-terms", {"customer": {"external_id": "c2", "net_payment_term": -30}},
     "customer.net_payment_term", "must not be negative"),
    ("subscription-termination-invoice", subscription(on_termination_invoice="later"),
     "subscription.on_termination_invoice", "generate"),
    ("subscription-credit-note", subscription(on_termination_credit_note="void"),
     "subscription.on_termination_credit_note", "credit"),
    # lago-api app/models/subscription.rb: absence unless the plan is paid in advance
    ("subscription-credit-note-in-arrears", subscription(on_termination_credit_note="credit"),
     "subscription.on_termination_credit_note", "plans paid in advance only"),
    ("subscription-overrides", subscription(plan_overrides={"amount_cents": 5}),
     "subscription.plan_overrides", "not supported yet"),
    ("wallet-applies-to", wallet(applies_to={"fee_types": ["charge"]}), "wallet.applies_to",
     "not supported yet"),
    ("wallet-top-up-limit", wallet(paid_top_up_max_amount_cents=100),
     "wallet.paid_top_up_max_amount_cents", "not supported yet"),
    ("rule-paid-first", wallet(recurring_transaction_rules=[
        rule(invoice_requires_successful_payment=True)]),
     "wallet.recurring_transaction_rules[0].invoice_requires_successful_payment",
     "not supported yet"),
    ("wallet-unknown", wallet(rate="1"), "wallet.rate", "unknown field 'rate'"),
]


@pytest.mark.parametrize(("envelope", "path", "message"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_fields_not_billed_are_refused_by_name(
    envelope: dict[str, Any], path: str, message: str
) -> None:
    errors = _errors(envelope)
    assert any(p == path and message in m for p, m in errors), errors


@pytest.mark.parametrize(
    "envelope",
    [
        plan(amount_cents=0, pay_in_advance=False, trial_period=0, tax_codes=[],
             minimum_commitment=None, usage_thresholds=[], invoice_display_name="Tokens"),
        plan(charge(pay_in_advance=False, invoiceable=True, prorated=False, min_amount_cents=0,
                    tax_codes=None, lago_id="x", taxes=[])),
        subscription(ending_at=None, plan_overrides=None, lago_id="x", status="active"),
        subscription(ending_at="2099-01-01T00:00:00Z", on_termination_invoice="skip"),
        wallet(applies_to=None, balance_cents=100, credits_balance="5", lago_id="x",
               recurring_transaction_rules=[rule(lago_id="r", transaction_metadata=[])]),
        {"customer": {"external_id": "c2", "firstname": "Ada", "country": "FR",
                      "billing_configuration": {}, "net_payment_term": None}},
    ],
    ids=["plan", "charge", "subscription", "subscription-ending", "wallet", "customer"],
)
def test_empty_and_no_effect_fields_of_a_lago_export_are_accepted(
    envelope: dict[str, Any]
) -> None:
    assert _errors(envelope) == []


def test_examples_still_validate() -> None:
    from tallyflow.tasks.catalog import load_documents

    # the demo's customers subscribe to the Mistral plan: applied together, as `make demo` does
    documents = load_documents([ROOT / "examples" / "mistral", ROOT / "examples" / "demo"])
    result = validate_documents([(d.file, d.index, d.envelope) for d in documents])
    assert result.errors == []
    assert {d.kind for d in result.documents} == {
        "billable_metric", "plan", "customer", "subscription", "wallet"}


VAT = {"tax": {"code": "vat", "name": "VAT", "rate": "20.0", "applied_to_organization": False}}


def test_invoice_fields_are_accepted_with_their_taxes() -> None:
    assert _errors(
        VAT,
        plan(charge(min_amount_cents=500, tax_codes=["vat"]), amount_cents=1000,
             trial_period=14, tax_codes=["vat"],
             minimum_commitment={"amount_cents": 5000, "invoice_display_name": "Floor"}),
        {"customer": {"external_id": "c2", "tax_codes": ["vat"], "invoice_grace_period": 3}},
    ) == []


def test_one_default_billing_entity() -> None:
    entity = {"code": "eu", "name": "EU", "is_default": True}
    assert _errors({"billing_entity": entity}) == []
    errors = _errors({"billing_entity": entity},
                     {"billing_entity": {**entity, "code": "us", "name": "US"}})
    assert any(p == "billing_entity.is_default" and "already the default" in m
               for p, m in errors), errors
