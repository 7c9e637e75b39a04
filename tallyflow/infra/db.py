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

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL

from tallyflow.infra.settings import configured_database_url, tallyflow_home

EMBEDDED_DATABASE = "tallyflow"
# pgserver asks platformdirs for a runtime folder, which warns on machines without
# XDG_RUNTIME_DIR (containers, CI); the fallback it takes is fine, the warning is noise.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
_engines: dict[str, Engine] = {}
_lock = threading.Lock()


# PostgreSQL 14 is the oldest server whose numeric arithmetic the weighted-sum SQL relies on
# (exact numeric ``extract(epoch ...)``; older servers return a double and lose digits).
MIN_SERVER_VERSION = 140000


class UnsupportedServer(RuntimeError):
    """The database server is older than Tallyflow supports; nothing was read or written."""


def describe_version(version_num: int) -> str:
    """``server_version_num`` as people write it: 150004 -> 15.4, 90624 -> 9.6.24."""
    major, rest = divmod(version_num, 10000)
    if major >= 10:
        return f"{major}.{rest}"
    return f"{major}.{rest // 100}.{rest % 100}"


def check_server_version(version_num: int) -> None:
    """Stop with one clear line when the server is older than PostgreSQL 14."""
    if version_num < MIN_SERVER_VERSION:
        raise UnsupportedServer(
            f"PostgreSQL {describe_version(version_num)} is not supported: Tallyflow needs "
            f"PostgreSQL {describe_version(MIN_SERVER_VERSION).split('.')[0]} or later "
            f"(hint: upgrade the server, or set TALLYFLOW_DATABASE_URL to a newer one)"
        )


def _check_on_first_connect(dbapi_connection: Any, _record: Any) -> None:
    check_server_version(int(dbapi_connection.info.server_version))


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
    assert isinstance(socket_dir, str), base
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
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]  # made at import
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
            # Once per engine (again after a failure): a too-old server stops the first query.
            event.listen(engine, "first_connect", _check_on_first_connect)
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


class BackupError(RuntimeError):
    """pg_dump/pg_restore could not do the job; the message carries their last words."""


def _client_binary(name: str, server_major: int) -> str:
    """The pg_dump/pg_restore to use: pgserver's own (PostgreSQL 16, always installed with
    Tallyflow) unless the server is newer than it, then the newest one on PATH."""
    import shutil

    from pgserver._commands import POSTGRES_BIN_PATH

    bundled = Path(POSTGRES_BIN_PATH) / name
    if server_major <= 16 and bundled.exists():
        return str(bundled)
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"the database runs PostgreSQL {server_major}; install its {name} (e.g. the "
            f"postgresql-client-{server_major} package) and put it on PATH"
        )
    return found


def _libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URI for the client tools, with the password passed through the environment
    (never on a command line that ``ps`` shows)."""
    import os

    parsed = make_url(normalise_url(url))
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    target = parsed.set(drivername="postgresql", password=None)
    return target.render_as_string(hide_password=False), env


def _server_major(url: str) -> int:
    with get_engine(url).connect() as conn:
        return int(conn.execute(text("show server_version_num")).scalar_one()) // 10000


def _run_client(argv: list[str], env: dict[str, str]) -> None:
    import subprocess

    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise BackupError(f"{Path(argv[0]).name} failed: {last[0]}")


def backup(file: Path, url: str | None = None) -> Path:
    """Dump the whole Tallyflow database (schema, data, migration revision) to one file in
    pg_dump's custom format, which ``restore`` reads back."""
    resolved = url or database_url()
    target, env = _libpq_target(resolved)
    binary = _client_binary("pg_dump", _server_major(resolved))
    file.parent.mkdir(parents=True, exist_ok=True)
    _run_client([binary, "--format=custom", "--no-owner", "--no-privileges",
                 f"--file={file}", f"--dbname={target}"], env)
    return file


# What ``restore`` drops before it creates, in its own transaction: every object of the public
# schema that is no extension's. Tables go first and whole (a partitioned table takes its
# partitions, and ``cascade`` the keys and views that point at it), so no partition's
# constraint is ever dropped on its own -- what ``pg_restore --clean`` does, and PostgreSQL
# refuses ("cannot drop inherited constraint") for a partition's primary key.
_DROP_SCHEMA_OBJECTS = """
do $$
declare r record;
begin
  for r in
    select c.oid::regclass::text as name, c.relkind from pg_class c
    where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'S')
      and not c.relispartition
      and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass
                      and d.objid = c.oid and d.deptype = 'e')
    order by c.relkind in ('r', 'p') desc
  loop
    execute format('drop %s if exists %s cascade',
                   case r.relkind when 'v' then 'view' when 'm' then 'materialized view'
                                  when 'S' then 'sequence' else 'table' end, r.name);
  end loop;
  for r in
    select p.oid::regprocedure::text as name from pg_proc p
    where p.pronamespace = 'public'::regnamespace
      and not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass
                      and d.objid = p.oid and d.deptype = 'e')
  loop
    execute format('drop routine if exists %s cascade', r.name);
  end loop;
  for r in
    select t.oid::regtype::text as name from pg_type t
    where t.typnamespace = 'public'::regnamespace and t.typtype in ('e', 'd', 'c')
      and (t.typtype <> 'c' or (select relkind from pg_class where oid = t.typrelid) = 'c')
      and not exists (select 1 from pg_depend d where d.classid = 'pg_type'::regclass
                      and d.objid = t.oid and d.deptype = 'e')
  loop
    execute format('drop type if exists %s cascade', r.name);
  end loop;
end $$;
"""


def restore(file: Path, url: str | None = None) -> None:
    """Replace the Tallyflow database's contents with a backup, in one transaction: either
    the whole backup is in place afterwards or nothing changed.

    ``pg_restore`` writes the backup as SQL and ``psql`` runs it in one transaction after
    dropping what is there (``_DROP_SCHEMA_OBJECTS``), committed only once ``pg_restore`` has
    read the whole backup; ``pg_restore --clean`` cannot replace a database with partitioned
    tables (docs/scaling.md §2)."""
    import shutil
    import subprocess
    import tempfile

    if not file.is_file():
        raise BackupError(f"{file}: no such backup file")
    resolved = url or database_url()
    target, env = _libpq_target(resolved)
    env["PGOPTIONS"] = "-c client_min_messages=warning"  # no NOTICE per cascaded drop
    major = _server_major(resolved)
    restore_bin, psql_bin = _client_binary("pg_restore", major), _client_binary("psql", major)
    dispose_engines()  # our own pooled sessions would hold locks the restore needs
    # The SQL streams from one to the other (a backup may not fit in memory); their messages
    # go to files, so neither can block on a full pipe.
    with tempfile.TemporaryFile() as dump_err, tempfile.TemporaryFile() as run_err:
        with subprocess.Popen([restore_bin, "--no-owner", "--no-privileges", "--file=-",
                               str(file)], stdout=subprocess.PIPE, stderr=dump_err,
                              env=env) as dump, \
             subprocess.Popen([psql_bin, "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1",
                               f"--dbname={target}", "--file=-"],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=run_err, env=env) as run:
            assert dump.stdout is not None and run.stdin is not None
            try:
                run.stdin.write(b"begin;\n" + _DROP_SCHEMA_OBJECTS.encode())
                shutil.copyfileobj(dump.stdout, run.stdin, 1 << 20)
                if dump.wait() == 0:  # a backup read to its end, and only then
                    run.stdin.write(b"commit;\n")
                run.stdin.close()  # without the commit, psql's exit rolls everything back
            except BrokenPipeError:  # psql stopped at an error: its message says which
                dump.kill()
        for code, name, messages in ((dump.returncode, "pg_restore", dump_err),
                                     (run.returncode, "psql", run_err)):
            if code != 0:
                messages.seek(0)
                lines = messages.read().decode(errors="replace").strip().splitlines()
                first = [line for line in lines if "ERROR" in line][:1] or lines[-1:]
                raise BackupError(f"{name} failed: {(first or ['(no output)'])[0]}")
