"""Usage alerts on a subscription, as Lago evaluates them. Pure: no I/O.

An alert (Lago's ``UsageMonitoring::Alert``, ``app/models/usage_monitoring/alert.rb``) watches
one value of a subscription -- its current usage amount, one billable metric's current usage
amount or units -- and has thresholds, at most one of them ``recurring``. Each evaluation
compares the value now with the value the alert saw last (``previous_value``) and triggers
the thresholds crossed between them (``find_thresholds_crossed``); the alert then keeps the
new value whatever it is, so when usage goes down (a void, a credit note, a new period) and
comes back up, the same thresholds trigger again (docs/architecture.md §18).

Only the ``increasing`` direction exists for subscription alerts here; the wallet alert types
and ``billable_metric_lifetime_usage_units`` are Lago's but not Tallyflow's (refused by name).
``lifetime_usage_amount`` watches the lifetime usage of progressive billing
(``app/models/usage_monitoring/lifetime_usage_amount_alert.rb``; docs/architecture.md §20).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Final

from tallyflow.models.lago.resources import AlertThreshold
from tallyflow.models.rating.pricing import SubscriptionUsage

ALERT_TYPES: Final = (
    "current_usage_amount",
    "billable_metric_current_usage_amount",
    "billable_metric_current_usage_units",
    "lifetime_usage_amount",
)
METRIC_TYPES: Final = frozenset(ALERT_TYPES[1:3])
# Types whose value is not the current period's: a new period does not start them from 0.
LIFETIME_TYPES: Final = frozenset({"lifetime_usage_amount"})
# Lago's types Tallyflow does not carry out: refused by name, never accepted and ignored.
REFUSED_TYPES: Final = {
    "billable_metric_lifetime_usage_units": "lifetime usage is kept as an amount, not per "
                                            "metric in units",
    "wallet_balance_amount": "wallet alerts are tasks/wallets' own (docs/wallets.md)",
    "wallet_credits_balance": "wallet alerts are tasks/wallets' own (docs/wallets.md)",
    "wallet_ongoing_balance_amount": "wallet alerts are tasks/wallets' own (docs/wallets.md)",
    "wallet_credits_ongoing_balance": "wallet alerts are tasks/wallets' own (docs/wallets.md)",
}
FIELDS: Final = frozenset({"alert_type", "code", "name", "thresholds", "billable_metric_code",
                           "direction"})
# Lago's ``decimal(30, 5)`` columns (previous_value, thresholds' value).
SCALE: Final = Decimal("0.00001")


class AlertError(ValueError):
    """A refused alert: ``field`` is the one Lago names in its 422."""

    def __init__(self, field: str, code: str) -> None:
        super().__init__(f"{field}: {code}")
        self.field = field
        self.code = code


def decimal_text(value: Decimal) -> str:
    """A stored ``numeric(30, 5)`` as the API writes it: ``400``, ``1.5`` (no padding)."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(frozen=True)
class Threshold:
    code: str | None
    value: Decimal
    recurring: bool = False

    def as_lago(self) -> AlertThreshold:
        return {"code": self.code, "value": decimal_text(self.value),
                "recurring": self.recurring}


@dataclass(frozen=True)
class AlertSpec:
    """A checked alert request: what the tables store."""

    alert_type: str
    code: str
    name: str | None
    thresholds: tuple[Threshold, ...]
    billable_metric_code: str | None


def _value(raw: Any) -> Decimal:
    try:
        value = Decimal(str(raw))
    except ArithmeticError:
        raise AlertError("thresholds", "invalid_value") from None
    if not value.is_finite():
        raise AlertError("thresholds", "invalid_value")
    return value.quantize(SCALE)


def _thresholds(raw: Any) -> tuple[Threshold, ...]:
    if not isinstance(raw, list) or not raw:
        raise AlertError("thresholds", "value_is_mandatory")
    out: list[Threshold] = []
    for item in raw:
        if not isinstance(item, Mapping) or "value" not in item:
            raise AlertError("thresholds", "value_is_mandatory")
        unknown = set(item) - {"code", "value", "recurring"}
        if unknown:
            raise AlertError("thresholds", f"unsupported_field:{sorted(unknown)[0]}")
        out.append(Threshold(item.get("code"), _value(item["value"]),
                             bool(item.get("recurring", False))))
    if sum(t.recurring for t in out) > 1:
        # Lago: UsageMonitoring::CreateAlertService, "only_one_recurring_threshold"
        raise AlertError("thresholds", "only_one_recurring_threshold_allowed")
    if any(t.recurring and t.value <= 0 for t in out):
        raise AlertError("thresholds", "recurring_value_must_be_positive")
    return tuple(out)


def check_alert(body: Mapping[str, Any]) -> AlertSpec:
    """Lago's alert body checked: every field consumed or refused by name."""
    unknown = set(body) - FIELDS
    if unknown:
        raise AlertError(sorted(unknown)[0], "unsupported_field")
    alert_type = body.get("alert_type")
    if alert_type in REFUSED_TYPES:
        raise AlertError("alert_type", f"unsupported_alert_type:{alert_type}")
    if alert_type not in ALERT_TYPES:
        raise AlertError("alert_type", "value_is_invalid")
    if body.get("direction", "increasing") != "increasing":
        raise AlertError("direction", "unsupported_direction")
    code = body.get("code")
    if not isinstance(code, str) or not code:
        raise AlertError("code", "value_is_mandatory")
    metric = body.get("billable_metric_code")
    if alert_type in METRIC_TYPES and not metric:
        raise AlertError("billable_metric", "value_is_mandatory")
    if alert_type not in METRIC_TYPES and metric:
        raise AlertError("billable_metric", "value_must_be_blank")
    return AlertSpec(alert_type, code, body.get("name"), _thresholds(body.get("thresholds")),
                     metric)


def _recurring(previous: Decimal, current: Decimal, step: Decimal | None,
               initial: Decimal) -> list[Decimal]:
    """Lago's ``find_recurring_thresholds_crossed_increasing``: every ``initial + k*step``
    (k >= 1) in ``(previous, current]``. Lago's own steps start at ``ceil`` of ``previous``,
    so a previous value exactly on a step would trigger that step a second time; here a value
    already seen is never crossed again (as its fixed thresholds: ``it > previous_value``)."""
    if step is None:
        return []
    previous_steps = ((previous - initial) / step).to_integral_value(ROUND_CEILING)
    first = initial + max(previous_steps, Decimal(1)) * step
    current_steps = ((current - initial) / step).to_integral_value(ROUND_FLOOR)
    last = initial + current_steps * step
    out: list[Decimal] = []
    value = first
    while value <= last:
        if value > previous:
            out.append(value)
        value += step
    return out


def thresholds_crossed(previous: Decimal, current: Decimal,
                       thresholds: Sequence[Threshold]) -> list[Threshold]:
    """The thresholds crossed going from ``previous`` to ``current`` (Lago's
    ``find_thresholds_crossed_increasing`` then ``formatted_crossed_thresholds``): the fixed
    ones in ``(previous, current]``, then each multiple of the recurring one's value past the
    highest fixed one, as a threshold of that value marked ``recurring``. Nothing when the
    value did not go up. Note Lago's rule: a value below the lowest fixed threshold crosses
    nothing, recurring ones included."""
    if current <= previous:
        return []
    fixed = sorted({t.value for t in thresholds if not t.recurring})
    recurring = next((t for t in thresholds if t.recurring), None)
    values: list[Decimal] = []
    if fixed:
        if current < fixed[0]:
            return []
        if previous < fixed[-1]:
            values += [v for v in fixed if previous < v <= current]
    steps = _recurring(previous, current, recurring.value if recurring else None,
                       fixed[-1] if fixed else Decimal(0))
    crossed = [t for t in thresholds if not t.recurring and t.value in values]
    crossed.sort(key=lambda t: t.value)
    if recurring is not None:
        crossed += [Threshold(recurring.code, v, True) for v in steps if v not in values]
    return crossed


def alert_value(alert_type: str, metric_id: int | None,
                usage: SubscriptionUsage, lifetime_cents: int | None = None) -> Decimal | None:
    """The value an alert watches in a subscription's current usage (Lago's ``find_value`` of
    each alert class): the usage's ``amount_cents``, or the largest ``amount_cents`` or
    ``units`` among the charges on the alert's metric; ``None`` when no charge of the plan is
    on that metric (Lago then leaves the alert untouched)."""
    if alert_type == "current_usage_amount":
        return Decimal(usage.amount_cents)
    if alert_type == "lifetime_usage_amount":
        # Lago's LifetimeUsageAmountAlert: the lifetime usage's total_amount_cents
        return None if lifetime_cents is None else Decimal(lifetime_cents)
    lines = [c.line for c in usage.charges if c.charge.metric.id == metric_id]
    if not lines:
        return None
    if alert_type == "billable_metric_current_usage_amount":
        return Decimal(max(line.amount_cents for line in lines))
    return max(line.units for line in lines).quantize(SCALE)
