"""Run history names causes right (issue 32, item 4): a run that failed while the database
was down is ``failed`` (database unreachable), not ``crashed``; a silent run Prefect knows
nothing final about is ``crashed (no liveness)``; runs that failed before reaching the
database are listed from Prefect's record."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from prefect import flow
from sqlalchemy import Engine, create_engine, make_url, text
from typer.testing import CliRunner

from tallyflow.tasks.runs import HOOKS, cause_of, reap_stale, tracked

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.mark.parametrize(("status", "error", "cause"), [
    ("failed", "OperationalError: connection to server at \"127.0.0.1\", port 5432 failed:"
               " Connection refused", "database unreachable"),
    ("failed", "cannot reach the database: server closed the connection unexpectedly",
     "database unreachable"),
    ("failed", "deadline: Flow run exceeded timeout of 3600.0 second(s)", "deadline"),
    ("failed", "OperationalError: canceling statement due to statement timeout", "deadline"),
    ("failed", "OperationalError: connection timeout expired", "database unreachable"),
    ("failed", "ValueError: the hour must have an offset", "failed"),
    ("crashed", "the process stopped reporting at 2026-12-07 10:00:00 UTC (killed, or its"
                " machine was lost); rerun it: work is idempotent", "crashed (no liveness)"),
    ("crashed", "KeyboardInterrupt", "crashed"),
    ("cancelled", "cancelled: the process received SIGTERM", "cancelled"),
    ("completed", None, "completed"),
])
def test_causes_are_told_apart(status: str, error: str | None, cause: str) -> None:
    assert cause_of(status, error) == cause


class _Proxy:
    """A TCP proxy in front of PostgreSQL that can go down (every connection cut, new ones
    refused) and come back: a database outage as the billing code sees it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=True)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def down(self) -> None:
        assert self.listener is not None
        self.listener.close()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass


@pytest.fixture()
def outage_url(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, _Proxy]]:
    url = make_url(database_url)
    proxy = _Proxy((url.host or "127.0.0.1", url.port or 5432))
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    monkeypatch.setenv("TALLYFLOW_DATABASE_URL", proxied)
    monkeypatch.setenv("TALLYFLOW_HEARTBEAT_SECONDS", "0.5")
    monkeypatch.setenv("TALLYFLOW_STALE_SECONDS", "2")
    yield proxied, proxy
    proxy.down()


def test_a_run_that_failed_during_a_database_outage_is_failed_not_crashed(
    engine: Engine, outage_url: tuple[str, _Proxy]
) -> None:
    proxied, proxy = outage_url

    @flow(name="billing-cycle", **HOOKS)
    @tracked
    def billing_during_an_outage() -> None:
        proxy.down()  # the database goes away mid-run: the run's next query fails
        with create_engine(proxied).connect() as conn:
            conn.execute(text("select 1"))

    state = billing_during_an_outage(return_state=True)
    assert state.is_failed()
    run_id = str(state.state_details.flow_run_id)
    proxy.up()  # back after the outage; the run could not write its ending meanwhile
    with engine.connect() as conn:
        assert conn.execute(text("select status from run_history where flow_run_id = :id"),
                            {"id": run_id}).scalar_one() == "running"
    time.sleep(2.5)  # its heartbeat is silent past TALLYFLOW_STALE_SECONDS
    assert run_id in reap_stale(engine)
    with engine.connect() as conn:
        status, error = conn.execute(
            text("select status, error from run_history where flow_run_id = :id"),
            {"id": run_id}).one()
    assert status == "failed", error
    assert "OperationalError" in error and "killed" not in error
    assert cause_of(status, error) == "database unreachable"


def test_a_silent_run_prefect_knows_nothing_final_about_is_crashed(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    silent = str(uuid.uuid4())  # a run Prefect never heard of, as after a lost machine
    with engine.begin() as conn:
        conn.execute(text("insert into run_history (flow_run_id, kind, heartbeat_at)"
                          " values (:id, 'billing', now() - interval '1 hour')"), {"id": silent})
    assert reap_stale(engine, stale=2) == [silent]
    with engine.connect() as conn:
        status, error = conn.execute(
            text("select status, error from run_history where flow_run_id = :id"),
            {"id": silent}).one()
    assert cause_of(status, error) == "crashed (no liveness)"


def test_runs_that_failed_before_reaching_the_database_are_listed(engine: Engine) -> None:
    """A worker without a database URL: the run fails in Prefect and writes nothing here."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.states import Failed

    from tallyflow.cli.main import app

    message = ("Flow run encountered an exception: ResourceError: no database configured for"
               " this deployed run: set TALLYFLOW_DATABASE_URL on the worker")

    @flow(name="billing-cycle")
    def billing_cycle() -> None:  # the flow Prefect knows by this name
        return None

    async def record() -> str:
        async with get_client() as client:
            run = await client.create_flow_run(billing_cycle, name=f"billing {uuid.uuid4().hex}",
                                               state=Failed(message=message))
            return str(run.id)

    async def forget(run_id: str) -> None:  # the Prefect server is the session's: leave
        async with get_client() as client:  # no failed billing run for other tests' lists
            await client.delete_flow_run(uuid.UUID(run_id))

    run_id = asyncio.run(record())
    try:
        for _ in range(2):  # listed once, however often the history is read
            shown = CliRunner().invoke(app, ["runs", "--json", "--limit", "200"])
            assert shown.exit_code == 0, shown.output
            rows = [r for r in json.loads(shown.output) if r["flow_run_id"] == run_id]
            assert len(rows) == 1
    finally:
        asyncio.run(forget(run_id))
    assert rows[0]["status"] == "failed" and rows[0]["kind"] == "billing"
    assert "no database configured" in rows[0]["error"] and rows[0]["cause"] == "failed"


def test_a_failed_run_s_message_leads_with_the_one_line_and_its_hint(engine: Engine) -> None:
    """What the run-failed notification and the UI show is the CLI's one line and hint, while
    callers, retries and the history keep the exception itself (issue 32, item 3)."""
    from sqlalchemy.exc import OperationalError

    with socket.socket() as closed:  # a port nothing listens on: the database is unreachable
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    attempts: list[int] = []

    @flow(name="billing-cycle", retries=1, retry_delay_seconds=0, **HOOKS)
    @tracked
    def billing_without_its_database() -> None:
        attempts.append(1)
        with create_engine(f"postgresql+psycopg://u@127.0.0.1:{port}/db").connect() as conn:
            conn.execute(text("select 1"))

    state = billing_without_its_database(return_state=True)
    assert state.is_failed() and len(attempts) == 2  # the server still retried it
    message = state.message or ""
    assert message.startswith("cannot reach the database: "), message
    assert "Hint: is PostgreSQL running and reachable? check TALLYFLOW_DATABASE_URL" in message
    assert "OperationalError" in message  # the driver's text follows, for the record
    with pytest.raises(OperationalError):  # a caller gets the exception itself
        billing_without_its_database()
    with engine.connect() as conn:
        error = conn.execute(text("select error from run_history where flow_run_id = :id"),
                             {"id": str(state.state_details.flow_run_id)}).scalar_one()
    assert cause_of("failed", error) == "database unreachable"

    @flow(name="billing-cycle", **HOOKS)
    @tracked
    def billing_with_a_bug() -> None:
        raise ValueError("the hour must have an offset")

    state = billing_with_a_bug(return_state=True)  # a bug keeps Prefect's own wording
    assert state.message == ("Flow run encountered an exception: ValueError: the hour must have"
                             " an offset")
