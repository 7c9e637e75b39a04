"""One-off invoices, pure: the request Lago's ``POST /invoices`` takes and the add-on fees it
bills (amounts, rounding, taxes, defaults). Each case names the Lago spec it follows."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tallyflow.models.invoicing import Tax, amounts_of
from tallyflow.models.invoicing.one_off import (
    AddOnInfo,
    FeeRequest,
    OneOffError,
    add_on_fee,
    parse_one_off,
)

AT = datetime(2026, 12, 1, 10, tzinfo=UTC)
TAXES = {"vat": Tax("vat", "VAT", Decimal(20)), "low": Tax("low", "Low", Decimal("5.5")),
         "cust": Tax("cust", "Customer tax", Decimal(10)),
         "ent": Tax("ent", "Entity tax", Decimal(7)),
         "org": Tax("org", "Org tax", Decimal(1), applied_to_organization=True)}
FIRST = AddOnInfo(1, "setup", "Setup", None, "Setup fee", Decimal(1000))
SECOND = AddOnInfo(2, "support", "Support", "Premium support", "Support hours", Decimal(400),
                   ("vat",))

SPEC = "spec/services/invoices/create_one_off_service_spec.rb"
FEE_SPEC = "spec/services/fees/one_off_service_spec.rb"


@pytest.mark.parametrize(("unit", "units", "amount", "precise"), [
    pytest.param("1200", "2", 2400, "2400", id=f"{SPEC}: 1200 x 2"),
    pytest.param(None, None, 1000, "1000", id=f"{FEE_SPEC}: add-on amount, 1 unit by default"),
    pytest.param("0", "2", 0, "0", id=f"{SPEC}: invoice amount in cents is zero"),
    pytest.param("3", "0.5", 2, "1.5", id="half a cent rounds up (ROUND_HALF_UP)"),
    pytest.param("333", "0.15", 50, "49.95", id="decimal units kept exact"),
    pytest.param("1", "0.0049", 0, "0.0049", id="below half a cent rounds down"),
    pytest.param("99999999999999999999", "3", 299999999999999999997, "299999999999999999997",
                 id="beyond 64 bits, exact"),
])
def test_amount_is_unit_price_times_units_rounded_once(
    unit: str | None, units: str | None, amount: int, precise: str
) -> None:
    request = FeeRequest("setup", units=None if units is None else Decimal(units),
                         unit_amount_cents=None if unit is None else Decimal(unit))
    fee = add_on_fee(request, FIRST, AT, TAXES)
    assert (fee.amount_cents, fee.precise_amount_cents) == (amount, Decimal(precise))
    assert fee.item_type == "add_on" and fee.add_on_id == 1 and fee.events_count == 0


@pytest.mark.parametrize(("fee_codes", "add_on", "customer", "entity", "expected"), [
    pytest.param(("low",), SECOND, ("cust",), ("ent",), ["low"],
                 id="app/services/fees/apply_taxes_service.rb: the fee's tax_codes first"),
    pytest.param(None, SECOND, ("cust",), ("ent",), ["vat"], id="then the add-on's taxes"),
    pytest.param((), SECOND, ("cust",), ("ent",), ["vat"], id="an empty list is none given"),
    pytest.param(None, FIRST, ("cust",), ("ent",), ["cust"], id="then the customer's"),
    pytest.param(None, FIRST, (), ("ent",), ["ent"], id="then the billing entity's"),
    pytest.param(None, FIRST, (), (), ["org"], id="then the organization's defaults"),
])
def test_taxes_follow_lagos_precedence(
    fee_codes: tuple[str, ...] | None, add_on: AddOnInfo, customer: tuple[str, ...],
    entity: tuple[str, ...], expected: list[str]
) -> None:
    fee = add_on_fee(FeeRequest(add_on.code, tax_codes=fee_codes), add_on, AT, TAXES,
                     customer, entity)
    assert [t.code for t in fee.taxes] == expected


def test_lagos_example_invoice() -> None:
    """create_one_off_service_spec.rb "creates an invoice": 1200 x 2 and the second add-on's
    400, 20 % tax -> fees 2800, taxes 560, total 3360; description given or the add-on's."""
    vat = {"vat": Tax("vat", "VAT", Decimal(20), applied_to_organization=True)}
    fees = [add_on_fee(FeeRequest("setup", units=Decimal(2), unit_amount_cents=Decimal(1200),
                                  description="desc-123"), FIRST, AT, vat),
            add_on_fee(FeeRequest("support"), SECOND, AT, vat)]
    amounts = amounts_of("EUR", fees)
    assert (amounts.fees_amount_cents, amounts.taxes_amount_cents,
            amounts.total_amount_cents) == (2800, 560, 3360)
    assert [f.description for f in fees] == ["desc-123", "Support hours"]
    assert [f.invoice_display_name for f in fees] == [None, "Premium support"]
    assert (fees[0].from_datetime, fees[0].to_datetime) == (AT, AT)


def _body(**invoice: Any) -> dict[str, Any]:
    return {"invoice": {"external_customer_id": "acme",
                        "fees": [{"add_on_code": "setup"}], **invoice}}


@pytest.mark.parametrize(("body", "code", "problems"), [
    pytest.param(_body(fees=[]), "fees_not_found", {}, id=f"{SPEC}: fees are blank"),
    pytest.param({"invoice": {"fees": [{"add_on_code": "setup"}]}}, "validation_errors",
                 {"external_customer_id": ["value_is_mandatory"]}, id="no customer"),
    pytest.param(_body(purchase_order_number="PO-1"), "validation_errors",
                 {"purchase_order_number": ["not_supported"]}, id="not carried out: refused"),
    pytest.param(_body(colour="red"), "validation_errors", {"colour": ["unknown_field"]},
                 id="unknown field"),
    pytest.param(_body(fees=[{"add_on_code": "setup", "units": "-1"}]), "validation_errors",
                 {"fees[0].units": ["value_is_invalid"]}, id="negative units"),
    pytest.param(_body(fees=[{"add_on_code": "setup", "unit_amount_cents": "10.5"}]),
                 "validation_errors", {"fees[0].unit_amount_cents": ["value_is_invalid"]},
                 id="unit price not a whole number of cents"),
    pytest.param(_body(fees=[{"add_on_code": "setup", "from_datetime": "2026-12-01T00:00:00Z"}]),
                 "validation_errors", {"fees[0].boundaries": ["values_are_invalid"]},
                 id=f"{FEE_SPEC}: one boundary only"),
    pytest.param(_body(fees=[{"add_on_code": "setup", "from_datetime": "2026-12-02T00:00:00Z",
                              "to_datetime": "2026-12-01T00:00:00Z"}]),
                 "validation_errors", {"fees[0].boundaries": ["values_are_invalid"]},
                 id=f"{FEE_SPEC}: from after to"),
    pytest.param(_body(fees=[{"add_on_code": "setup", "from_datetime": "2026-12-01"}]),
                 "validation_errors", {"fees[0].from_datetime": ["invalid_date"]},
                 id="a moment without its offset"),
    pytest.param(_body(fees=[{"units": 1}]), "validation_errors",
                 {"fees[0].add_on_code": ["value_is_mandatory"]}, id="no add-on code"),
])
def test_a_faulty_request_is_refused_by_name(body: Any, code: str, problems: dict) -> None:
    with pytest.raises(OneOffError) as caught:
        parse_one_off(body)
    assert (caught.value.code, caught.value.problems) == (code, problems)


def test_a_request_is_read_exactly_and_its_digest_is_by_value() -> None:
    request = parse_one_off(_body(skip_psp=True, fees=[
        {"add_on_code": "setup", "units": "2.50", "unit_amount_cents": 7,
         "from_datetime": "2026-11-01T00:00:00Z", "to_datetime": "2026-11-30T23:59:59Z",
         "tax_codes": ["vat"], "description": "d"}]))
    [fee] = request.fees
    assert (fee.units, fee.unit_amount_cents, fee.tax_codes) == (Decimal("2.50"), 7, ("vat",))
    assert request.digest() == parse_one_off(_body(skip_psp=False, fees=[
        {"add_on_code": "setup", "units": Decimal("2.5"), "unit_amount_cents": "7",
         "from_datetime": "2026-11-01T00:00:00+00:00", "to_datetime": "2026-11-30T23:59:59Z",
         "tax_codes": ["vat"], "description": "d"}])).digest()
    assert request.digest() != parse_one_off(_body()).digest()
