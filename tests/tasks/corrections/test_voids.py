"""Voiding events against real Postgres: the event stays stored and marked, usage and snapshots
are re-rated and the wallet gets exactly one correction; reruns, resends and concurrent voids
converge; refusals (finalized invoice, billed in advance, archived, unknown) change nothing.

The Mistral catalog (customer in New York, monthly calendar plan): ``usage_events`` stores two
events, 2M small input tokens ($2, ``<prefix>1``) and 2M small output tokens ($6,
``<prefix>2``).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from tallyflow.infra import failpoints
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.results import EventStatus
from tallyflow.models.voids import VoidOutcome
from tallyflow.tasks.archive import archive_events
from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.corrections.voids import (
    EventKey,
    VoidError,
    event_status,
    keys_of_object,
    void_and_rerate,
    void_events,
)
from tallyflow.tasks.folding import fold_pending, rebuild_states
from tallyflow.tasks.usage import current_usage
from tests.tasks.archive.test_archive import _march_closed
from tests.tasks.invoicing.test_advance_charges import cycle as advance_cycle
from tests.tasks.invoicing.test_invoicing import catalog, invoices, usage_events
from tests.tasks.rating_fixtures import SUB, ingest_events, load_rows, token_event
from tests.tasks.subscriptions.test_lifecycle import cycle
from tests.tasks.usage.test_rating_state import AT as STATE_AT
from tests.tasks.usage.test_rating_state import SUBS as STATE_SUBS
from tests.tasks.usage.test_rating_state import _catalog as state_catalog
from tests.tasks.usage.test_rating_state import _row as state_row
from tests.tasks.usage.test_rating_state import events_st as state_events
from tests.tasks.wallets.test_wallets_support import assert_balances_match_ledger, balances

NOW = datetime(2025, 3, 26, 10, tzinfo=UTC)
WALLET = "acme/prepaid_credits"


def key(txn: str) -> EventKey:
    return EventKey(SUB, txn)


def wallet_rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "select id, direction, source, amount_cents, note from wallet_transactions"
            " order by id"))]


def events_stored(engine: Engine) -> list[tuple[str, bool]]:
    with engine.connect() as conn:
        return [(r.transaction_id, r.voided_at is not None) for r in conn.execute(text(
            "select transaction_id, voided_at from events order by transaction_id"))]


def _used(engine: Engine, tmp_path: Path) -> None:
    """$8 of usage on 10 March and $8 on 25 March, deducted by the 26 March hour."""
    catalog(engine, tmp_path, plan={"amount_cents": 3100})
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC), prefix="a")
    usage_events(engine, tmp_path, datetime(2025, 3, 25, 12, tzinfo=UTC), prefix="b")
    cycle(engine, NOW)
    assert balances(engine)[WALLET]["cents"] == 12500 - 1600


def test_a_void_rerates_and_posts_exactly_one_wallet_correction(
    engine: Engine, tmp_path: Path
) -> None:
    _used(engine, tmp_path)
    before = wallet_rows(engine)
    at = NOW + timedelta(minutes=20)
    done = void_and_rerate(engine, [key("b2")], "ops@example", "sent twice by the proxy", at)
    assert [(o.key.transaction_id, o.outcome) for o in done.outcomes] == [
        ("b2", VoidOutcome.VOIDED)]
    assert done.events_refolded == 3  # the subscription's other events, folded again
    rerate = done.rerate
    assert rerate is not None and rerate.snapshots == 1
    assert rerate.periods == [{"external_subscription_id": SUB,
                               "period_start": "2025-03-01T05:00:00+00:00",
                               "as_of": at.isoformat()}]
    # exactly one new ledger row, an inbound usage correction of the $6; nothing deleted
    after = wallet_rows(engine)
    assert after[: len(before)] == before
    [correction] = after[len(before):]
    assert correction[1:4] == ("inbound", "usage", 600)
    assert (rerate.corrections, rerate.credited_back_cents, rerate.deducted_cents) == (1, 600, 0)
    assert balances(engine)[WALLET]["cents"] == 12500 - 1000
    assert_balances_match_ledger(engine)
    # usage and the snapshot agree: $10 minus the voided $6
    assert current_usage(engine, SUB, at)["amount_cents"] == 1000
    with engine.connect() as conn:
        snapshot = conn.execute(text(
            "select amount_cents from usage_snapshots where as_of = :at"), {"at": at}).scalar()
        amount = conn.execute(text("select as_of, amount_cents from usage_amounts")).one()
    assert snapshot == 1000 and tuple(amount) == (at, 1000)
    # the event stays stored, marked, with its trail
    assert events_stored(engine) == [("a1", False), ("a2", False), ("b1", False), ("b2", True)]
    shown = event_status(engine, key("b2"))
    assert mismatches(shown, EventStatus) == []
    assert shown["status"] == "voided" and shown["voided_at"] == at.isoformat()
    assert [h["event"] for h in shown["history"]] == ["ingested", "voided"]
    assert shown["history"][1] | {"at": None} == {
        "at": None, "event": "voided", "actor": "ops@example",
        "reason": "sent twice by the proxy"}
    assert event_status(engine, key("b1"))["status"] == "accepted"
    # the next hours and a full rebuild change nothing more
    cycle(engine, NOW + timedelta(hours=1))
    rebuild_states(engine)
    cycle(engine, NOW + timedelta(hours=2))
    assert wallet_rows(engine) == after
    assert current_usage(engine, SUB, NOW + timedelta(hours=2))["amount_cents"] == 1000


def test_a_void_again_is_a_no_op_and_the_key_stays_taken(
    engine: Engine, tmp_path: Path
) -> None:
    _used(engine, tmp_path)
    at = NOW + timedelta(minutes=20)
    void_and_rerate(engine, [key("b2")], "ops", "sent twice", at)
    ledger = wallet_rows(engine)
    again = void_and_rerate(engine, [key("b2")], "someone-else", "another reason",
                            at + timedelta(minutes=5))
    assert [o.outcome for o in again.outcomes] == [VoidOutcome.ALREADY_VOIDED]
    assert again.voided == [] and again.refused == []
    assert again.outcomes[0].voided_at == at  # the first void stands
    assert again.rerate is not None and again.rerate.corrections == 0
    assert wallet_rows(engine) == ledger
    with engine.connect() as conn:
        assert conn.execute(text("select actor, reason from event_voids")).all() == [
            ("ops", "sent twice")]
    # a resend of the voided key is a duplicate (same content) or a conflicting duplicate
    # (new content): never billed. The recipe is a new transaction_id.
    ingest_events(engine, tmp_path, [
        token_event("b2", "2025-03-25T12:00:00Z", 2_000_000, kind="output"),
        token_event("b2", "2025-03-25T12:00:00Z", 1_000_000, kind="output")])
    cycle(engine, NOW + timedelta(hours=1))
    assert current_usage(engine, SUB, NOW + timedelta(hours=1))["amount_cents"] == 1000
    assert wallet_rows(engine) == ledger
    ingest_events(engine, tmp_path, [
        token_event("b2-fixed", "2025-03-25T12:00:00Z", 1_000_000, kind="output")])
    cycle(engine, NOW + timedelta(hours=2))
    assert current_usage(engine, SUB, NOW + timedelta(hours=2))["amount_cents"] == 1300
    assert balances(engine)[WALLET]["cents"] == 12500 - 1300
    assert_balances_match_ledger(engine)


def test_refused_voids_say_why_and_change_nothing(engine: Engine, tmp_path: Path) -> None:
    _march_closed(engine, tmp_path)  # March finalized (a1, a2), April open (b1, b2)
    ledger = wallet_rows(engine)
    done = void_and_rerate(engine, [key("a1"), key("nope"), key("b1")], "ops", "test data",
                           datetime(2025, 4, 6, 1, tzinfo=UTC))
    assert [(o.key.transaction_id, o.outcome) for o in done.outcomes] == [
        ("a1", VoidOutcome.INVOICE_FINALIZED), ("nope", VoidOutcome.NOT_FOUND),
        ("b1", VoidOutcome.VOIDED)]
    assert "credit note" in (done.refused[0].message or "")
    assert events_stored(engine) == [("a1", False), ("a2", False), ("b1", True), ("b2", False)]
    assert event_status(engine, key("a1"))["status"] == "on_finalized_invoice"
    # the refused keys moved nothing; b1's $2 in April came back as one correction
    [correction] = wallet_rows(engine)[len(ledger):]
    assert correction[1:4] == ("inbound", "usage", 200)
    # archived March: its events are refused as archived, and voided events are not archived
    fs, root = LocalFileSystem(), str(tmp_path / "archive")
    archive_events(engine, datetime(2025, 4, 1, 4, tzinfo=UTC), fs, root)
    assert [o.outcome for o in void_events(engine, [key("a2")], "ops", "x").outcomes] == [
        VoidOutcome.ARCHIVED]
    archived = event_status(engine, key("a2"))
    assert archived["status"] == "archived" and mismatches(archived, EventStatus) == []
    with pytest.raises(VoidError, match="no event"):
        event_status(engine, key("nope"))
    with pytest.raises(VoidError, match="reason"):
        void_events(engine, [key("b2")], "ops", "  ")


def test_an_event_billed_in_advance_is_refused(engine: Engine, tmp_path: Path) -> None:
    day = datetime(2025, 3, 10, 12, tzinfo=UTC)
    catalog(engine, tmp_path, charge={"pay_in_advance": True})
    ingest_events(engine, tmp_path, [token_event("e1", day.isoformat(), 2_000_000)])
    advance_cycle(engine, day + timedelta(hours=1))
    ingest_events(engine, tmp_path, [token_event("e2", day.isoformat(), 2_000_000)])
    done = void_events(engine, [key("e1"), key("e2")], "ops", "test", day + timedelta(hours=1))
    assert [o.outcome for o in done.outcomes] == [VoidOutcome.BILLED_IN_ADVANCE,
                                                  VoidOutcome.VOIDED]
    assert event_status(engine, key("e1"))["status"] == "billed_in_advance"
    # the voided event, not billed yet, is never billed in advance
    advance_cycle(engine, day + timedelta(hours=2))
    with engine.connect() as conn:
        assert conn.execute(text("select transaction_id from advance_fees")).scalars().all() == [
            "e1"]


def test_a_bad_batch_is_voided_by_object_and_rows(engine: Engine, tmp_path: Path) -> None:
    _used(engine, tmp_path)
    with engine.connect() as conn:
        url = conn.execute(text(
            "select o.path from ingest_objects o join events e on e.object_id = o.id"
            " where e.transaction_id = 'b1'")).scalar_one()
    assert keys_of_object(engine, url) == [key("b1"), key("b2")]
    assert keys_of_object(engine, url, [(2, 2)]) == [key("b2")]
    with pytest.raises(VoidError, match="no ingested object"):
        keys_of_object(engine, url + "x")
    done = void_and_rerate(engine, keys_of_object(engine, url), "ops", "bad batch",
                           NOW + timedelta(minutes=5))
    assert len(done.voided) == 2
    assert done.rerate is not None and done.rerate.credited_back_cents == 800
    assert current_usage(engine, SUB, NOW + timedelta(minutes=5))["amount_cents"] == 800


def test_an_ended_period_not_yet_finalized_is_rerated_at_its_own_moment(
    engine: Engine, tmp_path: Path
) -> None:
    """March ended, its invoice still a draft (no ingest run past the end): a void in March
    corrects March's wallet amount, and the draft follows at the next close."""
    _used(engine, tmp_path)
    cycle(engine, datetime(2025, 4, 1, 8, tzinfo=UTC))
    [draft] = invoices(engine)
    assert draft["status"] == "draft" and draft["fees_amount_cents"] == 3100 + 1600
    with engine.connect() as conn:
        march_as_of = conn.execute(text(
            "select as_of from usage_amounts where period_start < '2025-03-02'")).scalar_one()
    done = void_and_rerate(engine, [key("a2")], "ops", "test", datetime(2025, 4, 2, tzinfo=UTC))
    assert done.rerate is not None
    assert [p["as_of"] for p in done.rerate.periods] == [march_as_of.isoformat()]
    assert (done.rerate.corrections, done.rerate.credited_back_cents) == (1, 600)
    cycle(engine, datetime(2025, 4, 2, 1, tzinfo=UTC))
    [draft] = invoices(engine)
    assert draft["fees_amount_cents"] == 3100 + 1000


def test_concurrent_voids_of_the_same_event_converge(engine: Engine, tmp_path: Path) -> None:
    _used(engine, tmp_path)
    ledger = wallet_rows(engine)
    results: list[Any] = []
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def run(actor: str) -> None:
        try:
            start.wait()
            results.append(void_and_rerate(engine, [key("b2"), key("a1")], actor, "race",
                                           NOW + timedelta(minutes=20)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"actor{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    start.wait()
    fold_pending(engine)  # an hourly fold racing them
    for t in threads:
        t.join()
    assert errors == []
    outcomes = sorted(tuple(str(o.outcome) for o in r.outcomes) for r in results)
    assert outcomes == [("already_voided", "already_voided"), ("voided", "voided")]
    added = wallet_rows(engine)[len(ledger):]
    assert [r[1:4] for r in added] == [("inbound", "usage", 800)]
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from event_voids")).scalar_one() == 2
    assert current_usage(engine, SUB, NOW + timedelta(hours=1))["amount_cents"] == 800
    assert_balances_match_ledger(engine)


# --------------------------------------------------------------------------------------------
# Every aggregation: a void takes back exactly its events (folded or not yet folded)
# --------------------------------------------------------------------------------------------


def _reset_all(engine: Engine) -> None:
    with engine.begin() as conn:  # truncate fires no row trigger: the trail's guard holds
        conn.execute(text(
            "truncate usage_states, usage_marks, usage_folds, usage_snapshots, usage_amounts,"
            " events, event_voids, rejected_rows, ingest_objects restart identity cascade"))


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(events=st.lists(state_events, min_size=1, max_size=24), data=st.data())
def test_a_void_takes_back_exactly_its_events_for_every_aggregation(
    engine: Engine, tmp_path_factory: pytest.TempPathFactory, events: list[dict[str, Any]],
    data: st.DataObject,
) -> None:
    """Count, sum, max, latest, unique count, weighted sum, recurring and prorated charges,
    metric and charge filters, pricing groups: usage after voiding some events (some folded,
    some not yet) equals usage of the same events loaded without them."""
    with engine.connect() as conn:
        has_catalog = conn.execute(text("select count(*) from subscriptions")).scalar_one()
    if not has_catalog:
        result = apply_catalog(engine, [state_catalog(tmp_path_factory.mktemp("catalog"),
                                                      wide_filters=True)])
        assert result.ok, result.errors
    _reset_all(engine)
    rows = [state_row(n, e) for n, e in enumerate(events)]
    split = data.draw(st.integers(0, len(rows)), label="folded before the void")
    voided = set(data.draw(st.sets(st.integers(0, len(rows) - 1)), label="voided"))
    load_rows(engine, rows[:split])
    fold_pending(engine)
    if split < len(rows):
        load_rows(engine, rows[split:])
    void_events(engine, [EventKey(rows[i]["sub"], rows[i]["txn"]) for i in sorted(voided)],
                "test", "differential", STATE_AT)
    pending = {sub: current_usage(engine, sub, STATE_AT) for sub in STATE_SUBS}
    fold_pending(engine)
    folded = {sub: current_usage(engine, sub, STATE_AT) for sub in STATE_SUBS}
    assert folded == pending
    rebuild_states(engine)
    assert {sub: current_usage(engine, sub, STATE_AT) for sub in STATE_SUBS} == folded

    _reset_all(engine)
    load_rows(engine, [r for i, r in enumerate(rows) if i not in voided])
    fold_pending(engine)
    assert {sub: current_usage(engine, sub, STATE_AT) for sub in STATE_SUBS} == folded


def test_a_crash_before_the_commit_voids_nothing(engine: Engine, tmp_path: Path) -> None:
    _used(engine, tmp_path)
    ledger = wallet_rows(engine)
    failpoints.arm("voids.before_commit=1:raise")
    try:
        with pytest.raises(failpoints.FailpointHit):
            void_and_rerate(engine, [key("b2")], "ops", "x", NOW + timedelta(minutes=20))
    finally:
        failpoints.arm(None)
    assert events_stored(engine)[3] == ("b2", False)
    assert wallet_rows(engine) == ledger
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from event_voids")).scalar_one() == 0
    assert current_usage(engine, SUB, NOW + timedelta(minutes=20))["amount_cents"] == 1600


@pytest.mark.parametrize("finish", ["rerun", "hourly"])
def test_a_crash_after_the_void_commit_converges(
    engine: Engine, tmp_path: Path, finish: str
) -> None:
    """Killed between the void's commit and the wallet correction: the same void again, or
    the next billing hour, posts the one correction."""
    _used(engine, tmp_path)
    ledger = wallet_rows(engine)
    at = NOW + timedelta(minutes=20)
    failpoints.arm("voids.after_rerate_snapshot=1:raise")
    try:
        with pytest.raises(failpoints.FailpointHit):
            void_and_rerate(engine, [key("b2")], "ops", "x", at)
    finally:
        failpoints.arm(None)
    assert wallet_rows(engine) == ledger  # voided and snapshotted, not yet corrected
    if finish == "rerun":
        again = void_and_rerate(engine, [key("b2")], "ops", "x", at)
        assert [o.outcome for o in again.outcomes] == [VoidOutcome.ALREADY_VOIDED]
    else:
        cycle(engine, NOW + timedelta(hours=1))
    [correction] = wallet_rows(engine)[len(ledger):]
    assert correction[1:4] == ("inbound", "usage", 600)
    cycle(engine, NOW + timedelta(hours=2))
    assert len(wallet_rows(engine)) == len(ledger) + 1
    assert_balances_match_ledger(engine)
