"""The charge model registry (Lago's ``ChargeModels::Factory``): ``charge_model`` -> its module.

Adding a charge model is its module in this package and one line in ``_DEFINITIONS``
(docs/architecture.md §9); the catalog's list of models, ``ChargeModel`` and every dispatch
below follow from it. The functions below are what the rest of the code calls: they look the
model up, parse the payload when given one, and run the model in the 60-digit pricing context.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, localcontext
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from tallyflow.models.rating.charge_models.base import (
    _PRICING,
    ZERO,
    ChargeModelDefinition,
    ChargeProperties,
    ChargeResult,
    PropertiesError,
    PropertyReader,
)
from tallyflow.models.rating.charge_models.dynamic import DYNAMIC
from tallyflow.models.rating.charge_models.graduated import GRADUATED
from tallyflow.models.rating.charge_models.graduated_percentage import GRADUATED_PERCENTAGE
from tallyflow.models.rating.charge_models.package import PACKAGE
from tallyflow.models.rating.charge_models.percentage import PERCENTAGE
from tallyflow.models.rating.charge_models.standard import STANDARD
from tallyflow.models.rating.charge_models.volume import VOLUME

if TYPE_CHECKING:
    from tallyflow.models.rating.aggregation import ProratedUnits

# In declaration order, which is the order the catalog's error messages list them in.
_DEFINITIONS: Final[tuple[ChargeModelDefinition[Any], ...]] = (
    STANDARD,
    PACKAGE,
    GRADUATED,
    VOLUME,
    PERCENTAGE,
    GRADUATED_PERCENTAGE,
    DYNAMIC,
)

CHARGE_MODELS: Final[Mapping[str, ChargeModelDefinition[Any]]] = MappingProxyType(
    {definition.name: definition for definition in _DEFINITIONS}
)
"""Lago's ``charge_model`` string -> its definition."""

ChargeModel: Final[type[StrEnum]] = StrEnum(  # type: ignore[misc]  # members from the registry
    "ChargeModel", [(definition.name.upper(), definition.name) for definition in _DEFINITIONS]
)
"""The registry's names as an enum (``ChargeModel("volume")``; a ``ValueError`` when unknown)."""

_BY_PROPERTIES: Final = {definition.properties_type: definition for definition in _DEFINITIONS}

PRORATED_MODELS: Final = frozenset(d.name for d in _DEFINITIONS if d.prorated)
"""Charge models Lago prorates in arrears (``Charge#validate_prorated``)."""


def definition_of(charge_model: str) -> ChargeModelDefinition[Any]:
    """The registered model; ``ValueError`` naming it when there is none."""
    definition = CHARGE_MODELS.get(str(charge_model))
    if definition is None:
        raise ValueError(f"{charge_model!r} is not a valid ChargeModel")
    return definition


def validate_properties(charge_model: str, properties: Mapping[str, object] | None) -> list[str]:
    """Every problem in a charge's properties, each prefixed with its path; [] when valid."""
    definition = CHARGE_MODELS.get(str(charge_model))
    if definition is None:
        return [f"charge_model: unknown charge model {charge_model!r}"]
    reader = PropertyReader()
    definition.parse(properties or {}, reader)
    return reader.errors


def parse_properties(
    charge_model: str, properties: Mapping[str, object] | None
) -> ChargeProperties:
    """Typed, validated properties; raises :class:`PropertiesError` listing every problem."""
    errors = validate_properties(charge_model, properties)
    if errors:
        raise PropertiesError(errors)
    parsed: ChargeProperties | None = definition_of(charge_model).parse(
        properties or {}, PropertyReader()
    )
    assert parsed is not None  # validated above
    return parsed


def properties_from(
    charge_model: str, properties: ChargeProperties | Mapping[str, object]
) -> ChargeProperties:
    """Accept typed properties as they are, parse a raw payload (raising on errors)."""
    if isinstance(properties, Mapping):
        return parse_properties(charge_model, properties)
    return properties


def needs_event_values(
    charge_model: str, properties: ChargeProperties | Mapping[str, object]
) -> bool:
    """True when pricing needs each event's value in time order, not only the units: the DB
    layer reads those values for such charges."""
    definition = definition_of(charge_model)
    return bool(definition.needs_event_values(properties_from(charge_model, properties)))


def compute_charge(
    charge_model: str,
    properties: ChargeProperties | Mapping[str, object],
    units: Decimal,
    *,
    events_count: int = 0,
    event_values: Sequence[Decimal] | None = None,
    precise_total_amount_cents: Decimal = ZERO,
    currency: str | None = None,
) -> ChargeResult:
    """Price ``units`` with a charge model.

    ``event_values`` (each event's units, in time order) is required only when
    :func:`needs_event_values` says so; ``precise_total_amount_cents`` and ``currency`` only
    for dynamic, whose events carry minor units of the subscription's currency. Negative units
    are priced as 0.
    """
    definition = definition_of(charge_model)
    props = properties_from(charge_model, properties)
    with localcontext(_PRICING):
        return definition.price(
            props,
            max(units, ZERO),
            events_count=events_count,
            event_values=event_values,
            precise_total_amount_cents=precise_total_amount_cents,
            currency=currency,
        )


def compute_prorated(
    properties: ChargeProperties, units: ProratedUnits, events_count: int = 0
) -> ChargeResult:
    """Price prorated units (the model is the one the properties were parsed for); the result's
    ``units`` are the full units (Lago's fee units)."""
    definition = _BY_PROPERTIES.get(type(properties))
    if definition is None:
        raise ValueError(f"{type(properties).__name__} charges cannot be prorated")
    with localcontext(_PRICING):
        return definition.price_prorated(properties, units, events_count)


def pay_in_advance_amounts(
    charge_model: str,
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
    definition = definition_of(charge_model)
    definition.check_in_advance()
    props = properties_from(charge_model, properties)
    every = [*prior_units, *event_units]
    cumulative = billed = previous_price = ZERO
    fees: list[Decimal] = []
    with localcontext(_PRICING):
        for index, delta in enumerate(every):
            cumulative += delta
            billed = max(billed, cumulative) if bill_only_increases else cumulative
            price = compute_charge(
                charge_model,
                props,
                billed,
                events_count=index + 1,
                event_values=every[: index + 1],
            ).amount
            fees.append(max(price - previous_price, ZERO))
            previous_price = price
    return fees[len(prior_units) :]
