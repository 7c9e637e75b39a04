"""Lago's own Python client on a customer's projected and past usage
(lago-python-client ``customers.projected_usage`` and ``customers.past_usage``; lago-api
spec/requests/api/v1/customers/projected_usage_controller_spec.rb and usage_controller_spec.rb
"GET /api/v1/customers/:customer_id/past_usage")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lago_python_client.client import Client
from lago_python_client.exceptions import LagoApiError
from sqlalchemy import Engine, text

from tallyflow.tasks.invoicing import close_periods
from tests.tallyflow.api.conftest import LiveApi
from tests.tasks.rating_fixtures import SUB, apply_mistral, ingest_events, token_event

AT = datetime(2025, 5, 10, tzinfo=UTC)


def test_projected_and_past_usage_with_lagos_client(
    live_api: Callable[..., LiveApi], engine: Engine, api_key: str, tmp_path: Path
) -> None:
    apply_mistral(engine, tmp_path)
    ingest_events(
        engine,
        tmp_path,
        [
            token_event("m1", "2025-03-10T00:00:00Z", 3_000_000),
            token_event("now", datetime.now(UTC), 1_000_000, kind="output"),
        ],
    )
    with engine.begin() as conn:  # the watermark passes the spring periods
        conn.execute(
            text(
                "insert into ingest_runs (source, status, started_at, finished_at)"
                " values ('test', 'completed', :m, :m)"
            ),
            {"m": AT},
        )
    close_periods(engine, AT, now=AT)
    client = Client(api_key=api_key, api_url=f"{live_api().url}/")

    projected = client.customers.projected_usage("acme", SUB)
    assert projected is not None
    assert projected.projected_amount_cents >= projected.amount_cents > 0
    [charge] = projected.charges_usage
    assert charge.billable_metric.code == "mistral_tokens"
    assert float(charge.projected_units) >= float(charge.units) == 1_000_000

    past = client.customers.past_usage("acme", SUB, {"periods_count": 3})
    periods = past["usage_periods"]
    assert len(periods) == 3 and past["meta"]["total_count"] >= 3
    assert [p.from_datetime[:7] for p in periods] == ["2025-04", "2025-03", "2025-02"]
    [march_charge] = periods[1].charges_usage
    assert (march_charge.units, march_charge.amount_cents) == ("3000000", 300)
    assert periods[1].lago_invoice_id is not None

    with pytest.raises(LagoApiError) as unknown:
        client.customers.past_usage("acme", SUB, {"billable_metric_code": "nope"})
    assert unknown.value.status_code == 404
