"""The cheap revision reading (no Alembic import on every command) equals Alembic's own."""

from __future__ import annotations

from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from tallyflow.infra import migrate


def test_revisions_read_from_the_files_match_alembic() -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert migrate.head_revision() == script.get_current_head()
    assert migrate.revisions() == {
        rev.revision: rev.down_revision for rev in script.walk_revisions()
    }


def test_an_empty_database_has_no_revision(empty_database: Engine) -> None:
    assert migrate.current_revision(empty_database) is None
    assert "has no Tallyflow schema" in (migrate.schema_problem(empty_database) or "")


def test_a_migrated_database_is_at_the_head(engine: Engine) -> None:
    assert migrate.current_revision(engine) == migrate.head_revision()
