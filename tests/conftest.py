"""Test resources: a real PostgreSQL per test run and one Prefect test harness per session.

The local server at 127.0.0.1:5432 is used when it answers (a fresh database per run, dropped
afterwards); otherwise an embedded pgserver in a temporary folder. ``TALLYFLOW_TEST_EMBEDDED=1``
forces the embedded path so both are exercised.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

# Prefect reads these at import: keep its state out of the user's home and the network.
_PREFECT_HOME = tempfile.mkdtemp(prefix="tallyflow-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)
# No AWS credentials leak in from the machine (a developer's ~/.aws, CI secrets): S3 tests get
# the credentials of a user the test S3 server knows, only where a test asks for them, so a test
# that should use a Secret block cannot pass on credentials it happened to find lying around.
for _name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
    os.environ.pop(_name, None)
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.path.join(_PREFECT_HOME, "no-aws-credentials")
os.environ["AWS_CONFIG_FILE"] = os.path.join(_PREFECT_HOME, "no-aws-config")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import pytest  # noqa: E402
from sqlalchemy import Engine, create_engine, text  # noqa: E402
from sqlalchemy.engine import URL  # noqa: E402

from tests.storage import Bucket, S3Server, free_port  # noqa: E402

# A plugin's own repository (tests/fixtures/plugin_repo) has its own tests: they run there,
# against an installed Tallyflow, through tests/tasks/ingest/test_plugin_repo.py, never here.
collect_ignore = ["fixtures"]

FIXTURES = Path(__file__).parent / "fixtures"
# The shipped conformance suite (its fixture; it collects nothing without
# --tallyflow-conformance). Installed, Tallyflow registers it by the same name (pytest11), so
# the two never clash.
pytest_plugins = ["tallyflow.testing.conformance"]
LOCAL_ADMIN = URL.create(
    "postgresql+psycopg", username="postgres", host="127.0.0.1", port=5432, database="postgres"
)


def _local_server_answers() -> bool:
    from tallyflow.infra.settings import get_settings

    if get_settings().test_embedded:
        return False
    engine = create_engine(LOCAL_ADMIN, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tallyflow.infra import db, migrate
    from tallyflow.infra.settings import set_in_environment

    name = f"tallyflow_test_{uuid.uuid4().hex[:10]}"
    if _local_server_answers():
        admin_url = LOCAL_ADMIN
    else:
        home = Path(tempfile.mkdtemp(prefix="tf-", dir="/tmp"))
        set_in_environment("TALLYFLOW_HOME", str(home))
        set_in_environment("TALLYFLOW_DATABASE_URL", None)
        embedded = db.start_embedded()
        admin_url = db.make_url(embedded).set(database="postgres")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'create database "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    previous = os.environ.get("TALLYFLOW_DATABASE_URL")
    set_in_environment("TALLYFLOW_DATABASE_URL", url)
    migrate.upgrade(db.get_engine(url))
    try:
        yield url
    finally:
        db.dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'drop database if exists "{name}" with (force)'))
        admin.dispose()
        set_in_environment("TALLYFLOW_DATABASE_URL", previous)


@pytest.fixture()
def empty_database(database_url: str) -> Iterator[Engine]:
    """A database with nothing in it (no schema, no revision), on the test server; dropped after."""
    from sqlalchemy import make_url

    name = f"tallyflow_empty_{uuid.uuid4().hex[:10]}"
    url = make_url(database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'create database "{name}"'))
    engine = create_engine(url.set(database=name))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'drop database if exists "{name}" with (force)'))
        admin.dispose()


@pytest.fixture()
def engine(database_url: str) -> Iterator[Engine]:
    """A clean database for each test that asks for one."""
    from tallyflow.infra import db
    from tallyflow.models.tables import metadata

    eng = db.get_engine(database_url)
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with eng.begin() as conn:
        conn.execute(text(f"truncate {names} restart identity cascade"))
    yield eng


@pytest.fixture()
def scratch_database(database_url: str) -> Iterator[Callable[[], str]]:
    """A factory of empty databases on the test server (dropped after the test), for tests that
    need a second database: restores, outdated schemas."""
    from tallyflow.infra import db

    admin_url = db.make_url(database_url).set(database="postgres")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def make() -> str:
        name = f"tallyflow_scratch_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f'create database "{name}"'))
        made.append(name)
        return admin_url.set(database=name).render_as_string(hide_password=False)

    try:
        yield make
    finally:
        db.dispose_engines()
        with admin.connect() as conn:
            for name in made:
                conn.execute(text(f'drop database if exists "{name}" with (force)'))
        admin.dispose()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server for the whole session; flow heartbeats off.

    Its database is PostgreSQL (a database of its own on the local server) when that server
    answers: on SQLite, prefect_test_harness's default, concurrent writes were refused as busy
    (503), and each refusal cost the client a retry after 2 s, 4 s, 8 s...: seconds per
    billing cycle, a minute when five came in a row. Otherwise (the embedded server) SQLite."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    harness = _prefect_on_postgres() if _local_server_answers() else prefect_test_harness(60)
    with harness:
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield


@contextlib.contextmanager
def _prefect_on_postgres() -> Iterator[None]:
    """prefect_test_harness (prefect/testing/utilities.py) with its database on the local
    PostgreSQL server, dropped afterwards."""
    import prefect.context
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.server.database.dependencies import temporary_database_interface
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        temporary_settings,
    )
    from prefect.testing.utilities import _find_available_port

    name = f"prefect_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(LOCAL_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'create database "{name}"'))
    url = LOCAL_ADMIN.set(drivername="postgresql+asyncpg", database=name)
    server = SubprocessASGIServer(port=_find_available_port())
    previous = SubprocessASGIServer._instances.get(None)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(temporary_database_interface())
            stack.enter_context(temporary_settings(updates={
                PREFECT_SERVER_DATABASE_CONNECTION_URL: url.render_as_string(False)}))
            SubprocessASGIServer._instances[None] = server  # flows find this server
            server.start(timeout=60)
            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: server.api_url}))
            stack.enter_context(prefect.context._temporary_global_settings_context(
                prefect.context.get_settings_context()))
            yield
            with contextlib.suppress(RuntimeError):  # not started
                APILogWorker.instance().drain()
            EventsWorker.drain_all()
    finally:
        server.stop()
        if previous is not None:
            SubprocessASGIServer._instances[None] = previous
        else:
            SubprocessASGIServer._instances.pop(None, None)
        with admin.connect() as conn:
            conn.execute(text(f'drop database if exists "{name}" with (force)'))
        admin.dispose()


# ------------------------------------------------------------------------------------------------
# Object storage: a real S3 endpoint on loopback (moto's server mode), a local folder, memory://
# ------------------------------------------------------------------------------------------------


# The server lets this many requests through unauthenticated (the IAM calls that create the
# test user), then checks the signature and the IAM policy of every request, as AWS does.
_IAM_SETUP_CALLS = 3


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server in its own process on 127.0.0.1, with IAM authentication switched on
    (``INITIAL_NO_AUTH_ACTION_COUNT``): a request signed with unknown or wrong credentials is
    refused, so a test passes only if the right credentials reached the S3 client."""
    import json
    import subprocess
    import sys
    import time
    import urllib.request

    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_IAM_SETUP_CALLS)}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, "moto's server exited at start"
                assert time.monotonic() < deadline, "moto's server did not answer in 30 s"
                time.sleep(0.05)
        iam = boto3.client(
            "iam", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="setup", aws_secret_access_key="setup",
        )
        iam.create_user(UserName="tallyflow-tests")
        iam.put_user_policy(
            UserName="tallyflow-tests", PolicyName="s3", PolicyDocument=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }),
        )
        key = iam.create_access_key(UserName="tallyflow-tests")["AccessKey"]
        yield S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        server.terminate()
        server.wait(timeout=30)


def _forget_cached_credentials() -> None:
    """boto3's default session and fsspec's filesystem instances keep the credentials they
    first found; a test that changes the environment's credentials must not see stale ones."""
    import boto3
    import s3fs

    boto3.DEFAULT_SESSION = None
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture()
def s3_credentials(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """The test user's credentials the usual AWS way (the environment), for this test only:
    the code under test, boto3 clients and subprocesses find them as they would in production."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    _forget_cached_credentials()
    yield s3_server
    _forget_cached_credentials()


@pytest.fixture()
def s3_endpoint(s3_credentials: S3Server) -> str:
    """The S3 endpoint, with valid credentials in the environment (see ``s3_credentials``)."""
    return s3_credentials.endpoint


@pytest.fixture(params=["file", "memory", "s3"])
def bucket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Bucket]:
    """One empty bucket per test, on each storage kind in turn."""
    kind = request.param
    name = uuid.uuid4().hex[:12]
    if kind == "file":
        folder = tmp_path / "bucket"
        folder.mkdir()
        yield Bucket(folder.as_uri())
    elif kind == "memory":
        yield Bucket(f"memory://tallyflow-{name}")
        import fsspec

        fsspec.filesystem("memory").rm(f"/tallyflow-{name}", recursive=True)
    else:
        server: S3Server = request.getfixturevalue("s3_credentials")
        import boto3

        boto3.client(  # explicit: boto3's default session caches the first credentials it saw
            "s3", endpoint_url=server.endpoint, region_name="us-east-1",
            aws_access_key_id=server.key, aws_secret_access_key=server.secret,
        ).create_bucket(Bucket=f"tf-{name}")
        yield Bucket(f"s3://tf-{name}/events", {"endpoint_url": server.endpoint})


class _SettingsMonkeyPatch(pytest.MonkeyPatch):
    """pytest's ``monkeypatch``, whose changes of the environment are seen by the settings
    (read once per process and cached: tallyflow/infra/settings.py): each ``setenv`` and
    ``delenv`` makes the next ``get_settings()`` read the environment again."""

    def setenv(self, name: str, value: str, prepend: str | None = None) -> None:
        super().setenv(name, value, prepend)
        _reset_settings()

    def delenv(self, name: str, raising: bool = True) -> None:
        super().delenv(name, raising)
        _reset_settings()


def _reset_settings() -> None:
    from tallyflow.infra.settings import reset_settings

    reset_settings()


@pytest.fixture()
def monkeypatch() -> Iterator[pytest.MonkeyPatch]:
    """pytest's own fixture, made settings-aware (``_SettingsMonkeyPatch``)."""
    patch = _SettingsMonkeyPatch()
    yield patch
    patch.undo()
    _reset_settings()


@pytest.fixture(autouse=True)
def _settings_read_per_test() -> Iterator[None]:
    """Each test reads the settings from the environment as it finds it (fixtures of wider
    scope may have changed it), and leaves no settings read behind."""
    _reset_settings()
    yield
    _reset_settings()


@pytest.fixture(autouse=True)
def _no_debug_left_behind() -> Iterator[None]:
    """``tallyflow --debug`` sets TALLYFLOW_DEBUG in the process's environment (for the rest of
    that command); a test that runs it in-process must not leave later tests printing
    tracebacks where they expect one-line errors."""
    from tallyflow.infra.settings import set_in_environment

    before = os.environ.get("TALLYFLOW_DEBUG")
    yield
    set_in_environment("TALLYFLOW_DEBUG", before)
