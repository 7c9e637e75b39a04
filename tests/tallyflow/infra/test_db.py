from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, create_engine, inspect, text

from tallyflow.infra import db, migrate
from tallyflow.models.tables import metadata
from tests.migrations.test_schema_drift import PARTITION_NAME


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql://u:p@h:5433/d", "postgresql+psycopg://u:p@h:5433/d"),
        ("postgresql+psycopg2://u@h/d", "postgresql+psycopg://u@h/d"),
    ],
)
def test_normalise_url_pins_psycopg3(given: str, expected: str) -> None:
    assert db.normalise_url(given) == expected


def test_normalise_url_refuses_other_databases() -> None:
    with pytest.raises(ValueError, match="needs PostgreSQL"):
        db.normalise_url("sqlite:///x.db")


def test_the_session_database_is_at_head(engine: Engine) -> None:
    head = migrate.head_revision()
    assert head and migrate.current_revision(engine) == head


def test_ensure_schema_migrates_an_empty_database_then_does_nothing(
    empty_database: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert migrate.current_revision(empty_database) is None
    assert "events" not in inspect(empty_database).get_table_names()
    migrate.ensure_schema(empty_database)
    assert migrate.current_revision(empty_database) == migrate.head_revision()
    tables = {t for t in inspect(empty_database).get_table_names()
              if not PARTITION_NAME.fullmatch(t)}  # usage_snapshots' months (migration 0015)
    assert tables == set(metadata.tables) | {"alembic_version"}
    # A new process (nothing remembered) checks again and finds nothing to do.
    monkeypatch.setattr(migrate, "_upgraded", set())
    with empty_database.begin() as conn:
        conn.execute(text(
            "insert into customers (external_id, document, digest) values ('kept', '{}', 'd')"
        ))
    migrate.ensure_schema(empty_database)
    with empty_database.connect() as conn:
        assert conn.execute(text("select count(*) from alembic_version")).scalar_one() == 1
        assert conn.execute(text("select external_id from customers")).scalars().all() == ["kept"]


def test_workers_starting_at_once_migrate_once(
    empty_database: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each worker has its own engine and sees the schema missing; the advisory lock makes the
    second wait for the first and then find its work done."""
    monkeypatch.setattr(migrate, "_upgraded", set())
    url = empty_database.url
    # A lock wait that never ends fails the test instead of hanging it.
    engines = [
        create_engine(url, connect_args={"options": "-c lock_timeout=20s"}) for _ in range(3)
    ]
    barrier = threading.Barrier(len(engines))

    def start(engine: Engine) -> str | None:
        barrier.wait()
        migrate.upgrade(engine)
        return migrate.current_revision(engine)

    try:
        with ThreadPoolExecutor(len(engines)) as pool:
            revisions = list(pool.map(start, engines))
    finally:
        for engine in engines:
            engine.dispose()
    assert revisions == [migrate.head_revision()] * len(engines)


@pytest.mark.parametrize(
    ("version_num", "text", "supported"),
    [
        (90624, "9.6.24", False),
        (100023, "10.23", False),
        (130016, "13.16", False),
        (140000, "14.0", True),
        (140013, "14.13", True),
        (150004, "15.4", True),
        (170002, "17.2", True),
        (180000, "18.0", True),
    ],
)
def test_server_version_check(version_num: int, text: str, supported: bool) -> None:
    assert db.describe_version(version_num) == text
    if supported:
        db.check_server_version(version_num)
    else:
        with pytest.raises(db.UnsupportedServer) as info:
            db.check_server_version(version_num)
        message = str(info.value)
        assert message == (f"PostgreSQL {text} is not supported: Tallyflow needs PostgreSQL 14 "
                           "or later (hint: upgrade the server, or set TALLYFLOW_DATABASE_URL "
                           "to a newer one)")
        assert "\n" not in message


def test_the_real_server_is_checked_at_connect(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with engine.connect() as conn:
        assert conn.connection.driver_connection.info.server_version >= db.MIN_SERVER_VERSION
    # The same check runs on the first connection of every engine: pretend the minimum is
    # above the real server (15 here) and a fresh engine refuses to connect.
    monkeypatch.setattr(db, "MIN_SERVER_VERSION", 990000)
    url = engine.url.update_query_dict({"options": "-c statement_timeout=0"})
    fresh = db.get_engine(url.render_as_string(hide_password=False))
    try:
        with pytest.raises(db.UnsupportedServer, match="needs PostgreSQL 99 or later"):
            with fresh.connect():
                pass
    finally:
        fresh.dispose()
        db._engines.pop(db.normalise_url(url.render_as_string(hide_password=False)), None)
