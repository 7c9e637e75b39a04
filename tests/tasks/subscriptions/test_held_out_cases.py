"""Held-out lifecycle cases (issue 27, item 7), against real Postgres: each test is named after
the symptom it guards against."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tallyflow.tasks.subscriptions import LifecycleError, change_plan
from tests.tasks.invoicing.test_invoicing import catalog, ingested_until, invoices, usage_events
from tests.tasks.rating_fixtures import SUB
from tests.tasks.subscriptions.test_lifecycle import NOW, T, _second_plan, cycle

ENDED = datetime(2025, 3, 25, 12, tzinfo=UTC)


def _subscription_rows(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "select plan_id, terminated_at, ending_at from subscriptions order by id"))]


def test_change_plan_after_ending_at_passed_is_refused_before_committing(
    engine: Engine, tmp_path: Path
) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 3100},
            subscription={"ending_at": ENDED.isoformat()})
    _second_plan(engine, tmp_path, "pro", 6200)
    before = _subscription_rows(engine)
    with pytest.raises(LifecycleError, match="it ended at"):
        change_plan(engine, SUB, "pro", now=NOW)
    assert _subscription_rows(engine) == before


def test_backdated_upgrade_of_a_subscription_whose_ending_at_passed_does_not_crash(
    engine: Engine, tmp_path: Path
) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 3100},
            subscription={"ending_at": ENDED.isoformat()})
    usage_events(engine, tmp_path, datetime(2025, 3, 22, 12, tzinfo=UTC), prefix="b")
    _second_plan(engine, tmp_path, "pro", 6200)
    done = change_plan(engine, SUB, "pro", T, now=NOW)
    assert done.kind == "upgrade"
    # the new row ends where the old one was to end: both invoiced, nothing after the end
    assert [(i["issuing_date"], i["fees_amount_cents"]) for i in invoices(engine)] == [
        ("2025-03-20", 1900), ("2025-03-25", 6 * 200 + 800)]
    with engine.connect() as conn:
        assert list(conn.execute(text("select status from subscriptions order by id"))
                    .scalars()) == ["terminated", "terminated"]


def test_backdated_upgrade_does_not_finalize_the_new_plans_periods_at_once(
    engine: Engine, tmp_path: Path
) -> None:
    """The change is recorded in August for 20 March: the new plan's periods (20..31 March to
    July) wait for the watermark and the grace period from August, like periods just ended, so
    April usage arriving after the change is billed."""
    late = datetime(2025, 8, 26, 10, tzinfo=UTC)
    catalog(engine, tmp_path, plan={"amount_cents": 3100})
    ingested_until(engine, late)  # the watermark is past every period of the change
    _second_plan(engine, tmp_path, "pro", 6200)
    change_plan(engine, SUB, "pro", T, now=late)
    drafted = invoices(engine)
    assert len(drafted) == 6  # the old plan's 1..19 March, then March to July on the new one
    assert {i["status"] for i in drafted} == {"draft"}
    usage_events(engine, tmp_path, datetime(2025, 4, 10, 12, tzinfo=UTC), prefix="apr")
    ingested_until(engine, late + timedelta(hours=3))
    cycle(engine, late + timedelta(hours=3))
    final = {i["issuing_date"]: (i["status"], i["fees_amount_cents"]) for i in invoices(engine)}
    assert final["2025-05-01"] == ("finalized", 6200 + 800)  # April's usage is on it
    assert {status for status, _ in final.values()} == {"finalized"}


def test_upgrade_backdated_before_a_termination_keeps_the_termination(
    engine: Engine, tmp_path: Path
) -> None:
    """The new plan's row takes over the rest of the old row's life, which a termination
    ended: the change does not bring the subscription back."""
    from tallyflow.tasks.subscriptions import terminate_subscription

    catalog(engine, tmp_path, plan={"amount_cents": 3100})
    usage_events(engine, tmp_path, datetime(2025, 3, 22, 12, tzinfo=UTC), prefix="b")
    terminate_subscription(engine, SUB, ENDED, now=NOW)
    _second_plan(engine, tmp_path, "pro", 6200)
    change_plan(engine, SUB, "pro", T, now=NOW)
    with engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(text(
            "select terminated_at, status from subscriptions order by id"))] == [
            (T - timedelta(microseconds=1), "terminated"), (ENDED, "terminated")]
    assert [(i["issuing_date"], i["fees_amount_cents"]) for i in invoices(engine)] == [
        ("2025-03-20", 1900), ("2025-03-25", 6 * 200 + 800)]
