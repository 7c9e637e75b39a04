"""Prorated units of recurring sums and unique counts (Lago's ``ProratedAggregations``).

A prorated charge bills each unit for the share of the period it existed: an event's value is
weighed by the local days from its day to the end of the charged span, inclusive, over the
days of the full nominal period; units carried from earlier periods (a recurring sum never
resets) are weighed by the share of the period the subscription covers (1 for a whole period,
less for a terminated one). Removals (negative values) are weighed the same way. A unique
count's value counts the days it was active. The weights depend only on local days and the
period, so the states keep per-day detail (``SumState.days``: one total per day;
``UniqueCountState.days``: one ``DayOps`` per value and day) and the hourly path folds
incrementally (docs/architecture.md §3, invariant 6). Lago reports both numbers: the full
units (what usage and fees show, and what picks a volume range) and the prorated units (what
is priced).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import ROUND_CEILING, Decimal, localcontext
from typing import Final

from tallyflow.models.rating.aggregation.states import SumState
from tallyflow.models.rating.aggregation.types import _WIDE, ZERO
from tallyflow.models.rating.aggregation.unique import (
    DayOps,
    Operation,
    UniqueCountState,
    UniqueOp,
)

_PLACES: Final = Decimal("1E-5")  # Lago ceils prorated aggregations to 5 decimals


@dataclass(frozen=True)
class ProrationWindow:
    """What the weights depend on, in the customer's local days.

    ``start``: the first charged day (Lago's ``charges_from``: the period's first day, or the
    day the subscription or its plan change started); ``last``: the last charged day (the
    termination day when terminated mid-period, Lago's ``charges_to``); ``days``: the days of
    the full nominal period (Lago's ``period_duration``: a partial first or last period still
    divides by the full period); ``covered``: the share of the period the subscription covers
    (Lago's ``persisted_pro_rata``), which weighs the carried units (everything before
    ``start``).
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
    graduated pricing walks (sums: carried units first, then one entry per local day; unique
    counts: one entry per kept add or remove)."""

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


_ONE: Final = Decimal(1)


def _kept_operations(per_day: Mapping[str, DayOps]) -> list[tuple[date, UniqueOp]]:
    """The operations Lago's prorated unique count keeps for one value, all history.

    Lago keeps the status changes (an add after a remove, a remove after an add), then per
    day only the last change (an earlier one is undone the same day), except the value's very
    first change, which is always kept; then drops a kept operation that repeats the previous
    kept one. In days: the first add ever, and each day that changed the status, with the
    day's final status.
    """
    kept: list[tuple[date, UniqueOp]] = []
    active = False
    seen_add = False
    for day_text in sorted(per_day):
        ops = per_day[day_text]
        day = date.fromisoformat(day_text)
        if ops.first_add is not None and not seen_add:
            kept.append((day, ops.first_add))
            seen_add = True
        if (ops.first_add is not None and not active) or (ops.has_remove and active):
            kept.append((day, ops.last))
        active = ops.last.operation is Operation.ADD
    deduped: list[tuple[date, UniqueOp]] = []
    for item in kept:
        if deduped and deduped[-1][1].operation is item[1].operation:
            continue
        deduped.append(item)
    return deduped


def prorate_unique(state: UniqueCountState, window: ProrationWindow) -> ProratedUnits:
    """The prorated units of a recurring unique count's merged state (all periods so far).

    Each kept add counts the local days from its day (or the first charged day) to the day
    of the next kept operation (a removal's day counts) or the last charged day, inclusive,
    over the full period's days; an add removed before the charged span counts 0. Entries, in
    time order over all history, are Lago's per-event breakdown: (+1, days / period days) per
    kept add, (-1, 0) per kept remove. A value without per-day operations (folded before they
    were kept) counts as active from the first charged day when its last operation is an add.
    """
    timed: list[tuple[tuple[datetime, int, str], Decimal, Decimal]] = []
    total = ZERO
    legacy = datetime.combine(window.start, time.min, UTC)
    with localcontext(_WIDE):
        for value in sorted(set(state.last_ops) | set(state.days)):
            per_day = state.days.get(value)
            if not per_day:
                if state.is_active(value):
                    share = _span(window.start, window.last, window)
                    timed.append(((legacy, -1, value), _ONE, share))
                    total += share
                continue
            kept = _kept_operations(per_day)
            for index, (day, op) in enumerate(kept):
                key = (op.timestamp, op.seq, value)
                if op.operation is Operation.REMOVE:
                    timed.append((key, -_ONE, ZERO))
                    continue
                end = kept[index + 1][0] if index + 1 < len(kept) else window.last
                share = ZERO if end < window.start else _span(max(day, window.start), end, window)
                timed.append((key, _ONE, share))
                total += share
        prorated = total.quantize(_PLACES, rounding=ROUND_CEILING)
    timed.sort(key=lambda item: item[0])
    entries = tuple((full, share.quantize(_PLACES, rounding=ROUND_CEILING))
                    for _, full, share in timed)
    return ProratedUnits(state.result(), prorated, entries)


def _span(first: date, last: date, window: ProrationWindow) -> Decimal:
    """Days from ``first`` to ``last`` inclusive over the period's days (Lago ceils each
    per-event value to 5 decimals, and the total once)."""
    return Decimal((last - first).days + 1) / Decimal(window.days)
