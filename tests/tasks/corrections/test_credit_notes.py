"""Credit notes on a real finalized invoice: credit, refund back to the wallet, offset, numbers,
idempotency, a crash before the wallet correction, void, estimate, and consumption by the next
invoice at its finalization (Lago: spec/services/credit_notes/create_service_spec.rb,
void_service_spec.rb, estimate_service_spec.rb,
spec/services/credits/credit_note_service_spec.rb)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from tallyflow.infra import failpoints
from tallyflow.models.credit_notes import Request
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.resources import CreditNote
from tallyflow.tasks.corrections import (
    CreditNoteRefused,
    Issue,
    credit_note_document,
    estimate_credit_note,
    find_credit_note,
    issue_credit_note,
    list_credit_notes,
    void_credit_note,
)
from tallyflow.tasks.invoicing import find_invoice
from tests.tasks.invoicing.test_invoicing import (
    CLOSE,
    MARCH_END,
    catalog,
    hour,
    ingested_until,
    invoices,
    usage_events,
)
from tests.tasks.wallets.test_wallets_support import assert_balances_match_ledger, balances

AT = datetime(2025, 4, 2, 12, tzinfo=UTC)


def _finalized(engine: Engine, folder: Path, **kwargs: Any) -> dict[str, Any]:
    """March closed and finalized: plan $31 and $8 of tokens, VAT 20 % (4680 cents)."""
    catalog(engine, folder, plan={"amount_cents": 3100, "tax_codes": ["vat"]}, **kwargs)
    usage_events(engine, folder, datetime(2025, 3, 10, 12, tzinfo=UTC))
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    hour(engine, CLOSE)
    [invoice] = invoices(engine)
    assert invoice["status"] == "finalized"
    return invoice


def _fee(invoice: dict[str, Any], kind: str, cents: int) -> str:
    """The lago_id of the invoice's fee of that type and amount."""
    return str(next(f["lago_id"] for f in invoice["fees"]
                    if f["item"]["type"] == kind and f["amount_cents"] == cents))


def _issue(invoice: dict[str, Any], items: list[tuple[str, int]], **amounts: Any) -> Issue:
    key = amounts.pop("key", None)
    return Issue(invoice["number"], Request(tuple((f, Decimal(c)) for f, c in items),
                                            **amounts), idempotency_key=key)


def test_credit_then_the_next_invoice_consumes_it(engine: Engine, tmp_path: Path) -> None:
    # create_service_spec.rb "creates a credit note"; credit_note_service_spec.rb
    invoice = _finalized(engine, tmp_path, wallet=False)
    charge = _fee(invoice, "charge", 600)
    note = issue_credit_note(engine, _issue(invoice, [(charge, 500)], credit_amount_cents=600),
                             at=AT)
    assert mismatches(note, CreditNote) == []
    assert (note["number"], note["credit_status"], note["refund_status"]) == (
        f"{invoice['number']}-CN001", "available", None)
    assert (note["sub_total_excluding_taxes_amount_cents"], note["taxes_amount_cents"],
            note["total_amount_cents"], note["balance_amount_cents"]) == (500, 100, 600, 600)
    assert note["taxes_rate"] == "20.00000"
    assert note["issuing_date"] == "2025-04-02"
    assert "CN001" in str(credit_note_document(engine, note["lago_id"], "html"))
    # April closes: $31 + VAT = 3720, of which the note pays 600
    ingested_until(engine, MARCH_END + timedelta(days=30, hours=3))
    hour(engine, datetime(2025, 5, 1, 8, tzinfo=UTC))
    april = next(i for i in invoices(engine) if i["lago_id"] != invoice["lago_id"])
    assert april["status"] == "finalized"
    assert april["credit_notes_amount_cents"] == 600
    assert april["total_amount_cents"] == april["sub_total_including_taxes_amount_cents"] - 600
    consumed = find_credit_note(engine, note["number"])
    assert consumed is not None
    assert (consumed["balance_amount_cents"], consumed["credit_status"]) == (0, "consumed")
    # the note had nothing left to void
    with pytest.raises(CreditNoteRefused) as refused:
        void_credit_note(engine, note["lago_id"])
    assert refused.value.errors == {"credit_note": ["no_voidable_amount"]}


def test_refund_of_a_wallet_paid_invoice_goes_back_to_the_wallet(
    engine: Engine, tmp_path: Path
) -> None:
    invoice = _finalized(engine, tmp_path)
    assert invoice["prepaid_credit_amount_cents"] == 4680
    before = balances(engine)["acme/prepaid_credits"]["cents"]
    sub = _fee(invoice, "subscription", 3100)
    issue = _issue(invoice, [(sub, 1000)], refund_amount_cents=1200, key="r1")

    def crash(_: Any) -> None:
        raise RuntimeError("killed between the note and its wallet correction")

    with failpoints.hooked("credit_notes.before_wallet_correction", crash):
        with pytest.raises(RuntimeError):
            issue_credit_note(engine, issue, at=AT)
    assert list_credit_notes(engine) == []
    assert balances(engine)["acme/prepaid_credits"]["cents"] == before
    note = issue_credit_note(engine, issue, at=AT)
    again = issue_credit_note(engine, issue, at=AT)  # the same key: the same note
    assert again["lago_id"] == note["lago_id"] and len(list_credit_notes(engine)) == 1
    assert (note["refund_amount_cents"], note["wallet_refund_amount_cents"],
            note["refund_status"]) == (1200, 1200, "succeeded")
    assert balances(engine)["acme/prepaid_credits"]["cents"] == before + 1200
    assert_balances_match_ledger(engine)
    # more than was paid and not refunded yet is refused (validate_service_spec.rb)
    with pytest.raises(CreditNoteRefused) as refused:
        issue_credit_note(engine, _issue(invoice, [(sub, 2101)], refund_amount_cents=2521))
    assert refused.value.errors == {"amount_cents": ["higher_than_remaining_fee_amount"]}
    second = issue_credit_note(engine, _issue(invoice, [(sub, 100)], credit_amount_cents=120))
    assert second["number"].endswith("-CN002")


def test_offset_estimate_void_and_the_database_guard(engine: Engine, tmp_path: Path) -> None:
    invoice = _finalized(engine, tmp_path, wallet=False)
    assert invoice["total_amount_cents"] == 4680
    charge = _fee(invoice, "charge", 200)
    # estimate_service_spec.rb: the most creditable and refundable (nothing paid)
    estimate = estimate_credit_note(engine, invoice["lago_id"], [(charge, Decimal(150))])
    assert (estimate["max_creditable_amount_cents"], estimate["max_refundable_amount_cents"],
            estimate["taxes_amount_cents"]) == (180, 0, 30)
    with pytest.raises(CreditNoteRefused) as refused:
        issue_credit_note(engine, _issue(invoice, [(charge, 150)], refund_amount_cents=180))
    assert refused.value.errors == {"refund_amount_cents": ["cannot_refund_unpaid_invoice"]}
    offset = issue_credit_note(engine, _issue(invoice, [(charge, 150)], offset_amount_cents=180))
    assert (offset["offset_amount_cents"], offset["balance_amount_cents"]) == (180, 0)
    shown = find_invoice(engine, invoice["number"])
    assert shown is not None and shown["total_due_amount_cents"] == 4680 - 180
    credit = issue_credit_note(engine, _issue(invoice, [(charge, 50)], credit_amount_cents=60))
    voided = void_credit_note(engine, credit["number"])
    assert (voided["credit_status"], voided["balance_amount_cents"]) == ("voided", 0)
    for statement in ("update credit_notes set total_amount_cents = 1",
                      "update credit_notes set balance_amount_cents = balance_amount_cents + 1",
                      "delete from credit_notes", "update credit_note_items set amount_cents = 0"):
        with pytest.raises(DBAPIError):
            with engine.begin() as conn:
                conn.execute(text(statement))


def test_termination_and_upgrade_credit_the_unused_days(engine: Engine, tmp_path: Path) -> None:
    """A plan paid in advance (create_from_termination_spec.rb): 15 March start (1700 for 17
    days, 10 % organization tax, paid by the wallet), terminated on the 25th: 6 unused days
    at 3100 / 31 = 600 + 60 of tax, refunded to the wallet; a rerun issues nothing more."""
    from tallyflow.tasks.subscriptions import LifecycleError, terminate_subscription
    from tests.tasks.invoicing.test_invoicing_advance import START
    from tests.tasks.rating_fixtures import SUB

    catalog(engine, tmp_path, plan={"amount_cents": 3100, "pay_in_advance": True},
            start=START.isoformat())
    hour(engine, START + timedelta(hours=1))
    end = datetime(2025, 3, 25, 16, tzinfo=UTC)
    now = end + timedelta(hours=1)
    ingested_until(engine, now)
    with pytest.raises(LifecycleError):
        terminate_subscription(engine, SUB, end, now=now, on_termination_credit_note="void")
    before = balances(engine)["acme/prepaid_credits"]["cents"]
    done = terminate_subscription(engine, SUB, end, now=now, on_termination_credit_note="refund")
    assert done.credit_note is not None and not done.advance_fee_not_credited
    note = done.credit_note
    assert (note["reason"], note["items"][0]["amount_cents"], note["taxes_amount_cents"],
            note["refund_amount_cents"], note["wallet_refund_amount_cents"],
            note["credit_amount_cents"]) == ("order_cancellation", 600, 60, 660, 660, 0)
    assert balances(engine)["acme/prepaid_credits"]["cents"] == before + 660
    again = terminate_subscription(engine, SUB, end, now=now, on_termination_credit_note="refund")
    assert again.credit_note is not None and again.credit_note["lago_id"] == note["lago_id"]
    assert len(list_credit_notes(engine)) == 1
    assert_balances_match_ledger(engine)


def test_upgrade_credits_the_old_plans_unused_days(engine: Engine, tmp_path: Path) -> None:
    from tallyflow.tasks.subscriptions import change_plan
    from tests.tasks.rating_fixtures import SUB
    from tests.tasks.subscriptions.test_lifecycle import _second_plan, cycle

    # the choice stored with the subscription (the catalog's on_termination_credit_note)
    catalog(engine, tmp_path, plan={"amount_cents": 3100, "pay_in_advance": True},
            subscription={"on_termination_credit_note": "credit"})
    now = datetime(2025, 3, 26, 10, tzinfo=UTC)
    ingested_until(engine, now)
    cycle(engine, now)
    _second_plan(engine, tmp_path, "pro", 6200)
    done = change_plan(engine, SUB, "pro", datetime(2025, 3, 20, 12, tzinfo=UTC), now=now)
    # the 20th to the 31st (the new plan bills the change's day): 12 x 100 + 10 % tax
    assert done.credit_note is not None and not done.advance_fee_not_credited
    assert (done.credit_note["credit_amount_cents"],
            done.credit_note["balance_amount_cents"]) == (1320, 1320)


def test_an_issued_credit_note_is_announced_once(engine: Engine, tmp_path: Path) -> None:
    # lago-api spec/services/webhooks/credit_notes/created_service_spec.rb: one
    # credit_note.created carrying the note; a retried request (same key) announces nothing more
    from tallyflow.tasks.webhooks import add_endpoint

    add_endpoint(engine, {"webhook_url": "http://127.0.0.1:9/hooks",
                          "event_types": ["credit_note.created"]})
    invoice = _finalized(engine, tmp_path, wallet=False)
    charge = _fee(invoice, "charge", 600)
    for _ in range(2):
        note = issue_credit_note(engine, _issue(invoice, [(charge, 500)], credit_amount_cents=600,
                                                key="retry-me"), at=AT)
    with engine.connect() as conn:
        bodies = conn.execute(text("select body::jsonb from webhooks")).scalars().all()
    assert [(b["webhook_type"], b["object_type"], b["credit_note"]["lago_id"])
            for b in bodies] == [("credit_note.created", "credit_note", note["lago_id"])]
    assert bodies[0]["credit_note"]["total_amount_cents"] == 600


def test_termination_offset_takes_the_unused_days_off_the_amount_due(
    engine: Engine, tmp_path: Path
) -> None:
    """create_from_termination_spec.rb "when offset is requested", "when payment does not cover
    the subscription fee": nothing paid (no wallet), so no refund and the unused days (6 x 100
    + 10 % tax) are offset against the start invoice's amount due (1870 -> 1210)."""
    from tallyflow.tasks.subscriptions import terminate_subscription
    from tests.tasks.invoicing.test_invoicing_advance import START
    from tests.tasks.rating_fixtures import SUB

    catalog(engine, tmp_path, plan={"amount_cents": 3100, "pay_in_advance": True},
            start=START.isoformat(), wallet=False)
    hour(engine, START + timedelta(hours=1))
    end = datetime(2025, 3, 25, 16, tzinfo=UTC)
    now = end + timedelta(hours=1)
    ingested_until(engine, now)
    done = terminate_subscription(engine, SUB, end, now=now, on_termination_credit_note="offset")
    note = done.credit_note
    assert note is not None
    assert (note["credit_amount_cents"], note["refund_amount_cents"],
            note["offset_amount_cents"], note["total_amount_cents"]) == (0, 0, 660, 660)
    first = invoices(engine)[0]
    assert (first["total_amount_cents"], first["total_due_amount_cents"]) == (1870, 1210)
    with engine.connect() as conn:  # the choice used is stored, as Lago's terminate does
        assert conn.execute(text("select on_termination_credit_note from subscriptions"
                                 )).scalar_one() == "offset"
