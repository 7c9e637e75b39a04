"""One-off invoices: the request Lago's ``POST /invoices`` takes and the add-on fees it bills.
Pure: no I/O (the invoice is written by ``tasks/invoicing/one_off.py``).

As Lago's ``Invoices::CreateOneOffService`` and ``Fees::OneOffService``:

- each fee names an add-on by ``add_on_code``; ``units`` defaults to 1 and
  ``unit_amount_cents`` to the add-on's ``amount_cents``; ``amount_cents`` is
  ``unit_amount_cents x units`` rounded once (ROUND_HALF_UP to a whole minor unit), the product
  kept unrounded in ``precise_amount_cents``; ``description`` defaults to the add-on's;
  ``from_datetime``/``to_datetime`` are given both or neither (then: the invoice's moment);
- taxes: the fee's ``tax_codes``, else the add-on's, else the customer's, else its billing
  entity's, else the organization's defaults (``Fees::ApplyTaxesService``), kept precise per
  fee and rounded once for the invoice (:func:`tallyflow.models.invoicing.amounts_of`);
- fees of zero are kept (an invoice of zero is still issued, and paid at once).

Tallyflow differs where Lago's input would be lost or approximate: units and unit prices are
exact decimals (Lago reads units with ``to_f``); ``unit_amount_cents`` is a whole number of
minor units; negative units or prices, an unknown field and a field Tallyflow does not carry
out are refused by name; the currency is the customer's (a one-off invoice in another currency
could not be paid from its wallets), so another one is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from tallyflow.models.invoicing import InvoiceFee, Tax, applicable_taxes
from tallyflow.models.rating.money import WIDE, exact_number, round_minor

# Lago's ``create_params`` of ``Api::V1::InvoicesController``, split by what Tallyflow does.
INVOICE_FIELDS: Final = ("external_customer_id", "currency", "fees")
# Tallyflow never asks a payment provider to collect, so skipping it changes nothing.
INVOICE_NO_EFFECT: Final = ("skip_psp",)
INVOICE_NOT_SUPPORTED: Final = ("billing_entity_code", "purchase_order_number",
                                "invoice_custom_section", "payment_method")
FEE_FIELDS: Final = ("add_on_code", "invoice_display_name", "unit_amount_cents", "units",
                     "description", "from_datetime", "to_datetime", "tax_codes")

Problems = dict[str, list[str]]


@dataclass(frozen=True)
class AddOnInfo:
    """An add-on as its fees need it (the ``add_ons`` row and its document's tax codes)."""

    id: int
    code: str
    name: str
    invoice_display_name: str | None
    description: str | None
    amount_cents: Decimal
    tax_codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeeRequest:
    """One ``fees[]`` item of the request, checked; None where the payload left it out."""

    add_on_code: str
    units: Decimal | None = None
    unit_amount_cents: Decimal | None = None
    description: str | None = None
    invoice_display_name: str | None = None
    from_datetime: datetime | None = None
    to_datetime: datetime | None = None
    tax_codes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class OneOffRequest:
    external_customer_id: str
    currency: str | None
    fees: tuple[FeeRequest, ...]

    def digest(self) -> str:
        """What an idempotency key was first posted with: equal requests, equal digests
        (numbers by value: ``2`` and ``"2.0"`` units are the same request)."""
        def norm(value: Any) -> Any:
            if isinstance(value, Decimal):
                return format(value.normalize(), "f")
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, (list, tuple)):
                return [norm(v) for v in value]
            if isinstance(value, dict):
                return {k: norm(v) for k, v in sorted(value.items())}
            return value
        return hashlib.sha256(repr(norm(asdict(self))).encode()).hexdigest()


class OneOffError(ValueError):
    """A request that cannot be billed: Lago's error ``code`` (``add_on_not_found``...) and,
    for a validation failure, the fields at fault."""

    def __init__(self, code: str, problems: Problems | None = None, status: int = 422) -> None:
        super().__init__(code if not problems else f"{code}: {problems}")
        self.code = code
        self.problems = problems or {}
        self.status = status


# ------------------------------------------------------------------------ the request


def _text(value: Any, name: str, problems: Problems, required: bool = False) -> str | None:
    if value is None:
        if required:
            problems[name] = ["value_is_mandatory"]
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        problems[name] = ["value_is_invalid" if value != "" else "value_is_mandatory"]
        return None
    return value


def _number(value: Any, name: str, problems: Problems, whole: bool = False) -> Decimal | None:
    if value is None:
        return None
    number = exact_number(value.strip() if isinstance(value, str) else value)
    if number is None or number < 0 or (whole and number != number.to_integral_value()):
        problems[name] = ["value_is_invalid"]
        return None
    return number


def _moment(value: Any, name: str, problems: Problems) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        problems[name] = ["invalid_date"]
        return None
    return moment


def _tax_codes(value: Any, name: str, problems: Problems) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        problems[name] = ["value_is_invalid"]
        return None
    return tuple(value)


def _fee(item: Any, at: str, problems: Problems) -> FeeRequest | None:
    if not isinstance(item, dict):
        problems[at] = ["value_is_invalid"]
        return None
    for name in sorted(set(item) - set(FEE_FIELDS)):
        problems[f"{at}.{name}"] = ["unknown_field"]
    found: Problems = {}
    code = _text(item.get("add_on_code"), "add_on_code", found, required=True)
    fee = FeeRequest(
        add_on_code=code or "",
        units=_number(item.get("units"), "units", found),
        unit_amount_cents=_number(item.get("unit_amount_cents"), "unit_amount_cents", found,
                                  whole=True),
        description=_text(item.get("description"), "description", found),
        invoice_display_name=_text(item.get("invoice_display_name"), "invoice_display_name",
                                   found),
        from_datetime=_moment(item.get("from_datetime"), "from_datetime", found),
        to_datetime=_moment(item.get("to_datetime"), "to_datetime", found),
        tax_codes=_tax_codes(item.get("tax_codes"), "tax_codes", found),
    )
    problems.update({f"{at}.{name}": codes for name, codes in found.items()})
    # Lago: both boundaries or neither, the first not after the second
    given = (item.get("from_datetime") is not None, item.get("to_datetime") is not None)
    if not found and given[0] != given[1] or (
            fee.from_datetime and fee.to_datetime and fee.from_datetime > fee.to_datetime):
        problems[f"{at}.boundaries"] = ["values_are_invalid"]
    return None if found else fee


def parse_one_off(body: Any) -> OneOffRequest:
    """Lago's ``{"invoice": {...}}`` body -> the request; :class:`OneOffError` with every
    faulty field (``fees[1].units``) otherwise, or Lago's 404 ``fees_not_found`` for none."""
    if not isinstance(body, dict) or set(body) != {"invoice"} or not isinstance(
            invoice := body.get("invoice"), dict):
        raise OneOffError("missing_parameter", {"invoice": ["value_is_mandatory"]}, 400)
    problems: Problems = {}
    for name in sorted(set(invoice) - {*INVOICE_FIELDS, *INVOICE_NO_EFFECT,
                                       *INVOICE_NOT_SUPPORTED}):
        problems[name] = ["unknown_field"]
    for name in INVOICE_NOT_SUPPORTED:
        if invoice.get(name) not in (None, "", [], {}):
            problems[name] = ["not_supported"]
    if invoice.get("skip_psp") not in (None, True, False):
        problems["skip_psp"] = ["value_is_invalid"]
    customer = _text(invoice.get("external_customer_id"), "external_customer_id", problems,
                     required=True)
    currency = _text(invoice.get("currency"), "currency", problems)
    items = invoice.get("fees")
    if items is not None and not isinstance(items, list):
        problems["fees"] = ["value_is_invalid"]
        items = None
    fees = [_fee(item, f"fees[{i}]", problems) for i, item in enumerate(items or [])]
    if problems:
        raise OneOffError("validation_errors", problems)
    if not fees:
        raise OneOffError("fees_not_found", status=404)
    assert customer is not None
    return OneOffRequest(customer, currency, tuple(f for f in fees if f is not None))


# ------------------------------------------------------------------------ the fees


def add_on_fee(
    request: FeeRequest,
    add_on: AddOnInfo,
    at: datetime,
    taxes: Mapping[str, Tax],
    customer_tax_codes: Sequence[str] = (),
    entity_tax_codes: Sequence[str] = (),
) -> InvoiceFee:
    """One add-on fee (``Fees::OneOffService``): the unrounded product kept, rounded once."""
    unit = add_on.amount_cents if request.unit_amount_cents is None else request.unit_amount_cents
    units = Decimal(1) if request.units is None else request.units
    precise = WIDE.multiply(unit, units)
    fee_taxes = applicable_taxes(
        [request.tax_codes or (), add_on.tax_codes, customer_tax_codes, entity_tax_codes],
        taxes)
    return InvoiceFee(
        "add_on", "", add_on.code, add_on.name,
        request.invoice_display_name or add_on.invoice_display_name, None, {}, units, 0,
        int(round_minor(precise)), precise,
        from_datetime=request.from_datetime or at, to_datetime=request.to_datetime or at,
        taxes=fee_taxes, add_on_id=add_on.id,
        description=add_on.description if request.description is None else request.description,
        unit_amount_cents=unit,
    )


def missing_add_ons(request: OneOffRequest, add_ons: Mapping[str, AddOnInfo]) -> list[str]:
    """The add-on codes the request names that are not in the catalog (or deleted)."""
    return sorted({f.add_on_code for f in request.fees} - set(add_ons))
