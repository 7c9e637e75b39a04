"""Applying catalog files to a real Postgres: idempotent, all-or-nothing, round-trippable."""

from __future__ import annotations

import shutil
import threading
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from tallyflow.models import tables as t
from tallyflow.models.catalog import CatalogValidationError, dumps, loads, validate_documents
from tallyflow.tasks.catalog import (
    ApplyResult,
    apply_catalog,
    export_catalog,
    load_documents,
    write_catalog,
)

ROOT = Path(__file__).resolve().parents[3]
MISTRAL = ROOT / "examples" / "mistral"
FIXTURES = ROOT / "tests" / "fixtures" / "catalog"
KINDS = ("billable_metric", "plan", "customer", "subscription", "wallet")


def per_kind(count: int) -> dict[str, int]:
    """Counts of an apply of the examples, which define no taxes, billing entities, add-ons
    nor coupons."""
    return {**dict.fromkeys(KINDS, count), "tax": 0, "billing_entity": 0, "add_on": 0,
            "coupon": 0, "applied_coupon": 0}
STAMPED = (t.billable_metrics, t.plans, t.customers, t.subscriptions, t.wallets)


def counts(engine: Engine) -> dict[str, int]:
    tables = (*STAMPED, t.billable_metric_filters, t.charges, t.charge_filters,
              t.wallet_recurring_rules)
    with engine.connect() as conn:
        return {tb.name: conn.execute(select(func.count()).select_from(tb)).scalar_one()
                for tb in tables}


def stamps(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {tb.name: list(conn.execute(select(tb.c.id, tb.c.updated_at, tb.c.digest)
                                           .order_by(tb.c.id)))
                for tb in STAMPED}


def assert_counts(result: ApplyResult, created: int = 0, updated: int = 0,
                  unchanged: int = 0) -> None:
    assert result.errors == []
    assert result.created == per_kind(created)
    assert result.updated == per_kind(updated)
    assert result.unchanged == per_kind(unchanged)


@pytest.fixture()
def mistral_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "mistral"
    shutil.copytree(MISTRAL, folder)
    return folder


def test_mistral_template_applies_as_published(engine: Engine) -> None:
    assert_counts(apply_catalog(engine, [MISTRAL]), created=1)
    assert counts(engine) == {
        "billable_metrics": 1, "plans": 1, "customers": 1, "subscriptions": 1, "wallets": 1,
        "billable_metric_filters": 2, "charges": 1, "charge_filters": 6,
        "wallet_recurring_rules": 0,
    }
    with engine.connect() as conn:
        wallet = conn.execute(select(t.wallets)).mappings().one()
        values = t.charge_filters.c["values"]
        prices = dict(conn.execute(select(values["model"][0].astext + "/"
                                          + values["type"][0].astext,
                                          t.charge_filters.c.properties["amount"].astext)).all())
        subscription = conn.execute(select(t.subscriptions)).mappings().one()
        filters = dict(conn.execute(select(t.billable_metric_filters.c.key,
                                           t.billable_metric_filters.c["values"])).all())
    assert (wallet["code"], wallet["paid_credits"], wallet["granted_credits"],
            wallet["rate_amount"]) == ("prepaid_credits", Decimal("100.0"), Decimal("25.0"),
                                       Decimal("1.0"))
    assert prices["mistral-medium/output"] == "8.1" and prices["mistral-large/input"] == "4"
    assert subscription["subscription_at"] == datetime(2025, 1, 1, 5, tzinfo=UTC)
    assert filters == {"model": ["mistral-small", "mistral-medium", "mistral-large"],
                       "type": ["input", "output"]}


def test_applying_twice_changes_nothing(engine: Engine) -> None:
    apply_catalog(engine, [MISTRAL])
    before, rows = stamps(engine), counts(engine)
    assert_counts(apply_catalog(engine, [MISTRAL]), unchanged=1)
    assert stamps(engine) == before and counts(engine) == rows


def test_export_then_apply_round_trips(engine: Engine, tmp_path: Path) -> None:
    apply_catalog(engine, [MISTRAL])
    exported = export_catalog(engine)
    # export equals the applied documents (normalised: defaults filled in)
    applied = validate_documents(load_documents([MISTRAL])).documents
    assert exported == [loads(dumps(d.envelope())) for d in applied]
    write_catalog(exported, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "add_ons.json", "applied_coupons.json", "billable_metrics.json",
        "billing_entities.json", "coupons.json", "customers.json", "plans.json",
        "subscriptions.json", "taxes.json", "wallets.json"]
    before = stamps(engine)
    assert_counts(apply_catalog(engine, [tmp_path / "out"]), unchanged=1)
    write_catalog(exported, tmp_path / "all.yaml")
    assert_counts(apply_catalog(engine, [tmp_path / "all.yaml"]), unchanged=1)
    assert stamps(engine) == before


def test_one_error_among_valid_documents_changes_nothing(engine: Engine) -> None:
    result = apply_catalog(engine, [MISTRAL, FIXTURES / "invalid"])
    assert not result.ok and not result.changed
    assert sorted((Path(e.file).name, e.path) for e in result.errors) == [
        ("bad_plan.json", "plan.charges[0].properties.amount"),
        ("bad_plan.json", "plan.charges[1].properties.graduated_ranges[1].from_value"),
        ("bad_wallet.json", "wallet.currency"),
    ]
    assert any("got a JSON number (0.5)" in str(e) for e in result.errors)
    assert set(counts(engine).values()) == {0}


def test_changing_a_price_closes_the_charge_and_opens_a_new_one(
    engine: Engine, mistral_copy: Path
) -> None:
    """The changed charge is a new row (a new id) in force from the apply; the old row is kept,
    closed, for the invoices and history that priced with it
    (tests/tasks/catalog/test_plan_versions.py)."""
    apply_catalog(engine, [mistral_copy])
    with engine.connect() as conn:
        old_charges = set(conn.execute(select(t.charges.c.id)).scalars())
    before = stamps(engine)
    plan_file = mistral_copy / "plan.json"
    plan = loads(plan_file.read_text())
    plan["plan"]["charges"][0]["filters"][0]["properties"]["amount"] = "1.5"
    plan_file.write_text(dumps(plan, indent=2))
    result = apply_catalog(engine, [mistral_copy])
    assert result.updated["plan"] == 1 and result.unchanged["billable_metric"] == 1
    assert sum(result.created.values()) == 0
    after = stamps(engine)
    assert after["billable_metrics"] == before["billable_metrics"]
    assert after["plans"][0][1] > before["plans"][0][1]
    open_charges = t.charges.c.effective_to.is_(None)
    with engine.connect() as conn:
        new_charges = set(conn.execute(select(t.charges.c.id).where(open_charges)).scalars())
        closed = set(conn.execute(select(t.charges.c.id).where(~open_charges)).scalars())
        amounts = sorted(conn.execute(
            select(t.charge_filters.c.properties["amount"].astext)
            .join(t.charges, t.charges.c.id == t.charge_filters.c.charge_id)
            .where(open_charges)).scalars())
    assert new_charges.isdisjoint(old_charges) and len(new_charges) == 1
    assert closed == old_charges
    assert amounts == ["1.5", "12", "2.7", "3", "4", "8.1"]
    assert counts(engine)["charge_filters"] == 12


def test_yaml_multi_document_and_list_files(engine: Engine) -> None:
    documents = load_documents([FIXTURES / "yaml"])
    assert [next(iter(d.envelope)) for d in documents] == [
        "billable_metric", "plan", "customer", "subscription", "wallet"]
    plan = documents[1].envelope["plan"]
    # YAML floats arrive as Decimal (a range bound may be a number, as in Lago)
    ranges = plan["charges"][0]["properties"]["graduated_ranges"]
    assert ranges[0]["to_value"] == Decimal("1000.5") and type(ranges[0]["to_value"]) is Decimal
    result = apply_catalog(engine, [FIXTURES / "yaml"])
    assert result.errors == []
    assert result.created == per_kind(1)
    with engine.connect() as conn:
        subscription = conn.execute(select(t.subscriptions)).mappings().one()
        stored = conn.execute(select(t.charges.c.properties)).scalar_one()
        wallet = conn.execute(select(t.wallets)).mappings().one()
        rules = conn.execute(select(t.wallet_recurring_rules)
                             .order_by(t.wallet_recurring_rules.c.position)).mappings().all()
    assert (wallet["code"], wallet["rate_amount"], wallet["priority"]) == (
        "globex_credits", Decimal("0.5"), 10)
    assert [(r["trigger"], r["interval"], r["method"], r["paid_credits"],
             r["threshold_credits"], r["target_ongoing_balance"]) for r in rules] == [
        ("interval", "monthly", "fixed", Decimal("50"), None, None),
        ("threshold", None, "target", Decimal("0"), Decimal("20"), Decimal("200")),
    ]
    assert rules[0]["started_at"] == datetime(2025, 4, 1, tzinfo=UTC)
    assert subscription["billing_time"] == "anniversary"
    assert subscription["subscription_at"] == datetime(2025, 3, 30, 22, tzinfo=UTC)
    assert str(stored["graduated_ranges"][1]["from_value"]) == "1000.5"


def test_folders_are_read_recursively_and_ordered_by_kind(engine: Engine) -> None:
    documents = load_documents([FIXTURES / "nested"])
    assert [(Path(d.file).name, next(iter(d.envelope))) for d in documents] == [
        ("metric.json", "billable_metric"), ("plan.json", "plan"),
        ("b_customer.yaml", "customer"), ("a_subscription.json", "subscription")]
    result = apply_catalog(engine, [FIXTURES / "nested"])
    assert result.errors == [] and sum(result.created.values()) == 4


def test_unreadable_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"plan": ')
    (tmp_path / "broken.yaml").write_text("plan: [unclosed")
    with pytest.raises(CatalogValidationError) as caught:
        load_documents([tmp_path, tmp_path / "missing.json"])
    messages = sorted(str(e) for e in caught.value.errors)
    assert [m.split(": ")[1:3] for m in messages] == [
        [".", "invalid JSON"], [".", "invalid YAML"], [".", "no such file or folder"]]


def test_subscription_start_defaults_once(engine: Engine, mistral_copy: Path) -> None:
    subscription_file = mistral_copy / "subscription.json"
    body = loads(subscription_file.read_text())
    del body["subscription"]["subscription_at"]
    subscription_file.write_text(dumps(body))
    first = datetime(2025, 6, 1, 8, 30, tzinfo=UTC)
    apply_catalog(engine, [mistral_copy], now=first)
    result = apply_catalog(engine, [mistral_copy], now=datetime(2025, 7, 1, tzinfo=UTC))
    assert_counts(result, unchanged=1)
    with engine.connect() as conn:
        started = conn.execute(select(t.subscriptions.c.subscription_at)).scalar_one()
    assert started == first


def test_references_resolve_against_the_database(engine: Engine, tmp_path: Path) -> None:
    apply_catalog(engine, [MISTRAL])
    extra = tmp_path / "extra.json"
    extra.write_text(dumps([
        {"subscription": {"external_id": "sub_acme_002", "external_customer_id": "acme",
                          "plan_code": "mistral_per_token"}},
        {"customer": {"external_id": "acme", "currency": "EUR"}},
    ]))
    result = apply_catalog(engine, [extra])
    # the new subscription, and the stored subscription and wallet of a customer whose
    # currency would change under them
    assert sorted((e.file, e.path) for e in result.errors) == [
        ("(database) subscription 'sub_acme_001'", "subscription.plan_code"),
        ("(database) wallet 'acme/prepaid_credits'", "wallet.currency"),
        (str(extra), "[0].subscription.plan_code"),
    ]
    assert counts(engine)["subscriptions"] == 1


def test_concurrent_applies_serialise(engine: Engine) -> None:
    results: list[ApplyResult] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        results.append(apply_catalog(engine, [MISTRAL]))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 2 and all(r.ok for r in results)
    assert sorted(sum(r.created.values()) for r in results) == [0, 5]
    assert sorted(sum(r.unchanged.values()) for r in results) == [0, 5]
    assert counts(engine)["charge_filters"] == 6 and counts(engine)["plans"] == 1
