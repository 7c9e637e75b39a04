"""Metric filters, charge filters and pricing groups, as pure functions over event properties.

The DB layer never has to remember which charge filter an event went to: it keeps aggregation
state keyed by the event's *metric filter key values* (bounded: a value outside the metric's
allowed list can never be matched by a charge filter, so it is folded into ``None``) plus the
event's pricing-group values. Charge filters are applied after folding with
:func:`assign_bucket` / :func:`bucket_states`, so changing a charge's filters re-buckets existing
state without re-reading a single event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, TypeVar

ALL_FILTER_VALUES: Final = "__ALL_FILTER_VALUES__"

FilterKey = tuple[tuple[str, str | None], ...]
"""The event's value for every metric filter key, sorted by key; ``None`` = absent/unknown."""

GroupKey = tuple[str | None, ...]
"""The event's values for the charge's ``pricing_group_keys``, in declared order."""

BucketId = int | None
"""Index of the charge filter that takes the event, or ``None`` for the default bucket."""

S = TypeVar("S")


def property_text(value: object) -> str | None:
    """Text form used to compare a property with filter values (Lago compares ``to_s``).

    JSON ``true`` compares as ``"true"``; objects, arrays and null match nothing.
    """
    if value is None or isinstance(value, dict | list | tuple):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def properties_as_text(properties: Mapping[str, object]) -> dict[str, str]:
    """All comparable properties of an event as text (non-comparable ones dropped)."""
    texts = {key: property_text(value) for key, value in properties.items()}
    return {key: text for key, text in texts.items() if text is not None}


@dataclass(frozen=True)
class MetricFilter:
    """A billable metric's filter: a key and the values it declares (Lago ``filters[]``)."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class ChargeFilter:
    """One charge filter with ``__ALL_FILTER_VALUES__`` already expanded to the metric's values.

    ``values`` maps each key to the set of accepted texts. Build it with
    :func:`charge_filter_from_values` so the expansion is always done the same way.
    """

    values: Mapping[str, frozenset[str]]

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self.values)

    def matches(self, properties: Mapping[str, str | None]) -> bool:
        """Every key present and its text among the values; extra properties do not matter."""
        for key, accepted in self.values.items():
            text = properties.get(key)
            if text is None or text not in accepted:
                return False
        return True

    def specificity(self) -> tuple[int, int]:
        """Sort key: more keys first, then fewer accepted values (a subset is more specific)."""
        return (-len(self.values), sum(len(v) for v in self.values.values()))


def charge_filter_from_values(
    values: Mapping[str, Sequence[str]], metric_filters: Sequence[MetricFilter]
) -> ChargeFilter:
    """Build a :class:`ChargeFilter` from Lago's ``{"values": {key: [..]}}`` payload.

    ``__ALL_FILTER_VALUES__`` expands to the metric's declared values, as Lago's event store
    does, so it never takes an event whose value the metric does not know.
    """
    declared = {f.key: f.values for f in metric_filters}
    expanded: dict[str, frozenset[str]] = {}
    for key, wanted in values.items():
        if key not in declared:
            raise ValueError(f"filter key {key!r} is not a filter of the billable metric")
        if ALL_FILTER_VALUES in wanted:
            expanded[key] = frozenset(declared[key])
        else:
            expanded[key] = frozenset(str(v) for v in wanted)
    return ChargeFilter(values=expanded)


def filter_display_name(
    invoice_display_name: str | None,
    values: Mapping[str, Sequence[str]],
    metric_filters: Sequence[MetricFilter] = (),
) -> str:
    """A charge filter's name on an invoice fee: its ``invoice_display_name``, else its values
    joined by ", " (a key given ``__ALL_FILTER_VALUES__`` stands as the key's name), as Lago's
    ``ChargeFilter#display_name``: ``{model: [gpt-4o-mini], type: [output]}`` is
    ``"gpt-4o-mini, output"``. Lago keeps the payload's key order; the stored values are jsonb,
    which does not, so the keys follow the billable metric's filter declarations (then the rest
    in the order given)."""
    if invoice_display_name:
        return invoice_display_name
    declared = [f.key for f in metric_filters]
    keys = sorted(values, key=lambda k: declared.index(k) if k in declared else len(declared))
    parts: list[str] = []
    for key in keys:
        wanted = [str(v) for v in values[key]]
        parts += [key] if wanted == [ALL_FILTER_VALUES] else wanted
    return ", ".join(parts)


def assign_bucket(
    charge_filters: Sequence[ChargeFilter], properties: Mapping[str, str | None]
) -> BucketId:
    """The single charge filter that takes an event, or ``None`` (default bucket).

    Most specific wins: among matching filters the one with more keys takes the event (Lago's
    ``max_by keys.size``), then the one accepting fewer values (a strict subset, Lago's child
    rule), then the earliest declared (Lago: the oldest identical filter). The result is a
    partition: every event lands in exactly one bucket, so bucket totals add up to the charge.
    """
    best: BucketId = None
    best_rank: tuple[int, int, int] | None = None
    for index, charge_filter in enumerate(charge_filters):
        if not charge_filter.matches(properties):
            continue
        rank = (*charge_filter.specificity(), index)
        if best_rank is None or rank < best_rank:
            best, best_rank = index, rank
    return best


def metric_filter_key(
    metric_filters: Sequence[MetricFilter], properties: Mapping[str, str | None]
) -> FilterKey:
    """Key under which the DB layer stores an event's state, independent of any charge.

    Values outside the metric's declared list become ``None``: no charge filter can accept
    them, so keeping them apart would only grow the state.
    """
    key: list[tuple[str, str | None]] = []
    for metric_filter in sorted(metric_filters, key=lambda f: f.key):
        text = properties.get(metric_filter.key)
        key.append((metric_filter.key, text if text in metric_filter.values else None))
    return tuple(key)


def group_key(pricing_group_keys: Sequence[str], properties: Mapping[str, str | None]) -> GroupKey:
    """One pricing group per distinct combination of the group properties (absent = None)."""
    return tuple(properties.get(key) for key in pricing_group_keys)


def bucket_states(
    bucket_of: Callable[[FilterKey], BucketId],
    keyed_states: Iterable[tuple[FilterKey, GroupKey, S]],
    merge: Callable[[S, S], S],
) -> dict[BucketId, dict[GroupKey, S]]:
    """Merge stored states into charge buckets, then pricing groups, after folding.

    ``bucket_of`` is :func:`assign_bucket` for the charge's filters (the rating passes its
    memoised copy, ``ChargeInfo.bucket_of``); ``keyed_states`` holds ``(filter_key, group_key,
    state)`` rows as the DB layer stores them; ``merge`` is the state's merge (e.g.
    ``SumState.merge``). Buckets with no rows are absent; callers list zero-usage filters from
    the charge itself.
    """
    buckets: dict[BucketId, dict[GroupKey, S]] = {}
    for filter_values, groups, state in keyed_states:
        bucket = bucket_of(filter_values)
        per_group = buckets.setdefault(bucket, {})
        per_group[groups] = merge(per_group[groups], state) if groups in per_group else state
    return buckets
