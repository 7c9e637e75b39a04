"""percentage: a rate percent of the paying units plus a fixed amount per paying event, with
free units or events and per-transaction minimum and maximum (Lago's ``PercentageService``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from tallyflow.models.rating.charge_models.base import (
    ZERO,
    ChargeModelDefinition,
    ChargeProperties,
    ChargeResult,
    PercentageDetail,
    PropertyReader,
)


@dataclass(frozen=True)
class PercentageProperties(ChargeProperties):
    rate: Decimal
    fixed_amount: Decimal = ZERO
    free_units_per_events: int | None = None
    free_units_per_total_aggregation: Decimal | None = None
    per_transaction_min_amount: Decimal | None = None
    per_transaction_max_amount: Decimal | None = None

    @property
    def has_min_max(self) -> bool:
        return (
            self.per_transaction_min_amount is not None
            or self.per_transaction_max_amount is not None
        )

    @property
    def needs_event_values(self) -> bool:
        """Free units and per-transaction clamps depend on each event, in time order."""
        return (
            bool(self.free_units_per_events)
            or bool(self.free_units_per_total_aggregation)
            or self.has_min_max
        )


class Percentage(ChargeModelDefinition[PercentageProperties]):
    name = "percentage"
    properties_type = PercentageProperties

    def parse(
        self, data: Mapping[str, object], reader: PropertyReader
    ) -> PercentageProperties | None:
        rate = reader.price(data, "rate", "rate")
        fixed = reader.optional_price(data, "fixed_amount", "fixed_amount")
        free_events = reader.integer(
            data, "free_units_per_events", "free_units_per_events", minimum=0, required=False
        )
        free_total = reader.optional_price(
            data, "free_units_per_total_aggregation", "free_units_per_total_aggregation"
        )
        low = reader.optional_price(
            data, "per_transaction_min_amount", "per_transaction_min_amount"
        )
        high = reader.optional_price(
            data, "per_transaction_max_amount", "per_transaction_max_amount"
        )
        if low is not None and high is not None and low > high:
            reader.errors.append(
                "per_transaction_max_amount: must be greater than or equal to "
                "per_transaction_min_amount"
            )
        if rate is None or reader.errors:
            return None
        return PercentageProperties(rate, fixed or ZERO, free_events, free_total, low, high)

    def price(
        self,
        props: PercentageProperties,
        units: Decimal,
        *,
        events_count: int,
        event_values: Sequence[Decimal] | None,
        precise_total_amount_cents: Decimal,
        currency: str | None,
    ) -> ChargeResult:
        """rate % of the paying units plus a fixed amount per paying event, clamped per event."""
        if event_values is None:
            if props.needs_event_values:
                raise ValueError(
                    "percentage with free units or per-transaction min/max needs event_values"
                )
            walk = _FreeWalk(ZERO, 0, ())
        else:
            events_count = len(event_values)
            walk = _walk_free_units(props, event_values)
        paid_units = max(units - walk.free_value, ZERO)
        paid_events = events_count - walk.free_events
        percentage_amount = (paid_units * props.rate).scaleb(-2)
        fixed_amount = ZERO if units == 0 else paid_events * props.fixed_amount
        amount = percentage_amount + fixed_amount
        if props.has_min_max:
            amount = sum((_clamped_event_amount(props, v) for v in walk.paying_values), ZERO)
        detail = PercentageDetail(
            free_units=min(walk.free_value, units),
            paid_units=paid_units,
            free_events=walk.free_events,
            paid_events=paid_events,
            rate=props.rate,
            percentage_amount=percentage_amount,
            fixed_fee_amount=fixed_amount,
            min_max_adjustment_amount=amount - percentage_amount - fixed_amount,
        )
        return ChargeResult(self.name, units, amount, events_count, detail=detail)

    def needs_event_values(self, props: PercentageProperties) -> bool:
        """Only free units or per-transaction min/max need the values (they cannot be folded
        into a price-independent state): the DB layer reads them for such charges."""
        return props.needs_event_values

    def describe(self, properties: Mapping[str, object]) -> str:
        p = properties
        fixed = f" + {p['fixed_amount']} per event" if p.get("fixed_amount") else ""
        return f"{p.get('rate')}%{fixed}"


PERCENTAGE: Final = Percentage()


@dataclass(frozen=True)
class _FreeWalk:
    free_value: Decimal
    free_events: int
    paying_values: tuple[Decimal, ...]


def _walk_free_units(props: PercentageProperties, values: Sequence[Decimal]) -> _FreeWalk:
    """Split events into free and paying, in time order.

    The first ``free_units_per_events`` events and the first ``free_units_per_total_aggregation``
    of value are free, whichever runs out first. The event that exhausts the free amount pays
    for its remainder (and its fixed fee), as in Lago.
    """
    remaining_events = props.free_units_per_events or None
    remaining_amount = props.free_units_per_total_aggregation or None
    free_active = remaining_events is not None or remaining_amount is not None
    free_value, free_events = ZERO, 0
    paying: list[Decimal] = []
    for value in values:
        if free_active and (remaining_amount is None or value < remaining_amount):
            free_value += value
            free_events += 1
            if remaining_amount is not None:
                remaining_amount -= value
            if remaining_events is not None:
                remaining_events -= 1
                free_active = remaining_events > 0
            continue
        if free_active and remaining_amount is not None:
            free_value += remaining_amount
            value -= remaining_amount
            free_active = False
        paying.append(value)
    return _FreeWalk(free_value, free_events, tuple(paying))


def _clamped_event_amount(props: PercentageProperties, value: Decimal) -> Decimal:
    amount = (value * props.rate).scaleb(-2) + props.fixed_amount
    if props.per_transaction_min_amount is not None:
        amount = max(amount, props.per_transaction_min_amount)
    if props.per_transaction_max_amount is not None:
        amount = min(amount, props.per_transaction_max_amount)
    return amount
