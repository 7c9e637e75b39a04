"""What every benchmark shares: a scratch database, the Mistral catalog, generated events, the
bare-Postgres limit and memory readings.

Each benchmark runs on a fresh database created next to the one ``TALLYFLOW_DATABASE_URL``
names (default: the local server at 127.0.0.1:5432) and dropped afterwards, so a run never
touches real data and two runs never see each other's rows.
"""

from __future__ import annotations

import os
import random
import resource
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_BASE = "postgresql://postgres@127.0.0.1:5432/postgres"
MODELS = ("mistral-small", "mistral-medium", "mistral-large")


def base_url() -> str:
    from tallyflow.infra.settings import get_settings

    return get_settings().database_url or DEFAULT_BASE


def _admin(base: str) -> object:
    from tallyflow.infra.db import normalise_url

    return make_url(normalise_url(base)).set(database="postgres")


def fresh_database(base: str | None = None) -> tuple[str, str]:
    """Create an empty database on ``base``'s server: (its URL, its name)."""
    admin = _admin(base or base_url())
    name = f"tallyflow_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")  # type: ignore[call-overload]
    with engine.connect() as conn:
        conn.execute(text(f'create database "{name}"'))
    engine.dispose()
    return admin.set(database=name).render_as_string(hide_password=False), name  # type: ignore[attr-defined]


def drop_database(base: str | None, name: str) -> None:
    engine = create_engine(_admin(base or base_url()), isolation_level="AUTOCOMMIT")  # type: ignore[call-overload]
    with engine.connect() as conn:
        conn.execute(text(f'drop database if exists "{name}" with (force)'))
    engine.dispose()


@contextmanager
def scratch_database(base: str | None = None, migrate: bool = True) -> Iterator[str]:
    """A fresh database (migrated unless told not to) for the ``with`` block, then dropped.

    ``TALLYFLOW_DATABASE_URL`` points at it inside the block, so flows run in this process use
    it too."""
    from tallyflow.infra.settings import set_in_environment

    url, name = fresh_database(base)
    saved = os.environ.get("TALLYFLOW_DATABASE_URL")
    set_in_environment("TALLYFLOW_DATABASE_URL", url)
    try:
        if migrate:
            from tallyflow.infra import migrate as migrations
            from tallyflow.infra.db import get_engine

            migrations.upgrade(get_engine(url))
        yield url
    finally:
        from tallyflow.infra import db

        db.dispose_engines()
        set_in_environment("TALLYFLOW_DATABASE_URL", saved)
        drop_database(base, name)


def prepare(url: str) -> None:
    """Schema and the Mistral catalog (examples/mistral)."""
    from tallyflow.infra import migrate
    from tallyflow.infra.db import get_engine
    from tallyflow.tasks.catalog import apply_catalog

    engine = get_engine(url)
    migrate.upgrade(engine)
    result = apply_catalog(engine, [ROOT / "examples" / "mistral"])
    assert result.ok, result.errors


def generate(folder: Path, events: int, objects: int, subscriptions: int, first: int = 0) -> int:
    """Mistral-shaped Lago events as JSONL objects (``part-NNNN.jsonl``); ids from ``first``."""
    folder.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(7 + first)
    per_object = events // objects
    total = 0
    for n in range(objects):
        lines = []
        for i in range(per_object):
            k = first + n * per_object + i
            tokens = rnd.randint(1, 50_000)
            direction = "input" if k % 2 else "output"
            lines.append(
                f'{{"transaction_id":"tx-{k}","external_subscription_id":"sub_{k % subscriptions}",'
                f'"code":"mistral_tokens","timestamp":{1_764_000_000 + k % 86_400},'
                f'"properties":{{"tokens":{tokens},"model":"{MODELS[k % 3]}",'
                f'"type":"{direction}"}}}}\n'
            )
        (folder / f"part-{n:04d}.jsonl").write_text("".join(lines))
        total += len(lines)
    return total


def bare_postgres(url: str, folder: Path) -> float:
    """The bare-Postgres limit in rows/s: the same rows COPY'd into a staging table and inserted
    with ``INSERT ... ON CONFLICT DO NOTHING`` into a table with the same unique key, on the
    same server with its default settings (default collation, one plain table). Parsing the
    files is not timed; formatting the rows for COPY is."""
    import orjson

    engine = create_engine(url)
    rows = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            e = orjson.loads(line)
            rows.append((e["external_subscription_id"], e["transaction_id"], e["code"],
                         e["timestamp"], orjson.dumps(e["properties"]).decode()))
    with engine.begin() as conn:
        conn.execute(text("drop table if exists bench_events"))
        conn.execute(text(
            "create table bench_events (external_subscription_id text, transaction_id text,"
            " code text, ts timestamptz, properties jsonb,"
            " primary key (external_subscription_id, transaction_id))"))
    started = time.perf_counter()
    with engine.begin() as conn:
        pg = conn.connection.driver_connection
        conn.execute(text(
            "create temp table bench_stage (external_subscription_id text, transaction_id text,"
            " code text, ts timestamptz, properties jsonb) on commit drop"))
        with pg.cursor() as cur, cur.copy("copy bench_stage from stdin") as copy:  # type: ignore[union-attr]
            for sub, txn, code, ts, props in rows:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
                copy.write_row((sub, txn, code, stamp, props))
        conn.execute(text(
            "insert into bench_events select * from bench_stage"
            " on conflict (external_subscription_id, transaction_id) do nothing"))
    seconds = time.perf_counter() - started
    with engine.begin() as conn:
        conn.execute(text("drop table bench_events"))
    engine.dispose()
    return len(rows) / seconds


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_peak_rss_mb() -> float:
    """The largest peak resident memory of any finished child process (MB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
