"""The registries of charge models and aggregations (docs/architecture.md §9).

What the catalog accepts is exactly what is registered, and every registered module provides
the whole interface the rest of the code asks of it. A new charge model or aggregation fails
here until it has an example below and implements what its flags promise.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tallyflow.models.catalog import BillableMetric, Charge
from tallyflow.models.catalog.fields import (
    AGGREGATION_TYPES,
    NEEDS_FIELD_NAME,
    NEVER_RECURRING,
    NOT_PAY_IN_ADVANCE,
)
from tallyflow.models.catalog.fields import (
    CHARGE_MODELS as CATALOG_CHARGE_MODELS,
)
from tallyflow.models.rating.aggregation import (
    AGGREGATIONS,
    AggregationDefinition,
    AggregationType,
    EventPoint,
    ProratedUnits,
    ProrationWindow,
    TimeWindow,
    state_from_json,
)
from tallyflow.models.rating.charge_models import (
    CHARGE_MODELS,
    PRORATED_MODELS,
    ChargeModel,
    ChargeModelDefinition,
    ChargeProperties,
    ChargeResult,
    PropertyReader,
    compute_charge,
    compute_prorated,
    parse_properties,
    pay_in_advance_amounts,
    validate_properties,
)

D = Decimal

# One valid payload per registered charge model (a new model adds its own).
EXAMPLES: dict[str, dict[str, Any]] = {
    "standard": {"amount": "2"},
    "package": {"amount": "5", "package_size": 10, "free_units": 2},
    "graduated": {
        "graduated_ranges": [
            {"from_value": 0, "to_value": 5, "per_unit_amount": "1", "flat_amount": "0"},
            {"from_value": 6, "to_value": None, "per_unit_amount": "0.5", "flat_amount": "1"},
        ]
    },
    "volume": {
        "volume_ranges": [
            {"from_value": 0, "to_value": 5, "per_unit_amount": "1", "flat_amount": "0"},
            {"from_value": 6, "to_value": None, "per_unit_amount": "0.5", "flat_amount": "1"},
        ]
    },
    "percentage": {"rate": "1.5", "fixed_amount": "0.1"},
    "graduated_percentage": {
        "graduated_percentage_ranges": [
            {"from_value": 0, "to_value": 5, "rate": "1", "flat_amount": "0"},
            {"from_value": 6, "to_value": None, "rate": "0.5", "flat_amount": "1"},
        ]
    },
    "dynamic": {},
}

MODELS = list(CHARGE_MODELS)
KINDS = list(AGGREGATIONS)
MOMENT = datetime(2026, 3, 2, 10, tzinfo=UTC)


def test_the_catalog_accepts_exactly_the_registered_charge_models() -> None:
    assert tuple(CATALOG_CHARGE_MODELS) == tuple(CHARGE_MODELS) == tuple(ChargeModel)
    for name in CHARGE_MODELS:
        Charge.model_validate({"billable_metric_code": "m", "charge_model": name})
    for unknown in ("custom", "standard2"):
        with pytest.raises(ValidationError, match="unknown charge_model"):
            Charge.model_validate({"billable_metric_code": "m", "charge_model": unknown})
        assert validate_properties(unknown, {}) == [
            f"charge_model: unknown charge model {unknown!r}"
        ]
        with pytest.raises(ValueError, match="is not a valid ChargeModel"):
            compute_charge(unknown, {}, D(1))


def test_the_catalog_accepts_exactly_the_registered_aggregations() -> None:
    assert set(AGGREGATIONS) == set(AggregationType)
    assert tuple(AGGREGATION_TYPES) == tuple(AGGREGATIONS) == tuple(AggregationType)
    for kind in AGGREGATIONS:
        BillableMetric.model_validate({"code": "m", "name": "M", "aggregation_type": kind.value})
    with pytest.raises(ValidationError, match="unknown aggregation_type"):
        BillableMetric.model_validate({"code": "m", "name": "M", "aggregation_type": "custom_agg"})


def test_the_catalog_rules_follow_the_registered_flags() -> None:
    """The sets the catalog derives from the registry are Lago's."""
    assert NEEDS_FIELD_NAME == set(AggregationType) - {AggregationType.COUNT}
    assert NOT_PAY_IN_ADVANCE == {
        AggregationType.MAX,
        AggregationType.LATEST,
        AggregationType.WEIGHTED_SUM,
    }
    assert NEVER_RECURRING == {AggregationType.COUNT, AggregationType.MAX, AggregationType.LATEST}
    assert PRORATED_MODELS == {"standard", "graduated", "volume"}


def test_every_charge_model_has_an_example() -> None:
    assert set(EXAMPLES) == set(CHARGE_MODELS)


# What `tallyflow catalog show` prints for each example (the model's ``describe``): the text the
# CLI's own chain of model names printed before each model said it itself.
DESCRIBED = {
    "standard": "2 per unit",
    "package": "5 per 10 units, first 2 free",
    "graduated": "graduated 0-5: 1/unit + 0; 6-∞: 0.5/unit + 1",
    "volume": "volume 0-5: 1/unit + 0; 6-∞: 0.5/unit + 1",
    "percentage": "1.5% + 0.1 per event",
    "graduated_percentage": "graduated_percentage 0-5: 1% + 0; 6-∞: 0.5% + 1",
    "dynamic": "the events' own amounts",
}


@pytest.mark.parametrize("name", MODELS)
def test_each_charge_model_describes_its_price(name: str) -> None:
    assert CHARGE_MODELS[name].describe(EXAMPLES[name]) == DESCRIBED[name]


def test_a_model_without_its_own_words_shows_its_name() -> None:
    assert ChargeModelDefinition.describe(CHARGE_MODELS["standard"], {"amount": "1"}) == "standard"


@pytest.mark.parametrize("name", MODELS)
def test_charge_model_conformance(name: str) -> None:
    definition = CHARGE_MODELS[name]
    assert isinstance(definition, ChargeModelDefinition)
    assert definition.name == name
    assert issubclass(definition.properties_type, ChargeProperties)
    assert dataclasses.is_dataclass(definition.properties_type)
    assert definition.properties_type.__dataclass_params__.frozen  # type: ignore[attr-defined]

    reader = PropertyReader()
    props = definition.parse(EXAMPLES[name], reader)
    assert reader.errors == []
    assert isinstance(props, definition.properties_type)
    assert parse_properties(name, EXAMPLES[name]) == props
    # a model that prices from its properties refuses none at all
    assert bool(validate_properties(name, {})) is definition.needs_properties

    for units in (D(0), D(7)):
        result = compute_charge(
            name,
            props,
            units,
            events_count=2,
            event_values=[units, D(0)],
            precise_total_amount_cents=D(1234),
            currency="USD",
        )
        assert isinstance(result, ChargeResult)
        assert result.charge_model == name
        assert result.units == units
        assert result.amount >= 0
    assert isinstance(definition.needs_event_values(props), bool)

    prorated = ProratedUnits(D(7), D(3.5), ((D(7), D(3.5)),))
    if definition.prorated:
        assert compute_prorated(props, prorated, 1).charge_model == name
    else:
        with pytest.raises(ValueError, match="cannot be prorated"):
            compute_prorated(props, prorated, 1)

    if definition.in_advance_not_billed is None:
        fees = pay_in_advance_amounts(name, props, [D(3), D(4)], bill_only_increases=True)
        assert len(fees) == 2 and all(fee >= 0 for fee in fees)
    else:
        with pytest.raises(ValueError):
            pay_in_advance_amounts(name, props, [D(3)], bill_only_increases=True)

    if definition.aggregation_types is not None:
        assert definition.aggregation_types <= {kind.value for kind in AggregationType}


def _points() -> list[EventPoint]:
    return [
        EventPoint(MOMENT, 1, D(3), {"operation_type": "add"}, "a", D(100), date(2026, 3, 2)),
        EventPoint(MOMENT, 2, None, {}, "b", None, date(2026, 3, 2)),
        EventPoint(MOMENT, 3, D(-1), {"operation_type": "remove"}, "a", None, date(2026, 3, 2)),
    ]


@pytest.mark.parametrize("kind", KINDS, ids=[k.value for k in KINDS])
def test_aggregation_conformance(kind: AggregationType) -> None:
    definition = AGGREGATIONS[kind]
    assert isinstance(definition, AggregationDefinition)
    assert definition.kind is kind
    state_type = definition.state_type
    for method in ("empty", "add", "fold", "merge", "to_json", "from_json", "result"):
        assert callable(getattr(state_type, method)), method

    empty = definition.empty()
    assert isinstance(empty, state_type)
    assert empty.to_json()["type"] == kind.value
    folded = empty.fold(_points())
    assert state_from_json(folded.to_json()) == folded
    assert folded.merge(empty) == folded == empty.merge(folded)
    assert folded.events_count + folded.unbillable_count <= len(_points())

    window = TimeWindow(
        datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC), D(31 * 86_400)
    )
    assert isinstance(definition.units(folded, window, D(0)), Decimal)
    assert isinstance(definition.precise_total_amount_cents(folded), Decimal)
    for point in _points():
        assert isinstance(definition.counts(point), bool)
        assert isinstance(definition.billable_in_advance(point), bool)
        assert definition.event_value(point) is None or isinstance(
            definition.event_value(point), Decimal
        )

    if definition.pay_in_advance:
        units = definition.in_advance_units(_points(), None)
        assert len(units) == len(_points())
    else:
        with pytest.raises(ValueError, match="pay in advance is not available"):
            definition.in_advance_units(_points(), None)

    proration = ProrationWindow(date(2026, 3, 1), date(2026, 3, 31), 31, D(1))
    if definition.prorates:
        assert isinstance(definition.prorate(folded, proration), ProratedUnits)
    else:
        with pytest.raises(ValueError, match="cannot be prorated"):
            definition.prorate(folded, proration)

    if definition.carries_level:
        assert isinstance(definition.level(folded), Decimal)
    else:
        with pytest.raises(ValueError, match="carries no level"):
            definition.level(folded)
    assert not (definition.carries_level and definition.carries_states)
    assert definition.recurring_allowed or not (
        definition.carries_level or definition.carries_states
    )
    assert definition.sql_fold in ("typed", "unique")


def test_the_user_docs_name_every_registered_model_and_aggregation() -> None:
    """docs/rating.md lists what Tallyflow computes; a registered model or kind it does not
    name is missing from the user's documentation."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "rating.md").read_text()
    opening = " ".join(text.split("\n\n")[1].split())
    for name in CHARGE_MODELS:
        assert re.search(rf"\b{name}\b", opening), name
    for kind in AGGREGATIONS:
        assert re.search(rf"\b{kind.value.removesuffix('_agg')}\b", opening), kind.value
