"""Schema migrations: applied by interactive commands that need the schema, checked (never
applied) by deployed runs (see ``tallyflow.infra.resources``).

A Postgres advisory lock serialises concurrent upgrades (two commands starting at once), so
migrations run exactly once per database.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from tallyflow import migrations

_MIGRATION_LOCK = 7_305_001  # arbitrary, constant advisory-lock key for schema changes
_upgraded: set[str] = set()
_checked: set[str] = set()


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        conn.execute(text("select pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def ensure_schema(engine: Engine) -> None:
    """Apply pending migrations once per engine per process (cheap check afterwards)."""
    key = engine.url.render_as_string(hide_password=True)
    if key in _upgraded:
        return
    if current_revision(engine) != head_revision():
        upgrade(engine)
    _upgraded.add(key)


def schema_problem(engine: Engine) -> str | None:
    """Why this database cannot be used by this code as it is (None when it can).

    Checked once per engine per process; a deployed run calls this instead of migrating.
    """
    key = engine.url.render_as_string(hide_password=True)
    if key in _checked:
        return None
    current, head = current_revision(engine), head_revision()
    if current == head:
        _checked.add(key)
        return None
    where = engine.url.render_as_string(hide_password=True)
    if current is None:
        return (f"the database {where} has no Tallyflow schema (this code needs revision "
                f"{head}): run `tallyflow db upgrade` against it first")
    if not _known_revision(current):
        return (f"the database {where} is at schema revision {current}, newer than this code "
                f"knows (head {head}): install the same Tallyflow version on this worker")
    return (f"the database {where} is at schema revision {current}, this code needs {head}: "
            "run `tallyflow db upgrade` (a deploy step) before starting workers")


def _known_revision(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except Exception:
        return False
