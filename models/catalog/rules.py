"""Rules inside one document: fields, charge properties, metrics, plans, wallets.

Charge properties are checked by the charge models themselves
(``tallyflow.models.rating.charge_models``); this module places their messages.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from pydantic import (
    ValidationError,
)

from tallyflow.models.catalog.canonical import dumps, format_datetime, format_decimal
from tallyflow.models.catalog.documents import (
    MODELS,
    AddOn,
    BillableMetric,
    Charge,
    ChargeFilterPayload,
    LagoModel,
    Plan,
    RecurringRule,
    Subscription,
    UsageThreshold,
    Wallet,
    wallet_code,
)
from tallyflow.models.catalog.errors import Issue, Loc
from tallyflow.models.catalog.fields import (
    ADD_ON,
    APPLIED_COUPON,
    BILLABLE_METRIC,
    BILLING_ENTITY,
    COUPON,
    CUSTOMER,
    GROUP_KEY_PROPERTIES,
    KINDS,
    NEEDS_FIELD_NAME,
    NEVER_RECURRING,
    PLAN,
    SUBSCRIPTION,
    TAX,
    WALLET,
    _json_type,
)
from tallyflow.models.catalog.prorated import prorated_issues
from tallyflow.models.rating.aggregation import AggregationType
from tallyflow.models.rating.charge_models import (
    CHARGE_MODELS,
    JsonNumber,
    validate_properties,
)
from tallyflow.models.rating.periods import SPLIT_INTERVALS


def _as_file_input(value: Any) -> Any:
    """File numbers (Decimal, read from their text) marked as such: prices refuse them, range
    bounds accept them (see ``tallyflow.models.rating.charge_models.JsonNumber``)."""
    if isinstance(value, Decimal):
        return JsonNumber(value)
    if isinstance(value, Mapping):
        return {k: _as_file_input(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_file_input(v) for v in value]
    return value


def _properties_messages(charge_model: str, properties: Mapping[str, Any]) -> list[str]:
    """Every problem of one charge's (or filter's) properties, each ``"<path>: <reason>"``."""
    return [*_group_key_errors(properties),
            *validate_properties(charge_model, _as_file_input(properties))]


def _group_key_errors(properties: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    for name in GROUP_KEY_PROPERTIES:
        keys = properties.get(name)
        if keys is None:
            continue
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            errors.append(f"{name}: must be a list of property names")
    given = [properties.get(n) for n in GROUP_KEY_PROPERTIES if properties.get(n)]
    if len(given) == 2 and given[0] != given[1]:
        errors.append("grouped_by: conflicts with pricing_group_keys; give only one of them")
    return errors


def _prices_given(properties: Mapping[str, Any]) -> bool:
    # Empty properties are valid in Lago: the bucket prices at 0 (Lago fills zero defaults).
    return any(key not in GROUP_KEY_PROPERTIES for key in properties)


def _property_issues(
    charge_model: str, properties: Mapping[str, Any], loc: Loc
) -> list[Issue]:
    """Property messages (``"graduated_ranges[1].from_value: reason"``) as issues whose
    location continues the charge's JSON path, so the error names the exact field."""
    if _prices_given(properties):
        messages = _properties_messages(charge_model, properties)
    else:
        messages = _group_key_errors(properties)
    issues = []
    for message in messages:
        where, _, reason = message.partition(": ")
        sub = tuple(int(p) if p.isdigit() else p
                    for p in re.split(r"\.|\[|\]\.?", where) if p != "")
        issues.append(Issue((*loc, *sub), reason))
    return issues


def _metric_issues(metric: BillableMetric) -> list[Issue]:
    issues: list[Issue] = []
    agg = metric.aggregation_type
    if agg in NEEDS_FIELD_NAME and not (metric.field_name or "").strip():
        issues.append(Issue(("field_name",), f"is required for {agg}"))
    if metric.recurring and agg in NEVER_RECURRING:
        issues.append(Issue(("recurring",), f"{agg} cannot be recurring"))
    if agg == AggregationType.WEIGHTED_SUM and metric.weighted_interval is None:
        issues.append(Issue(("weighted_interval",), "is required for weighted_sum_agg (seconds)"))
    if agg != AggregationType.WEIGHTED_SUM and metric.weighted_interval is not None:
        issues.append(Issue(("weighted_interval",), "applies to weighted_sum_agg only"))
    if metric.rounding_precision is not None and metric.rounding_function is None:
        issues.append(Issue(("rounding_precision",), "needs a rounding_function"))
    seen: dict[str, int] = {}
    for index, item in enumerate(metric.filters):
        if item.key in seen:
            issues.append(Issue(("filters", index, "key"), f"duplicate filter key {item.key!r} "
                                                           f"(also filters[{seen[item.key]}])"))
        seen.setdefault(item.key, index)
        issues += _duplicate_values(item.values, ("filters", index, "values"))
    return issues


def _empty(value: Any) -> bool:
    """What "absent" looks like in a Lago export: null, [], {}, "", 0 or false."""
    return value is None or value is False or value == 0 or value in ("", [], {})


def _shown(value: Any) -> str:
    if isinstance(value, Decimal):
        return format_decimal(value)
    return json.dumps(value) if isinstance(value, bool | int | str) else _json_type(value)


def field_issues(model: LagoModel, loc: Loc = ()) -> list[Issue]:
    """Every field of ``model`` (and of its nested parts) that is neither billed nor a
    documented no-effect field, refused by name: nothing is accepted and then ignored."""
    issues: list[Issue] = []
    kind = type(model).__name__
    for name, value in (model.model_extra or {}).items():
        if name in model.NO_EFFECT:
            continue
        if name in model.NOT_SUPPORTED:
            if not _empty(value):
                issues.append(Issue((*loc, name), f"is not supported yet "
                                                  f"({model.NOT_SUPPORTED[name]}); remove it "
                                                  f"or leave it empty"))
            continue
        issues.append(Issue((*loc, name), f"unknown field {name!r} for a {kind}: it would be "
                                          f"ignored, so it is refused (check the spelling)"))
    for name, (unsupported, what) in model.NOT_SUPPORTED_VALUES.items():
        value = getattr(model, name)
        if unsupported(value):
            issues.append(Issue((*loc, name), f"{_shown(value)} is not supported yet ({what}); "
                                              f"Tallyflow would not bill it"))
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, LagoModel):
            issues += field_issues(value, (*loc, name))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, LagoModel):
                    issues += field_issues(item, (*loc, name, index))
    return issues


def _duplicate_values(values: Sequence[str], loc: Loc) -> list[Issue]:
    counts = Counter(values)
    return [Issue((*loc, i), f"duplicate value {v!r}") for i, v in enumerate(values)
            if counts[v] > 1 and values.index(v) != i]


def threshold_issues(thresholds: Sequence[UsageThreshold] | None,
                     loc: Loc = ("usage_thresholds",)) -> list[Issue]:
    """Lago's ``UsageThreshold`` validations: ``amount_cents`` above 0, unique among the
    fixed ones, at most one ``recurring`` (docs/architecture.md §20)."""
    issues: list[Issue] = []
    seen: set[int] = set()
    recurring = 0
    for index, item in enumerate(thresholds or ()):
        if item.amount_cents <= 0:
            issues.append(Issue((*loc, index, "amount_cents"), "must be greater than 0"))
        if item.recurring:
            recurring += 1
            if recurring > 1:
                issues.append(Issue((*loc, index, "recurring"),
                                    "only one recurring threshold is allowed"))
        elif item.amount_cents in seen:
            issues.append(Issue((*loc, index, "amount_cents"),
                                f"duplicate threshold {item.amount_cents}"))
        else:
            seen.add(item.amount_cents)
    return issues


def _plan_issues(plan: Plan) -> list[Issue]:
    issues: list[Issue] = threshold_issues(plan.usage_thresholds)
    if plan.bill_charges_monthly:
        issues += _monthly_charges_issues(plan)
    for index, charge in enumerate(plan.charges):
        issues += _charge_issues(charge, ("charges", index))
    return issues


def _monthly_charges_issues(plan: Plan) -> list[Issue]:
    """``bill_charges_monthly``: Lago's for yearly and semiannual plans (it drops the flag on
    others; Tallyflow refuses it rather than ignore it), without a minimum commitment here."""
    loc = ("bill_charges_monthly",)
    if plan.interval not in SPLIT_INTERVALS:
        return [Issue(loc, f"applies to yearly and semiannual plans only, not {plan.interval}")]
    if plan.minimum_commitment is not None:
        return [Issue(loc, "with a minimum_commitment is not supported yet")]
    return []


def _charge_issues(charge: Charge, loc: Loc) -> list[Issue]:
    issues: list[Issue] = []
    if charge.metric_code is None:
        issues.append(Issue((*loc, "billable_metric_code"),
                            "is required (or billable_metric_id naming the metric code)"))
    elif (charge.billable_metric_code and charge.billable_metric_id
          and charge.billable_metric_code != charge.billable_metric_id):
        issues.append(Issue((*loc, "billable_metric_id"),
                            f"conflicts with billable_metric_code "
                            f"{charge.billable_metric_code!r}; give only one of them"))
    if not charge.invoiceable and not charge.pay_in_advance:
        issues.append(Issue((*loc, "invoiceable"), "can be false only when pay_in_advance is true"))
    if charge.pay_in_advance and CHARGE_MODELS[charge.charge_model].refused_in_advance:
        issues.append(Issue((*loc, "pay_in_advance"),
                            f"is not available for {charge.charge_model} charges"))
    issues += prorated_issues(charge, loc)
    issues += _advance_issues(charge, loc)
    issues += _property_issues(charge.charge_model, charge.properties, (*loc, "properties"))
    seen: dict[str, int] = {}
    for index, item in enumerate(charge.filters):
        floc = (*loc, "filters", index)
        issues += _charge_filter_issues(charge.charge_model, item, floc)
        signature = dumps({k: sorted(v) for k, v in item.values.items()})
        if signature in seen:
            issues.append(Issue((*floc, "values"),
                                f"same values as filters[{seen[signature]}]"))
        seen.setdefault(signature, index)
    return issues


def _advance_issues(charge: Charge, loc: Loc) -> list[Issue]:
    """Lago's pay-in-advance rules (``Charge#validate_regroup_paid_fees``,
    ``#validate_min_amount_cents``), and the combinations Tallyflow does not bill yet."""
    issues: list[Issue] = []
    if charge.regroup_paid_fees is not None and not (
            charge.pay_in_advance and not charge.invoiceable):
        issues.append(Issue((*loc, "regroup_paid_fees"),
                            "is only compatible with pay_in_advance true and invoiceable false"))
    if not charge.pay_in_advance:
        return issues
    if charge.min_amount_cents > 0:
        issues.append(Issue((*loc, "min_amount_cents"),
                            "is not compatible with pay_in_advance (Lago)"))
    # prorated with pay_in_advance: refused in models/catalog/prorated.py
    why = CHARGE_MODELS[charge.charge_model].in_advance_not_billed
    if why is not None:
        issues.append(Issue((*loc, "pay_in_advance"),
                            f"true is not supported yet for {charge.charge_model} charges "
                            f"({why}); Tallyflow would not bill it"))
    return issues


def _charge_filter_issues(charge_model: str, item: ChargeFilterPayload, loc: Loc) -> list[Issue]:
    issues: list[Issue] = []
    if not item.values:
        issues.append(Issue((*loc, "values"), "needs at least one key"))
    for key, values in item.values.items():
        if not values:
            issues.append(Issue((*loc, "values", key), "needs at least one value"))
        issues += _duplicate_values(values, (*loc, "values", key))
    issues += _property_issues(charge_model, item.properties, (*loc, "properties"))
    return issues


def _subscription_issues(subscription: Subscription) -> list[Issue]:
    issues = threshold_issues(subscription.usage_thresholds)
    start, end = subscription.subscription_at, subscription.ending_at
    if start is not None and end is not None and end <= start:
        issues.append(Issue(("ending_at",),
                            f"must be after subscription_at ({format_datetime(start)})"))
    return issues


def _wallet_issues(wallet: Wallet) -> list[Issue]:
    issues: list[Issue] = []
    for index, rule in enumerate(wallet.recurring_transaction_rules):
        issues += _rule_issues(rule, ("recurring_transaction_rules", index))
    return issues


def _rule_issues(rule: RecurringRule, loc: Loc) -> list[Issue]:
    issues: list[Issue] = []
    if rule.trigger == "interval" and rule.interval is None:
        issues.append(Issue((*loc, "interval"), "is required when trigger is interval"))
    if rule.trigger == "threshold" and rule.threshold_credits is None:
        issues.append(Issue((*loc, "threshold_credits"), "is required when trigger is threshold"))
    if rule.method == "target" and rule.target_ongoing_balance is None:
        issues.append(Issue((*loc, "target_ongoing_balance"), "is required when method is target"))
    if rule.started_at and rule.expiration_at and rule.expiration_at <= rule.started_at:
        issues.append(Issue((*loc, "expiration_at"), "must be after started_at"))
    return issues


def _add_on_issues(add_on: AddOn) -> list[Issue]:
    # Lago's AddOn model: amount_cents greater than 0 (spec/models/add_on_spec.rb)
    if add_on.amount_cents <= 0:
        return [Issue(("amount_cents",), "must be greater than 0")]
    return []


def _coupon_issues(coupon: Any) -> list[Issue]:
    """Lago's coupon validations (app/models/coupon.rb, ``Coupons::CreateService``)."""
    issues: list[Issue] = []
    if coupon.coupon_type == "fixed_amount":
        if not coupon.amount_cents:
            issues.append(Issue(("amount_cents",), "a fixed_amount coupon needs an amount"
                                                   " greater than 0"))
        if coupon.amount_currency is None:
            issues.append(Issue(("amount_currency",), "a fixed_amount coupon needs a currency"))
    elif not coupon.percentage_rate:
        issues.append(Issue(("percentage_rate",), "a percentage coupon needs a rate greater"
                                                  " than 0"))
    issues += _frequency_issues(coupon.frequency, coupon.frequency_duration)
    if coupon.expiration == "time_limit" and coupon.expiration_at is None:
        issues.append(Issue(("expiration_at",), "expiration time_limit needs expiration_at"))
    if coupon.limited_plan_codes and coupon.limited_metric_codes:
        issues.append(Issue(("applies_to",), "only one limitation type per coupon: plan_codes"
                                             " or billable_metric_codes"))
    return issues


def _frequency_issues(frequency: str | None, duration: int | None) -> list[Issue]:
    if frequency == "recurring" and (duration is None or duration <= 0):
        return [Issue(("frequency_duration",), "a recurring coupon needs a frequency_duration"
                                               " greater than 0")]
    return []


_DOCUMENT_CHECKS: dict[str, Callable[[Any], list[Issue]]] = {
    TAX: lambda tax: [],
    BILLING_ENTITY: lambda entity: [],
    BILLABLE_METRIC: _metric_issues,
    PLAN: _plan_issues,
    CUSTOMER: lambda customer: [],
    SUBSCRIPTION: _subscription_issues,
    WALLET: _wallet_issues,
    ADD_ON: _add_on_issues,
    COUPON: _coupon_issues,
    APPLIED_COUPON: lambda applied: _frequency_issues(applied.frequency,
                                                      applied.frequency_duration),
}


def envelope_kind(envelope: Any) -> str:
    """The kind of a Lago envelope (its one key), or ValueError saying what was expected."""
    expected = ", ".join(f'{{"{k}": {{...}}}}' for k in KINDS)
    if not isinstance(envelope, Mapping):
        raise ValueError(f"expected a Lago envelope such as {expected}; got a "
                         f"JSON {_json_type(envelope)}")
    keys = list(envelope)
    if len(keys) != 1 or keys[0] not in MODELS:
        raise ValueError(f"expected exactly one envelope key, one of: {', '.join(KINDS)}; "
                         f"got {', '.join(map(str, keys)) or 'an empty object'}")
    return str(keys[0])


def parse_body(kind: str, body: Any) -> tuple[LagoModel | None, list[Issue]]:
    """One envelope body -> its model, or every issue found in it (paths relative to the kind).

    Field-level problems come from pydantic (all of them at once); rules spanning several fields
    run only once the fields themselves are valid.
    """
    if not isinstance(body, Mapping):
        return None, [Issue((kind,), f"must be an object; got a JSON {_json_type(body)}")]
    try:
        model = MODELS[kind].model_validate(body)
    except ValidationError as exc:
        issues = [Issue((kind, *err["loc"]), _pydantic_message(err))
                  for err in exc.errors(include_url=False)]
        return None, issues + [Issue((kind, *i.loc), i.message) for i in _part_issues(kind, body)]
    if isinstance(model, Wallet) and model.code is None:
        model.code = wallet_code(model.name)
    issues = [Issue((kind, *i.loc), i.message)
              for i in [*field_issues(model), *_DOCUMENT_CHECKS[kind](model)]]
    return (None if issues else model), issues


def _part_issues(kind: str, body: Mapping[str, Any]) -> list[Issue]:
    """Rules of the parts (charges, wallet rules) that are valid on their own, for a document
    that failed field validation elsewhere: so that one apply still reports every problem."""
    parts: dict[str, tuple[str, type[LagoModel], Callable[[Any, Loc], list[Issue]]]] = {
        PLAN: ("charges", Charge, _charge_issues),
        WALLET: ("recurring_transaction_rules", RecurringRule, _rule_issues),
    }
    if kind not in parts or not isinstance(body.get(parts[kind][0]), list):
        return []
    name, model, check = parts[kind]
    issues: list[Issue] = []
    for index, item in enumerate(body[name]):
        try:
            part = model.model_validate(item)
        except ValidationError:
            continue  # its field errors are already in the document's errors
        issues += check(part, (name, index))
    return issues


def _pydantic_message(error: Mapping[str, Any]) -> str:
    if error["type"] == "missing":
        return "is required"
    if error["type"] == "timezone_aware":
        return "needs a timezone offset (e.g. 2024-01-01T00:00:00Z)"
    return str(error["msg"]).removeprefix("Value error, ")
