"""Cross-references between documents, and the changes an apply may not make.

Each document is checked against the catalog as it will be after the apply (the database
overlaid with the files), so a file may refer to something defined in another file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tallyflow.models.catalog.documents import (
    AddOn,
    BillableMetric,
    BillingEntity,
    Charge,
    Coupon,
    CouponApplication,
    Customer,
    LagoModel,
    Plan,
    Subscription,
    ValidDocument,
    Wallet,
    natural_key,
    normalise,
)
from tallyflow.models.catalog.errors import Issue, Loc
from tallyflow.models.catalog.fields import (
    ADD_ON,
    APPLIED_COUPON,
    BILLABLE_METRIC,
    BILLING_ENTITY,
    COUPON,
    CUSTOMER,
    KINDS,
    NOT_PAY_IN_ADVANCE,
    PLAN,
    SUBSCRIPTION,
    TAX,
    WALLET,
)
from tallyflow.models.catalog.prorated import prorated_metric_issues
from tallyflow.models.rating.charge_models import CHARGE_MODELS
from tallyflow.models.rating.filters import ALL_FILTER_VALUES


@dataclass
class Catalog:
    """Objects by kind and natural key; used for the database state and for the effective
    catalog (database overlaid with the files being applied)."""

    objects: dict[str, dict[tuple[str, ...], LagoModel]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )

    # Keys of documents of this apply that failed validation: already reported, so a reference
    # to them is not an "unknown" error as well.
    broken: set[tuple[str, tuple[str, ...]]] = field(default_factory=set)

    def get(self, kind: str, *key: str) -> Any:
        return self.objects[kind].get(tuple(key))

    def missing(self, kind: str, *key: str) -> bool:
        """True when nothing of that key exists, not even a document that failed validation."""
        return tuple(key) not in self.objects[kind] and (kind, tuple(key)) not in self.broken

    def put(self, kind: str, model: LagoModel) -> None:
        self.objects[kind][natural_key(kind, model)] = model

    def overlay(self, documents: Iterable[ValidDocument]) -> Catalog:
        merged = Catalog({kind: dict(items) for kind, items in self.objects.items()})
        for document in documents:
            merged.objects[document.kind][document.key] = document.model
        return merged


def reference_issues(kind: str, model: LagoModel, catalog: Catalog) -> list[Issue]:
    """Problems of one object against the rest of the (effective) catalog."""
    if isinstance(model, Plan):
        return _plan_references(model, catalog)
    if isinstance(model, Customer):
        issues = _tax_references(model.tax_codes, (CUSTOMER, "tax_codes"), catalog)
        code = model.billing_entity_code
        if code is not None and catalog.missing(BILLING_ENTITY, code):
            issues.append(Issue((CUSTOMER, "billing_entity_code"),
                                f"unknown billing entity {code!r}"))
        return issues
    if isinstance(model, BillingEntity):
        issues = _tax_references(model.tax_codes, (BILLING_ENTITY, "tax_codes"), catalog)
        others = [e.code for e in catalog.objects[BILLING_ENTITY].values()
                  if isinstance(e, BillingEntity) and e.is_default and e.code != model.code]
        if model.is_default and others:
            issues.append(Issue((BILLING_ENTITY, "is_default"),
                                f"billing entity {others[0]!r} is already the default"))
        return issues
    if isinstance(model, Subscription):
        return _subscription_references(model, catalog)
    if isinstance(model, Wallet):
        return _wallet_references(model, catalog)
    if isinstance(model, AddOn):
        return _tax_references(model.tax_codes, (ADD_ON, "tax_codes"), catalog)
    if isinstance(model, Coupon):
        return ([Issue((COUPON, "applies_to", "plan_codes", i), f"unknown plan {code!r}")
                 for i, code in enumerate(model.limited_plan_codes) if catalog.missing(PLAN, code)]
                + [Issue((COUPON, "applies_to", "billable_metric_codes", i),
                         f"unknown billable metric {code!r}")
                   for i, code in enumerate(model.limited_metric_codes)
                   if catalog.missing(BILLABLE_METRIC, code)])
    if isinstance(model, CouponApplication):
        return _application_references(model, catalog)
    return []


def _application_references(applied: CouponApplication, catalog: Catalog) -> list[Issue]:
    """The customer and the coupon exist; a fixed amount is in the customer's currency
    (Lago sets a customer's currency from it; Tallyflow refuses another one)."""
    issues: list[Issue] = []
    if catalog.missing(CUSTOMER, applied.external_customer_id):
        issues.append(Issue((APPLIED_COUPON, "external_customer_id"),
                            f"unknown customer {applied.external_customer_id!r}"))
    coupon: Coupon | None = catalog.get(COUPON, applied.coupon_code)
    if coupon is None:
        if catalog.missing(COUPON, applied.coupon_code):
            issues.append(Issue((APPLIED_COUPON, "coupon_code"),
                                f"unknown coupon {applied.coupon_code!r}"))
        return issues
    customer: Customer | None = catalog.get(CUSTOMER, applied.external_customer_id)
    currency = applied.amount_currency or coupon.amount_currency
    if (coupon.coupon_type == "fixed_amount" and customer and customer.currency
            and currency != customer.currency):
        issues.append(Issue((APPLIED_COUPON, "amount_currency"),
                            f"{currency} differs from the currency of customer "
                            f"{customer.external_id!r} ({customer.currency})"))
    return issues


def _tax_references(codes: Sequence[str], loc: Loc, catalog: Catalog) -> list[Issue]:
    return [Issue((*loc, i), f"unknown tax {code!r} (define it as a {{\"tax\": {{...}}}} object)")
            for i, code in enumerate(codes) if catalog.missing(TAX, code)]


def _plan_references(plan: Plan, catalog: Catalog) -> list[Issue]:
    issues: list[Issue] = _tax_references(plan.tax_codes, (PLAN, "tax_codes"), catalog)
    for index, charge in enumerate(plan.charges):
        loc: Loc = (PLAN, "charges", index)
        issues += _tax_references(charge.tax_codes, (*loc, "tax_codes"), catalog)
        if charge.metric_code is None:
            continue
        metric: BillableMetric | None = catalog.get(BILLABLE_METRIC, charge.metric_code)
        ref = "billable_metric_code" if charge.billable_metric_code else "billable_metric_id"
        if metric is None:
            if catalog.missing(BILLABLE_METRIC, charge.metric_code):
                issues.append(Issue((*loc, ref),
                                    f"unknown billable metric {charge.metric_code!r}"))
            continue
        issues += _charge_references(charge, metric, loc)
    return issues


def _charge_references(charge: Charge, metric: BillableMetric, loc: Loc) -> list[Issue]:
    issues: list[Issue] = []
    agg = metric.aggregation_type
    accepted = CHARGE_MODELS[charge.charge_model].aggregation_types
    if accepted is not None and agg not in accepted:
        issues.append(Issue((*loc, "charge_model"),
                            f"{charge.charge_model} needs a {' or '.join(sorted(accepted))} "
                            f"metric; {metric.code!r} is {agg}"))
    if charge.pay_in_advance and agg in NOT_PAY_IN_ADVANCE:
        issues.append(Issue((*loc, "pay_in_advance"),
                            f"is not available for {agg} metrics ({metric.code!r})"))
    elif charge.pay_in_advance and metric.recurring:
        issues.append(Issue((*loc, "pay_in_advance"),
                            f"true is not supported yet for recurring metrics ({metric.code!r}:"
                            f" billing the carried-over units again each period); Tallyflow"
                            f" would not bill it"))
    issues += prorated_metric_issues(charge, metric, loc)
    allowed = {f.key: f.values for f in metric.filters}
    for index, item in enumerate(charge.filters):
        for key, values in item.values.items():
            vloc = (*loc, "filters", index, "values", key)
            if key not in allowed:
                known = ", ".join(allowed) or "none"
                issues.append(Issue(vloc, f"{key!r} is not a filter of billable metric "
                                          f"{metric.code!r} (its filters: {known})"))
                continue
            for position, value in enumerate(values):
                if value != ALL_FILTER_VALUES and value not in allowed[key]:
                    issues.append(Issue((*vloc, position),
                                        f"{value!r} is not a value of filter {key!r} of "
                                        f"billable metric {metric.code!r} (allowed: "
                                        f"{', '.join(allowed[key])})"))
    return issues


def _subscription_references(subscription: Subscription, catalog: Catalog) -> list[Issue]:
    issues: list[Issue] = []
    customer: Customer | None = catalog.get(CUSTOMER, subscription.external_customer_id)
    plan: Plan | None = catalog.get(PLAN, subscription.plan_code)
    if catalog.missing(CUSTOMER, subscription.external_customer_id):
        issues.append(Issue((SUBSCRIPTION, "external_customer_id"),
                            f"unknown customer {subscription.external_customer_id!r}"))
    if catalog.missing(PLAN, subscription.plan_code):
        issues.append(Issue((SUBSCRIPTION, "plan_code"),
                            f"unknown plan {subscription.plan_code!r}"))
    if customer and plan and customer.currency and customer.currency != plan.amount_currency:
        issues.append(Issue((SUBSCRIPTION, "plan_code"),
                            f"plan {plan.code!r} bills in {plan.amount_currency} but customer "
                            f"{customer.external_id!r} uses {customer.currency}"))
    if plan and subscription.on_termination_credit_note is not None and not plan.pay_in_advance:
        # Lago: ``validates :on_termination_credit_note, absence: true, if: pay_in_arrears?``
        # (nothing of a plan billed in arrears is paid ahead, so there is nothing to credit)
        issues.append(Issue((SUBSCRIPTION, "on_termination_credit_note"),
                            f"applies to plans paid in advance only; plan {plan.code!r} bills"
                            " in arrears (leave it out)"))
    return issues


def _wallet_references(wallet: Wallet, catalog: Catalog) -> list[Issue]:
    customer: Customer | None = catalog.get(CUSTOMER, wallet.external_customer_id)
    if customer is None:
        if not catalog.missing(CUSTOMER, wallet.external_customer_id):
            return []
        return [Issue((WALLET, "external_customer_id"),
                      f"unknown customer {wallet.external_customer_id!r}")]
    if customer.currency and customer.currency != wallet.currency:
        return [Issue((WALLET, "currency"),
                      f"{wallet.currency} differs from the currency of customer "
                      f"{customer.external_id!r} ({customer.currency})")]
    return []


def _change_issues(kind: str, model: LagoModel, previous: LagoModel | None) -> list[Issue]:
    """Changes Lago does not allow on an existing object (they would rewrite history)."""
    if isinstance(model, Subscription) and isinstance(previous, Subscription):
        if model.external_customer_id != previous.external_customer_id:
            return [Issue((kind, "external_customer_id"),
                          f"subscription {model.external_id!r} belongs to customer "
                          f"{previous.external_customer_id!r}; it cannot move to another")]
    if isinstance(model, Plan) and isinstance(previous, Plan):
        # fees billed at a period's start would be billed again at its end, or never
        # (Lago locks it once the plan has subscriptions; Tallyflow once the plan exists)
        if model.pay_in_advance != previous.pay_in_advance:
            return [Issue((kind, "pay_in_advance"),
                          f"an existing plan's pay_in_advance cannot change "
                          f"({previous.pay_in_advance} -> {model.pay_in_advance}); create a "
                          f"plan with another code and change the subscriptions' plan")]
    if (isinstance(model, CouponApplication) and previous is not None
            and normalise(model) != normalise(previous)):
        # the changed document would be another application (Lago has no update)
        return [Issue((kind,), f"coupon {model.coupon_code!r} is already applied to customer "
                               f"{model.external_customer_id!r}; an applied coupon does not "
                               f"change (terminate it, or apply the coupon again with "
                               f"`tallyflow coupons apply` or POST /applied_coupons)")]
    if isinstance(model, Wallet) and isinstance(previous, Wallet):
        if model.currency != previous.currency:
            return [Issue((kind, "currency"),
                          f"an existing wallet's currency cannot change "
                          f"({previous.currency} -> {model.currency})")]
    return []
