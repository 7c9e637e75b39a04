from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tallyflow.models.rating.charge_models import (
    PackageDetail,
    PercentageDetail,
    PropertiesError,
    RangeDetail,
    compute_charge,
    needs_event_values,
    parse_properties,
    pay_in_advance_amounts,
    validate_properties,
)

GRADUATED = {
    "graduated_ranges": [
        {"from_value": 0, "to_value": 100, "per_unit_amount": "0.10", "flat_amount": "5"},
        {"from_value": 101, "to_value": 1000, "per_unit_amount": "0.05", "flat_amount": "10"},
        {"from_value": 1001, "to_value": None, "per_unit_amount": "0.01", "flat_amount": "0"},
    ]
}

DECIMAL_TIERS = {
    "graduated_ranges": [
        {"from_value": 0, "to_value": "0.5", "per_unit_amount": "2", "flat_amount": "0"},
        {"from_value": "0.5", "to_value": "1.5", "per_unit_amount": "1", "flat_amount": "1"},
        {"from_value": "1.5", "to_value": None, "per_unit_amount": "0.5", "flat_amount": "0"},
    ]
}

VOLUME = {
    "volume_ranges": [
        {"from_value": 0, "to_value": 100, "per_unit_amount": "0.10", "flat_amount": "5"},
        {"from_value": 101, "to_value": 1000, "per_unit_amount": "0.05", "flat_amount": "10"},
        {"from_value": 1001, "to_value": None, "per_unit_amount": "0.01", "flat_amount": "20"},
    ]
}

GRADUATED_PERCENTAGE = {
    "graduated_percentage_ranges": [
        {"from_value": 0, "to_value": 10000, "rate": "1", "flat_amount": "0.5"},
        {"from_value": 10001, "to_value": None, "rate": "0.5", "flat_amount": "1"},
    ]
}


def _tiers(result_ranges: tuple[RangeDetail, ...]) -> list[tuple[D, D, D]]:
    return [(r.units, r.per_unit_total_amount, r.total_with_flat_amount) for r in result_ranges]


# --- standard ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("units", "amount"),
    [("0", "0"), ("1", "0.12"), ("2.5", "0.300"), ("1000000", "120000"), ("-3", "0")],
)
def test_standard(units: str, amount: str) -> None:
    result = compute_charge("standard", {"amount": "0.12"}, D(units))
    assert result.amount == D(amount)
    assert result.units == max(D(units), D(0))


# --- package ----------------------------------------------------------------------------------

PACKAGE = {"amount": "2", "package_size": 100, "free_units": 10}


@pytest.mark.parametrize(
    ("units", "packages", "amount", "paid"),
    [
        ("0", 0, "0", "0"),
        ("1", 0, "0", "0"),
        ("9", 0, "0", "0"),
        ("10", 0, "0", "0"),
        ("10.5", 1, "2", "0.5"),
        ("11", 1, "2", "1"),
        ("109", 1, "2", "99"),
        ("110", 1, "2", "100"),
        ("111", 2, "4", "101"),
        ("210", 2, "4", "200"),
        ("211", 3, "6", "201"),
    ],
)
def test_package_boundaries(units: str, packages: int, amount: str, paid: str) -> None:
    result = compute_charge("package", PACKAGE, D(units))
    assert result.amount == D(amount)
    assert isinstance(result.detail, PackageDetail)
    assert result.detail.package_count == packages
    assert result.detail.paid_units == D(paid)


@pytest.mark.parametrize(
    ("tokens", "cents"),
    [(2_000_000, 200), (1, 100), (0, 0), (999_999, 100), (1_000_000, 100), (1_000_001, 200)],
)
def test_mistral_small_input_tokens(tokens: int, cents: int) -> None:
    properties = {"amount": "1", "free_units": 0, "package_size": 1000000}
    fee = compute_charge("package", properties, D(tokens)).to_fee("USD")
    assert fee.amount_cents == cents
    assert fee.precise_amount_cents == D(cents)


# --- graduated --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("units", "total", "tiers"),
    [
        ("0", "5", [("0", "0", "5")]),
        ("1", "5.10", [("1", "0.10", "5.10")]),
        ("99", "14.90", [("99", "9.90", "14.90")]),
        ("100", "15", [("100", "10", "15")]),
        ("100.5", "25.025", [("100", "10", "15"), ("0.5", "0.025", "10.025")]),
        ("101", "25.05", [("100", "10", "15"), ("1", "0.05", "10.05")]),
        ("999", "69.95", [("100", "10", "15"), ("899", "44.95", "54.95")]),
        ("1000", "70", [("100", "10", "15"), ("900", "45", "55")]),
        (
            "1000.5",
            "70.005",
            [("100", "10", "15"), ("900", "45", "55"), ("0.5", "0.005", "0.005")],
        ),
        ("1001", "70.01", [("100", "10", "15"), ("900", "45", "55"), ("1", "0.01", "0.01")]),
        ("5000", "110", [("100", "10", "15"), ("900", "45", "55"), ("4000", "40", "40")]),
    ],
)
def test_graduated_boundaries(units: str, total: str, tiers: list[tuple[str, str, str]]) -> None:
    result = compute_charge("graduated", GRADUATED, D(units))
    assert result.amount == D(total)
    assert _tiers(result.ranges) == [(D(a), D(b), D(c)) for a, b, c in tiers]
    assert result.ranges[0].from_value == 0
    assert result.ranges[-1].flat_unit_amount in {D(5), D(10), D(0)}


@pytest.mark.parametrize(
    ("units", "total", "tier_units"),
    [
        ("0", "0", ["0"]),
        ("0.25", "0.5", ["0.25"]),
        ("0.5", "1", ["0.5"]),
        ("0.75", "2.25", ["0.5", "0.25"]),
        ("1.5", "3", ["0.5", "1"]),
        ("2", "3.25", ["0.5", "1", "0.5"]),
    ],
)
def test_graduated_adjacent_decimal_tiers_have_no_plus_one(
    units: str, total: str, tier_units: list[str]
) -> None:
    result = compute_charge("graduated", DECIMAL_TIERS, D(units))
    assert result.amount == D(total)
    assert [r.units for r in result.ranges] == [D(u) for u in tier_units]


def test_graduated_range_detail_fields() -> None:
    detail = compute_charge("graduated", GRADUATED, D(150)).ranges[1]
    assert detail == RangeDetail(
        from_value=D(101),
        to_value=D(1000),
        units=D(50),
        per_unit_amount=D("0.05"),
        flat_unit_amount=D(10),
        per_unit_total_amount=D("2.50"),
        total_with_flat_amount=D("12.50"),
    )


# --- volume -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("units", "total", "tier_from", "per_unit"),
    [
        ("0", "5", 0, "0.10"),
        ("1", "5.10", 0, "0.10"),
        ("99", "14.90", 0, "0.10"),
        ("100", "15", 0, "0.10"),
        ("100.5", "15.025", 101, "0.05"),
        ("101", "15.05", 101, "0.05"),
        ("999", "59.95", 101, "0.05"),
        ("1000", "60", 101, "0.05"),
        ("1000.5", "30.005", 1001, "0.01"),
        ("1001", "30.01", 1001, "0.01"),
    ],
)
def test_volume_boundaries(units: str, total: str, tier_from: int, per_unit: str) -> None:
    result = compute_charge("volume", VOLUME, D(units))
    assert result.amount == D(total)
    (detail,) = result.ranges
    assert detail.from_value == tier_from
    assert detail.per_unit_amount == D(per_unit)
    assert detail.units == D(units)
    assert detail.total_with_flat_amount == D(total)


def test_volume_adjacent_decimal_tiers_pick_first_match() -> None:
    properties = {
        "volume_ranges": [
            {"from_value": 0, "to_value": "10", "per_unit_amount": "1", "flat_amount": "0"},
            {"from_value": "10", "to_value": None, "per_unit_amount": "0.5", "flat_amount": "0"},
        ]
    }
    assert compute_charge("volume", properties, D(10)).amount == D(10)
    assert compute_charge("volume", properties, D("10.5")).amount == D("5.25")


# --- graduated_percentage ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("units", "total", "tiers"),
    [
        ("0", "0.5", [("0", "0", "0.5")]),
        ("1", "0.51", [("1", "0.01", "0.51")]),
        ("9999", "100.49", [("9999", "99.99", "100.49")]),
        ("10000", "100.5", [("10000", "100", "100.5")]),
        ("10000.5", "101.5025", [("10000", "100", "100.5"), ("0.5", "0.0025", "1.0025")]),
        ("10001", "101.505", [("10000", "100", "100.5"), ("1", "0.005", "1.005")]),
    ],
)
def test_graduated_percentage_boundaries(
    units: str, total: str, tiers: list[tuple[str, str, str]]
) -> None:
    result = compute_charge("graduated_percentage", GRADUATED_PERCENTAGE, D(units))
    assert result.amount == D(total)
    assert _tiers(result.ranges) == [(D(a), D(b), D(c)) for a, b, c in tiers]


# --- percentage -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("properties", "values", "amount", "free_units", "free_events", "paid_events"),
    [
        ({"rate": "1.5"}, ["100", "200"], "4.5", "0", 0, 2),
        ({"rate": "1.5", "fixed_amount": "0.25"}, ["100", "200"], "5.0", "0", 0, 2),
        # first N events free
        (
            {"rate": "1.5", "fixed_amount": "0.25", "free_units_per_events": 2},
            ["100", "200", "300", "400"],
            "11.0",
            "300",
            2,
            2,
        ),
        ({"rate": "1", "free_units_per_events": 5}, ["100", "200"], "0", "300", 2, 0),
        # a free amount: the event that exhausts it pays the rest and its fixed fee
        (
            {"rate": "1.5", "fixed_amount": "0.25", "free_units_per_total_aggregation": "250"},
            ["100", "200", "300"],
            "5.75",
            "250",
            1,
            2,
        ),
        (
            {"rate": "1.5", "fixed_amount": "0.25", "free_units_per_total_aggregation": "250"},
            ["250", "10"],
            "0.65",
            "250",
            0,
            2,
        ),
        (
            {"rate": "1", "free_units_per_total_aggregation": "249.99"},
            ["250"],
            "0.0001",
            "249.99",
            0,
            1,
        ),
        # whichever free limit comes first
        (
            {"rate": "1", "free_units_per_events": 1, "free_units_per_total_aggregation": "1000"},
            ["100", "200"],
            "2",
            "100",
            1,
            1,
        ),
        (
            {"rate": "1", "free_units_per_events": 3, "free_units_per_total_aggregation": "150"},
            ["100", "200"],
            "1.5",
            "150",
            1,
            1,
        ),
    ],
)
def test_percentage_free_units(
    properties: dict[str, object],
    values: list[str],
    amount: str,
    free_units: str,
    free_events: int,
    paid_events: int,
) -> None:
    event_values = [D(v) for v in values]
    result = compute_charge(
        "percentage", properties, sum(event_values, D(0)), event_values=event_values
    )
    assert result.amount == D(amount)
    assert isinstance(result.detail, PercentageDetail)
    assert result.detail.free_units == D(free_units)
    assert result.detail.free_events == free_events
    assert result.detail.paid_events == paid_events


def test_percentage_min_max_per_transaction_in_time_order() -> None:
    properties = {"rate": "1", "per_transaction_min_amount": "1", "per_transaction_max_amount": "3"}
    values = [D(10), D(150), D(1000)]
    result = compute_charge("percentage", properties, D(1160), event_values=values)
    # 0.10 -> 1 (min), 1.50, 10 -> 3 (max)
    assert result.amount == D("5.5")
    assert isinstance(result.detail, PercentageDetail)
    assert result.detail.percentage_amount == D("11.60")
    assert result.detail.min_max_adjustment_amount == D("-6.10")


def test_percentage_min_max_after_free_events() -> None:
    properties = {"rate": "10", "free_units_per_events": 1, "per_transaction_min_amount": "2"}
    result = compute_charge("percentage", properties, D(15), event_values=[D(5), D(10)])
    assert result.amount == D(2)  # first event free, second 1.00 clamped up to 2


def test_percentage_needs_event_values_when_free_or_clamped() -> None:
    properties = {"rate": "1", "free_units_per_events": 1}
    assert needs_event_values("percentage", properties)
    assert not needs_event_values("percentage", {"rate": "1", "fixed_amount": "1"})
    assert not needs_event_values("standard", {"amount": "1"})
    with pytest.raises(ValueError, match="event_values"):
        compute_charge("percentage", properties, D(10))


def test_percentage_fixed_amount_from_events_count() -> None:
    result = compute_charge(
        "percentage", {"rate": "2", "fixed_amount": "0.5"}, D(100), events_count=3
    )
    assert result.amount == D("3.5")
    assert compute_charge("percentage", {"rate": "2", "fixed_amount": "0.5"}, D(0)).amount == 0


@pytest.mark.parametrize(
    ("currency", "amount", "amount_cents"),
    [
        ("USD", "12.345", 1235),  # 1234.5 cents
        ("JPY", "1234.5", 1235),  # 1234.5 yen: JPY has no cents (was billed as 12 yen)
        ("KWD", "1.2345", 1235),  # 1234.5 fils (was billed as 12,345 fils)
    ],
)
def test_dynamic_divides_by_the_currency_subunit(
    currency: str, amount: str, amount_cents: int
) -> None:
    result = compute_charge(
        "dynamic", {}, D(7), precise_total_amount_cents=D("1234.5"), currency=currency
    )
    assert result.amount == D(amount)
    fee = result.to_fee(currency)
    assert fee.amount_cents == amount_cents
    assert fee.precise_amount_cents == D("1234.5")


@pytest.mark.parametrize("currency", ["USD", "JPY", "KWD"])
def test_dynamic_bills_nothing_at_zero_units(currency: str) -> None:
    """Lago returns 0 when there are no units, whatever the events' amounts say."""
    result = compute_charge(
        "dynamic", {}, D(0), precise_total_amount_cents=D("500"), currency=currency
    )
    assert result.amount == 0 and result.to_fee(currency).amount_cents == 0


def test_dynamic_needs_the_currency() -> None:
    with pytest.raises(ValueError, match="currency"):
        compute_charge("dynamic", {}, D(1), precise_total_amount_cents=D("5"))


# --- fees, true-up ----------------------------------------------------------------------------


def test_fee_clamps_negative_and_rounds_half_up() -> None:
    result = compute_charge("standard", {"amount": "0.005"}, D(1))
    fee = result.to_fee("USD")
    assert (fee.amount_cents, fee.precise_amount_cents) == (1, D("0.5"))
    negative = compute_charge("standard", {"amount": "1"}, D(-5)).to_fee("USD")
    assert (negative.amount_cents, negative.units) == (0, 0)


# --- pay in advance ---------------------------------------------------------------------------


def test_pay_in_advance_sum_bills_only_increases_above_running_max() -> None:
    fees = pay_in_advance_amounts(
        "standard", {"amount": "2"}, [D(5), D(-3), D(4), D(1)], bill_only_increases=True
    )
    # cumulative 5, 2, 6, 7 -> billed 5, 5, 6, 7
    assert fees == [D(10), D(0), D(2), D(2)]


def test_pay_in_advance_without_max_tracking_never_negative() -> None:
    fees = pay_in_advance_amounts(
        "standard", {"amount": "2"}, [D(5), D(-3), D(4)], bill_only_increases=False
    )
    assert fees == [D(10), D(0), D(8)]


def test_pay_in_advance_graduated_first_event_pays_flat_and_fees_add_up() -> None:
    units = [D(50), D(50), D(1), D(900)]
    fees = pay_in_advance_amounts("graduated", GRADUATED, units, bill_only_increases=True)
    assert fees[0] == D(10)  # 50 x 0.10 + flat 5
    assert sum(fees) == compute_charge("graduated", GRADUATED, D(1001)).amount


def test_pay_in_advance_with_prior_units_returns_only_new_fees() -> None:
    fees = pay_in_advance_amounts(
        "package", PACKAGE, [D(1)], bill_only_increases=True, prior_units=[D(110)]
    )
    assert fees == [D(2)]


def test_pay_in_advance_percentage_free_events() -> None:
    properties = {"rate": "10", "free_units_per_events": 1}
    fees = pay_in_advance_amounts(
        "percentage", properties, [D(100), D(50)], bill_only_increases=True
    )
    assert fees == [D(0), D(5)]


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "properties", "message"),
    [
        ("standard", {}, "amount: is required"),
        ("standard", {"amount": 1}, "amount: must be a decimal string"),
        ("standard", {"amount": 0.5}, "amount: must be a decimal string"),
        ("standard", {"amount": "1e2"}, "amount: must be a decimal string"),
        ("standard", {"amount": "-1"}, "amount: must not be negative"),
        ("package", {"amount": "1"}, "package_size: is required"),
        ("package", {"amount": "1", "package_size": 0}, "package_size: must be at least 1"),
        ("package", {"amount": "1", "package_size": "10"}, "package_size: must be an integer"),
        (
            "package",
            {"amount": "1", "package_size": 10, "free_units": -1},
            "free_units: must be at least 0",
        ),
        ("percentage", {}, "rate: is required"),
        (
            "percentage",
            {"rate": "1", "per_transaction_min_amount": "5", "per_transaction_max_amount": "1"},
            "per_transaction_max_amount: must be greater than or equal",
        ),
        ("graduated", {}, "graduated_ranges: must be a non-empty list"),
        ("graduated", {"graduated_ranges": []}, "graduated_ranges: must be a non-empty list"),
        ("volume", {"volume_ranges": ["x"]}, "volume_ranges[0]: must be an object"),
        ("unknown", {}, "charge_model: unknown charge model"),
    ],
)
def test_validate_properties_messages(
    model: str, properties: dict[str, object], message: str
) -> None:
    errors = validate_properties(model, properties)
    assert any(e.startswith(message) for e in errors), errors


def _ranges(*bounds: tuple[object, object]) -> dict[str, object]:
    return {
        "graduated_ranges": [
            {"from_value": low, "to_value": high, "per_unit_amount": "1", "flat_amount": "0"}
            for low, high in bounds
        ]
    }


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        (_ranges((1, 10), (11, None)), "graduated_ranges[0].from_value: the first range must"),
        (_ranges((0, 10), (12, None)), "graduated_ranges[1].from_value: must equal the previous"),
        (_ranges((0, 10), (9, None)), "graduated_ranges[1].from_value: must equal the previous"),
        (_ranges((0, None), (11, None)), "graduated_ranges[0].to_value: only the last range"),
        (_ranges((0, 10), (11, 20)), "graduated_ranges[1].to_value: the last range must be open"),
        (_ranges((0, 0), (1, None)), "graduated_ranges[0].to_value: must be greater"),
        (_ranges((0, 10.5), (11, None)), "graduated_ranges[0].to_value: must be a number or"),
        (
            {"graduated_ranges": [{"from_value": 0, "to_value": None, "flat_amount": "0"}]},
            "graduated_ranges[0].per_unit_amount: is required",
        ),
        (
            {
                "graduated_ranges": [
                    {"from_value": 0, "to_value": None, "per_unit_amount": 2, "flat_amount": "0"}
                ]
            },
            "graduated_ranges[0].per_unit_amount: must be a decimal string",
        ),
    ],
)
def test_validate_ranges(properties: dict[str, object], message: str) -> None:
    errors = validate_properties("graduated", properties)
    assert any(e.startswith(message) for e in errors), errors


@pytest.mark.parametrize(
    ("model", "properties"),
    [
        ("standard", {"amount": "0.12"}),
        ("package", {"amount": "1", "free_units": 0, "package_size": 1000000}),
        ("graduated", GRADUATED),
        ("graduated", DECIMAL_TIERS),
        ("graduated", _ranges((0, 10), (11, 11), (12, None))),
        ("volume", VOLUME),
        ("graduated_percentage", GRADUATED_PERCENTAGE),
        ("percentage", {"rate": "1", "fixed_amount": "0.1", "free_units_per_events": None}),
        ("dynamic", {}),
        ("standard", {"amount": "1", "pricing_group_keys": ["region"]}),
    ],
)
def test_valid_properties(model: str, properties: dict[str, object]) -> None:
    assert validate_properties(model, properties) == []
    parse_properties(model, properties)


def test_parse_properties_raises_with_all_errors() -> None:
    with pytest.raises(PropertiesError) as caught:
        parse_properties("package", {"amount": 1, "package_size": 0})
    assert len(caught.value.errors) == 2


# --- properties -------------------------------------------------------------------------------

price = st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False)
units_st = st.decimals(min_value=0, max_value=10**7, places=3, allow_nan=False)


@st.composite
def graduated_properties(draw: st.DrawFn) -> dict[str, object]:
    """Valid ranges mixing classic (+1) and adjacent (decimal-tier style) boundaries."""
    count = draw(st.integers(min_value=1, max_value=5))
    ranges: list[dict[str, object]] = []
    low, previous_high = 0, 0
    for index in range(count):
        if index:
            low = previous_high if draw(st.booleans()) else previous_high + 1
        high = None if index == count - 1 else low + draw(st.integers(min_value=1, max_value=1000))
        ranges.append(
            {
                "from_value": low,
                "to_value": high,
                "per_unit_amount": str(draw(price)),
                "flat_amount": str(draw(price)),
            }
        )
        previous_high = high or 0
    return {"graduated_ranges": ranges}


@st.composite
def priced(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    model = draw(st.sampled_from(["standard", "package", "graduated", "graduated_percentage"]))
    if model == "standard":
        return model, {"amount": str(draw(price))}
    if model == "package":
        return model, {
            "amount": str(draw(price)),
            "package_size": draw(st.integers(min_value=1, max_value=10**6)),
            "free_units": draw(st.integers(min_value=0, max_value=1000)),
        }
    props = draw(graduated_properties())
    if model == "graduated_percentage":
        ranges = [
            {**r, "rate": r.pop("per_unit_amount")}
            for r in props["graduated_ranges"]
        ]
        return model, {"graduated_percentage_ranges": ranges}
    return model, props


@settings(max_examples=200, deadline=None)
@given(priced(), units_st, units_st)
def test_price_never_falls_as_units_grow(
    charge: tuple[str, dict[str, object]], first: D, second: D
) -> None:
    model, properties = charge
    assert validate_properties(model, properties) == []
    low, high = sorted((first, second))
    assert (
        compute_charge(model, properties, low).amount
        <= compute_charge(model, properties, high).amount
    )


@settings(max_examples=200, deadline=None)
@given(graduated_properties(), units_st)
def test_graduated_tier_units_add_up_to_units(properties: dict[str, object], units: D) -> None:
    result = compute_charge("graduated", properties, units)
    assert sum((r.units for r in result.ranges), D(0)) == units
    assert result.amount == sum((r.total_with_flat_amount for r in result.ranges), D(0))


@settings(max_examples=200, deadline=None)
@given(priced(), st.lists(st.decimals(min_value=0, max_value=5000, places=2), max_size=12))
def test_pay_in_advance_fees_add_up_to_arrears_price(
    charge: tuple[str, dict[str, object]], increments: list[D]
) -> None:
    model, properties = charge
    fees = pay_in_advance_amounts(model, properties, increments, bill_only_increases=True)
    assert all(fee >= 0 for fee in fees)
    if increments:
        total = compute_charge(model, properties, sum(increments, D(0))).amount
        assert sum(fees, D(0)) == total
