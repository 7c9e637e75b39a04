"""Lago's own Python client on the on-demand endpoints: invoices' refresh and finalize, a fee
estimate and a customer's delete (lago-python-client ``invoices.refresh``/``finalize``,
``events.estimate_fees``, ``customers.destroy``; lago-api
spec/requests/api/v1/invoices_controller_spec.rb and customers_controller_spec.rb
"DELETE /api/v1/customers/:external_id")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lago_python_client.client import Client
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import Event
from sqlalchemy import Engine, text

from tallyflow.tasks.invoicing import close_periods
from tests.tallyflow.api.conftest import LiveApi, hold_watermark, release_watermark
from tests.tasks.rating_fixtures import SUB, apply_mistral

AT = datetime(2025, 5, 10, tzinfo=UTC)


def test_refresh_finalize_and_delete_with_lagos_client(
    live_api: Callable[..., LiveApi], engine: Engine, api_key: str, tmp_path: Path
) -> None:
    apply_mistral(engine, tmp_path)
    client = Client(api_key=api_key, api_url=f"{live_api().url}/")
    hold_watermark(engine, datetime(2025, 1, 1, tzinfo=UTC))  # the API's mark moves it else
    close_periods(engine, AT, customers=["acme"])  # no watermark yet: drafts
    with engine.connect() as conn:
        first = conn.execute(text("select lago_id from invoices order by issuing_date"
                                  " limit 1")).scalar_one()
    refreshed = client.invoices.refresh(first)
    assert refreshed is not None and refreshed.status == "draft"
    with pytest.raises(LagoApiError) as refused:
        client.invoices.finalize(first)
    assert refused.value.status_code == 422  # usage_not_settled
    with engine.begin() as conn:  # the watermark passes the period end (+ settle delay)
        conn.execute(text("insert into ingest_runs (source, status, started_at, finished_at)"
                          " values ('test', 'completed', :m, :m)"), {"m": AT})
    release_watermark(engine)
    finalized = client.invoices.finalize(first)
    assert finalized is not None and finalized.status == "finalized" and finalized.number
    # estimate_fees: the SDK's Event (nulls for what it leaves out); the Mistral plan has no
    # charge paid in advance, so Lago's refusal
    with pytest.raises(LagoApiError) as no_instant:
        client.events.estimate_fees(Event(transaction_id="t", external_subscription_id=SUB,
                                          code="mistral_tokens", properties={"tokens": 1}))
    assert no_instant.value.status_code == 422
    assert "does_not_match_an_instant_charge" in str(no_instant.value.response)
    deleted = client.customers.destroy("acme")
    assert deleted is not None and deleted.external_id == "acme"
    with pytest.raises(LagoApiError) as gone:
        client.customers.find("acme")
    assert gone.value.status_code == 404
