"""The aggregation vocabulary and the event point every state folds.

Also the state protocol and the decimal helpers the states share.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal, localcontext
from enum import StrEnum
from typing import Any, ClassVar, Final, Generic, Protocol, Self, TypeVar

from tallyflow.models.rating.filters import properties_as_text
from tallyflow.models.rating.money import WIDE, parse_plain_decimal

ZERO: Final = Decimal(0)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


# Weighted sums multiply values by epoch seconds with microseconds (16 digits); the default
# 28-digit context would round such products, so their arithmetic runs in a wider one.
_WIDE: Final = Context(prec=80)


_WEIGHTED_PLACES: Final = Decimal("1E-20")  # Lago ceils weighted sums to 20 decimals


class AggregationType(StrEnum):
    COUNT = "count_agg"
    SUM = "sum_agg"
    MAX = "max_agg"
    LATEST = "latest_agg"
    UNIQUE_COUNT = "unique_count_agg"
    WEIGHTED_SUM = "weighted_sum_agg"


class RoundingFunction(StrEnum):
    ROUND = "round"
    CEIL = "ceil"
    FLOOR = "floor"


@dataclass(frozen=True)
class EventPoint:
    """One event as the aggregations see it.

    ``value`` is the metric field parsed as a plain decimal, ``None`` when missing or not plain
    (then sum/max/latest/weighted_sum do not count it and report it as unbillable). ``text`` is
    the field's text form, which is what unique_count counts. ``seq`` is the ingestion order
    that breaks timestamp ties. ``day`` is the event's local date in the customer's timezone,
    set only where a state keeps per-day detail (recurring sums and unique counts, for
    prorated charges).
    """

    timestamp: datetime
    seq: int
    value: Decimal | None
    properties: Mapping[str, str] = field(default_factory=dict)
    text: str | None = None
    precise_total_amount_cents: Decimal | None = None
    day: date | None = None

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None or self.timestamp.utcoffset() is None:
            raise ValueError("EventPoint.timestamp must be timezone-aware")

    @property
    def order_key(self) -> tuple[datetime, int]:
        return (self.timestamp, self.seq)

    @classmethod
    def from_event(
        cls,
        *,
        timestamp: datetime,
        seq: int,
        properties: Mapping[str, object],
        field_name: str | None,
        precise_total_amount_cents: Decimal | None = None,
    ) -> EventPoint:
        """Build a point from raw event properties (compared and parsed as text)."""
        texts = properties_as_text(properties)
        text = texts.get(field_name) if field_name else None
        return cls(
            timestamp=timestamp,
            seq=seq,
            value=parse_plain_decimal(text),
            properties=texts,
            text=text,
            precise_total_amount_cents=precise_total_amount_cents,
        )


@dataclass(frozen=True)
class TimeWindow:
    """Time span a weighted sum integrates over.

    ``end`` is exclusive (period end + 1 µs) so that a level held for a whole period is worth
    exactly the period; ``length_seconds`` is the full nominal period, which makes a partial
    first or terminated period prorate naturally.
    """

    start: datetime
    end: datetime
    length_seconds: Decimal


def epoch_seconds(moment: datetime) -> Decimal:
    """Exact epoch seconds with microseconds (no float on the way)."""
    delta = moment - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return Decimal(micros).scaleb(-6)


def tidy(value: Decimal) -> Decimal:
    """Drop trailing zeros without switching to exponent notation (``100`` not ``1E+2``)."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1), context=WIDE)
    return value.normalize(WIDE)


class AggregationState(Protocol):
    """What every state offers; the DB layer can treat states uniformly through this."""

    events_count: int
    unbillable_count: int

    def add(self, point: EventPoint) -> Self: ...
    def fold(self, points: Iterable[EventPoint]) -> Self: ...
    def merge(self, other: Self) -> Self: ...
    def to_json(self) -> dict[str, Any]: ...


def _dec(value: Decimal) -> str:
    return format(value, "f")


def _check_type(data: Mapping[str, Any], kind: AggregationType) -> None:
    if data.get("type") != kind.value:
        raise ValueError(f"expected a {kind.value} state, got {data.get('type')!r}")


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


def apply_rounding(
    value: Decimal,
    rounding_function: RoundingFunction | str | None,
    precision: int | None,
) -> Decimal:
    """Metric rounding of an aggregated result; precision may be negative (tens, hundreds).

    ``round`` is half away from zero (Ruby's BigDecimal default), ``ceil``/``floor`` go toward
    +/- infinity: 123.456 -> round(-2) = 100, ceil(-2) = 200.
    """
    if rounding_function is None:
        return value
    mode = {
        RoundingFunction.ROUND: ROUND_HALF_UP,
        RoundingFunction.CEIL: ROUND_CEILING,
        RoundingFunction.FLOOR: ROUND_FLOOR,
    }[RoundingFunction(rounding_function)]
    places = precision or 0
    with localcontext(_WIDE):
        rounded = value.quantize(Decimal(1).scaleb(-places), rounding=mode)
        return rounded.quantize(Decimal(1)) if places < 0 else rounded


def period_window(start: datetime, end_inclusive: datetime, length_seconds: Decimal) -> TimeWindow:
    """A window from inclusive bounds (periods end at 23:59:59.999999)."""
    return TimeWindow(start, end_inclusive + timedelta(microseconds=1), length_seconds)


S = TypeVar("S")


class AggregationDefinition(ABC, Generic[S]):
    """One aggregation kind (Lago's ``*_agg``): its state and what the rest of the code asks.

    The class attributes and methods are what the catalog, pricing, the pay-in-advance code
    and the SQL fold ask instead of testing the kind: adding a kind is its module and one line
    in ``registry.py`` (docs/architecture.md §9).
    """

    kind: ClassVar[AggregationType]
    state_type: ClassVar[type]
    needs_field: ClassVar[bool] = True
    """The metric names a ``field_name`` (count reads none)."""
    recurring_allowed: ClassVar[bool] = False
    """Lago allows ``recurring: true``."""
    carries_states: ClassVar[bool] = False
    """Recurring: the earlier periods' states are merged into the period's (sums, counts)."""
    carries_level: ClassVar[bool] = False
    """Recurring: the earlier periods leave a level the period starts from (:meth:`level`)."""
    prorates: ClassVar[bool] = False
    """Prorated charges can price it (:meth:`prorate`); recurring, it keeps per-day detail."""
    needs_window: ClassVar[bool] = False
    """Its units depend on the period's time window (:meth:`units`)."""
    pay_in_advance: ClassVar[bool] = False
    """Charges paid in advance may use it (:meth:`in_advance_units`)."""
    bill_only_increases: ClassVar[bool] = True
    """In advance, only rises above the period's running maximum are billed."""
    in_advance_reads_billed_events: ClassVar[bool] = False
    """In advance, an event's units depend on the events already billed (not only their
    units)."""
    reports_not_a_number: ClassVar[bool] = True
    """A present field value that is not a plain number is unbillable ``not_a_number``."""
    sql_fold: ClassVar[str] = "typed"
    """How ``tasks/folding/sql.py`` folds it: ``typed`` (the numeric columns of
    ``usage_states``) or ``unique`` (per-value operations merged in Python)."""
    counts_every_event: ClassVar[bool] = False
    """The fold counts every event, with or without a value (``count_all``)."""
    keeps_latest: ClassVar[bool] = False
    """The fold keeps the latest value's columns (``latest_value``, ``latest_ts``, ...)."""

    def empty(self) -> S:
        """The identity state (merging it changes nothing)."""
        return self.state_type()  # type: ignore[no-any-return]

    def from_json(self, data: Mapping[str, Any]) -> S:
        return self.state_type.from_json(data)  # type: ignore[attr-defined,no-any-return]

    @abstractmethod
    def from_row(self, row: Mapping[Any, Any], count: int, unbillable: int) -> S:
        """The state a ``usage_states`` row stands for (the columns the fold writes)."""

    def units(self, state: S, window: TimeWindow | None, initial_level: Decimal) -> Decimal:
        """The state's result before the metric's rounding."""
        return state.result()  # type: ignore[attr-defined,no-any-return]

    def level(self, state: S) -> Decimal:
        """The level a recurring period ends at (only kinds with ``carries_level``)."""
        raise ValueError(f"{self.kind.value} carries no level")

    def precise_total_amount_cents(self, state: S) -> Decimal:
        """The events' own amounts (the dynamic charge model), where the state keeps them."""
        return ZERO

    def prorate(self, state: S, window: ProrationWindow) -> ProratedUnits:
        raise ValueError(f"{self.kind.value} cannot be prorated")

    def counts(self, point: EventPoint) -> bool:
        """The state counts the event (as the fold reaches it, for unbillable samples)."""
        return point.value is not None

    def event_value(self, point: EventPoint) -> Decimal | None:
        """An event's units for charges priced per event (percentage); ``None``: skipped."""
        return point.value

    def billable_in_advance(self, point: EventPoint) -> bool:
        """A pay-in-advance charge bills the event."""
        return point.value is not None

    def in_advance_units(
        self, ordered: Sequence[EventPoint], prior: Any = None
    ) -> list[Decimal]:
        """Units each event adds, in the given (timestamp, seq) order; ``prior``: the state of
        the events already billed, for kinds with ``in_advance_reads_billed_events``."""
        raise ValueError(f"pay in advance is not available for {self.kind.value}")
