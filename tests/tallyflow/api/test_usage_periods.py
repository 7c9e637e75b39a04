"""``GET /customers/{id}/projected_usage`` and ``/past_usage`` (issue 28 item 5), Lago-shaped:
the projection is the current usage rated again, by the cycle's code, with each fee's units
carried to the period's end; past usage is the finalized invoices' charge fees."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tallyflow.models.rating.projection import period_ratio
from tallyflow.tasks.invoicing import close_periods, list_invoices
from tests.tasks.rating_fixtures import SUB, apply_mistral, ingest_events, token_event

AT = datetime(2025, 5, 10, tzinfo=UTC)
USAGE = "/api/v1/customers/acme/"


def test_projected_usage_is_current_usage_carried_to_the_period_end(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    apply_mistral(engine, tmp_path)
    now = datetime.now(UTC)
    ingest_events(
        engine,
        tmp_path,
        [token_event("p1", now, 3_000_000), token_event("p2", now, 1_000_000, kind="output")],
    )
    before = datetime.now(UTC)
    answer = client.get(USAGE + "projected_usage", params={"external_subscription_id": SUB})
    after = datetime.now(UTC)
    assert answer.status_code == 200, answer.text
    usage = answer.json()["customer_projected_usage"]
    current = client.get(USAGE + "current_usage", params={"external_subscription_id": SUB}).json()[
        "customer_usage"
    ]
    start = datetime.fromisoformat(usage["from_datetime"])
    end = datetime.fromisoformat(usage["to_datetime"])
    ratios = {period_ratio(start, end, moment, "UTC") for moment in (before, after)}
    assert usage["lago_invoice_id"] is None and usage["amount_cents"] == current["amount_cents"]
    assert usage["projected_amount_cents"] == sum(
        c["projected_amount_cents"] for c in usage["charges_usage"]
    )
    assert usage["projected_amount_cents"] >= usage["amount_cents"] > 0
    for charge, now_charge in zip(usage["charges_usage"], current["charges_usage"], strict=True):
        assert charge["units"] == now_charge["units"]
        # each fee (filter bucket) projected, the charge's the sum of its fees' (as Lago's
        # calculate_filtered_projection); the projected units priced by the charge model
        fees = charge["filters"] or [charge]
        for fee in fees:
            units = Decimal(fee["units"])
            assert Decimal(fee["projected_units"]) in {
                (units / r).quantize(Decimal("0.01"), ROUND_HALF_UP) for r in ratios if r > 0
            }
        # the default bucket (values {} here, Lago's null) is left out of the charge's
        defined = [f for f in fees if f.get("values") != {}]
        assert Decimal(charge["projected_units"]) == sum(
            Decimal(f["projected_units"]) for f in defined
        )
        assert charge["projected_amount_cents"] == sum(f["projected_amount_cents"] for f in defined)

    refused = client.get(
        USAGE + "projected_usage", params={"external_subscription_id": SUB, "apply_taxes": "true"}
    )
    assert refused.status_code == 422
    assert refused.json()["error_details"] == {"apply_taxes": ["not_supported"]}
    assert (
        client.get(
            "/api/v1/customers/nobody/projected_usage", params={"external_subscription_id": SUB}
        ).status_code
        == 404
    )
    assert client.get(USAGE + "projected_usage").status_code == 422


def test_past_usage_is_the_finalized_invoices_charge_fees(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    apply_mistral(engine, tmp_path)
    ingest_events(
        engine,
        tmp_path,
        [
            token_event("m1", "2025-03-10T00:00:00Z", 3_000_000),
            token_event("a1", "2025-04-10T00:00:00Z", 2_000_000, kind="output"),
        ],
    )
    with engine.begin() as conn:  # the watermark passes both periods
        conn.execute(
            text(
                "insert into ingest_runs (source, status, started_at, finished_at)"
                " values ('test', 'completed', :m, :m)"
            ),
            {"m": AT},
        )
    close_periods(engine, AT, now=AT)
    finalized = sorted(
        (
            i
            for i in list_invoices(engine, invoice_type="subscription")
            if i["status"] == "finalized"
        ),
        key=lambda i: i["issuing_date"],
    )
    assert len(finalized) >= 2

    answer = client.get(USAGE + "past_usage", params={"external_subscription_id": SUB})
    assert answer.status_code == 200, answer.text
    periods = answer.json()["usage_periods"]
    assert answer.json()["meta"]["total_count"] == len(finalized) == len(periods)
    assert [p["lago_invoice_id"] for p in periods] == [i["lago_id"] for i in finalized[::-1]]
    for period, invoice in zip(periods, finalized[::-1], strict=True):
        fees = [f for f in invoice["fees"] if f["item"]["type"] == "charge"]
        assert sum(c["amount_cents"] for c in period["charges_usage"]) == sum(
            f["amount_cents"] for f in fees
        )
        assert period["amount_cents"] == invoice["fees_amount_cents"]
        assert period["total_amount_cents"] == (
            period["amount_cents"] + period["taxes_amount_cents"]
        )
    [march] = [p for p in periods if p["from_datetime"].startswith("2025-03-01")]
    [tokens] = march["charges_usage"]
    assert tokens["billable_metric"]["code"] == "mistral_tokens", tokens
    assert Decimal(tokens["units"]) == 3_000_000 and tokens["amount_cents"] == 300
    [item] = tokens["filters"]
    assert item["values"] == {"model": ["mistral-small"], "type": ["input"]}
    assert (item["invoice_display_name"], item["amount_cents"]) == (
        "mistral-small input tokens",
        300,
    )

    newest = client.get(
        USAGE + "past_usage",
        params={
            "external_subscription_id": SUB,
            "periods_count": "1",
            "billable_metric_code": "mistral_tokens",
        },
    ).json()["usage_periods"]
    assert [p["lago_invoice_id"] for p in newest] == [periods[0]["lago_invoice_id"]]
    assert {c["billable_metric"]["code"] for c in newest[0]["charges_usage"]} <= {"mistral_tokens"}
    unknown = client.get(
        USAGE + "past_usage",
        params={"external_subscription_id": SUB, "billable_metric_code": "nope"},
    )
    assert unknown.status_code == 404 and unknown.json()["code"] == "billable_metric_not_found"
    for bad in ("0", "-1", "x"):
        wrong = client.get(
            USAGE + "past_usage", params={"external_subscription_id": SUB, "periods_count": bad}
        )
        assert wrong.json()["error_details"] == {"periods_count": ["value_is_invalid"]}
