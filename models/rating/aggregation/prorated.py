"""Prorated units of a recurring sum (Lago's ``ProratedAggregations::SumService``).

A prorated charge bills each unit for the share of the period it existed: an event's value is
weighed by the local days from its day to the end of the charged span, inclusive, over the
days of the full nominal period; units carried from earlier periods (a recurring sum never
resets) are weighed by the share of the period the subscription covers (1 for a whole period,
less for a terminated one). Removals (negative values) are weighed the same way. The weight of
an event depends only on its local day and the period, so the state keeps one total per day
(``SumState.days``) and the hourly path folds incrementally (docs/architecture.md §3,
invariant 6). Lago reports both numbers: the full units (what usage and fees show, and what
picks a volume range) and the prorated units (what is priced).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_CEILING, Decimal, localcontext
from typing import Final

from tallyflow.models.rating.aggregation.states import SumState
from tallyflow.models.rating.aggregation.types import _WIDE, ZERO

_PLACES: Final = Decimal("1E-5")  # Lago ceils prorated aggregations to 5 decimals


@dataclass(frozen=True)
class ProrationWindow:
    """What the weights depend on, in the customer's local days.

    ``start``: first day of the nominal period; ``last``: the last charged day (the
    termination day when terminated mid-period, Lago's ``charges_to``); ``days``: the days of
    the full nominal period (Lago's ``period_duration``: a partial first or last period still
    divides by the full period); ``covered``: the share of the period the subscription covers
    (Lago's ``persisted_pro_rata``), which weighs the carried units.
    """

    start: date
    last: date
    days: int
    covered: Decimal

    def weight(self, day: date) -> Decimal:
        """Share of the period left from ``day``, inclusive: (last - day + 1) / days."""
        return Decimal((self.last - day).days + 1) / Decimal(self.days)


@dataclass(frozen=True)
class ProratedUnits:
    """Full and prorated units, and the (full, prorated) entries in time order that prorated
    graduated pricing walks (carried units first, then one entry per local day)."""

    full: Decimal
    prorated: Decimal
    entries: tuple[tuple[Decimal, Decimal], ...]


def prorate_sum(state: SumState, window: ProrationWindow) -> ProratedUnits:
    """The prorated units of a recurring sum's merged state (this period and earlier ones).

    Every unit not on a day of this period's charged span is carried: it counts
    ``window.covered`` (Lago's persisted sum). Lago lists the carried units as the first
    per-event entry only when positive; the prorated total counts them either way.
    """
    with localcontext(_WIDE):
        in_period = sorted(
            (date.fromisoformat(day), value)
            for day, value in state.days.items()
            if window.start.isoformat() <= day <= window.last.isoformat()
        )
        carried = state.total - sum((value for _, value in in_period), ZERO)
        entries: list[tuple[Decimal, Decimal]] = []
        if carried > 0:
            entries.append((carried, carried * window.covered))
        prorated = carried * window.covered
        for day, value in in_period:
            weighed = value * window.weight(day)
            entries.append((value, weighed))
            prorated += weighed
        prorated = prorated.quantize(_PLACES, rounding=ROUND_CEILING)
    return ProratedUnits(state.total, prorated, tuple(entries))
