"""Lago's coupon endpoints (spec/requests/api/v1/coupons_controller_spec.rb,
applied_coupons_controller_spec.rb, customers/applied_coupons_controller_spec.rb), in Lago's
shapes (serializers v1/coupon_serializer.rb, v1/applied_coupon_serializer.rb)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.resources import AppliedCoupon
from tests.tallyflow.api.test_writes import create_mistral

FIXED = {"coupon": {"code": "welcome", "name": "Welcome", "coupon_type": "fixed_amount",
                    "amount_cents": 1000, "amount_currency": "USD", "frequency": "once",
                    "expiration": "no_expiration", "reusable": False}}


def test_coupons_and_applied_coupons_through_the_api(client: TestClient) -> None:
    created = create_mistral(client)
    customer = created["customer"]["external_id"]
    plan = created["plan"]["code"]
    answer = client.post("/api/v1/coupons", json=FIXED)
    assert answer.status_code == 200, answer.text
    coupon = answer.json()["coupon"]
    assert {k: coupon[k] for k in ("code", "amount_cents", "percentage_rate", "limited_plans",
                                   "plan_codes", "reusable", "terminated_at")} == {
        "code": "welcome", "amount_cents": 1000, "percentage_rate": None,
        "limited_plans": False, "plan_codes": [], "reusable": False, "terminated_at": None}
    # coupons_controller_spec: both limitation kinds refused; an unknown plan named
    both = {"coupon": {**FIXED["coupon"], "code": "both", "applies_to": {
        "plan_codes": [plan], "billable_metric_codes": ["x"]}}}
    refused = client.post("/api/v1/coupons", json=both)
    assert refused.status_code == 422 and "applies_to" in refused.json()["error_details"]
    limited = {"coupon": {"code": "plan10", "name": "Ten", "coupon_type": "percentage",
                          "percentage_rate": "10.5", "frequency": "recurring",
                          "frequency_duration": 3, "expiration": "no_expiration",
                          "applies_to": {"plan_codes": [plan]}}}
    assert client.post("/api/v1/coupons", json=limited).json()["coupon"]["limited_plans"]

    apply = client.post("/api/v1/applied_coupons", json={"applied_coupon": {
        "external_customer_id": customer, "coupon_code": "welcome"}})
    assert apply.status_code == 200, apply.text
    applied = apply.json()["applied_coupon"]
    assert mismatches(applied, AppliedCoupon) == []
    assert (applied["status"], applied["amount_cents_remaining"], applied["frequency"]) == (
        "active", 1000, "once")
    # applied_coupons_controller_spec: not reusable -> 422; unknown coupon -> 404
    again = client.post("/api/v1/applied_coupons", json={"applied_coupon": {
        "external_customer_id": customer, "coupon_code": "welcome"}})
    assert again.status_code == 422
    assert again.json()["error_details"] == {"coupon": ["coupon_is_not_reusable"]}
    unknown = client.post("/api/v1/applied_coupons", json={"applied_coupon": {
        "external_customer_id": customer, "coupon_code": "nope"}})
    assert (unknown.status_code, unknown.json()["code"]) == (404, "coupon_not_found")
    percent = client.post("/api/v1/applied_coupons", json={"applied_coupon": {
        "external_customer_id": customer, "coupon_code": "plan10", "frequency_duration": 2}})
    assert percent.json()["applied_coupon"]["frequency_duration_remaining"] == 2
    # a second coupon limited to the same plan overlaps (405 plan_overlapping)
    client.post("/api/v1/coupons", json={"coupon": {**limited["coupon"], "code": "plan20"}})
    overlap = client.post("/api/v1/applied_coupons", json={"applied_coupon": {
        "external_customer_id": customer, "coupon_code": "plan20"}})
    assert (overlap.status_code, overlap.json()["code"]) == (405, "plan_overlapping")

    listed = client.get("/api/v1/applied_coupons",
                        params={"external_customer_id": customer}).json()
    assert [a["coupon_code"] for a in listed["applied_coupons"]] == ["welcome", "plan10"]
    assert listed["meta"]["total_count"] == 2
    assert client.get("/api/v1/applied_coupons", params={"colour": "x"}).status_code == 422

    ended = client.delete(f"/api/v1/customers/{customer}/applied_coupons/{applied['lago_id']}")
    assert ended.json()["applied_coupon"]["status"] == "terminated"
    gone = client.delete("/api/v1/coupons/plan20").json()["coupon"]
    assert gone["terminated_at"] is not None
    late = client.post("/api/v1/applied_coupons", json={"applied_coupon": {
        "external_customer_id": customer, "coupon_code": "plan20"}})
    assert late.status_code == 404
