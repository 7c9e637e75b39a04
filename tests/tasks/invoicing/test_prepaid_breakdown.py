"""The invoice splits its prepaid credits into granted and purchased ones, as Lago's
``Credits::AppliedPrepaidCreditsService#calculate_prepaid_credit_breakdown``
(spec/services/credits/applied_prepaid_credits_service_spec.rb): granted credits are consumed
first (``WalletTransaction.in_consumption_order``), each part is set only when positive.

The Mistral wallet holds 100 purchased and 25 granted credits at $1; the organization's tax is
10 %.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.tasks.invoicing.test_invoicing import (
    CLOSE,
    catalog,
    hour,
    ingested_until,
    invoices,
    usage_events,
)


@pytest.mark.parametrize(("plan_cents", "prepaid", "granted", "purchased"), [
    # $31 + $16 of usage + 10 % = $51.70: the 25 granted credits, then 26.70 purchased
    (3100, 5170, 2500, 2670),
    # $16 of usage + 10 % = $17.60: granted credits only, purchased null (Lago sets neither
    # part when it is zero)
    (0, 1760, 1760, None),
], ids=["granted-then-purchased", "granted-only"])
def test_invoice_splits_prepaid_credits_into_granted_and_purchased(
    engine: Engine, tmp_path: Path, plan_cents: int, prepaid: int, granted: int,
    purchased: int | None,
) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": plan_cents})
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC))
    usage_events(engine, tmp_path, datetime(2025, 3, 20, 12, tzinfo=UTC), prefix="b")
    hour(engine, datetime(2025, 3, 26, tzinfo=UTC))  # the hourly deductions take $16 first
    ingested_until(engine, CLOSE)
    hour(engine, CLOSE)
    [invoice] = invoices(engine)
    assert invoice["status"] == "finalized"
    assert (invoice["prepaid_credit_amount_cents"], invoice["prepaid_granted_credit_amount_cents"],
            invoice["prepaid_purchased_credit_amount_cents"]) == (prepaid, granted, purchased)
