"""Schema migrations: applied by interactive commands that need the schema, checked (never
applied) by deployed runs (see ``tallyflow.infra.resources``).

A Postgres advisory lock serialises concurrent upgrades (two commands starting at once), so
migrations run exactly once per database.

Checking is the common case (every command, every deployed run) and must not cost Alembic's
import (a large share of a CLI command's start-up, docs/scaling.md §6): the revisions are read
from the migration files' ``revision``/``down_revision`` lines and the database's from
``alembic_version``. Alembic is imported only to upgrade; a test holds the cheap reading equal
to Alembic's own.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.exc import ProgrammingError

from tallyflow import migrations

if TYPE_CHECKING:
    from alembic.config import Config

VERSIONS = Path(migrations.__file__).parent / "versions"
_REVISION = re.compile(r'^(down_revision|revision)\s*(?::[^=]*)?=\s*(None|"([^"]+)")', re.M)

_MIGRATION_LOCK = 7_305_001  # arbitrary, constant advisory-lock key for schema changes
_upgraded: set[str] = set()
_checked: set[str] = set()


def alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return cfg


@lru_cache(maxsize=1)
def revisions() -> dict[str, str | None]:
    """Every revision this code knows, with the one it follows (from the files)."""
    known: dict[str, str | None] = {}
    for path in sorted(VERSIONS.glob("*.py")):
        found = {m.group(1): m.group(3) for m in _REVISION.finditer(path.read_text())}
        if "revision" not in found or found["revision"] is None:
            raise RuntimeError(f"migration {path.name} declares no revision")
        known[found["revision"]] = found.get("down_revision")
    return known


def head_revision() -> str:
    known = revisions()
    heads = set(known) - {down for down in known.values() if down}
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            return conn.execute(text("select version_num from alembic_version")).scalar()
        except ProgrammingError:  # no alembic_version table: an empty database
            return None


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

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
    return revision in revisions()
