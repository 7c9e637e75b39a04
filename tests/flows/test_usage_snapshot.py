"""A real Prefect run of ``usage-snapshot``: snapshot rows, idempotent rerun, change detection,
``latest_usage`` for the wallet flow."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, text

from tallyflow.flows.usage_snapshot import usage_snapshot
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.summaries import UsageSnapshotSummary
from tallyflow.tasks.usage.snapshot_reads import latest_usage
from tests.tasks.rating_fixtures import SUB, apply_mistral, ingest_events, token_event

HOUR = datetime(2025, 3, 15, 10, tzinfo=UTC)


def _snapshots(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "select external_subscription_id, as_of, amount_cents, fold_watermark"
                " from usage_snapshots order by as_of"
            )
        ).all()


def test_usage_snapshot_flow(engine: Engine, tmp_path: Path, prefect_harness: None) -> None:
    apply_mistral(engine, tmp_path)
    ingest_events(engine, tmp_path, [token_event("a", "2025-03-10T00:00:00Z", 2_000_000)])

    first = usage_snapshot(as_of=HOUR)
    assert first["snapshots"] == 1 and first["fold"]["folded"] == 1
    assert mismatches(first, UsageSnapshotSummary) == []
    assert [(s[0], s[2]) for s in _snapshots(engine)] == [(SUB, 200)]
    # the run made its month's partition (and the next) before writing: the row is in it
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from usage_snapshots_2025_03")).scalar() == 1
        assert conn.execute(text("select count(*) from usage_snapshots_2025_04")).scalar() == 0
        assert conn.execute(text("select count(*) from usage_snapshots_default")).scalar() == 0

    # Rerun of the same hour: its own snapshot is there and current (same fold watermark,
    # same catalog), so nothing is priced again; the hour is still reported from its row.
    again = usage_snapshot(as_of=HOUR)
    assert again["snapshots"] == 0
    assert (again["subscriptions_as_of"], again["amount_cents_as_of"]) == (1, 200)
    assert len(_snapshots(engine)) == 1

    # New events: the next hour snapshots again; the same hour forced recomputes in place.
    ingest_events(engine, tmp_path, [token_event("b", "2025-03-10T01:00:00Z", 1)])
    forced = usage_snapshot(as_of=HOUR, subscriptions=[SUB])
    assert forced["snapshots"] == 1
    rows = _snapshots(engine)
    assert len(rows) == 1 and rows[0][2] == 300
    later = HOUR.replace(hour=11)
    standing = usage_snapshot(as_of=later)
    assert standing["snapshots"] == 0  # nothing new since the forced run: fold-based, no work
    assert (standing["subscriptions_as_of"], standing["amount_cents_as_of"]) == (1, 300)
    ingest_events(engine, tmp_path, [token_event("c", "2025-03-10T02:00:00Z", 5)])
    assert usage_snapshot(as_of=later)["snapshots"] == 1
    assert [r[2] for r in _snapshots(engine)] == [300, 300]

    latest = latest_usage(engine, SUB, later)
    assert latest is not None
    assert latest["as_of"] == later and latest["amount_cents"] == 300
    assert latest["usage"]["charges_usage"][0]["units"] == "2000006"
    with engine.connect() as conn:
        amounts = conn.execute(text("select as_of, amount_cents from usage_amounts")).all()
    assert amounts == [(later, 300)]
    # A past hour whose own row predates the last fold is recomputed (its own row, 300),
    # once: a second rerun finds it current.
    past = usage_snapshot(as_of=HOUR)
    assert (past["snapshots"], past["amount_cents_as_of"]) == (1, 300)
    assert usage_snapshot(as_of=HOUR)["snapshots"] == 0
    assert [r[3] for r in _snapshots(engine)][0] == [r[3] for r in _snapshots(engine)][1]
    # An older hour rerun does not move the per-period amount backwards.
    usage_snapshot(as_of=HOUR, subscriptions=[SUB])
    with engine.connect() as conn:
        assert conn.execute(text("select as_of from usage_amounts")).scalar_one() == later
    assert latest_usage(engine, SUB, datetime(2025, 5, 1, tzinfo=UTC)) is None
