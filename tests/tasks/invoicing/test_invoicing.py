"""Period close against real Postgres: drafts, finalization after the ingest watermark and the
grace period, numbering, immutability, prepaid credits agreeing with the ledger through reruns,
late usage counted."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from tallyflow.tasks.folding import fold_pending
from tallyflow.tasks.invoicing import close_periods, find_invoice, late_usage, list_invoices
from tallyflow.tasks.usage import due_subscriptions, snapshot_subscriptions
from tests.tasks.rating_fixtures import MISTRAL, ingest_events, token_event
from tests.tasks.wallets.test_wallets_support import (
    assert_balances_match_ledger,
    balances,
    run_once,
)

# March 2025 in New York: 1 March 05:00Z to 1 April 03:59:59Z (DST starts on 9 March).
MARCH_END = datetime(2025, 4, 1, 3, 59, 59, 999999, tzinfo=UTC)
CLOSE = datetime(2025, 4, 1, 8, tzinfo=UTC)  # 4 h after the period end
TAXES = [
    {"tax": {"code": "vat", "name": "VAT", "rate": "20.0"}},
    {"tax": {"code": "org", "name": "Org tax", "rate": "10.0", "applied_to_organization": True}},
]


def catalog(engine: Engine, folder: Path, *, plan: dict[str, Any] | None = None,
            customer: dict[str, Any] | None = None, start: str = "2025-03-01T05:00:00Z",
            charge: dict[str, Any] | None = None, wallet: bool = True,
            subscription: dict[str, Any] | None = None) -> None:
    from tallyflow.tasks.catalog import apply_catalog

    target = folder / "catalog"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(MISTRAL, target)
    (target / "taxes.json").write_text(json.dumps(TAXES))
    edits = {"plan": {**(plan or {})}, "customer": customer or {},
             "subscription": {"subscription_at": start, **(subscription or {})}}
    for stem, changes in edits.items():
        path = target / f"{stem}.json"
        envelope = json.loads(path.read_text())
        body = envelope[stem]
        body.update(changes)
        if stem == "plan" and charge:
            body["charges"][0].update(charge)
        path.write_text(json.dumps(envelope))
    if not wallet:
        (target / "wallet.json").unlink()
    result = apply_catalog(engine, [target])
    assert result.ok, result.errors


def usage_events(engine: Engine, folder: Path, when: datetime, tokens: int = 2_000_000,
                 prefix: str = "e") -> None:
    """Events through the real ingest path (which writes no ingest run: the flow does; tests
    move the watermark with :func:`ingested_until`)."""
    ingest_events(engine, folder, [token_event(f"{prefix}1", when.isoformat(), tokens),
                                   token_event(f"{prefix}2", when.isoformat(), tokens,
                                               kind="output")])


def ingested_until(engine: Engine, moment: datetime) -> None:
    """A finished ingest run that listed objects at ``moment`` (the watermark)."""
    with engine.begin() as conn:
        conn.execute(text("insert into ingest_runs (source, status, started_at, finished_at)"
                          " values ('test', 'completed', :m, :m)"), {"m": moment})


def hour(engine: Engine, at: datetime) -> dict[str, Any]:
    """One billing hour without Prefect: fold, snapshot, wallets, close."""
    fold_pending(engine)
    due = due_subscriptions(engine, at)
    if due:
        snapshot_subscriptions(engine, due, at)
    run_once(engine, at)
    return close_periods(engine, at, now=at).as_dict()


def invoices(engine: Engine) -> list[dict[str, Any]]:
    return list_invoices(engine)


def test_period_close_drafts_then_finalizes_after_the_watermark(
    engine: Engine, tmp_path: Path
) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 3100, "tax_codes": ["vat"]})
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC))
    hour(engine, datetime(2025, 3, 31, 12, tzinfo=UTC))
    assert invoices(engine) == []  # the period has not ended
    # ended, but no ingest run has listed past the end + 2 h: a draft
    summary = hour(engine, CLOSE)
    assert summary["drafts"] == 1 and summary["finalized"] == 0
    [draft] = invoices(engine)
    assert draft["status"] == "draft" and draft["number"] is None
    # 2M small input tokens at $1/M + 2M output at $3/M = $8, plan $31; VAT 20 %
    assert [(f["item"]["type"], f["amount_cents"]) for f in draft["fees"]] == [
        ("subscription", 3100), ("charge", 200), ("charge", 600)]
    assert draft["fees_amount_cents"] == 3900
    assert draft["taxes_amount_cents"] == 780
    assert draft["sub_total_including_taxes_amount_cents"] == 4680
    ingested_until(engine, MARCH_END + timedelta(hours=1))
    assert hour(engine, CLOSE)["finalized"] == 0  # watermark not yet 2 h past the end
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    summary = hour(engine, CLOSE)
    assert summary["finalized"] == 1
    [invoice] = invoices(engine)
    assert invoice["status"] == "finalized"
    assert invoice["number"] == "TF-001-001" and invoice["sequential_id"] == 1
    # the wallet ($125) paid the whole invoice: $8 of usage hourly, the rest at finalization
    assert invoice["prepaid_credit_amount_cents"] == 4680
    assert invoice["total_amount_cents"] == 0
    assert balances(engine)["acme/prepaid_credits"]["cents"] == 12500 - 4680
    assert_balances_match_ledger(engine)
    assert find_invoice(engine, "TF-001-001")["lago_id"] == invoice["lago_id"]


def _finalized(engine: Engine, tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
    catalog(engine, tmp_path, **kwargs)
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC))
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    hour(engine, datetime(2025, 3, 31, 12, tzinfo=UTC))
    hour(engine, CLOSE)
    [invoice] = invoices(engine)
    return invoice


def test_closing_twice_and_rerunning_a_finalized_hour_change_nothing(
    engine: Engine, tmp_path: Path
) -> None:
    invoice = _finalized(engine, tmp_path, plan={"amount_cents": 3100})
    with engine.connect() as conn:
        ledger_before = conn.execute(text("select count(*), sum(amount_cents)"
                                          " from wallet_transactions")).one()
    # close again, rerun an hour inside the finalized period, and a later hour
    hour(engine, CLOSE)
    usage_events(engine, tmp_path, datetime(2025, 3, 20, tzinfo=UTC), prefix="late")
    hour(engine, datetime(2025, 3, 31, 12, tzinfo=UTC))
    hour(engine, CLOSE + timedelta(hours=1))
    [again] = invoices(engine)
    assert again == invoice
    with engine.connect() as conn:
        assert conn.execute(text("select count(*), sum(amount_cents)"
                                 " from wallet_transactions")).one() == ledger_before
    assert_balances_match_ledger(engine)
    # the late events are not billed but listed
    late = late_usage(engine)
    assert sorted(r["transaction_id"] for r in late) == ["late1", "late2"]
    assert hour(engine, CLOSE + timedelta(hours=2))["late_events"] == 2


def test_ledger_and_invoice_agree_to_the_cent(engine: Engine, tmp_path: Path) -> None:
    invoice = _finalized(engine, tmp_path, plan={"amount_cents": 3100, "tax_codes": ["vat"]})
    with engine.connect() as conn:
        paid = conn.execute(text(
            """
            select coalesce(sum(case when direction = 'outbound' then amount_cents
                                     else -amount_cents end), 0)
            from wallet_transactions
            where source = 'usage' or idempotency_key like 'invoice:%'
            """)).scalar_one()
    assert paid == invoice["prepaid_credit_amount_cents"]


def test_credits_applied_up_to_the_balance(engine: Engine, tmp_path: Path) -> None:
    # $125 of credits, a $200 plan: the wallet pays $125 in all and the rest is due
    invoice = _finalized(engine, tmp_path, plan={"amount_cents": 20000})
    assert invoice["sub_total_including_taxes_amount_cents"] == 20800 + 2080  # org tax 10 %
    assert invoice["prepaid_credit_amount_cents"] == 12500
    assert invoice["total_amount_cents"] == 22880 - 12500
    assert balances(engine)["acme/prepaid_credits"]["cents"] == 0


def test_grace_period_keeps_the_draft(engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path, customer={"invoice_grace_period": 2})
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    hour(engine, CLOSE)
    assert [i["status"] for i in invoices(engine)] == ["draft"]
    hour(engine, MARCH_END + timedelta(days=2, hours=1))
    assert [i["status"] for i in invoices(engine)] == ["finalized"]


def test_price_change_refreshes_the_draft_only(engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 1000}, customer={"invoice_grace_period": 1})
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    hour(engine, CLOSE)
    catalog(engine, tmp_path, plan={"amount_cents": 2000}, customer={"invoice_grace_period": 1})
    hour(engine, CLOSE + timedelta(hours=1))
    [draft] = invoices(engine)
    assert draft["status"] == "draft" and draft["fees_amount_cents"] == 2000
    hour(engine, MARCH_END + timedelta(days=1, hours=1))
    catalog(engine, tmp_path, plan={"amount_cents": 5000}, customer={"invoice_grace_period": 1})
    hour(engine, MARCH_END + timedelta(days=1, hours=2))
    [final] = invoices(engine)
    assert final["status"] == "finalized" and final["fees_amount_cents"] == 2000


def test_numbers_have_no_gaps_and_zero_periods_still_invoice(
    engine: Engine, tmp_path: Path
) -> None:
    catalog(engine, tmp_path, start="2025-01-01T05:00:00Z", wallet=False,
            charge={"min_amount_cents": 500})
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    hour(engine, CLOSE)
    found = invoices(engine)
    assert [(i["number"], i["issuing_date"]) for i in found] == [
        ("TF-001-001", "2025-02-01"), ("TF-001-002", "2025-03-01"), ("TF-001-003", "2025-04-01")]
    # no usage: only the charge minimum true-up ($5 + 10 % organization tax)
    assert {i["total_amount_cents"] for i in found} == {550}
    assert found[0]["fees"][0]["item"]["true_up"] is True


@pytest.mark.parametrize("sql", [
    "update invoices set fees_amount_cents = fees_amount_cents + 1",
    "update invoices set status = 'draft'",
    "delete from invoices",
    "update invoice_fees set amount_cents = 1",
    "delete from invoice_fees",
    "delete from invoice_subscriptions",
    "insert into invoice_fees (lago_id, invoice_id, position, subscription_id,"
    " external_subscription_id, item_type, code, name, units, events_count, amount_cents,"
    " precise_amount_cents, taxes_rate, taxes_precise_amount_cents, taxes_amount_cents,"
    " total_amount_cents, from_datetime, to_datetime) select 'x', id, 99, 1, 's', 'charge',"
    " 'c', 'n', 1, 1, 1, 1, 0, 0, 0, 1, now(), now() from invoices",
])
def test_finalized_invoices_cannot_change_in_the_database(
    engine: Engine, tmp_path: Path, sql: str
) -> None:
    _finalized(engine, tmp_path, plan={"amount_cents": 3100})
    with pytest.raises(DBAPIError, match="finalized"):
        with engine.begin() as conn:
            conn.execute(text(sql))
    with engine.begin() as conn:  # the payment status may still move
        conn.execute(text("update invoices set payment_status = 'succeeded'"))


def test_jpy_invoice_in_whole_yen(engine: Engine, tmp_path: Path) -> None:
    from tests.tasks.invoicing.test_money_paths import _in_currency

    currency = _in_currency("JPY", {"charge_model": "standard",
                                    "properties": {"amount": "0.0001"}})
    from tests.tasks.rating_fixtures import apply_mistral

    apply_mistral(engine, tmp_path, **currency)
    with engine.begin() as conn:
        conn.execute(text("update plans set amount_cents = 1000"))
    ingest_events(engine, tmp_path, [token_event("j1", "2025-03-10T12:00:00Z", 12345)])
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    close_periods(engine, CLOSE, customers=["acme"])
    found = [i for i in invoices(engine) if i["issuing_date"] == "2025-04-01"]
    [invoice] = found
    assert invoice["currency"] == "JPY"
    # 12345 tokens x 0.0001 = 1.2345 yen -> 1; plan 1000 yen; organization taxes none here
    assert [f["amount_cents"] for f in invoice["fees"]] == [1000, 1]


@pytest.mark.parametrize("point", ["invoices.after_draft", "invoices.after_deduction"])
def test_a_crash_inside_the_close_leaves_nothing_half_done(
    engine: Engine, tmp_path: Path, point: str
) -> None:
    """The draft, the last deduction, the number and the seal are one transaction: a crash in
    between leaves no invoice row and no ledger row of it; the next close does it all once."""
    from tallyflow.infra import failpoints

    catalog(engine, tmp_path, plan={"amount_cents": 3100, "tax_codes": ["vat"]})
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC))
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    hour(engine, datetime(2025, 3, 31, 12, tzinfo=UTC))
    before = balances(engine)
    failpoints.arm(f"{point}=1:raise")
    try:
        with pytest.raises(failpoints.FailpointHit):
            close_periods(engine, CLOSE, now=CLOSE)
    finally:
        failpoints.arm(None)
    assert invoices(engine) == []
    assert balances(engine) == before
    close_periods(engine, CLOSE, now=CLOSE)
    [invoice] = invoices(engine)
    assert invoice["status"] == "finalized" and invoice["number"] == "TF-001-001"
    assert invoice["prepaid_credit_amount_cents"] == 4680
    assert_balances_match_ledger(engine)


def test_an_object_still_loading_holds_the_watermark(engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path)
    ingested_until(engine, MARCH_END + timedelta(hours=5))
    with engine.begin() as conn:  # listed 1 h after the period end, not loaded yet
        conn.execute(text("insert into ingest_objects (source, path, version, discovered_at)"
                          " values ('test', 'late.jsonl', '1', :at)"),
                     {"at": MARCH_END + timedelta(hours=1)})
    summary = close_periods(engine, CLOSE, now=CLOSE)
    assert summary.watermark == (MARCH_END + timedelta(hours=1)).isoformat()
    assert summary.finalized == [] and summary.drafts == 1
    with engine.begin() as conn:
        conn.execute(text("update ingest_objects set status = 'ingested'"
                          " where path = 'late.jsonl'"))
    assert len(close_periods(engine, CLOSE, now=CLOSE).finalized) == 1


def test_nothing_is_finalized_before_any_ingest_run(engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path)
    summary = close_periods(engine, CLOSE + timedelta(days=30), now=CLOSE)
    assert summary.watermark is None and summary.finalized == []
    assert summary.drafts == 2  # March and April, both kept as drafts


def test_billing_entity_issues_numbers_taxes_and_terms(engine: Engine, tmp_path: Path) -> None:
    """The customer's billing entity: its prefix numbers the invoice, its taxes apply when
    neither charge, plan nor customer names any (before the organization's), its payment term
    and grace period are the customer's defaults, and it is printed on the invoice."""
    from tallyflow.tasks.catalog import apply_catalog
    from tallyflow.tasks.invoicing import invoice_document

    entity = {"billing_entity": {
        "code": "acme_eu", "name": "Tallyflow EU", "legal_name": "Tallyflow Europe SAS",
        "address_line1": "1 rue de la Paix", "city": "Paris", "country": "FR",
        "tax_identification_number": "FR123", "document_number_prefix": "TFEU",
        "tax_codes": ["vat"], "net_payment_term": 15, "invoice_footer": "Thank you"}}
    extra = tmp_path / "entity.json"
    extra.write_text(json.dumps([*TAXES, entity]))
    assert apply_catalog(engine, [extra]).ok
    catalog(engine, tmp_path, plan={"amount_cents": 3100},
            customer={"billing_entity_code": "acme_eu"}, wallet=False)
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    close_periods(engine, CLOSE)
    [invoice] = invoices(engine)
    assert invoice["number"] == "TFEU-001-001"
    assert invoice["billing_entity_code"] == "acme_eu"
    assert [t["tax_code"] for t in invoice["applied_taxes"]] == ["vat"]  # not the org's 10 %
    assert invoice["total_amount_cents"] == 3720
    assert invoice["payment_due_date"] == "2025-04-16"
    html = invoice_document(engine, invoice["number"], "html")
    assert isinstance(html, str)
    assert "Tallyflow Europe SAS" in html and "FR123" in html and "Thank you" in html
