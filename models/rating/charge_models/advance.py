"""Pay in advance and minimum commitment amounts over the charge models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, localcontext

from tallyflow.models.rating.charge_models.compute import compute_charge
from tallyflow.models.rating.charge_models.parsing import properties_from
from tallyflow.models.rating.charge_models.properties import (
    _PRICING,
    ONE,
    ZERO,
    ChargeModel,
    ChargeProperties,
)
from tallyflow.models.rating.charge_models.results import Fee
from tallyflow.models.rating.money import (
    from_minor,
    round_minor,
)


def pay_in_advance_amounts(
    charge_model: ChargeModel | str,
    properties: ChargeProperties | Mapping[str, object],
    event_units: Sequence[Decimal],
    *,
    bill_only_increases: bool,
    prior_units: Sequence[Decimal] = (),
) -> list[Decimal]:
    """Per-event fee (major units, >= 0) for pay-in-advance charges, in time order.

    Each event pays ``price(after) - price(before)``. With ``bill_only_increases`` (sum and
    unique_count) the billed units are the running maximum, so a decrease followed by a
    re-increase is not billed twice. Before the first event nothing has been billed, so the
    first event pays the first tier's flat amount too and the fees add up to the in-arrears
    price. ``prior_units`` are the period's events already billed; only the fees of
    ``event_units`` are returned.
    """
    model = ChargeModel(charge_model)
    if model is ChargeModel.DYNAMIC:
        raise ValueError("dynamic in advance: each event pays its precise_total_amount_cents")
    props = properties_from(model, properties)
    every = [*prior_units, *event_units]
    cumulative = billed = previous_price = ZERO
    fees: list[Decimal] = []
    with localcontext(_PRICING):
        for index, delta in enumerate(every):
            cumulative += delta
            billed = max(billed, cumulative) if bill_only_increases else cumulative
            price = compute_charge(
                model, props, billed, events_count=index + 1, event_values=every[: index + 1]
            ).amount
            fees.append(max(price - previous_price, ZERO))
            previous_price = price
    return fees[len(prior_units) :]


def min_amount_true_up(
    charge_amount_cents: int,
    min_amount_cents: Decimal | int,
    currency: str,
    prorata: Decimal = ONE,
) -> Fee:
    """The fee that brings a charge up to its (prorated) minimum at period end.

    ``charge_amount_cents`` is the sum of the charge's rounded fees for the period;
    ``prorata`` the share of the period the subscription covered (see periods.prorata_days).
    """
    with localcontext(_PRICING):
        minimum = Decimal(min_amount_cents) * prorata
        precise = max(minimum - charge_amount_cents, ZERO)
        cents = max(round_minor(minimum) - charge_amount_cents, ZERO)
    return Fee(
        currency=currency,
        units=ONE if cents > 0 else ZERO,
        amount=from_minor(precise, currency),
        amount_cents=int(cents),
        precise_amount_cents=precise,
    )
