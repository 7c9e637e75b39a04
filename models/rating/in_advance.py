"""Charges paid in advance: the fee of each new event, as Lago computes it. Pure: no I/O.

Lago (``Fees::CreatePayInAdvanceService``) bills an event of a ``pay_in_advance`` charge at
once: the charge's amount over the period with the event minus without it, rounded to cents;
for sum and unique_count only increases above the period's running maximum are billed (a
decrease followed by an increase is not billed twice). The sequence itself is
:func:`tallyflow.models.rating.charge_models.pay_in_advance_amounts`; this module places each
event in its charge filter bucket and pricing group, turns events into units (count: 1; sum:
its value; unique_count: Lago's +1/-1/0 against the values already seen) and prices the new
events after the ones already billed.

The late-event rule (docs/invoices.md, "Charges paid in advance"): fees already issued are never
re-priced. The events of a billing cycle are billed in (timestamp, ingestion order) among
themselves, *after* every event billed by earlier cycles, whatever their timestamps: an event
that arrives late pays its own delta on top of what is already billed. For unique_count the
value's activity is judged in time order (an older ``remove`` does not undo a newer ``add``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from tallyflow.models.rating.aggregation import (
    AggregationType,
    EventPoint,
    definition_of,
    per_event_units,
)
from tallyflow.models.rating.charge_models import Fee, pay_in_advance_amounts
from tallyflow.models.rating.filters import BucketId, assign_bucket
from tallyflow.models.rating.pricing import ChargeInfo

ZERO: Final = Decimal(0)
DEFAULT_BUCKET: Final = -1
"""How the default bucket (no charge filter matched) is stored: bucket positions are keys."""

Group = tuple[str | None, ...]


@dataclass(frozen=True)
class BilledEvent:
    """An event a previous cycle billed for this charge: where it went and its units
    (``point``: the event itself, needed for unique_count only)."""

    point: EventPoint | None
    bucket: BucketId
    group: Group
    units: Decimal


@dataclass(frozen=True)
class AdvanceFee:
    """The fee of one new event: ``units`` as the aggregation counts it (negative for a
    decrease or a removal), ``fee`` the money (never negative)."""

    point: EventPoint
    bucket: BucketId
    group: Group
    units: Decimal
    fee: Fee


def billable(kind: AggregationType, point: EventPoint) -> bool:
    """Events a pay-in-advance charge bills: every one for count; for sum those with a plain
    number in the field (the others are unbillable, as in arrears); for unique_count those
    with the field (the kind's ``billable_in_advance``)."""
    return definition_of(kind).billable_in_advance(point)


def place(charge: ChargeInfo, point: EventPoint) -> tuple[BucketId, Group]:
    """The charge filter bucket and pricing group an event is priced in."""
    bucket = assign_bucket(charge.charge_filters, point.properties)
    return bucket, tuple(point.properties.get(k) for k in charge.pricing_group_keys)


def advance_fees(
    charge: ChargeInfo,
    currency: str,
    billed: Sequence[BilledEvent],
    new: Sequence[EventPoint],
) -> list[AdvanceFee]:
    """The fees of the ``new`` events of one charge in one period, in (timestamp, ingestion)
    order, priced after the ``billed`` ones (in the order they were billed)."""
    kind = charge.metric.aggregation_type
    if not definition_of(kind).pay_in_advance:
        raise ValueError(f"pay in advance is not available for {kind.value}")
    cells: dict[tuple[BucketId, Group], list[EventPoint]] = {}
    for point in sorted((p for p in new if billable(kind, p)), key=lambda p: p.order_key):
        cells.setdefault(place(charge, point), []).append(point)
    out: list[AdvanceFee] = []
    for (bucket, group), points in cells.items():
        before = [b for b in billed if b.bucket == bucket and b.group == group]
        units = _units(kind, points, before)
        pricing = charge.pricing if bucket is None else charge.filters[bucket].pricing
        if pricing.properties is None:  # a default bucket without properties prices at 0
            amounts = [ZERO] * len(points)
        else:
            amounts = pay_in_advance_amounts(
                charge.charge_model, pricing.properties, units,
                bill_only_increases=definition_of(kind).bill_only_increases,
                prior_units=[b.units for b in before],
            )
        out += [AdvanceFee(p, bucket, group, u, Fee.from_amount(a, currency, u, 1))
                for p, u, a in zip(points, units, amounts, strict=True)]
    return sorted(out, key=lambda f: f.point.order_key)


def _units(
    kind: AggregationType, points: Sequence[EventPoint], before: Sequence[BilledEvent]
) -> list[Decimal]:
    """Units of ``points`` (already in order); kinds that read the billed events get their
    state first."""
    definition = definition_of(kind)
    prior = None
    if definition.in_advance_reads_billed_events:
        prior = definition.empty().fold(b.point for b in before if b.point is not None)
    return [u for _, u in per_event_units(kind, points, prior)]
