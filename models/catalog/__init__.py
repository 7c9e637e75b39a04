"""Catalog documents in Lago's own request shapes: parse, validate, normalise. Pure: no I/O.

A Lago user should be able to paste the bodies they send to ``POST /api/v1/plans`` (and the
other catalog endpoints) into a file and apply them. So the models accept Lago's envelopes and
field names as they are, and no field is ever accepted and then ignored. Every field is one of:
- *consumed*: declared on the model and billed as Lago bills it;
- *no effect*: a Lago field documented here as changing nothing Tallyflow computes (read-only
  fields of an export such as ``lago_id``, contact details), kept in the stored document;
- *not supported yet*: a Lago field whose billing Tallyflow does not implement; refused by
  name ("not supported yet") when it is given a value that would change a bill (a plan fee,
  taxes, a trial, pay in advance, ...); empty values (``[]``, ``null``, ``0``, ``false``) are
  what "absent" means in a Lago export and are accepted;
- anything else: refused as an unknown field.
``tests/models/test_catalog_fields.py`` fails when a declared field is in none of the three.

Validation never stops at the first problem: every issue of every document of an apply is
collected with its file and JSON path, because a person fixing a catalog wants the whole list
at once. Cross-references are checked against the catalog as it will be *after* the apply (the
database overlaid with the files), so a file may refer to something defined in another file or
already applied earlier.

Money: prices are decimal strings, read as ``Decimal``. JSON documents are parsed with
``parse_float=Decimal`` (see ``tasks.catalog``) so no value ever passes through binary floating
point; a price given as a JSON number is refused because a number in JSON has no agreed
precision between clients.
"""

from tallyflow.models.catalog.canonical import digest, dumps, format_datetime, format_decimal, loads
from tallyflow.models.catalog.documents import (
    MODELS,
    AddOn,
    BillableMetric,
    BillingEntity,
    Charge,
    ChargeFilterPayload,
    Coupon,
    CouponApplication,
    CouponLimitation,
    Customer,
    LagoModel,
    MetricFilterPayload,
    MinimumCommitment,
    Plan,
    RecurringRule,
    Subscription,
    Tax,
    TaxCodes,
    UsageThreshold,
    ValidDocument,
    Wallet,
    describe_key,
    natural_key,
    normalise,
    wallet_code,
)
from tallyflow.models.catalog.errors import (
    CatalogError,
    CatalogValidationError,
    Issue,
    Loc,
    format_path,
)
from tallyflow.models.catalog.fields import (
    ADD_ON,
    AGGREGATION_TYPES,
    APPLIED_COUPON,
    BILLABLE_METRIC,
    BILLING_ENTITY,
    BILLING_TIMES,
    CHARGE_MODELS,
    COUPON,
    COUPON_EXPIRATIONS,
    COUPON_FREQUENCIES,
    COUPON_TYPES,
    CUSTOMER,
    GROUP_KEY_PROPERTIES,
    INTERVALS,
    KINDS,
    NEEDS_FIELD_NAME,
    NEVER_RECURRING,
    NOT_PAY_IN_ADVANCE,
    PLAN,
    ROUNDING_FUNCTIONS,
    RULE_METHODS,
    RULE_TRIGGERS,
    SUBSCRIPTION,
    TAX,
    WALLET,
    WEIGHTED_INTERVALS,
    Cents,
    Credits,
    Currency,
    Email,
    Integer,
    Moment,
    PositivePrice,
    Price,
    Quantity,
    Text,
    Timezone,
)
from tallyflow.models.catalog.references import Catalog, reference_issues
from tallyflow.models.catalog.rules import (
    envelope_kind,
    field_issues,
    parse_body,
    threshold_issues,
)
from tallyflow.models.catalog.validation import (
    DATABASE,
    Validation,
    validate_documents,
)

__all__ = [
    "AGGREGATION_TYPES",
    "APPLIED_COUPON",
    "COUPON",
    "COUPON_EXPIRATIONS",
    "COUPON_FREQUENCIES",
    "COUPON_TYPES",
    "Coupon",
    "CouponApplication",
    "CouponLimitation",
    "BILLABLE_METRIC",
    "BILLING_ENTITY",
    "BILLING_TIMES",
    "BillableMetric",
    "BillingEntity",
    "CHARGE_MODELS",
    "CUSTOMER",
    "Catalog",
    "CatalogError",
    "CatalogValidationError",
    "Cents",
    "Charge",
    "ChargeFilterPayload",
    "Credits",
    "Currency",
    "Customer",
    "DATABASE",
    "Email",
    "GROUP_KEY_PROPERTIES",
    "INTERVALS",
    "Integer",
    "Issue",
    "KINDS",
    "LagoModel",
    "Loc",
    "MODELS",
    "MetricFilterPayload",
    "MinimumCommitment",
    "Moment",
    "NEEDS_FIELD_NAME",
    "NEVER_RECURRING",
    "NOT_PAY_IN_ADVANCE",
    "PLAN",
    "Plan",
    "PositivePrice",
    "Price",
    "Quantity",
    "ROUNDING_FUNCTIONS",
    "RULE_METHODS",
    "RULE_TRIGGERS",
    "RecurringRule",
    "UsageThreshold",
    "threshold_issues",
    "SUBSCRIPTION",
    "Subscription",
    "TAX",
    "Tax",
    "TaxCodes",
    "Text",
    "Timezone",
    "ValidDocument",
    "Validation",
    "ADD_ON",
    "WALLET",
    "WEIGHTED_INTERVALS",
    "AddOn",
    "Wallet",
    "describe_key",
    "digest",
    "dumps",
    "envelope_kind",
    "field_issues",
    "format_datetime",
    "format_decimal",
    "format_path",
    "loads",
    "natural_key",
    "normalise",
    "parse_body",
    "reference_issues",
    "validate_documents",
    "wallet_code",
]
