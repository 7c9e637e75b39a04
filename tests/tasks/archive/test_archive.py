"""``tallyflow archive``: finalized history leaves PostgreSQL for Parquet, exactly once, and
nothing that can still bill notices: usage, invoices, wallets and rebuilds of open periods."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem
from sqlalchemy import Engine, text

from tallyflow.infra import failpoints
from tallyflow.tasks.archive import ArchiveRefused, archive_events, read_archive
from tallyflow.tasks.folding import rebuild_states
from tallyflow.tasks.invoicing import lifetime_usage
from tallyflow.tasks.usage import current_usage
from tests.tasks.invoicing.test_invoicing import catalog, ingested_until, invoices, usage_events
from tests.tasks.rating_fixtures import SUB, ingest_events, token_event
from tests.tasks.subscriptions.test_lifecycle import cycle
from tests.tasks.wallets.test_wallets_support import balances, ledger

APRIL = datetime(2025, 4, 1, 4, tzinfo=UTC)  # midnight in New York: March's end
LATER = datetime(2025, 4, 10, tzinfo=UTC)


def _march_closed(engine: Engine, tmp_path: Path) -> None:
    """$31 plan; $8 of usage on 10 March (finalized on 1 April) and $8 on 5 April (open)."""
    catalog(engine, tmp_path, plan={"amount_cents": 3100})
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC), prefix="a")
    usage_events(engine, tmp_path, datetime(2025, 4, 5, 12, tzinfo=UTC), prefix="b")
    ingested_until(engine, datetime(2025, 4, 6, tzinfo=UTC))
    cycle(engine, datetime(2025, 4, 6, tzinfo=UTC))
    [march] = invoices(engine)
    assert march["status"] == "finalized"


def _seen(engine: Engine) -> dict[str, Any]:
    """Everything billing shows, to compare before and after an archive."""
    with engine.connect() as conn:
        states = conn.execute(text(
            "select subscription_id, period_start, events_count, total from usage_states"
            " order by 1, 2")).all()
    # lifetime usage (progressive billing, §20) survives the archive too
    return {"usage": current_usage(engine, SUB, LATER), "invoices": invoices(engine),
            "lifetime": lifetime_usage(engine, SUB, LATER),
            "balances": balances(engine), "ledger": ledger(engine), "states": states}


def _events(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "select transaction_id from events order by transaction_id")).scalars())


def test_archive_moves_finalized_events_and_billing_sees_no_difference(
    engine: Engine, tmp_path: Path
) -> None:
    _march_closed(engine, tmp_path)
    before = _seen(engine)
    fs, root = LocalFileSystem(), str(tmp_path / "archive")
    done = archive_events(engine, APRIL, fs, root)
    assert done.rows == 2 and len(done.files) == 1
    assert _events(engine) == ["b1", "b2"]  # April's stay
    table = pq.read_table(fs.open(done.files[0], "rb"))
    assert sorted(table.column("transaction_id").to_pylist()) == ["a1", "a2"]
    assert table.column("properties").to_pylist()[0].startswith("{")
    assert fs.ls(f"{root}/_tmp", detail=False) == []
    assert _seen(engine) == before
    # a rebuild recomputes the open periods from the events left and keeps March's state
    rebuild_states(engine)
    assert _seen(engine) == before
    # the archived span is closed to new events: a late March event (here a duplicate of an
    # archived one) is rejected with its reason; April is open
    ingest_events(engine, tmp_path, [
        token_event("a1", "2025-03-10T12:00:00Z", 2_000_000),
        token_event("c1", "2025-04-07T12:00:00Z", 1_000_000)])
    with engine.connect() as conn:
        [(reason, message)] = conn.execute(text("select reason, message from rejected_rows"))
    assert reason == "archived_period" and "2025-04-01T04:00:00+00:00" in message
    assert _events(engine) == ["b1", "b2", "c1"]
    # the same horizon again: nothing left to move, not an error
    again = archive_events(engine, APRIL, fs, root)
    assert (again.rows, again.files) == (0, [])


def test_archive_refuses_a_horizon_inside_an_open_period(engine: Engine, tmp_path: Path) -> None:
    _march_closed(engine, tmp_path)
    with pytest.raises(ArchiveRefused, match=f"periods of {SUB} before it are not on a "
                                             "finalized invoice"):
        archive_events(engine, datetime(2025, 4, 5, tzinfo=UTC), LocalFileSystem(),
                       str(tmp_path / "archive"))
    assert len(_events(engine)) == 4
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from event_archives")).scalar_one() == 0


@pytest.mark.parametrize("point", ["archive.after_write", "archive.before_commit",
                                   "archive.after_commit"])
def test_a_crash_anywhere_then_a_rerun_archives_each_event_once(
    engine: Engine, tmp_path: Path, point: str
) -> None:
    _march_closed(engine, tmp_path)
    fs, root = LocalFileSystem(), str(tmp_path / "archive")
    failpoints.arm(f"{point}=1:raise")
    try:
        with pytest.raises(failpoints.FailpointHit):
            archive_events(engine, APRIL, fs, root, chunk_rows=1)
    finally:
        failpoints.arm(None)
    done = archive_events(engine, APRIL, fs, root, chunk_rows=1)
    assert done.removed_temporary == (0 if point == "archive.after_commit" else 1)
    assert done.finished_moves == (1 if point == "archive.after_commit" else 0)
    with engine.connect() as conn:
        urls = list(conn.execute(text(
            "select url from event_archives where rows > 0 and moved order by id")).scalars())
    archived = sorted(read_archive(fs, urls).column("transaction_id").to_pylist())
    assert archived == ["a1", "a2"]  # each once, in the recorded files
    assert _events(engine) == ["b1", "b2"]
    assert fs.ls(f"{root}/_tmp", detail=False) == []
