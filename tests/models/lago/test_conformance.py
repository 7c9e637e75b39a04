"""``mismatches``: what tests hold real outputs to (docs/architecture.md §11). It must fail
on every kind of departure, or the shape tests that use it prove nothing."""

from typing import Any, NotRequired, TypedDict

from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.resources import ApiCustomerUsage, CustomerUsage


class Inner(TypedDict):
    amount_cents: int | str
    at: str | None


class Outer(TypedDict):
    name: str
    seconds: float
    items: list[Inner]
    counts: dict[str, int]
    extra: NotRequired[Any]


GOOD: dict[str, Any] = {"name": "a", "seconds": 1, "counts": {"x": 1},
                        "items": [{"amount_cents": 5, "at": None},
                                  {"amount_cents": "5.5", "at": "2026-01-01T00:00:00Z"}]}


def test_a_conforming_value_has_no_mismatch() -> None:
    assert mismatches(GOOD, Outer) == []
    assert mismatches({**GOOD, "extra": [1, {"b": None}]}, Outer) == []


def test_every_departure_is_named_where_it_is() -> None:
    assert mismatches({k: v for k, v in GOOD.items() if k != "name"}, Outer) == [
        "$: Outer lacks 'name'"]
    assert mismatches({**GOOD, "surprise": 1}, Outer) == [
        "$: 'surprise' is not a key of Outer"]
    assert mismatches({**GOOD, "items": [{"amount_cents": 1.5, "at": None}]}, Outer) == [
        "$.items[0].amount_cents: float 1.5 is not int | str"]
    assert mismatches({**GOOD, "counts": {"x": "1"}}, Outer) == [
        "$.counts.x: str '1' is not int"]
    assert mismatches({**GOOD, "seconds": True}, Outer) != []
    assert mismatches({**GOOD, "items": {}}, Outer) == ["$.items: dict is not a list"]
    assert mismatches([], Outer) == ["$: list is not a Outer"]


def test_a_boolean_is_not_an_integer() -> None:
    assert mismatches({**GOOD, "counts": {"x": True}}, Outer) == [
        "$.counts.x: True is a boolean, not an integer"]
    assert mismatches({"amount_cents": True, "at": None}, Inner) == [
        "$.amount_cents: bool True is not int | str"]


def test_the_api_usage_shape_is_the_cli_shape_with_total_units() -> None:
    figures = {"units": "3", "events_count": 1, "amount_cents": 300,
               "precise_amount_cents": "300"}
    charge = {**figures, "amount_currency": "USD",
              "charge": {"lago_id": "1", "charge_model": "standard",
                         "invoice_display_name": "tokens"},
              "billable_metric": {"lago_id": "2", "name": "tokens", "code": "tokens",
                                  "aggregation_type": "sum_agg"},
              "filters": [{**figures, "invoice_display_name": None, "values": None}],
              "grouped_usage": []}
    usage = {"external_subscription_id": "s", "from_datetime": "2025-03-01T00:00:00Z",
             "to_datetime": "2025-03-31T23:59:59Z", "issuing_date": "2025-04-01",
             "currency": "USD", "amount_cents": 300, "precise_amount_cents": "300",
             "taxes_amount_cents": 0, "total_amount_cents": 300, "events_count": 1,
             "charges_usage": [charge]}
    assert mismatches(usage, CustomerUsage) == []
    assert mismatches(usage, ApiCustomerUsage) == [
        "$.charges_usage[0]: ApiChargeUsage lacks 'total_aggregated_units'",
        "$.charges_usage[0].filters[0]: ApiFilterUsage lacks 'total_aggregated_units'"]
    widened = {**usage, "charges_usage": [{
        **charge, "total_aggregated_units": "3",
        "filters": [{**charge["filters"][0], "total_aggregated_units": "3"}]}]}
    assert mismatches(widened, ApiCustomerUsage) == []
    assert mismatches(widened, CustomerUsage) != []


def test_a_value_of_no_option_of_a_union_names_them_all() -> None:
    assert mismatches({"amount_cents": 1, "at": 5}, Inner) == ["$.at: int 5 is not str | null"]
