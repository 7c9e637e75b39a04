"""Projected usage: the current period's usage carried to the period's end, as Lago projects it.

Lago (``app/services/fees/projection_service.rb``, ``charge_models/base_service.rb``,
``serializers/v1/customers/projected_charge_usage_serializer.rb``):

- the period ratio is the days passed over the days of the charges' period, both counted in
  the customer's timezone (``Utils::Datetime.date_diff_with_timezone``: whole days, rounded
  up), as a float; 1 once the period has ended, 0 before it starts;
- each fee's units are divided by the ratio and rounded to 2 decimals (``BigDecimal#round``,
  half up), then priced by the charge model like any units; a recurring metric's units are
  its projection already (its amount stays), and a ratio outside (0, 1] projects nothing;
- a charge with filters projects the sum of its filters' fees (the default bucket left out).

Here the pricing is the cycle's own: ``rate_subscription(..., project=projector(ratio))``
prices every (filter bucket, pricing group) with its charge model after projecting its units
(``models/rating/pricing.py``); ``with_projection`` puts the projected figures beside the
current ones, in Lago's ``customer_projected_usage`` shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

from tallyflow.models.lago.money import plain
from tallyflow.models.rating.pricing import Projector

ZERO: Final = Decimal(0)
CENT: Final = Decimal("0.01")
_DAY: Final = 86_400.0


def lago_days(start: datetime, end: datetime, timezone: str | None) -> int:
    """Whole days from ``start`` to ``end`` in ``timezone``, rounded up (an ``end`` at local
    midnight counts its day), corrected for a change of UTC offset between them."""
    zone = ZoneInfo(timezone or "UTC")
    local_end = end.astimezone(zone)
    if local_end == local_end.replace(hour=0, minute=0, second=0, microsecond=0):
        end = end + timedelta(seconds=1)
    start_offset = start.astimezone(zone).utcoffset() or timedelta(0)
    end_offset = end.astimezone(zone).utcoffset() or timedelta(0)
    seconds = ((end - start) - (start_offset - end_offset)).total_seconds()
    return math.ceil(seconds / _DAY)


def period_ratio(start: datetime, end: datetime, now: datetime, timezone: str | None) -> Decimal:
    """How much of the period has passed, as Lago's float ratio (its shortest text)."""
    if now >= end:
        return Decimal(1)
    if now < start:
        return ZERO
    total = lago_days(start, end, timezone)
    ratio = min(max(lago_days(start, now, timezone) / total, 0.0), 1.0) if total else 0.0
    return Decimal(repr(ratio))


def projector(ratio: Decimal) -> Projector:
    """Units so far -> units at the period's end, at this ratio (0 when the ratio is 0)."""

    def project(units: Decimal) -> Decimal:
        if ratio <= 0:
            return ZERO
        return (units / ratio).quantize(CENT, rounding=ROUND_HALF_UP)

    return project


def _beside(current: dict[str, Any], projected: Mapping[str, Any], ratio: Decimal) -> None:
    """``projected_units`` and ``projected_amount_cents`` into ``current``, then its filters
    and groups, pairwise (both were rated from the same states: same order)."""
    nothing = ratio <= 0
    current["projected_units"] = "0" if nothing else projected["units"]
    current["projected_amount_cents"] = 0 if nothing else projected["amount_cents"]
    for key in ("filters", "grouped_usage"):
        for mine, theirs in zip(current.get(key) or [], projected.get(key) or [], strict=True):
            _beside(mine, theirs, ratio)


def _filtered(charge: dict[str, Any]) -> None:
    """A charge with filters projects the sum of its filters' projections, the default bucket
    (events no filter matches) left out, as Lago's ``calculate_filtered_projection`` sums only
    ``fees.select(&:charge_filter_id)``. The default bucket's ``values`` is ``{}`` rather
    than Lago's null: lago-python-client's ``ProjectedChargeFilterUsage`` requires a dict."""
    defined = [f for f in charge["filters"] if f["values"] is not None]
    charge["projected_units"] = plain(sum((Decimal(f["projected_units"]) for f in defined), ZERO))
    charge["projected_amount_cents"] = sum(f["projected_amount_cents"] for f in defined)
    for item in [
        *charge["filters"],
        *(f for g in charge.get("grouped_usage") or [] for f in g["filters"]),
    ]:
        if item["values"] is None:
            item["values"] = {}


def with_projection(
    current: Mapping[str, Any], projected: Mapping[str, Any], ratio: Decimal
) -> dict[str, Any]:
    """Lago's ``customer_projected_usage``: the current usage with the projected figures of
    each charge, filter and group, and the total ``projected_amount_cents``."""
    usage = {**current, "lago_invoice_id": None}
    charges = [dict(c) for c in current["charges_usage"]]
    for charge, theirs in zip(charges, projected["charges_usage"], strict=True):
        _beside(charge, theirs, ratio)
        charge.setdefault("groups", [])  # Lago's projected charge always lists it
        if charge.get("filters"):
            _filtered(charge)
    usage["charges_usage"] = charges
    usage["projected_amount_cents"] = sum(c["projected_amount_cents"] for c in charges)
    return usage
