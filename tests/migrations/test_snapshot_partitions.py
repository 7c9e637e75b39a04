"""Migration 0015 on a filled database: every snapshot survives the move into monthly
partitions (and back), amounts name their snapshot by its whole key, ids keep growing; the
hourly run makes the partitions it needs and empties the default partition into them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from sqlalchemy import Engine, text

from tallyflow.infra import db, migrate
from tallyflow.infra.partitions import COLUMNS, month_partitions
from tallyflow.tasks.usage import snapshot_subscriptions
from tallyflow.tasks.usage.partitions import ensure_snapshot_partitions
from tests.tasks.invoicing.test_invoicing import catalog, ingested_until, usage_events
from tests.tasks.subscriptions.test_lifecycle import cycle

HOURS = [datetime(2025, 3, 10, 13, tzinfo=UTC), datetime(2025, 3, 20, tzinfo=UTC),
         datetime(2025, 4, 6, tzinfo=UTC)]


def _downgrade(engine: Engine, revision: str) -> None:
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def _rows(engine: Engine) -> tuple[list[tuple], list[tuple]]:
    with engine.connect() as conn:
        query = f"select {COLUMNS} from usage_snapshots order by id"  # noqa: S608 - fixed names
        snapshots = conn.execute(text(query)).all()
        amounts = conn.execute(text(
            "select subscription_id, period_start, as_of, amount_cents, snapshot_id"
            " from usage_amounts order by 1, 2")).all()
    return [tuple(r) for r in snapshots], [tuple(r) for r in amounts]


def _filled(engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path)
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC), prefix="a")
    usage_events(engine, tmp_path, datetime(2025, 4, 5, 12, tzinfo=UTC), prefix="b")
    ingested_until(engine, datetime(2025, 4, 6, tzinfo=UTC))
    for at in HOURS:
        cycle(engine, at)


def test_upgrade_of_a_filled_database_keeps_every_row(
    scratch_database: Callable[[], str], tmp_path: Path
) -> None:
    engine = db.get_engine(scratch_database())
    migrate.upgrade(engine)
    _filled(engine, tmp_path)
    _downgrade(engine, "0014")  # back to one table, every row copied back
    with engine.connect() as conn:
        assert conn.execute(text(
            "select relkind from pg_class where relname = 'usage_snapshots'")).scalar() == "r"
    snapshots, amounts = _rows(engine)
    assert len(snapshots) >= 2 and len(amounts) == 2
    assert {s[5].month for s in snapshots} == {3, 4}

    migrate.upgrade(engine)
    assert _rows(engine) == (snapshots, amounts)
    with engine.connect() as conn:
        months = month_partitions(conn)
        in_default = conn.execute(text("select count(*) from usage_snapshots_default")).scalar_one()
        named = conn.execute(text(
            "select count(*) from usage_amounts a join usage_snapshots s"
            " on (s.id, s.as_of) = (a.snapshot_id, a.snapshot_as_of)")).scalar_one()
    assert {datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC)} <= set(months)
    assert in_default == 0 and named == len(amounts)
    # the sequence continues after the copied ids
    snapshot_subscriptions(engine, [snapshots[0][1]], datetime(2025, 4, 6, 1, tzinfo=UTC))
    after, _ = _rows(engine)
    assert len(after) > len(snapshots)
    assert min(s[0] for s in after[len(snapshots):]) > max(s[0] for s in snapshots)


def test_the_hourly_run_makes_its_months_and_files_rows_waiting_in_the_default(
    engine: Engine, tmp_path: Path
) -> None:
    with engine.begin() as conn:  # the months an earlier test's flow may have made (empty)
        for month in ("2025_03", "2025_04", "2025_05"):
            conn.execute(text(f"drop table if exists usage_snapshots_{month}"))
    _filled(engine, tmp_path)  # snapshots written without the flow: March/April 2025 have no
    with engine.connect() as conn:  # partition, so they wait in the default partition
        made = month_partitions(conn)
        waiting = conn.execute(text("select count(*) from usage_snapshots_default")).scalar_one()
    before, amounts = _rows(engine)
    assert datetime(2025, 3, 1, tzinfo=UTC) not in made and waiting == len(before)

    created = ensure_snapshot_partitions(engine, datetime(2025, 4, 6, tzinfo=UTC))
    assert {"usage_snapshots_2025_03", "usage_snapshots_2025_04",
            "usage_snapshots_2025_05"} <= set(created)
    assert ensure_snapshot_partitions(engine, datetime(2025, 4, 6, tzinfo=UTC)) == []
    assert _rows(engine) == (before, amounts)
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from usage_snapshots_default")).scalar_one() == 0
        assert conn.execute(text(
            "select count(*) from usage_snapshots_2025_03")).scalar_one() >= 1
