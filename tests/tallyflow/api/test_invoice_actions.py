"""PUT /api/v1/invoices/{id}/finalize and /refresh: the period close run now for the customer
(lago-api spec/requests/api/v1/invoices_controller_spec.rb "PUT /api/v1/invoices/:id/finalize"
and "/refresh"; spec/services/invoices/refresh_draft_and_finalize_service_spec.rb)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tallyflow.tasks.invoicing import close_periods
from tests.tasks.rating_fixtures import apply_mistral

AT = datetime(2025, 5, 10, tzinfo=UTC)


def _drafts(client: TestClient) -> list[str]:
    listed = client.get("/api/v1/invoices", params={"status": "draft"}).json()["invoices"]
    return [i["lago_id"] for i in listed]


def test_finalize_waits_for_the_watermark_and_skips_the_grace_period(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    apply_mistral(engine, tmp_path)
    close_periods(engine, AT, customers=["acme"])  # no ingest yet: no watermark, drafts
    first = _drafts(client)[-1]
    assert client.put("/api/v1/invoices/nope/finalize").status_code == 404
    early = client.put(f"/api/v1/invoices/{first}/finalize")
    assert early.status_code == 422, early.text
    assert early.json()["error_details"] == {"invoice": ["usage_not_settled"]}
    refreshed = client.put(f"/api/v1/invoices/{first}/refresh")
    assert refreshed.status_code == 200 and refreshed.json()["invoice"]["status"] == "draft"
    # the watermark passes the period end (+ settle delay); a 1000-day grace would hold it
    assert client.put("/api/v1/customers/acme", json={"customer": {
        "invoice_grace_period": 1000}}).status_code == 200
    with engine.begin() as conn:  # a finished ingest run that listed objects at AT
        conn.execute(text("insert into ingest_runs (source, status, started_at, finished_at)"
                          " values ('test', 'completed', :m, :m)"), {"m": AT})
        before = conn.execute(text("select count(*) from invoices where status = 'finalized'"
                                   )).scalar_one()
    done = client.put(f"/api/v1/invoices/{first}/finalize")
    assert done.status_code == 200, done.text
    invoice = done.json()["invoice"]
    assert invoice["status"] == "finalized" and invoice["number"]
    with engine.connect() as conn:  # only this one: the others keep their grace period
        assert conn.execute(text("select count(*) from invoices where status = 'finalized'"
                                 )).scalar_one() == before + 1
    # Lago: finalize finds drafts only; refresh of a finalized invoice changes nothing
    assert client.put(f"/api/v1/invoices/{first}/finalize").status_code == 404
    again = client.put(f"/api/v1/invoices/{first}/refresh")
    assert again.status_code == 200 and again.json()["invoice"] == invoice
