"""Database resources: one function decides which PostgreSQL we use, everything else asks it.

Order of preference: ``TALLYFLOW_DATABASE_URL`` (any PostgreSQL), else an embedded PostgreSQL
(pgserver) whose data lives under ``TALLYFLOW_HOME`` and which keeps running between commands so
a second command does not pay the start-up again.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, make_url, text
from sqlalchemy.engine import URL

from tallyflow.settings import configured_database_url, tallyflow_home

EMBEDDED_DATABASE = "tallyflow"
# pgserver asks platformdirs for a runtime folder, which warns on machines without
# XDG_RUNTIME_DIR (containers, CI); the fallback it takes is fine, the warning is noise.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def normalise_url(url: str) -> str:
    """Accept the URL forms people paste (postgres://, postgresql://); pin psycopg 3."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.drivername in ("postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    else:
        raise ValueError(f"Tallyflow needs PostgreSQL; got a {parsed.drivername!r} URL")
    return parsed.render_as_string(hide_password=False)


def embedded_data_dir() -> Path:
    return tallyflow_home() / "pgdata"


def start_embedded() -> str:
    """Start (or find running) the embedded server and return a URL to the tallyflow database."""
    import pgserver  # imported lazily: starting it is only needed without a configured URL

    server = pgserver.get_server(embedded_data_dir(), cleanup_mode=None)
    base = make_url(server.get_uri())
    socket_dir = base.query.get("host")
    admin = URL.create("postgresql+psycopg", username="postgres", database="postgres",
                       query={"host": socket_dir})
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                text("select 1 from pg_database where datname = :n"), {"n": EMBEDDED_DATABASE}
            ).scalar()
            if not exists:
                conn.execute(text(f'create database "{EMBEDDED_DATABASE}"'))
    finally:
        engine.dispose()
    return admin.set(database=EMBEDDED_DATABASE).render_as_string(hide_password=False)


def stop_embedded() -> bool:
    """Stop the embedded server if it runs; True when something was stopped."""
    from pgserver._commands import pg_ctl
    from pgserver.utils import PostmasterInfo

    data_dir = embedded_data_dir()
    info = PostmasterInfo.read_from_pgdata(data_dir)
    if info is None or not info.is_running():
        return False
    user = "pgserver" if _running_as_root() else None
    pg_ctl(["-w", "stop"], pgdata=data_dir, user=user)
    return True


def embedded_status() -> dict[str, Any]:
    from pgserver.utils import PostmasterInfo

    data_dir = embedded_data_dir()
    info = PostmasterInfo.read_from_pgdata(data_dir) if data_dir.exists() else None
    running = bool(info is not None and info.is_running())
    return {"data_dir": str(data_dir), "running": running,
            "pid": info.pid if running and info is not None else None}


def _running_as_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0


def database_url() -> str:
    configured = configured_database_url()
    return normalise_url(configured) if configured else start_embedded()


def get_engine(url: str | None = None) -> Engine:
    """One pooled engine per URL per process.

    Timeouts are set in the client because a Prefect task timeout cannot interrupt a thread that
    is blocked on a socket.
    """
    resolved = normalise_url(url) if url else database_url()
    with _lock:
        engine = _engines.get(resolved)
        if engine is None:
            engine = create_engine(
                resolved,
                pool_pre_ping=True,
                pool_size=5,
                max_overflow=5,
                connect_args={"connect_timeout": 10, "application_name": "tallyflow"},
            )
            _engines[resolved] = engine
    return engine


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def transaction(url: str | None = None) -> Iterator[Connection]:
    with get_engine(url).begin() as conn:
        yield conn
