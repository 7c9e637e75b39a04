"""Prorated charge models: standard, volume and graduated over full and prorated units.

Lago prices a prorated charge's prorated units, but lets the full units decide the tier:
volume picks its range with the full units and prices the prorated units at it (plus the
range's flat amount); prorated graduated walks the entries in time order, letting the
cumulative full units decide which range each entry's units fall in and pricing the entry's
prorated share there (an entry crossing a boundary is split at its own prorated/full ratio),
with the flat amount of every range reached. Ports ``ProratedGraduatedService`` and
``VolumeService`` of Lago; entries are per local day here (see ``prorate_sum``), which gives
Lago's result whenever a day's events do not both add and remove across a range boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, localcontext

from tallyflow.models.rating.aggregation import ProratedUnits
from tallyflow.models.rating.charge_models.compute import volume_range
from tallyflow.models.rating.charge_models.properties import (
    _PRICING,
    ZERO,
    ChargeModel,
    ChargeProperties,
    GraduatedProperties,
    PriceRange,
    StandardProperties,
    VolumeProperties,
)
from tallyflow.models.rating.charge_models.results import ChargeResult

PRORATED_MODELS = frozenset({ChargeModel.STANDARD, ChargeModel.GRADUATED, ChargeModel.VOLUME})
"""Charge models Lago prorates in arrears (``Charge#validate_prorated``)."""


def compute_prorated(
    properties: ChargeProperties, units: ProratedUnits, events_count: int = 0
) -> ChargeResult:
    """Price prorated units; the result's ``units`` are the full units (Lago's fee units)."""
    full = max(units.full, ZERO)
    with localcontext(_PRICING):
        if isinstance(properties, StandardProperties):
            amount = max(units.prorated, ZERO) * properties.amount
            return ChargeResult(ChargeModel.STANDARD, full, amount, events_count)
        if isinstance(properties, VolumeProperties):
            tier = volume_range(properties.ranges, full)
            amount = max(units.prorated, ZERO) * tier.per_unit_amount + tier.flat_amount
            return ChargeResult(ChargeModel.VOLUME, full, amount, events_count)
        if isinstance(properties, GraduatedProperties):
            amount = prorated_graduated(properties.ranges, units)
            return ChargeResult(ChargeModel.GRADUATED, full, amount, events_count)
    raise ValueError(f"{type(properties).__name__} charges cannot be prorated")


def _coefficient(entries: Sequence[tuple[Decimal, Decimal]], index: int) -> Decimal:
    full, prorated = entries[index]
    return ZERO if full == 0 else prorated / full


def prorated_graduated(ranges: Sequence[PriceRange], units: ProratedUnits) -> Decimal:
    """Lago's ``ProratedGraduatedService#compute_amount``, step for step."""
    entries = units.entries
    count = len(entries)
    index = 0
    full_sum = ZERO
    overflow = ZERO
    amount = ZERO
    for tier in ranges:
        tier_prorated = ZERO
        if units.prorated != 0 and (overflow != 0 or index < count):
            amount += tier.flat_amount
        while index < count or overflow != 0:
            if overflow != 0:
                ratio = _coefficient(entries, index - 1)
                tier_prorated += overflow * ratio
                if tier.to_value is not None and full_sum >= tier.to_value:
                    overflow = full_sum - tier.to_value
                    tier_prorated -= overflow * ratio
                    break
                overflow = ZERO
            if index >= count:
                break
            full_sum += entries[index][0]
            tier_prorated += entries[index][1]
            index += 1
            if tier.to_value is not None and full_sum >= tier.to_value:
                overflow = full_sum - tier.to_value
                tier_prorated -= overflow * _coefficient(entries, index - 1)
        amount += tier_prorated * tier.per_unit_amount
    return amount
