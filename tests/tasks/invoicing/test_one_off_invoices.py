"""One-off invoices against real Postgres (Lago's create_one_off_service_spec.rb): add-on fees
finalized, numbered and paid from the wallet at once; a retried posting makes one invoice and
moves the wallet once; a crash before the commit leaves nothing and the retry converges."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tallyflow.infra import failpoints
from tallyflow.models.invoicing.one_off import OneOffError, parse_one_off
from tallyflow.tasks.catalog import apply_catalog, soft_delete_add_on
from tallyflow.tasks.invoicing import create_one_off_invoice, find_invoice
from tallyflow.tasks.wallets import open_catalog_wallets
from tests.tasks.invoicing.test_invoicing import catalog as apply_example
from tests.tasks.wallets.test_wallets_support import assert_balances_match_ledger, balances

AT = datetime(2026, 12, 7, 3, 30, tzinfo=UTC)  # 6 December in New York (the customer's zone)
ADD_ONS = [
    {"add_on": {"code": "setup", "name": "Setup", "amount_cents": 1000,
                "amount_currency": "USD", "description": "One-time setup"}},
    {"add_on": {"code": "support", "name": "Support", "amount_cents": 400,
                "amount_currency": "USD", "tax_codes": ["vat"]}},
]


def setup(engine: Engine, folder: Path) -> None:
    """The example catalog (taxes vat 20 %, org 10 % by default; wallet 25 granted credits
    settled, 100 paid pending) with two add-ons."""
    apply_example(engine, folder)
    (folder / "add_ons.json").write_text(json.dumps(ADD_ONS))
    result = apply_catalog(engine, [folder / "add_ons.json"])
    assert result.ok, result.errors
    open_catalog_wallets(engine)


def request(**invoice: Any) -> Any:
    return parse_one_off({"invoice": {"external_customer_id": "acme", "fees": [
        {"add_on_code": "setup", "units": "2", "unit_amount_cents": 1200,
         "description": "desc-123"},
        {"add_on_code": "support"}], **invoice}})


def test_a_one_off_invoice_is_finalized_and_paid_from_the_wallet(
    engine: Engine, tmp_path: Path
) -> None:
    setup(engine, tmp_path)
    assert balances(engine)["acme/prepaid_credits"]["cents"] == 2500
    made = create_one_off_invoice(engine, request(), AT, key="k1")
    invoice = find_invoice(engine, made.lago_id)
    assert invoice is not None and not made.replayed
    assert (invoice["invoice_type"], invoice["status"], invoice["number"],
            invoice["issuing_date"]) == ("one_off", "finalized", "TF-001-001", "2026-12-06")
    # setup 1200 x 2 = 2400 (org tax 10 %: 240), support 400 (its own vat 20 %: 80)
    assert (invoice["fees_amount_cents"], invoice["taxes_amount_cents"]) == (2800, 320)
    # the wallet's 2500 cents pay what they can; 620 is left due
    assert (invoice["prepaid_credit_amount_cents"], invoice["total_amount_cents"],
            invoice["payment_status"]) == (2500, 620, "pending")
    assert [(f["item"]["type"], f["item"]["code"], f["units"], f["amount_cents"],
             f["description"], f["unit_amount_cents"], f["external_subscription_id"])
            for f in invoice["fees"]] == [
        ("add_on", "setup", "2", 2400, "desc-123", 1200, None),
        ("add_on", "support", "1", 400, None, 400, None)]
    assert balances(engine)["acme/prepaid_credits"]["cents"] == 0
    with engine.connect() as conn:
        keys = conn.execute(text("select idempotency_key from wallet_transactions"
                                 " where source = 'invoice'")).scalars().all()
        html = conn.execute(text("select html from invoices where id = :i"),
                            {"i": made.invoice_id}).scalar_one()
    assert keys == [f"invoice:{made.invoice_id}:1"]
    assert "desc-123" in html and "finalized" in html
    assert_balances_match_ledger(engine)


def test_a_retried_posting_makes_one_invoice_and_another_request_is_refused(
    engine: Engine, tmp_path: Path
) -> None:
    from tallyflow.tasks.webhooks import add_endpoint

    setup(engine, tmp_path)
    add_endpoint(engine, {"webhook_url": "http://127.0.0.1:9/hooks",
                          "event_types": ["invoice.created"]})
    first = create_one_off_invoice(engine, request(), AT, key="k1")
    again = create_one_off_invoice(engine, request(), AT, key="k1")
    assert (again.invoice_id, again.number, again.replayed) == (
        first.invoice_id, first.number, True)
    with pytest.raises(OneOffError) as caught:
        create_one_off_invoice(engine, request(currency="USD"), AT, key="k1")
    assert caught.value.problems == {"idempotency_key": ["idempotency_key_reused"]}
    other = create_one_off_invoice(engine, request(), AT)  # no key: a new invoice, as in Lago
    assert other.number == "TF-001-002"  # the customer's sequence, no gap
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from invoices")).scalar_one() == 2
        assert conn.execute(text("select count(*) from wallet_transactions"
                                 " where source = 'invoice'")).scalar_one() == 1
        # each invoice announced once (invoice.created), the replay not again
        announced = conn.execute(text(
            "select body::jsonb -> 'invoice' ->> 'invoice_type' from webhooks")).scalars().all()
    assert announced == ["one_off", "one_off"]
    assert_balances_match_ledger(engine)


def test_concurrent_postings_of_one_key_make_one_invoice(engine: Engine, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    setup(engine, tmp_path)
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda _: create_one_off_invoice(engine, request(), AT, key="k"),
                             range(4)))
    assert len({m.invoice_id for m in made}) == 1
    assert sorted(m.replayed for m in made) == [False, True, True, True]
    assert balances(engine)["acme/prepaid_credits"]["cents"] == 0
    assert_balances_match_ledger(engine)


def test_a_crash_before_the_commit_leaves_nothing_and_the_retry_converges(
    engine: Engine, tmp_path: Path
) -> None:
    setup(engine, tmp_path)

    def crash(_: Any) -> None:
        raise RuntimeError("killed")

    with failpoints.hooked("one_off.before_seal", crash), pytest.raises(RuntimeError):
        create_one_off_invoice(engine, request(), AT, key="k1")
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from invoices")).scalar_one() == 0
    assert balances(engine)["acme/prepaid_credits"]["cents"] == 2500
    made = create_one_off_invoice(engine, request(), AT, key="k1")
    assert (made.number, made.replayed) == ("TF-001-001", False)
    assert balances(engine)["acme/prepaid_credits"]["cents"] == 0
    assert_balances_match_ledger(engine)


REFUSED = [
    # (Lago spec case or Tallyflow's rule, change to the request, error code, problems)
    ("create_one_off_service_spec.rb: customer not found",
     {"external_customer_id": "nobody"}, "customer_not_found", {}),
    ("create_one_off_service_spec.rb: add_on_code is invalid",
     {"fees": [{"add_on_code": "invalid"}]}, "add_on_not_found", {}),
    ("create_one_off_service_spec.rb: an add-on is soft-deleted",
     {"fees": [{"add_on_code": "gone"}]}, "add_on_not_found", {}),
    ("Tallyflow: not the customer's currency (its wallets could not pay)",
     {"currency": "EUR"}, "validation_errors", {"currency": ["currencies_does_not_match"]}),
    ("Tallyflow: an unknown tax code is refused",
     {"fees": [{"add_on_code": "setup", "tax_codes": ["nope"]}]}, "tax_not_found", {}),
]


def test_what_cannot_be_billed_is_refused_and_writes_nothing(
    engine: Engine, tmp_path: Path
) -> None:
    setup(engine, tmp_path)  # once for the table: a refusal writes nothing
    (tmp_path / "gone.json").write_text(json.dumps({"add_on": {
        "code": "gone", "name": "Gone", "amount_cents": 5, "amount_currency": "USD"}}))
    assert apply_catalog(engine, [tmp_path / "gone.json"]).ok
    soft_delete_add_on(engine, "gone")
    for case, change, code, problems in REFUSED:
        with pytest.raises(OneOffError) as caught:
            create_one_off_invoice(engine, request(**change), AT, key="k")
        assert (caught.value.code, caught.value.problems) == (code, problems), case
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from invoices")).scalar_one() == 0
    assert balances(engine)["acme/prepaid_credits"]["cents"] == 2500


def test_cli_invoices_create_makes_one_invoice_per_key(engine: Engine, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tallyflow.cli.main import app

    setup(engine, tmp_path)
    runner = CliRunner()
    args = ["invoices", "create", "--customer", "acme", "--fee", "setup:2", "--fee",
            "support::250", "--key", "order-42"]
    made = runner.invoke(app, [*args, "--json"])
    assert made.exit_code == 0, made.output
    invoice = json.loads(made.stdout)["invoice"]
    assert [(f["units"], f["amount_cents"]) for f in invoice["fees"]] == [("2", 2000),
                                                                          ("1", 250)]
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "already made with this key" in again.stdout
    assert invoice["number"] in again.stdout
    unknown = runner.invoke(app, ["invoices", "create", "--customer", "acme", "--fee", "nope"])
    assert unknown.exit_code == 1 and "add_on_not_found" in unknown.output
    shown = runner.invoke(app, ["catalog", "show"])
    assert shown.exit_code == 0 and "add-ons" in shown.stdout and "vat" in shown.stdout
