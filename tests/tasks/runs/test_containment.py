"""Containment: a batch that fails for one unit's reason is bisected so every other unit's
part commits; transient trouble and simulated crashes still propagate. The bisection is pure
(no database); the last test poisons one subscription with real data (its plan damaged in the
database behind the catalog's back, so only pricing fails) and snapshots a batch."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, text

from tallyflow.infra.failpoints import FailpointHit
from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.folding import fold_pending
from tallyflow.tasks.runs import ContainedFailures, contain, failure_message, withheld_customers
from tallyflow.tasks.usage import due_subscriptions, snapshot_contained
from tests.tasks.invoicing.test_invoicing import catalog
from tests.tasks.rating_fixtures import load_rows


class Poisoned(ValueError):
    pass


def _runner(poisoned: set[int], calls: list[list[int]]):  # type: ignore[no-untyped-def]
    committed: list[int] = []

    def run(part: list[int]) -> list[int]:
        calls.append(part)
        bad = poisoned & set(part)
        if bad:
            raise Poisoned(f"unit {min(bad)}")
        committed.extend(part)
        return part

    return run, committed


def test_a_healthy_batch_runs_once_as_one_part() -> None:
    calls: list[list[int]] = []
    run, committed = _runner(set(), calls)
    results, failed = contain(list(range(2000)), run)
    assert calls == [list(range(2000))] and failed == [] and committed == list(range(2000))
    assert results == [list(range(2000))]


@pytest.mark.parametrize("poisoned", [{0}, {1999}, {777}, {3, 1500}, set(range(0, 2000, 400))])
def test_only_the_poisoned_units_fail_and_every_other_commits_once(poisoned: set[int]) -> None:
    calls: list[list[int]] = []
    run, committed = _runner(poisoned, calls)
    results, failed = contain(list(range(2000)), run)
    assert sorted(u for u, _ in failed) == sorted(poisoned)
    assert all(isinstance(e, Poisoned) and str(e) == f"unit {u}" for u, e in failed)
    assert sorted(committed) == sorted(set(range(2000)) - poisoned)  # each exactly once
    assert len(committed) == len(set(committed))
    # bisection, not one transaction per unit: about 2 log2(2000) parts per poisoned unit
    assert len(calls) <= 1 + len(poisoned) * 2 * 12


@pytest.mark.parametrize("error", [
    psycopg.OperationalError("server closed the connection"), ConnectionError("reset"),
    FailpointHit("usage.before_snapshot_commit"),
])
def test_transient_trouble_and_simulated_crashes_are_not_contained(error: Exception) -> None:
    def run(part: list[int]) -> None:
        raise error

    with pytest.raises(type(error)):
        contain([1, 2, 3], run)


def test_the_message_names_each_failed_unit_and_counts_the_withheld() -> None:
    failures = [
        {"step": "usage-snapshot", "unit": "subscription", "id": 7, "external_id": "sub_7",
         "customer": "c7", "subscription": None, "error": "TypeError: boom", "withheld": False},
        {"step": "wallet-deductions", "unit": "customer", "id": 3, "external_id": "c7",
         "customer": "c7", "subscription": None, "error": "not deducted", "withheld": True},
    ]
    message = failure_message(failures)
    assert message.startswith("1 unit(s) failed and were contained, every other unit completed")
    assert "usage-snapshot subscription sub_7: TypeError: boom" in message
    assert "1 unit(s) withheld" in message
    assert withheld_customers(failures) == ["c7"]


HOUR = datetime(2025, 3, 20, 10, tzinfo=UTC)


def test_a_subscription_poisoned_by_its_data_fails_alone_in_its_batch(
    engine: Engine, tmp_path: Path
) -> None:
    catalog(engine, tmp_path)  # acme, sub_acme_001
    # A second plan, applied as any plan is, then damaged in place (a package of 0 tokens: no
    # catalog file could give it, apply refuses it): only the subscription on it cannot be
    # priced, and only pricing (the snapshot, not the fold) finds out.
    plan_file = tmp_path / "catalog" / "plan.json"
    document = json.loads(plan_file.read_text())
    document["plan"]["code"] = "damaged"
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "plan.json").write_text(json.dumps(document))
    assert apply_catalog(engine, [tmp_path / "damaged"]).ok
    with engine.begin() as conn:
        plan, customer = conn.execute(text(
            "select s.plan_id, s.customer_id from subscriptions s")).one()
        damaged = conn.execute(text("select id from plans where code = 'damaged'")).scalar_one()
        conn.execute(text(
            "update charge_filters set properties = properties || '{\"package_size\": 0}'"
            " where charge_id in (select id from charges where plan_id = :p)"), {"p": damaged})
        for i in range(40):
            conn.execute(text(
                "insert into subscriptions (external_id, customer_id, plan_id, billing_time,"
                " subscription_at, document, digest) values (:e, :c, :p, 'calendar',"
                " '2025-03-01T00:00:00Z', '{}', 'x')"),
                {"e": f"s{i}", "c": customer, "p": damaged if i == 17 else plan})
    rows = [{"sub": f"s{i}", "txn": f"t{i}", "code": "mistral_tokens",
             "ts": "2025-03-10T00:00:00Z",
             "properties": {"tokens": 1_000_000 + i, "model": "mistral-small", "type": "input"}}
            for i in range(40)]
    load_rows(engine, rows)
    fold_pending(engine)
    due = due_subscriptions(engine, HOUR)
    batch = snapshot_contained(engine, due, HOUR)
    assert [(f["unit"], f["external_id"], f["customer"]) for f in batch.failed] == [
        ("subscription", "s17", "acme")]
    assert batch.failed[0]["step"] == "usage-snapshot"
    assert "package_size" in batch.failed[0]["error"], batch.failed[0]["error"]
    assert batch.snapshots == len(due) - 1
    with engine.connect() as conn:
        stored = set(conn.execute(text(
            "select external_subscription_id from usage_amounts where as_of = :h"),
            {"h": HOUR}).scalars())
    assert stored == {"sub_acme_001", *(f"s{i}" for i in range(40) if i != 17)}


def test_the_run_error_survives_pickling_as_prefect_keeps_it() -> None:
    import pickle

    item = {"step": "close-periods", "unit": "customer", "id": 1, "external_id": "acme",
            "customer": "acme", "subscription": None, "error": "bad", "withheld": False}
    error = ContainedFailures([item], {"hour": "x", "contained": [item]})
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, ContainedFailures) and str(again) == str(error)
    assert again.failures == [item] and again.summary["hour"] == "x"
