"""``tallyflow archive`` and snapshot months: a finalized month's snapshots leave PostgreSQL by a
partition swap, exactly once, keeping every snapshot something names (usage_amounts, wallet
positions); billing, the hourly path and its reports see no difference."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem
from sqlalchemy import Engine, text

from tallyflow.infra import failpoints
from tallyflow.infra.partitions import COLUMNS
from tallyflow.tasks.archive import ArchiveRefused, archive_snapshots, read_archive
from tallyflow.tasks.usage import snapshot_subscriptions, usage_as_of
from tests.tasks.archive.test_archive import APRIL, _seen
from tests.tasks.invoicing.test_invoicing import catalog, ingested_until, invoices, usage_events
from tests.tasks.subscriptions.test_lifecycle import cycle

MARCH_HOURS = [datetime(2025, 3, 10, 13, tzinfo=UTC), datetime(2025, 3, 20, 13, tzinfo=UTC)]


def _march_snapshots(engine: Engine, tmp_path: Path) -> None:
    """Two March snapshots (the second is the period's last word) and March finalized."""
    catalog(engine, tmp_path, plan={"amount_cents": 3100})
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC), prefix="a")
    ingested_until(engine, MARCH_HOURS[0])
    cycle(engine, MARCH_HOURS[0])
    usage_events(engine, tmp_path, datetime(2025, 3, 20, 12, tzinfo=UTC), prefix="c")
    ingested_until(engine, MARCH_HOURS[1])
    cycle(engine, MARCH_HOURS[1])
    usage_events(engine, tmp_path, datetime(2025, 4, 5, 12, tzinfo=UTC), prefix="b")
    ingested_until(engine, datetime(2025, 4, 6, tzinfo=UTC))
    cycle(engine, datetime(2025, 4, 6, tzinfo=UTC))
    assert invoices(engine)[0]["status"] == "finalized"


def _snapshots(engine: Engine) -> list[tuple[Any, ...]]:
    query = f"select {COLUMNS} from usage_snapshots order by id"  # noqa: S608 - fixed names
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(query))]


def _named(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(text(
            "select snapshot_id from usage_amounts union"
            " select snapshot_id from wallet_usage_positions where snapshot_id is not null"
        )).scalars())


def _archived(engine: Engine, fs: Any) -> list[int]:
    with engine.connect() as conn:
        urls = list(conn.execute(text(
            "select url from snapshot_archives where moved order by id")).scalars())
    return sorted(read_archive(fs, urls).column("id").to_pylist()) if urls else []


def test_a_finalized_month_leaves_but_what_is_named_stays(engine: Engine, tmp_path: Path) -> None:
    _march_snapshots(engine, tmp_path)
    everything = _snapshots(engine)
    march = [s for s in everything if s[5] < datetime(2025, 4, 1, tzinfo=UTC)]
    named = _named(engine)
    assert len(march) >= 2 and {s[0] for s in march} - named  # some March rows are not named
    before, last_hour = _seen(engine), usage_as_of(engine, MARCH_HOURS[1])
    fs, root = LocalFileSystem(), str(tmp_path / "archive")

    done = archive_snapshots(engine, APRIL, fs, root)
    assert done.months == ["2025-03"] and len(done.files) == 1
    leaving = [s for s in march if s[0] not in named]
    assert done.rows == len(leaving) and done.kept == len(march) - len(leaving)
    left = _snapshots(engine)
    assert left == [s for s in everything if s not in leaving]  # named ones and April stay
    # the file holds exactly the rows that left, column for column (numerics and JSON as text)
    table = read_archive(fs, done.files).to_pylist()
    assert [r["id"] for r in table] == [s[0] for s in leaving]
    assert table[0]["usage"].startswith("{") and table[0]["amount_cents"] == str(leaving[0][9])
    assert table[0]["as_of"] == leaving[0][5]
    assert fs.ls(f"{root}/_tmp", detail=False) == []
    # billing sees no difference; nor does the report of the month's last hour
    assert _seen(engine) == before
    assert usage_as_of(engine, MARCH_HOURS[1]) == last_hour
    # the hourly path goes on: a new hour writes, a rerun of an archived hour writes again
    cycle(engine, datetime(2025, 4, 7, tzinfo=UTC))
    snapshot_subscriptions(engine, [left[0][1]], MARCH_HOURS[0])
    assert len(_snapshots(engine)) == len(left) + 1
    # the same horizon again: only what the rerun just wrote (not named) leaves
    again = archive_snapshots(engine, APRIL, fs, root)
    assert again.rows == 1 and again.kept == done.kept
    assert len(_archived(engine, fs)) == len(leaving) + 1


def test_archive_refuses_a_horizon_inside_an_open_period(engine: Engine, tmp_path: Path) -> None:
    _march_snapshots(engine, tmp_path)
    everything = _snapshots(engine)
    with pytest.raises(ArchiveRefused):
        archive_snapshots(engine, datetime(2025, 5, 1, tzinfo=UTC), LocalFileSystem(),
                          str(tmp_path / "archive"))
    assert _snapshots(engine) == everything


@pytest.mark.parametrize("point", ["archive.snapshots_after_write",
                                   "archive.snapshots_before_commit",
                                   "archive.snapshots_after_commit"])
def test_a_crash_anywhere_then_a_rerun_archives_each_snapshot_once(
    engine: Engine, tmp_path: Path, point: str
) -> None:
    _march_snapshots(engine, tmp_path)
    everything = {s[0] for s in _snapshots(engine)}
    fs, root = LocalFileSystem(), str(tmp_path / "archive")
    failpoints.arm(f"{point}=1:raise")
    try:
        with pytest.raises(failpoints.FailpointHit):
            archive_snapshots(engine, APRIL, fs, root, chunk_rows=1)
    finally:
        failpoints.arm(None)
    done = archive_snapshots(engine, APRIL, fs, root, chunk_rows=1)
    committed = point == "archive.snapshots_after_commit"
    assert done.finished_moves == (1 if committed else 0)
    assert done.removed_temporary == (0 if committed else 1)
    in_table = {s[0] for s in _snapshots(engine)}
    archived = _archived(engine, fs)
    assert len(archived) == len(set(archived)) and not in_table & set(archived)
    assert in_table | set(archived) == everything and archived
    assert fs.ls(f"{root}/_tmp", detail=False) == []
