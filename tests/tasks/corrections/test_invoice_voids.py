"""Void and regenerate invoices against real Postgres (docs/architecture.md §13); the pure
rules are tested in tests/models/invoicing/test_voids.py.

Lago's rules, cited per case: ``spec/services/invoices/void_service_spec.rb`` (void_service),
``spec/services/invoices/regenerate_from_voided_service_spec.rb`` (regenerate), and
``app/models/invoice.rb`` (the ``void`` event: finalized -> voided only).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from tallyflow.infra import failpoints
from tallyflow.models.invoicing.voids import VoidRefusal
from tallyflow.tasks.corrections import InvoiceVoidRefused, regenerate_invoice, void_invoice
from tallyflow.tasks.invoicing import find_invoice, list_invoices
from tests.tasks.invoicing.test_invoicing import (
    CLOSE,
    MARCH_END,
    catalog,
    hour,
    ingested_until,
    usage_events,
)
from tests.tasks.wallets.test_wallets_support import assert_balances_match_ledger, balances

WALLET = "acme/prepaid_credits"
AT = CLOSE + timedelta(hours=1)


def _finalized(engine: Engine, folder: Path) -> dict[str, Any]:
    """March's invoice of test_invoicing.py, finalized: $39 + 20 % VAT = 4680 cents, paid by
    the wallet ($125): 800 by the hourly usage deductions, 3880 at finalization."""
    catalog(engine, folder, plan={"amount_cents": 3100, "tax_codes": ["vat"]})
    usage_events(engine, folder, datetime(2025, 3, 10, 12, tzinfo=UTC))
    hour(engine, datetime(2025, 3, 31, 12, tzinfo=UTC))
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    assert hour(engine, CLOSE)["finalized"] == 1
    [invoice] = list_invoices(engine)
    assert invoice["prepaid_credit_amount_cents"] == 4680
    assert balances(engine)[WALLET]["cents"] == 12500 - 4680
    return invoice


def _ledger(engine: Engine, like: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "select direction, source, amount_cents, idempotency_key from wallet_transactions"
            " where idempotency_key like :k order by idempotency_key"), {"k": like})]


def test_void_restores_prepaid_credits_and_keeps_the_periods_closed(
    engine: Engine, tmp_path: Path
) -> None:
    invoice = _finalized(engine, tmp_path)
    done = void_invoice(engine, invoice["number"], AT)  # void_service_spec.rb: "voids the invoice"
    voided = find_invoice(engine, invoice["lago_id"])
    assert voided is not None
    assert voided["status"] == "voided" and voided["voided_at"] is not None
    assert voided["payment_status"] == "pending" and voided["total_due_amount_cents"] == 0
    assert voided["number"] == invoice["number"]  # kept, as issued
    # "recredits the wallet transaction": back to $125, as new ledger rows
    assert done.restored_cents == 4680
    assert balances(engine)[WALLET]["cents"] == 12500
    assert [(d, s, int(c)) for d, s, c, _ in _ledger(engine, f"void:{done.invoice_id}:%")] == [
        ("inbound", "invoice", 3880), ("inbound", "usage", 800)]
    assert_balances_match_ledger(engine)
    # the hourly deductions and the close leave the voided periods alone: nothing deducted
    # again, no new invoice for March
    hour(engine, AT + timedelta(hours=1))
    assert balances(engine)[WALLET]["cents"] == 12500
    assert len(list_invoices(engine)) == 1
    # void_service_spec.rb: "when the invoice is voided" -> not_voidable
    with pytest.raises(InvoiceVoidRefused) as refused:
        void_invoice(engine, invoice["number"], AT)
    assert refused.value.code == VoidRefusal.NOT_VOIDABLE
    assert balances(engine)[WALLET]["cents"] == 12500


def test_regenerate_takes_the_periods_over_and_pays_from_the_wallet(
    engine: Engine, tmp_path: Path
) -> None:
    invoice = _finalized(engine, tmp_path)
    void_invoice(engine, invoice["number"], AT)
    done = regenerate_invoice(engine, invoice["number"], AT)
    new = find_invoice(engine, done.number)
    assert new is not None and new["status"] == "finalized"
    assert new["number"] == "TF-001-002" and new["sequential_id"] == 2
    # regenerate_from_voided_service_spec.rb: the voided invoice's fees, duplicated
    assert [(f["item"]["type"], f["amount_cents"], f["units"]) for f in new["fees"]] == [
        (f["item"]["type"], f["amount_cents"], f["units"]) for f in invoice["fees"]]
    assert {f["lago_id"] for f in new["fees"]}.isdisjoint(f["lago_id"] for f in invoice["fees"])
    # "duplicates invoice_subscriptions": the same periods, the same plan version
    assert [s["plan_version"] for s in new["subscriptions"]] == [
        s["plan_version"] for s in invoice["subscriptions"]]
    assert (new["fees_amount_cents"], new["taxes_amount_cents"]) == (3900, 780)
    assert new["prepaid_credit_amount_cents"] == 4680 and new["total_amount_cents"] == 0
    assert new["payment_status"] == "succeeded"  # nothing due (Lago: total not positive)
    assert balances(engine)[WALLET]["cents"] == 12500 - 4680
    assert_balances_match_ledger(engine)
    with engine.connect() as conn:
        assert conn.execute(text(
            "select invoice_id, regeneration from invoice_subscriptions order by regeneration"
        )).all() == [(_id(engine, invoice["number"]), 0), (done.invoice_id, 1)]
    with pytest.raises(InvoiceVoidRefused) as refused:
        regenerate_invoice(engine, invoice["number"], AT)
    assert refused.value.code == VoidRefusal.ALREADY_REGENERATED
    # the successor may be voided in turn: only its own payment comes back
    again = void_invoice(engine, done.number, AT)
    assert again.restored_cents == 4680
    assert balances(engine)[WALLET]["cents"] == 12500
    hour(engine, AT + timedelta(hours=1))
    assert balances(engine)[WALLET]["cents"] == 12500
    assert len(list_invoices(engine)) == 2


def _id(engine: Engine, number: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("select id from invoices where number = :n"),
                                {"n": number}).scalar_one())


def test_a_crash_between_the_void_and_its_correction_converges(
    engine: Engine, tmp_path: Path
) -> None:
    invoice = _finalized(engine, tmp_path)

    def crash(_: Any) -> None:
        raise RuntimeError("killed between the void and the wallet correction")

    with failpoints.hooked("invoice_voids.after_void", crash), pytest.raises(RuntimeError):
        void_invoice(engine, invoice["number"], AT)
    # nothing half done: still finalized, nothing given back
    still = find_invoice(engine, invoice["number"])
    assert still is not None and still["status"] == "finalized"
    assert balances(engine)[WALLET]["cents"] == 12500 - 4680
    assert _ledger(engine, "void:%") == []
    # the rerun does both, once; a third run changes nothing
    void_invoice(engine, invoice["number"], AT)
    assert balances(engine)[WALLET]["cents"] == 12500
    with pytest.raises(InvoiceVoidRefused):
        void_invoice(engine, invoice["number"], AT)
    assert balances(engine)[WALLET]["cents"] == 12500
    assert len(_ledger(engine, "void:%")) == 2
    assert_balances_match_ledger(engine)
    # a regeneration killed after its draft leaves nothing; the rerun makes one invoice
    with failpoints.hooked("invoice_voids.after_regenerated_draft", crash), \
            pytest.raises(RuntimeError):
        regenerate_invoice(engine, invoice["number"], AT)
    assert len(list_invoices(engine)) == 1
    regenerate_invoice(engine, invoice["number"], AT)
    assert [i["status"] for i in list_invoices(engine)] == ["voided", "finalized"]
    assert balances(engine)[WALLET]["cents"] == 12500 - 4680
    assert_balances_match_ledger(engine)


def test_refusals_of_drafts_unknown_invoices_and_non_voided(
    engine: Engine, tmp_path: Path
) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 3100})
    hour(engine, CLOSE)  # no watermark: a draft
    [draft] = list_invoices(engine)
    with pytest.raises(DBAPIError, match="only a finalized invoice"), engine.begin() as conn:
        conn.execute(text("update invoices set status = 'voided', voided_at = now()"))
    for action, key, code in [
        (void_invoice, draft["lago_id"], VoidRefusal.NOT_VOIDABLE),  # "when invoice is draft"
        (void_invoice, "nope", VoidRefusal.NOT_FOUND),  # "when invoice is nil"
        (regenerate_invoice, draft["lago_id"], VoidRefusal.NOT_VOIDED),
    ]:
        with pytest.raises(InvoiceVoidRefused) as refused:
            action(engine, key, AT)
        assert refused.value.code == code


REFUSED = [
    ("update invoices set status = 'finalized', voided_at = null where status = 'voided'",
     "a void is never undone"),
    ("update invoices set total_amount_cents = 1 where status = 'voided'",
     "a voided invoice does not change"),
    ("update invoices set status = 'voided', voided_at = now(), total_amount_cents = 1"
     " where status = 'finalized'", "a void changes nothing else"),
    ("delete from invoices where status = 'voided'", "nor is it deleted"),
    ("delete from invoice_fees where invoice_id in"
     " (select id from invoices where status = 'voided')", "nor are its fees"),
    ("update invoice_subscriptions set regeneration = 5", "nor its periods"),
    ("insert into invoices (lago_id, customer_id, issuing_date, status, currency,"
     " fees_amount_cents, taxes_amount_cents, total_amount_cents, customer, finalize_after,"
     " payment_due_date, voided_at, sequential_id, number)"
     " select 'x', customer_id, issuing_date, 'voided', currency, 0, 0, 0, customer,"
     " finalize_after, payment_due_date, now(), 99, 'X-99' from invoices limit 1",
     "nor is an invoice written voided"),
    ("update invoices set status = 'voided', voided_at = null where status = 'finalized'",
     "voided_at is set exactly when voided"),
]


def test_the_database_allows_finalized_to_voided_and_nothing_else(
    engine: Engine, tmp_path: Path
) -> None:
    """Migration 0021's trigger and checks (app/models/invoice.rb: ``void`` goes from
    finalized to voided only): one voided invoice and its finalized successor."""
    invoice = _finalized(engine, tmp_path)
    void_invoice(engine, invoice["number"], AT)
    regenerate_invoice(engine, invoice["number"], AT)
    for statement, why in REFUSED:
        with pytest.raises(DBAPIError), engine.begin() as conn:
            conn.execute(text(statement))
            pytest.fail(why)
    with engine.begin() as conn:  # its payment status may still change (Lago's)
        conn.execute(text("update invoices set payment_status = 'failed'"
                          " where status = 'voided'"))


def test_void_and_regeneration_are_announced_and_credit_notes_hold_a_void_back(
    engine: Engine, tmp_path: Path
) -> None:
    from decimal import Decimal

    from tallyflow.models.credit_notes import Request
    from tallyflow.tasks.corrections import Issue, issue_credit_note, void_credit_note
    from tallyflow.tasks.webhooks import add_endpoint

    add_endpoint(engine, {"webhook_url": "http://127.0.0.1:9/hooks",
                          "event_types": ["invoice.voided", "invoice.created"]})
    invoice = _finalized(engine, tmp_path)
    fee = next(f["lago_id"] for f in invoice["fees"] if f["amount_cents"] > 0)
    note = issue_credit_note(engine, Issue(invoice["number"], Request(
        ((fee, Decimal(100)),), credit_amount_cents=120)), at=AT)
    with pytest.raises(InvoiceVoidRefused) as refused:
        void_invoice(engine, invoice["number"], AT)
    assert refused.value.code == VoidRefusal.HAS_CREDIT_NOTES
    void_credit_note(engine, note["lago_id"])
    void_invoice(engine, invoice["number"], AT)
    done = regenerate_invoice(engine, invoice["number"], AT)
    with engine.connect() as conn:
        sent = [(b["webhook_type"], b["invoice"]["lago_id"]) for b in conn.execute(text(
            "select body::jsonb from webhooks order by id")).scalars()]
    regenerated = find_invoice(engine, done.number)
    assert regenerated is not None
    assert sent[-2:] == [("invoice.voided", invoice["lago_id"]),
                         ("invoice.created", regenerated["lago_id"])]
    assert sent.count(("invoice.voided", invoice["lago_id"])) == 1
