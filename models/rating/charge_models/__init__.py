"""Charge models: units -> money, one module per model behind a registry.

Each model is a module of this package (``standard``, ``package``, ``graduated``, ``volume``,
``percentage``, ``graduated_percentage``, ``dynamic``) holding its properties type, their
parsing, its pricing and its prorated behaviour where it has any; ``registry.py`` maps Lago's
``charge_model`` string to it (docs/architecture.md §9, "Adding a charge model").

Amounts are unrounded ``Decimal`` in major units (dollars); rounding to cents happens once, in
:class:`Fee`, ROUND_HALF_UP at the currency exponent. Catalog payloads go through
:func:`validate_properties` (error messages carry the property path) and :func:`parse_properties`
before anything is priced, so the pricing functions never see a float or a malformed range.
"""

from tallyflow.models.rating.charge_models.base import (
    ONE,
    ZERO,
    ChargeModelDefinition,
    ChargeProperties,
    ChargeResult,
    Fee,
    JsonNumber,
    PackageDetail,
    PercentageDetail,
    PriceRange,
    PropertiesError,
    PropertyReader,
    RangeDetail,
    RateRange,
)
from tallyflow.models.rating.charge_models.dynamic import DynamicProperties
from tallyflow.models.rating.charge_models.graduated import (
    GraduatedProperties,
    prorated_graduated,
)
from tallyflow.models.rating.charge_models.graduated_percentage import (
    GraduatedPercentageProperties,
)
from tallyflow.models.rating.charge_models.package import PackageProperties
from tallyflow.models.rating.charge_models.percentage import PercentageProperties
from tallyflow.models.rating.charge_models.registry import (
    CHARGE_MODELS,
    PRORATED_MODELS,
    ChargeModel,
    compute_charge,
    compute_prorated,
    definition_of,
    needs_event_values,
    parse_properties,
    pay_in_advance_amounts,
    properties_from,
    validate_properties,
)
from tallyflow.models.rating.charge_models.standard import StandardProperties
from tallyflow.models.rating.charge_models.volume import VolumeProperties, volume_range

__all__ = [
    "CHARGE_MODELS",
    "ChargeModel",
    "ChargeModelDefinition",
    "ChargeProperties",
    "ChargeResult",
    "DynamicProperties",
    "Fee",
    "GraduatedPercentageProperties",
    "GraduatedProperties",
    "JsonNumber",
    "ONE",
    "PackageDetail",
    "PRORATED_MODELS",
    "PackageProperties",
    "PercentageDetail",
    "PercentageProperties",
    "PriceRange",
    "PropertiesError",
    "PropertyReader",
    "RangeDetail",
    "RateRange",
    "StandardProperties",
    "VolumeProperties",
    "ZERO",
    "compute_charge",
    "compute_prorated",
    "definition_of",
    "needs_event_values",
    "parse_properties",
    "pay_in_advance_amounts",
    "properties_from",
    "prorated_graduated",
    "validate_properties",
    "volume_range",
]
