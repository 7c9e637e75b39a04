"""Fee display names on the invoice, as Lago's ``Fee#invoice_name`` and the fee serializer's
``filter_invoice_display_name`` (``ChargeFilter#display_name``) have them: the subscription's
``name`` names its subscription fee (spec/models/fee_spec.rb "#invoice_name"), a charge filter
without a display name shows its values joined by ", " (spec/models/charge_filter_spec.rb
"#display_name")."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.tasks.invoicing.test_invoicing import (
    CLOSE,
    MISTRAL,
    catalog,
    hour,
    ingested_until,
    invoices,
    usage_events,
)


def _filters_without_names() -> list[dict[str, Any]]:
    plan = json.loads((MISTRAL / "plan.json").read_text())
    filters: list[dict[str, Any]] = plan["plan"]["charges"][0]["filters"]
    for item in filters[:2]:  # mistral-small input and output
        item["invoice_display_name"] = None
    return filters


@pytest.mark.parametrize(("name", "shown"), [
    ("Acme GPU seats", "Acme GPU seats"),  # fee_spec.rb: the subscription's name
    ("", "Mistral per-token"),  # no name: the plan's (its invoice_display_name, else name)
])
def test_subscription_name_is_the_fee_display_name_and_filters_show_their_values(
    engine: Engine, tmp_path: Path, name: str, shown: str
) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 3100},
            charge={"filters": _filters_without_names()}, subscription={"name": name})
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC))
    ingested_until(engine, CLOSE)
    hour(engine, CLOSE)
    [invoice] = invoices(engine)
    names = [(f["item"]["type"], f["item"]["invoice_display_name"],
              f["item"]["filter_invoice_display_name"])
             for f in invoice["fees"]]
    assert names == [
        ("subscription", shown, None),
        ("charge", "AI Tokens", "mistral-small, input"),  # charge_filter_spec.rb
        ("charge", "AI Tokens", "mistral-small, output"),
    ]
