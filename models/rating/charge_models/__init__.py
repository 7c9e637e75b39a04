"""Charge models: units -> money, as pure functions over immutable property models.

Amounts are unrounded ``Decimal`` in major units (dollars); rounding to cents happens once, in
:class:`Fee`, ROUND_HALF_UP at the currency exponent. Catalog payloads go through
:func:`validate_properties` (error messages carry the property path) and :func:`parse_properties`
before anything is priced, so the pricing functions never see a float or a malformed range.
"""

from tallyflow.models.rating.charge_models.advance import min_amount_true_up, pay_in_advance_amounts
from tallyflow.models.rating.charge_models.compute import compute_charge, volume_range
from tallyflow.models.rating.charge_models.parsing import (
    JsonNumber,
    needs_event_values,
    parse_properties,
    properties_from,
    validate_properties,
)
from tallyflow.models.rating.charge_models.properties import (
    ONE,
    ZERO,
    ChargeModel,
    ChargeProperties,
    DynamicProperties,
    GraduatedPercentageProperties,
    GraduatedProperties,
    PackageProperties,
    PercentageProperties,
    PriceRange,
    PropertiesError,
    RateRange,
    StandardProperties,
    VolumeProperties,
)
from tallyflow.models.rating.charge_models.prorated import (
    PRORATED_MODELS,
    compute_prorated,
    prorated_graduated,
)
from tallyflow.models.rating.charge_models.results import (
    ChargeResult,
    Fee,
    PackageDetail,
    PercentageDetail,
    RangeDetail,
)

__all__ = [
    "ChargeModel",
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
    "RangeDetail",
    "RateRange",
    "StandardProperties",
    "VolumeProperties",
    "ZERO",
    "compute_charge",
    "compute_prorated",
    "min_amount_true_up",
    "needs_event_values",
    "parse_properties",
    "pay_in_advance_amounts",
    "properties_from",
    "prorated_graduated",
    "validate_properties",
    "volume_range",
]
