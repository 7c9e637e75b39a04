"""Pending starts and terminations against real Postgres: events outside the subscription's
life are unbillable, a termination rebuilds usage, corrects the wallet, takes the final
snapshot and issues the prorated termination invoice; reruns and crashes converge.

The Mistral catalog (customer in New York, monthly calendar plan): 2M small input tokens ($2)
and 2M small output tokens ($6) make $8 per ``usage_events`` call.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tallyflow.infra import failpoints
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.results import PlanChangeSummary, SubscriptionStanding
from tallyflow.tasks.folding import fold_pending
from tallyflow.tasks.invoicing import close_periods
from tallyflow.tasks.subscriptions.lifecycle import (
    LifecycleError,
    final_snapshots,
    subscription_standing,
    terminate_subscription,
)
from tallyflow.tasks.usage import current_usage, due_subscriptions, snapshot_subscriptions
from tests.tasks.invoicing.test_invoicing import catalog, ingested_until, invoices, usage_events
from tests.tasks.rating_fixtures import SUB
from tests.tasks.wallets.test_wallets_support import (
    assert_balances_match_ledger,
    balances,
    ledger,
    run_once,
)

T = datetime(2025, 3, 20, 12, tzinfo=UTC)  # 20 March, 08:00 in New York
NOW = datetime(2025, 3, 26, 10, tzinfo=UTC)
WALLET = "acme/prepaid_credits"


def cycle(engine: Engine, at: datetime) -> dict[str, Any]:
    """One billing hour without Prefect, in the flows' order (final snapshots included)."""
    fold_pending(engine)
    due = due_subscriptions(engine, at)
    if due:
        snapshot_subscriptions(engine, due, at)
    final_snapshots(engine, at)
    run_once(engine, at)
    return close_periods(engine, at, now=at).as_dict()


def _used(engine: Engine, tmp_path: Path, **kwargs: Any) -> None:
    """$31 plan, $8 of usage on 10 March and $8 on 25 March, deducted by the 26 March hour."""
    catalog(engine, tmp_path, plan={"amount_cents": 3100}, **kwargs)
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC), prefix="a")
    usage_events(engine, tmp_path, datetime(2025, 3, 25, 12, tzinfo=UTC), prefix="b")
    cycle(engine, NOW)


def _fees(invoice: dict[str, Any]) -> list[tuple[str, int]]:
    return [(f["item"]["type"], f["amount_cents"]) for f in invoice["fees"]]


def test_pending_subscription_bills_nothing_before_its_start(
    engine: Engine, tmp_path: Path
) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 3100}, start="2025-03-15T04:00:00Z")
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC), prefix="early")
    standing = subscription_standing(engine, SUB, datetime(2025, 3, 12, tzinfo=UTC))
    assert standing.status == "pending"
    assert standing.unbillable_before_start == 2
    with engine.connect() as conn:
        assert conn.execute(text("select coalesce(sum(unbillable), 0) from ingest_objects"
                                 )).scalar_one() == 2
    cycle(engine, datetime(2025, 3, 12, tzinfo=UTC))
    assert balances(engine)[WALLET]["cents"] == 12500  # nothing deducted while pending
    usage_events(engine, tmp_path, datetime(2025, 3, 20, 12, tzinfo=UTC), prefix="late")
    assert subscription_standing(engine, SUB, NOW).status == "active"
    assert current_usage(engine, SUB, NOW)["amount_cents"] == 800  # only the events after it
    ingested_until(engine, datetime(2025, 4, 1, 8, tzinfo=UTC))
    cycle(engine, datetime(2025, 4, 1, 8, tzinfo=UTC))
    [invoice] = invoices(engine)
    # 15..31 March (New York) = 17 of 31 days at $31/31
    assert _fees(invoice) == [("subscription", 1700), ("charge", 200), ("charge", 600)]


def test_termination_rebuilds_usage_corrects_the_wallet_and_invoices_at_once(
    engine: Engine, tmp_path: Path
) -> None:
    _used(engine, tmp_path)
    assert balances(engine)[WALLET]["cents"] == 12500 - 1600
    done = terminate_subscription(engine, SUB, T, now=NOW)
    assert done.events_refolded == 2 and done.status == "terminated"
    assert done.final_snapshot_cents == 800
    assert done.wallet_credited_back_cents == 800  # the 25 March usage comes back
    assert balances(engine)[WALLET]["cents"] == 12500 - 800
    [invoice] = done.invoices
    assert invoice["status"] == "draft" and invoice["to_datetime"] == T.isoformat()
    [draft] = invoices(engine)
    assert draft["issuing_date"] == "2025-03-20"  # the termination's own day in New York
    # 1..20 March = 20 of 31 days of $31, and the usage up to the termination
    assert _fees(draft) == [("subscription", 2000), ("charge", 200), ("charge", 600)]
    # the events after the end stay stored, unbillable
    standing = subscription_standing(engine, SUB, NOW)
    assert standing.status == "terminated" and standing.unbillable_after_end == 2
    assert current_usage(engine, SUB, T)["amount_cents"] == 800
    # later hours finalize it once the watermark has passed; nothing else is billed
    ingested_until(engine, T + timedelta(hours=3))
    cycle(engine, NOW + timedelta(hours=1))
    [final] = invoices(engine)
    assert final["status"] == "finalized" and final["fees_amount_cents"] == 2800
    cycle(engine, datetime(2025, 4, 1, 8, tzinfo=UTC))
    assert len(invoices(engine)) == 1
    assert_balances_match_ledger(engine)
    with engine.connect() as conn:
        assert conn.execute(text("select status from subscriptions")).scalar_one() == "terminated"


def test_termination_rerun_only_finishes_it(engine: Engine, tmp_path: Path) -> None:
    _used(engine, tmp_path)
    terminate_subscription(engine, SUB, T, now=NOW)
    before, drafted = ledger(engine), invoices(engine)
    again = terminate_subscription(engine, SUB, T, now=NOW)
    assert again.rerun and again.wallet_credited_back_cents == 0
    assert ledger(engine) == before
    # a draft is rewritten wholesale (new fee ids, a new version), to the same amounts
    [redrafted] = invoices(engine)
    assert (redrafted["issuing_date"], _fees(redrafted), redrafted["total_amount_cents"]) == (
        drafted[0]["issuing_date"], _fees(drafted[0]), drafted[0]["total_amount_cents"])
    with pytest.raises(LifecycleError, match="already terminated") as refused:
        terminate_subscription(engine, SUB, T - timedelta(days=1), now=NOW)
    assert T.isoformat() in (refused.value.hint or "")


@pytest.mark.parametrize("point", ["lifecycle.after_terminate_commit",
                                   "lifecycle.after_final_snapshot"])
@pytest.mark.parametrize("finish", ["rerun", "hourly"])
def test_a_crash_after_the_termination_commit_converges(
    engine: Engine, tmp_path: Path, point: str, finish: str
) -> None:
    _used(engine, tmp_path)
    failpoints.arm(f"{point}=1:raise")
    try:
        with pytest.raises(failpoints.FailpointHit):
            terminate_subscription(engine, SUB, T, now=NOW)
    finally:
        failpoints.arm(None)
    if finish == "rerun":
        terminate_subscription(engine, SUB, T, now=NOW)
    else:
        cycle(engine, NOW + timedelta(hours=1))
    assert balances(engine)[WALLET]["cents"] == 12500 - 800
    assert current_usage(engine, SUB, T)["amount_cents"] == 800
    [draft] = invoices(engine)
    assert _fees(draft) == [("subscription", 2000), ("charge", 200), ("charge", 600)]
    assert_balances_match_ledger(engine)


def test_skip_issues_no_termination_invoice(engine: Engine, tmp_path: Path) -> None:
    _used(engine, tmp_path)
    done = terminate_subscription(engine, SUB, T, now=NOW, on_termination_invoice="skip")
    assert done.invoices == [] and done.on_termination_invoice == "skip"
    ingested_until(engine, datetime(2025, 4, 1, 8, tzinfo=UTC))
    cycle(engine, datetime(2025, 4, 1, 8, tzinfo=UTC))
    assert invoices(engine) == []
    assert balances(engine)[WALLET]["cents"] == 12500 - 800  # usage to T stays paid


@pytest.mark.parametrize(("at", "message"), [
    (datetime(2025, 2, 27, tzinfo=UTC), "it starts at"),
    (datetime(2025, 3, 31, tzinfo=UTC), "finalized invoice"),
])
def test_refused_terminations_change_nothing(
    engine: Engine, tmp_path: Path, at: datetime, message: str
) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 3100})
    ingested_until(engine, datetime(2025, 4, 1, 8, tzinfo=UTC))
    cycle(engine, datetime(2025, 4, 1, 8, tzinfo=UTC))  # March finalized
    before = ledger(engine)
    with pytest.raises(LifecycleError, match=message):
        terminate_subscription(engine, SUB, at, now=NOW + timedelta(days=10))
    with pytest.raises(LifecycleError, match="unknown subscription"):
        terminate_subscription(engine, "nope", at)
    with engine.connect() as conn:
        assert conn.execute(text("select terminated_at from subscriptions")).scalar_one() is None
    assert ledger(engine) == before


def test_catalog_ending_at_ends_it_and_the_next_cycle_invoices(
    engine: Engine, tmp_path: Path
) -> None:
    # applied with an end already set: the 25 March events are unbillable from the start
    _used(engine, tmp_path, subscription={"ending_at": T.isoformat()})
    assert balances(engine)[WALLET]["cents"] == 12500 - 800
    [draft] = invoices(engine)  # the 26 March hour issued the termination invoice
    assert draft["issuing_date"] == "2025-03-20"
    assert _fees(draft) == [("subscription", 2000), ("charge", 200), ("charge", 600)]
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from usage_snapshots where as_of = :t"),
                            {"t": T}).scalar_one() == 1  # the final snapshot


def test_ending_at_set_later_rebuilds_and_corrects(engine: Engine, tmp_path: Path) -> None:
    _used(engine, tmp_path)
    assert balances(engine)[WALLET]["cents"] == 12500 - 1600
    catalog(engine, tmp_path, plan={"amount_cents": 3100},
            subscription={"ending_at": T.isoformat()})
    cycle(engine, NOW + timedelta(hours=1))
    assert balances(engine)[WALLET]["cents"] == 12500 - 800
    assert current_usage(engine, SUB, T)["amount_cents"] == 800
    assert _fees(invoices(engine)[0])[0] == ("subscription", 2000)
    assert_balances_match_ledger(engine)


def test_on_termination_invoice_in_the_catalog(engine: Engine, tmp_path: Path) -> None:
    _used(engine, tmp_path, subscription={"ending_at": T.isoformat(),
                                          "on_termination_invoice": "skip"})
    assert invoices(engine) == []
    exported = json.dumps(subscription_standing(engine, SUB, NOW).as_dict())
    assert mismatches(json.loads(exported), SubscriptionStanding) == []
    assert '"terminated"' in exported


# --------------------------------------------------------------------------------------------
# Plan changes
# --------------------------------------------------------------------------------------------


def _second_plan(engine: Engine, tmp_path: Path, code: str, amount_cents: int) -> None:
    """The Mistral plan again under another code and fee (same charges)."""
    from tallyflow.tasks.catalog import apply_catalog

    plan = json.loads((tmp_path / "catalog" / "plan.json").read_text())
    plan["plan"].update({"code": code, "name": code, "amount_cents": amount_cents})
    folder = tmp_path / f"plan_{code}"
    folder.mkdir(exist_ok=True)
    (folder / "plan.json").write_text(json.dumps(plan))
    result = apply_catalog(engine, [folder])
    assert result.ok, result.errors


def _rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "select p.code, coalesce(s.started_at, s.subscription_at), s.terminated_at,"
            " s.previous_subscription_id is not null from subscriptions s"
            " join plans p on p.id = s.plan_id order by s.id"))]


def test_upgrade_in_the_middle_of_a_month(engine: Engine, tmp_path: Path) -> None:
    from tallyflow.tasks.subscriptions import change_plan

    _used(engine, tmp_path)
    _second_plan(engine, tmp_path, "pro", 6200)
    done = change_plan(engine, SUB, "pro", T, now=NOW)
    assert mismatches(json.loads(json.dumps(done.as_dict())), PlanChangeSummary) == []
    assert (done.kind, done.previous_plan_code, done.effective_at) == ("upgrade",
                                                                       "mistral_per_token", T)
    assert _rows(engine) == [
        ("mistral_per_token", datetime(2025, 3, 1, 5, tzinfo=UTC), T - timedelta(microseconds=1),
         False),
        ("pro", T, None, True),
    ]
    # usage follows the row in force: 10 March on the old plan, 25 March on the new one
    assert current_usage(engine, SUB, datetime(2025, 3, 15, tzinfo=UTC))["amount_cents"] == 800
    assert current_usage(engine, SUB, NOW)["amount_cents"] == 800
    assert balances(engine)[WALLET]["cents"] == 12500 - 1600  # moved between rows, not paid twice
    # the old plan's invoice at once: 1..19 March of $31 (the change's day is the new plan's)
    [old] = done.previous_invoice
    assert old["issuing_date"] == "2025-03-20" and old["fees_amount_cents"] == 1900 + 800
    # at the period end: 20..31 March of $62 (12 days at $2) and the usage after the change
    ingested_until(engine, datetime(2025, 4, 1, 8, tzinfo=UTC))
    cycle(engine, datetime(2025, 4, 1, 8, tzinfo=UTC))
    fees = {i["issuing_date"]: _fees(i) for i in invoices(engine)}
    assert fees["2025-04-01"] == [("subscription", 2400), ("charge", 200), ("charge", 600)]
    assert fees["2025-03-20"] == [("subscription", 1900), ("charge", 200), ("charge", 600)]
    assert_balances_match_ledger(engine)
    # a second change while the first is in force is another upgrade or downgrade, not a rerun
    with pytest.raises(LifecycleError, match="already on that plan"):
        change_plan(engine, SUB, "pro", NOW, now=NOW)


def test_downgrade_waits_for_the_period_end(engine: Engine, tmp_path: Path) -> None:
    from tallyflow.tasks.subscriptions import change_plan

    _used(engine, tmp_path)
    _second_plan(engine, tmp_path, "basic", 1000)
    done = change_plan(engine, SUB, "basic", T, now=NOW)
    assert mismatches(json.loads(json.dumps(done.as_dict())), PlanChangeSummary) == []
    april = datetime(2025, 4, 1, 4, tzinfo=UTC)  # midnight in New York
    assert (done.kind, done.effective_at) == ("downgrade", april)
    assert _rows(engine)[1] == ("basic", april, None, True)
    assert subscription_standing(engine, SUB, NOW).status == "active"
    assert current_usage(engine, SUB, NOW)["amount_cents"] == 1600  # still the old plan
    with pytest.raises(LifecycleError, match="already has a plan change waiting"):
        change_plan(engine, SUB, "basic", NOW, now=NOW)
    usage_events(engine, tmp_path, datetime(2025, 4, 5, 12, tzinfo=UTC), prefix="c")
    ingested_until(engine, datetime(2025, 5, 1, 8, tzinfo=UTC))
    cycle(engine, datetime(2025, 4, 1, 8, tzinfo=UTC))
    cycle(engine, datetime(2025, 5, 1, 8, tzinfo=UTC))
    fees = {i["issuing_date"]: _fees(i) for i in invoices(engine)}
    assert fees["2025-04-01"] == [("subscription", 3100), ("charge", 400), ("charge", 1200)]
    assert fees["2025-05-01"] == [("subscription", 1000), ("charge", 200), ("charge", 600)]
    assert_balances_match_ledger(engine)
    with engine.connect() as conn:
        assert list(conn.execute(text("select status from subscriptions order by id")
                                 ).scalars()) == ["terminated", "active"]


def test_applying_another_plan_code_is_a_plan_change(engine: Engine, tmp_path: Path) -> None:
    from tallyflow.tasks.catalog import apply_catalog, export_catalog

    _used(engine, tmp_path)
    _second_plan(engine, tmp_path, "pro", 6200)
    sub_file = tmp_path / "catalog" / "subscription.json"
    body = json.loads(sub_file.read_text())
    body["subscription"]["plan_code"] = "pro"
    folder = tmp_path / "change"
    folder.mkdir()
    (folder / "subscription.json").write_text(json.dumps(body))
    result = apply_catalog(engine, [folder], now=T)
    assert result.ok and result.updated["subscription"] == 1, result
    assert [r[0] for r in _rows(engine)] == ["mistral_per_token", "pro"]
    again = apply_catalog(engine, [folder], now=NOW)  # the change is recorded: nothing moves
    assert again.unchanged["subscription"] == 1 and again.updated["subscription"] == 0
    cycle(engine, NOW + timedelta(hours=1))
    assert current_usage(engine, SUB, NOW)["amount_cents"] == 800
    assert balances(engine)[WALLET]["cents"] == 12500 - 1600
    # the export holds the subscription once, on the plan in force
    subs = [e["subscription"] for e in export_catalog(engine) if "subscription" in e]
    assert [(s["external_id"], s["plan_code"]) for s in subs] == [(SUB, "pro")]


def test_termination_in_the_future_is_finished_by_the_cycle_after_it(
    engine: Engine, tmp_path: Path
) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 3100})
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC), prefix="a")
    cycle(engine, datetime(2025, 3, 15, tzinfo=UTC))
    done = terminate_subscription(engine, SUB, T, now=datetime(2025, 3, 15, tzinfo=UTC))
    assert done.status == "active" and done.invoices == []
    assert subscription_standing(engine, SUB, datetime(2025, 3, 16, tzinfo=UTC)).status == "active"
    usage_events(engine, tmp_path, datetime(2025, 3, 25, 12, tzinfo=UTC), prefix="b")  # after T
    summary = cycle(engine, NOW)
    assert summary["drafts"] == 1
    [draft] = invoices(engine)
    assert _fees(draft) == [("subscription", 2000), ("charge", 200), ("charge", 600)]
    assert balances(engine)[WALLET]["cents"] == 12500 - 800
    with engine.connect() as conn:
        assert conn.execute(text("select status from subscriptions")).scalar_one() == "terminated"


# --------------------------------------------------------------------------------------------
# Cancel (a pending subscription), and what a re-apply keeps
# --------------------------------------------------------------------------------------------


def test_terminating_a_pending_subscription_cancels_it(engine: Engine, tmp_path: Path) -> None:
    from tallyflow.tasks.catalog import apply_catalog

    catalog(engine, tmp_path, plan={"amount_cents": 3100}, start="2025-03-15T04:00:00Z")
    before_start = datetime(2025, 3, 12, tzinfo=UTC)
    done = terminate_subscription(engine, SUB, now=before_start)
    assert (done.status, done.terminated_at, done.invoices) == ("canceled", before_start, [])
    # it never bills: its events are stored and counted unbillable, no snapshot, no invoice
    usage_events(engine, tmp_path, datetime(2025, 3, 20, 12, tzinfo=UTC), prefix="after")
    with engine.connect() as conn:
        assert conn.execute(text("select coalesce(sum(unbillable), 0) from ingest_objects"
                                 )).scalar_one() == 2
    ingested_until(engine, datetime(2025, 4, 1, 8, tzinfo=UTC))
    cycle(engine, datetime(2025, 4, 1, 8, tzinfo=UTC))
    assert invoices(engine) == [] and balances(engine)[WALLET]["cents"] == 12500
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from usage_snapshots")).scalar_one() == 0
    with pytest.raises(LifecycleError, match="was canceled"):
        terminate_subscription(engine, SUB, now=NOW)
    # the unchanged file does not bring it back; a changed one subscribes again, as Lago's
    # create does with a canceled subscription's external id
    folder = tmp_path / "catalog"
    assert apply_catalog(engine, [folder], now=NOW).unchanged["subscription"] == 1
    body = json.loads((folder / "subscription.json").read_text())
    body["subscription"]["subscription_at"] = "2025-04-01T04:00:00Z"
    (folder / "subscription.json").write_text(json.dumps(body))
    again = apply_catalog(engine, [folder], now=NOW)
    assert again.ok and again.updated["subscription"] == 1, again
    with engine.connect() as conn:
        assert list(conn.execute(text("select status from subscriptions order by id"))
                    .scalars())[0] == "canceled"  # and a new row, pending (its dates say so)
    assert subscription_standing(engine, SUB, NOW).status == "pending"
    assert apply_catalog(engine, [folder], now=NOW).unchanged["subscription"] == 1


def test_terminating_before_a_waiting_downgrade_cancels_the_downgrade(
    engine: Engine, tmp_path: Path
) -> None:
    from tallyflow.tasks.subscriptions import change_plan

    _used(engine, tmp_path)
    _second_plan(engine, tmp_path, "basic", 1000)
    change_plan(engine, SUB, "basic", T, now=NOW)
    terminate_subscription(engine, SUB, NOW, now=NOW)
    with engine.connect() as conn:
        assert list(conn.execute(text("select status from subscriptions order by id"))
                    .scalars()) == ["terminated", "canceled"]
    usage_events(engine, tmp_path, datetime(2025, 4, 5, 12, tzinfo=UTC), prefix="c")
    ingested_until(engine, datetime(2025, 5, 1, 8, tzinfo=UTC))
    cycle(engine, datetime(2025, 5, 1, 8, tzinfo=UTC))
    # only the termination invoice: nothing is billed on the downgrade that never started
    assert [i["issuing_date"] for i in invoices(engine)] == ["2025-03-26"]
    assert subscription_standing(engine, SUB, datetime(2025, 4, 5, tzinfo=UTC)).status == (
        "terminated")


def test_re_applying_the_file_keeps_a_skip_given_at_termination(
    engine: Engine, tmp_path: Path
) -> None:
    from tallyflow.tasks.catalog import apply_catalog

    catalog(engine, tmp_path, plan={"amount_cents": 3100})
    later = datetime(2025, 3, 28, tzinfo=UTC)
    terminate_subscription(engine, SUB, later, now=NOW, on_termination_invoice="skip")
    folder = tmp_path / "catalog"
    body = json.loads((folder / "subscription.json").read_text())
    body["subscription"]["name"] = "renamed"  # another change; on_termination_invoice unnamed
    (folder / "subscription.json").write_text(json.dumps(body))
    assert apply_catalog(engine, [folder], now=NOW).updated["subscription"] == 1
    ingested_until(engine, datetime(2025, 4, 1, 8, tzinfo=UTC))
    cycle(engine, datetime(2025, 4, 1, 8, tzinfo=UTC))
    assert invoices(engine) == []  # the skip stands
    body["subscription"]["on_termination_invoice"] = "generate"  # named: the file decides
    (folder / "subscription.json").write_text(json.dumps(body))
    apply_catalog(engine, [folder], now=NOW)
    with engine.connect() as conn:
        assert conn.execute(text("select on_termination_invoice from subscriptions")
                            ).scalar_one() == "generate"


def test_a_recurring_metric_carries_its_units_over_a_plan_change(
    engine: Engine, tmp_path: Path
) -> None:
    """Lago aggregates a recurring metric over every event of the external subscription id,
    with no lower bound: the new plan's row counts the units of the rows it replaced."""
    from tallyflow.tasks.catalog import apply_catalog
    from tallyflow.tasks.subscriptions import change_plan

    catalog(engine, tmp_path, plan={"amount_cents": 3100})
    metric = tmp_path / "catalog" / "billable_metric.json"
    body = json.loads(metric.read_text())
    body["billable_metric"]["recurring"] = True
    metric.write_text(json.dumps(body))
    assert apply_catalog(engine, [tmp_path / "catalog"]).ok
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC), prefix="a")
    _second_plan(engine, tmp_path, "pro", 6200)
    change_plan(engine, SUB, "pro", T, now=T)
    usage_events(engine, tmp_path, datetime(2025, 3, 25, 12, tzinfo=UTC), prefix="b")
    cycle(engine, NOW)
    assert current_usage(engine, SUB, datetime(2025, 3, 15, tzinfo=UTC))["amount_cents"] == 800
    assert current_usage(engine, SUB, NOW)["amount_cents"] == 1600  # 10 and 25 March
    april = datetime(2025, 4, 5, tzinfo=UTC)
    assert current_usage(engine, SUB, april)["amount_cents"] == 1600  # carried into April
