"""``tallyflow db backup`` / ``db restore``: a round trip gives back every row, to the byte."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, text

from tallyflow.infra import db
from tallyflow.models.tables import metadata
from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.folding import fold_pending
from tallyflow.tasks.ingest import SourceSpec, build_source, ingest_object, register_objects
from tallyflow.tasks.usage import due_subscriptions, snapshot_subscriptions
from tallyflow.tasks.usage.partitions import ensure_snapshot_partitions

PROJECT = Path(__file__).parents[3]


def _tallyflow(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TALLYFLOW_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "tallyflow.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


_DIGEST = (
    "select count(*) || ':' || coalesce(md5(string_agg(t::text, '|' order by t::text)), '')"
    " from TABLE t"
)


def _fingerprint(url: str) -> dict[str, str]:
    """Per table: a digest of every row's text, in a stable order."""
    prints: dict[str, str] = {}
    with db.get_engine(url).connect() as conn:
        for table in [*metadata.sorted_tables, "alembic_version"]:
            name = getattr(table, "name", table)
            quoted = conn.dialect.identifier_preparer.quote(name)  # names from our own metadata
            prints[name] = conn.execute(text(_DIGEST.replace("TABLE", quoted))).scalar_one()
    return prints


def _partitions(url: str) -> set[str]:
    with db.get_engine(url).connect() as conn:
        return set(conn.execute(text(
            "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
            " where i.inhparent = 'usage_snapshots'::regclass")).scalars())


def test_backup_then_restore_into_another_database_gives_every_row_back(
    engine: Engine, database_url: str, scratch_database: Callable[[], str], tmp_path: Path
) -> None:
    assert apply_catalog(engine, [PROJECT / "examples" / "mistral"]).ok
    source = build_source(SourceSpec(url=(PROJECT / "tests" / "fixtures" / "golden").as_uri()))
    for object_id in register_objects(engine, source.key, source.list()):
        ingest_object(engine, source, object_id)
    # snapshots in monthly partitions (usage_snapshots is partitioned: pg_restore --clean
    # could not drop a partition's primary key, docs/scaling.md §2)
    fold_pending(engine)
    hour = datetime(2025, 11, 25, tzinfo=UTC)
    ensure_snapshot_partitions(engine, hour)
    snapshot_subscriptions(engine, due_subscriptions(engine, hour), hour)
    original = _fingerprint(database_url)
    assert int(original["events"].split(":")[0]) > 0
    assert int(original["usage_snapshots"].split(":")[0]) > 0
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from usage_snapshots_2025_11")).scalar_one()

    dump = tmp_path / "tallyflow.dump"
    made = _tallyflow(database_url, "db", "backup", str(dump))
    assert made.returncode == 0, made.stderr
    assert dump.stat().st_size > 0 and "backup written" in made.stdout

    target = scratch_database()
    restored = _tallyflow(target, "db", "restore", str(dump), "--yes")
    assert restored.returncode == 0, restored.stderr
    assert _fingerprint(target) == original

    # Restoring over a database that has moved on puts it back exactly as backed up.
    with db.get_engine(target).begin() as conn:
        conn.execute(text("update customers set name = 'changed since the backup'"))
    assert _fingerprint(target) != original
    again = _tallyflow(target, "db", "restore", str(dump), "--yes")
    assert again.returncode == 0, again.stderr
    assert _fingerprint(target) == original
    assert _partitions(target) == _partitions(database_url)

    # A backup cut short restores nothing: the database stays as it was.
    with db.get_engine(target).begin() as conn:
        conn.execute(text("update customers set name = 'changed since the backup'"))
    changed = _fingerprint(target)
    cut = tmp_path / "cut.dump"
    cut.write_bytes(dump.read_bytes()[: dump.stat().st_size // 2])
    failed = _tallyflow(target, "db", "restore", str(cut), "--yes")
    assert failed.returncode == 1 and failed.stderr.startswith("error: pg_restore failed: ")
    assert _fingerprint(target) == changed


def test_restore_asks_before_replacing_a_database(
    database_url: str, tmp_path: Path
) -> None:
    refused = _tallyflow(database_url, "db", "restore", str(tmp_path / "x.dump"))
    assert refused.returncode == 2
    assert "pass --yes" in refused.stderr


def test_restore_of_a_missing_file_is_one_line_and_exit_1(
    database_url: str, tmp_path: Path
) -> None:
    missing = _tallyflow(database_url, "db", "restore", str(tmp_path / "nope.dump"), "--yes")
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: {tmp_path / 'nope.dump'}: no such backup file"
