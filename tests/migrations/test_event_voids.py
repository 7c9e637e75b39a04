"""Migration 0017 on a filled database: events keep every row (none voided), a void's trail and
mark cannot be changed or undone in the database, and the downgrade gives back 0016's events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from tallyflow.infra import db, migrate
from tallyflow.tasks.corrections.voids import EventKey, void_events
from tests.tasks.rating_fixtures import load_rows

WHEN = datetime(2025, 3, 10, 12, tzinfo=UTC)


def _migrate_to(engine: Engine, revision: str, down: bool = False) -> None:
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def _events(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "select external_subscription_id, transaction_id, id, code, \"timestamp\","
            " properties::text, object_id, row_number from events order by id"))]


def test_upgrade_keeps_events_and_voids_cannot_be_undone(
    scratch_database: Callable[[], str]
) -> None:
    engine = db.get_engine(scratch_database())
    _migrate_to(engine, "0016")
    load_rows(engine, [{"sub": "s1", "txn": f"t{i}", "code": "tokens", "ts": WHEN,
                        "properties": {"tokens": i}} for i in range(3)])
    before = _events(engine)
    _migrate_to(engine, "0017")
    assert _events(engine) == before
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from events where voided_at is not null"
                                 )).scalar_one() == 0
    done = void_events(engine, [EventKey("s1", "t1")], "ops", "sent twice", WHEN)
    assert [str(o.outcome) for o in done.outcomes] == ["voided"]
    for statement in ("update event_voids set reason = 'other'", "delete from event_voids",
                      "update events set voided_at = null where transaction_id = 't1'",
                      "update events set voided_at = now() where transaction_id = 't1'"):
        with pytest.raises(DBAPIError, match="never"), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.begin() as conn:  # an event not voided is not held by the guard
        conn.execute(text("update events set properties = properties"
                          " where transaction_id = 't0'"))
    _migrate_to(engine, "0016", down=True)
    assert _events(engine) == before
    with engine.connect() as conn:
        assert conn.execute(text("select to_regclass('event_voids')")).scalar() is None
