"""The billing hour's change set (docs/architecture.md §24): an hour with one changed
subscription out of 2,000 touches one; each kind of change enters the set; a crash or a rerun
of an hour takes the same set again (or a wider one) and converges; and after every hour the
full recomputation finds nothing left to do (change-set cycle == full cycle).

An "hour" here is the cycle's usage and wallet steps without Prefect: fold, take the set,
snapshot the due subscriptions, deduct the due customers, complete the set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tallyflow.tasks import wallets as w
from tallyflow.tasks.corrections import EventKey
from tallyflow.tasks.corrections.voids import void_events
from tallyflow.tasks.folding import fold_pending
from tallyflow.tasks.subscriptions import terminate_subscription
from tallyflow.tasks.usage import (
    complete_change_set,
    due_subscriptions,
    open_change_set,
    snapshot_subscriptions,
)
from tallyflow.tasks.usage import rating as rating_module
from tests.tasks.rating_fixtures import SUB, apply_mistral, load_rows

N = 2_000
PERIOD_START = datetime(2025, 3, 1, tzinfo=UTC)
H0 = datetime(2025, 3, 15, 10, tzinfo=UTC)

_SEED = [
    "insert into customers (external_id, currency, timezone, document, digest)"
    " select 'cust_' || i, 'USD', 'UTC', '{}', 'x' from generate_series(1, :n) i",
    "insert into subscriptions (external_id, customer_id, plan_id, billing_time,"
    " subscription_at, document, digest)"
    " select 'bsub_' || substr(c.external_id, 6), c.id, p.id, 'calendar', :start, '{}', 'x'"
    " from customers c, (select id from plans where code = 'mistral_per_token') p"
    " where c.external_id like 'cust\\_%'",
    "insert into wallets (customer_id, code, name, currency, rate_amount, paid_credits,"
    " granted_credits, priority, document, digest)"
    " select id, 'main', 'main', 'USD', 1, 0, 1000, 1, '{}', 'x' from customers"
    " where external_id like 'cust\\_%'",
]


@pytest.fixture()
def many(engine: Engine, tmp_path: Path) -> Engine:
    """The Mistral catalog (its one subscription) and ``N`` more subscriptions, each with a
    customer and a wallet; a first (full) hour snapshotted and deducted everything."""
    apply_mistral(engine, tmp_path)
    with engine.begin() as conn:
        for statement in _SEED:
            conn.execute(text(statement), {"n": N, "start": PERIOD_START})
    w.open_wallets(engine, PERIOD_START, True)
    first = run_hour(engine, H0)
    assert first["set"].full and first["snapshots"] == N + 1
    return engine


@pytest.fixture()
def loaded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many subscription rows the snapshot's steps read, per call (finding the due ones,
    rating them)."""
    counts: list[int] = []
    real = rating_module.load_subscription_rows

    def counting(*args: Any, **kwargs: Any) -> Any:
        rows = real(*args, **kwargs)
        counts.append(len(rows))
        return rows

    monkeypatch.setattr(rating_module, "load_subscription_rows", counting)
    yield counts


def run_hour(engine: Engine, at: datetime, complete: bool = True) -> dict[str, Any]:
    fold_pending(engine)
    changes = open_change_set(engine, at)
    due = due_subscriptions(engine, at, change_set=at)
    stored = snapshot_subscriptions(engine, due, at).snapshots if due else 0
    customers = w.due_customers(engine, at, change_set=at)
    w.deduct_customers(engine, customers, at)
    if complete:
        complete_change_set(engine, at)
    return {"set": changes, "snapshots": stored, "customers": len(customers)}


def members(engine: Engine, at: datetime) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                text(
                    "select s.external_id from change_set_members m"
                    " join subscriptions s on s.id = m.subscription_id where m.as_of = :h"
                ),
                {"h": at},
            ).scalars()
        )


def assert_full_cycle_has_nothing_left(engine: Engine, at: datetime) -> None:
    """The full recomputation (every subscription, every customer) would change nothing."""
    assert due_subscriptions(engine, at) == []
    assert w.due_customers(engine, at) == []


def tokens(sub: str, txn: str, ts: datetime, n: int = 1_000_000) -> dict[str, Any]:
    return {
        "sub": sub,
        "txn": txn,
        "code": "mistral_tokens",
        "ts": ts,
        "properties": {"tokens": n, "model": "mistral-small", "type": "input"},
    }


def test_one_changed_subscription_out_of_n_touches_one(many: Engine, loaded: list[int]) -> None:
    at = H0 + timedelta(hours=1)
    load_rows(many, [tokens("bsub_17", "t1", at - timedelta(minutes=5))])
    loaded.clear()
    hour = run_hour(many, at)
    assert hour["set"].subscriptions == 1 and hour["set"].reasons == {"events": 1}
    assert loaded == [1, 1]  # one subscription row read to find it due, one to rate it; not N
    assert (hour["snapshots"], hour["customers"]) == (1, 1)
    assert_full_cycle_has_nothing_left(many, at)

    # the next hour, nothing new: an empty set, nothing read, nothing written
    loaded.clear()
    quiet = run_hour(many, at + timedelta(hours=1))
    assert (quiet["set"].subscriptions, quiet["snapshots"], quiet["customers"]) == (0, 0, 0)
    assert loaded == []
    assert_full_cycle_has_nothing_left(many, at + timedelta(hours=1))


def _event(engine: Engine, at: datetime, _: Path) -> None:
    load_rows(engine, [tokens("bsub_3", "new", at - timedelta(minutes=10))])


def _late_event(engine: Engine, at: datetime, _: Path) -> None:  # an hour long past
    load_rows(engine, [tokens("bsub_4", "late", PERIOD_START + timedelta(days=2))])


def _void(engine: Engine, at: datetime, _: Path) -> None:
    load_rows(engine, [tokens("bsub_5", "to-void", at - timedelta(hours=2))])
    run_hour(engine, at - timedelta(minutes=30))  # billed, then voided (no re-rating run)
    result = void_events(
        engine, [EventKey("bsub_5", "to-void")], "test", "duplicate", at=at - timedelta(minutes=20)
    )
    assert result.voided


def _top_up(engine: Engine, at: datetime, _: Path) -> None:
    w.top_up(engine, "cust_6", Decimal(5), Decimal(0), as_of=at - timedelta(minutes=5))


def _termination(engine: Engine, at: datetime, _: Path) -> None:
    terminate_subscription(
        engine, "bsub_7", at - timedelta(minutes=15), now=at - timedelta(minutes=15)
    )


def _price_change(engine: Engine, at: datetime, tmp_path: Path) -> None:
    def triple(plan: dict[str, Any]) -> None:  # mistral-small input: $1 -> $3 per 1M tokens
        for f in plan["charges"][0]["filters"]:
            if f["values"] == {"model": ["mistral-small"], "type": ["input"]}:
                f["properties"]["amount"] = "3"

    apply_mistral(engine, tmp_path, plan=triple)


KINDS: list[tuple[str, Callable[[Engine, datetime, Path], None], set[str] | None]] = [
    ("new events", _event, {"bsub_3"}),
    ("a late event", _late_event, {"bsub_4"}),
    ("a void", _void, {"bsub_5"}),
    ("a wallet top-up", _top_up, {"bsub_6"}),
    ("a termination", _termination, {"bsub_7"}),
    ("a price change", _price_change, None),  # None: every subscription on the plan
]


@pytest.mark.parametrize(("kind", "change", "expected"), KINDS, ids=[k[0] for k in KINDS])
def test_each_kind_of_change_enters_the_set(
    many: Engine,
    tmp_path: Path,
    kind: str,
    change: Callable[[Engine, datetime, Path], None],
    expected: set[str] | None,
) -> None:
    at = H0 + timedelta(hours=3)
    change(many, at, tmp_path)
    run_hour(many, at)
    got = members(many, at)
    if expected is None:
        assert len(got) == N + 1, kind
    else:
        assert expected <= got and len(got) <= len(expected) + 1, (kind, got)
    assert_full_cycle_has_nothing_left(many, at)


def test_a_period_boundary_brings_every_subscription_whose_period_ended(many: Engine) -> None:
    at = datetime(2025, 4, 1, 5, tzinfo=UTC)  # every March has ended (acme's New York's too)
    hour = run_hour(many, at)
    assert hour["set"].reasons.get("boundary") == N + 1
    assert hour["snapshots"] == N + 1  # every April period starts its snapshot
    assert_full_cycle_has_nothing_left(many, at)


def test_a_crashed_or_rerun_hour_takes_its_set_again_and_converges(many: Engine) -> None:
    at = H0 + timedelta(hours=1)
    load_rows(many, [tokens("bsub_9", "a", at - timedelta(minutes=5))])
    crashed = run_hour(many, at, complete=False)  # died before the cycle completed
    assert members(many, at) == {"bsub_9"} and crashed["snapshots"] == 1
    load_rows(many, [tokens("bsub_10", "b", at - timedelta(minutes=1))])
    rerun = run_hour(many, at)  # the retry: the same set, and what arrived since
    assert members(many, at) == {"bsub_9", "bsub_10"}
    assert (rerun["snapshots"], rerun["customers"]) == (1, 1)  # bsub_9's work was done
    again = run_hour(many, at)  # a rerun of a completed hour: the same set, nothing to do
    assert members(many, at) == {"bsub_9", "bsub_10"} and again["set"].reasons["rerun"] == 2
    assert (again["snapshots"], again["customers"]) == (0, 0)
    assert_full_cycle_has_nothing_left(many, at)

    # the next hour starts from the completed one: the crash lost nothing
    nxt = run_hour(many, at + timedelta(hours=1))
    assert nxt["set"].subscriptions == 0

    # an hour behind the newest set (a backfill) is a full set: every subscription
    past = run_hour(many, at - timedelta(minutes=30))
    assert past["set"].full
    assert_full_cycle_has_nothing_left(many, at + timedelta(hours=1))


def test_an_hour_after_a_failed_one_covers_its_changes(many: Engine) -> None:
    first = H0 + timedelta(hours=1)
    load_rows(many, [tokens("bsub_11", "a", first - timedelta(minutes=5))])
    fold_pending(many)
    open_change_set(many, first)  # taken, then the hour failed: never completed
    load_rows(many, [tokens("bsub_12", "b", first + timedelta(minutes=5))])
    second = run_hour(many, first + timedelta(hours=1))
    assert members(many, first + timedelta(hours=1)) == {"bsub_11", "bsub_12"}
    assert second["set"].base_as_of == H0
    assert_full_cycle_has_nothing_left(many, first + timedelta(hours=1))


def test_the_mistral_subscription_is_one_of_them(many: Engine) -> None:
    """The catalog's own subscription (with its customer and wallet) is in the first set too."""
    with many.connect() as conn:
        bound = conn.execute(
            text(
                "select b.next_boundary from change_set_bounds b join subscriptions s"
                " on s.id = b.subscription_id where s.external_id = :e"
            ),
            {"e": SUB},
        ).scalar_one()
    # the end of its March, in its customer's timezone
    assert datetime(2025, 3, 31, 23, tzinfo=UTC) < bound < datetime(2025, 4, 1, 12, tzinfo=UTC)


def test_a_change_committed_after_the_set_was_taken_enters_the_next_set(many: Engine) -> None:
    """A transaction open while an hour's set is taken stamps its rows with its own start
    (before the set); it commits after. The next hour still takes it (the base's time is the
    oldest open transaction's start)."""
    first, second = H0 + timedelta(hours=1), H0 + timedelta(hours=2)
    with many.connect() as conn, conn.begin():
        conn.execute(
            text(
                "update customers set timezone = 'UTC', updated_at = now()"
                " where external_id = 'cust_21'"
            )
        )
        assert run_hour(many, first)["set"].subscriptions == 0  # not committed yet: unseen
    assert members(many, second) == set()  # nothing taken yet for the second hour
    run_hour(many, second)
    assert members(many, second) == {"bsub_21"}
    assert_full_cycle_has_nothing_left(many, second)


def test_alerts_are_evaluated_only_where_something_changed(many: Engine) -> None:
    """Usage alerts (evaluated every minute) on 100 of the subscriptions: a pass with nothing
    new rates none; new events on one rate that one, and its crossing triggers once."""
    from tallyflow.tasks.alerts import create_alert, evaluate_alerts

    watched = [f"bsub_{i}" for i in range(1, 101)]
    for sub in watched:
        create_alert(
            many,
            sub,
            {
                "alert_type": "current_usage_amount",
                "code": "spend",
                "thresholds": [{"code": "one", "value": 100}],
            },
        )
    at = H0 + timedelta(minutes=1)
    assert evaluate_alerts(many, at).subscriptions == 100  # new alerts: all of them
    assert evaluate_alerts(many, at + timedelta(minutes=1)).subscriptions == 0
    load_rows(many, [tokens("bsub_42", "x", at, n=2_000_000)])  # $2 > 100 cents
    run = evaluate_alerts(many, at + timedelta(minutes=2))
    assert (run.subscriptions, len(run.triggered)) == (1, 1)
    assert evaluate_alerts(many, at + timedelta(minutes=3)).subscriptions == 0
    # a period boundary: every watched subscription's values start again from 0
    assert evaluate_alerts(many, datetime(2025, 4, 1, 5, tzinfo=UTC)).subscriptions == 100
