"""POST /api/v1/events/estimate_fees: the fee one event would get, priced by the billing
cycle's code (lago-api spec/requests/api/v1/events_controller_spec.rb "POST
/api/v1/events/estimate_fees", spec/services/fees/estimate_pay_in_advance_service_spec.rb)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tallyflow.tasks.invoicing.advance.charges import bill_advance_charges
from tests.tasks.invoicing.test_invoicing import catalog
from tests.tasks.rating_fixtures import SUB, ingest_events, token_event

PROPS = {"tokens": 2_000_000, "model": "mistral-small", "type": "input"}


def _estimate(client: TestClient, **event: object) -> dict:
    body = {"event": {"code": "mistral_tokens", "external_subscription_id": SUB, **event}}
    return client.post("/api/v1/events/estimate_fees", json=body).json()


def test_estimate_is_what_the_cycle_bills_and_stores_nothing(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    catalog(engine, tmp_path, charge={"pay_in_advance": True})
    answer = _estimate(client, properties=PROPS, transaction_id="t1")
    [fee] = answer["fees"]
    assert (fee["amount_cents"], fee["taxes_amount_cents"], fee["units"]) == (200, 20, "2000000")
    assert fee["event_transaction_id"] == "t1" and fee["pay_in_advance"] and not fee["lago_id"]
    with engine.connect() as conn:  # nothing stored
        assert conn.execute(text("select count(*) from advance_fees")).scalar_one() == 0
    # the same event, sent and billed by the cycle: the same fee
    now = datetime.now(UTC)
    ingest_events(engine, tmp_path, [token_event("t1", now.isoformat(), 2_000_000)])
    bill_advance_charges(engine, now + timedelta(seconds=1))
    with engine.connect() as conn:
        billed = conn.execute(text("select amount_cents, taxes_amount_cents from advance_fees"
                                   )).one()
    assert (int(billed.amount_cents), int(billed.taxes_amount_cents)) == (200, 20)


def test_estimate_refusals(client: TestClient, engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path)  # charges in arrears only
    assert _estimate(client, properties=PROPS)["error_details"] == {
        "code": ["does_not_match_an_instant_charge"]}  # Lago's code
    assert _estimate(client, timestamp=1)["error_details"] == {"timestamp": ["not_supported"]}
    assert _estimate(client, external_subscription_id="nope")["code"] == (
        "subscription_not_found")
