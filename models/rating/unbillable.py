"""Unbillable events, counted at rating time per subscription and metric.

Ingest judges an event on its own (docs/architecture.md §2): whether a value is a number for
the metric that sums it, or whether a charge filter takes it, depends on the catalog, which may
change after the event arrived. So these verdicts are made when usage is rated, from the state
the fold keeps (docs/architecture.md §3, invariant 6), and never refuse the stored event:

- ``not_a_number``: the metric aggregates a field (sum, max, latest, weighted sum) and the
  event's value there is present but not a plain number (``"abc"``, ``true``, ``"1,000"``, an
  object). It adds nothing; before this count it was silently 0.
- ``unpriced``: every charge of the plan on the metric has filters, the event matches none of
  them, and the charge has no price of its own, so the event lands in ``(default)`` at 0.00
  (Lago reports the like as the event error ``invalid_filter_values``).

Each comes with a few transaction ids (``SAMPLE_IDS``) to look the events up by. The user's
guide says what each count means: docs/data-quality.md, "Unbillable events".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from tallyflow.models.lago.resources import UnbillableCount

if TYPE_CHECKING:
    from tallyflow.models.rating.aggregation import AnyState
    from tallyflow.models.rating.pricing import ChargeInfo, StateKey

SAMPLE_IDS: Final = 3


class UnbillableReason(StrEnum):
    NOT_A_NUMBER = "not_a_number"
    UNPRICED = "unpriced"


def first_ids(*groups: Iterable[str]) -> tuple[str, ...]:
    """The first ``SAMPLE_IDS`` distinct ids, in order: samples stay bounded however many
    folds add to them."""
    out: list[str] = []
    for group in groups:
        for item in group:
            if item not in out:
                out.append(item)
                if len(out) == SAMPLE_IDS:
                    return tuple(out)
    return tuple(out)


@dataclass(frozen=True)
class StateTally:
    """What one state key holds besides its aggregation: events whose aggregated value is not
    a number (and some of their ids), and some ids of the events it aggregated."""

    not_a_number: int = 0
    not_a_number_ids: tuple[str, ...] = ()
    sample_ids: tuple[str, ...] = ()

    def merge(self, other: StateTally) -> StateTally:
        return StateTally(
            self.not_a_number + other.not_a_number,
            first_ids(self.not_a_number_ids, other.not_a_number_ids),
            first_ids(self.sample_ids, other.sample_ids),
        )


@dataclass(frozen=True)
class Unbillable:
    """Events of one metric of a subscription's period that bill nothing, and why."""

    metric_code: str
    reason: UnbillableReason
    count: int
    sample_ids: tuple[str, ...]

    def as_json(self) -> UnbillableCount:
        return {
            "billable_metric_code": self.metric_code,
            "reason": str(self.reason),
            "count": self.count,
            "sample_transaction_ids": list(self.sample_ids),
        }


def unbillable_of(
    charges: Sequence[ChargeInfo],
    period_start: datetime,
    states: Mapping[StateKey, AnyState],
    tallies: Mapping[StateKey, StateTally],
) -> tuple[Unbillable, ...]:
    """Per metric of the plan (in charge order), the period's ``not_a_number`` and
    ``unpriced`` events; zero counts are left out.

    Only the states of the period itself count (a recurring metric's earlier periods were
    counted in theirs). Cost: one pass over the subscription's states. The samples are the
    smallest transaction ids among those each state key kept.
    """
    by_metric: dict[int, list[ChargeInfo]] = {}
    for charge in charges:
        by_metric.setdefault(charge.metric.id, []).append(charge)
    # per metric: the count and the sample candidates (at most SAMPLE_IDS per state key)
    nan: dict[int, tuple[int, list[str]]] = {}
    unpriced: dict[int, tuple[int, list[str]]] = {}
    for key, state in states.items():
        metric_id, start, filter_key = key[0], key[1], key[2]
        if start != period_start or metric_id not in by_metric:
            continue
        tally = tallies.get(key, StateTally())
        if tally.not_a_number:
            count, ids = nan.get(metric_id, (0, []))
            nan[metric_id] = (count + tally.not_a_number, [*ids, *tally.not_a_number_ids])
        if state.events_count and all(
            charge.filters and charge.pricing.properties is None
            and charge.bucket_of(filter_key) is None
            for charge in by_metric[metric_id]
        ):
            count, ids = unpriced.get(metric_id, (0, []))
            unpriced[metric_id] = (count + state.events_count, [*ids, *tally.sample_ids])
    out: list[Unbillable] = []
    for metric_id, metric_charges in by_metric.items():
        code = metric_charges[0].metric.code
        for reason, found in ((UnbillableReason.NOT_A_NUMBER, nan),
                              (UnbillableReason.UNPRICED, unpriced)):
            if metric_id in found:
                count, ids = found[metric_id]
                # the smallest ids among the states' samples: the same whichever order the
                # states were read in
                out.append(Unbillable(code, reason, count, first_ids(sorted(ids))))
    return tuple(out)
