"""Deployed runs never guess their database and never migrate; interactive use stays easy."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import text

from tallyflow.infra import db, migrate
from tallyflow.infra.resources import ResourceError, billing_engine, resolve_database_url


@pytest.fixture()
def no_database_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TALLYFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("TALLYFLOW_EMBEDDED", raising=False)


@pytest.mark.usefixtures("no_database_configured")
def test_a_deployed_run_without_a_database_url_fails_with_what_to_do() -> None:
    with pytest.raises(ResourceError) as caught:
        resolve_database_url(deployed=True)
    message = str(caught.value)
    assert "TALLYFLOW_DATABASE_URL" in message and "--embedded" in message
    assert "\n" not in message


@pytest.mark.usefixtures("no_database_configured")
@pytest.mark.parametrize("opt_in", ["1", "true", "yes"])
def test_the_embedded_server_is_used_by_deployed_runs_only_when_chosen(
    monkeypatch: pytest.MonkeyPatch, opt_in: str
) -> None:
    monkeypatch.setenv("TALLYFLOW_EMBEDDED", opt_in)
    assert resolve_database_url(deployed=True) is None  # None = the embedded server


@pytest.mark.usefixtures("no_database_configured")
def test_interactive_use_defaults_to_the_embedded_server() -> None:
    assert resolve_database_url(deployed=False) is None


def test_a_configured_url_wins_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLYFLOW_DATABASE_URL", "postgresql://u@h/d")
    assert resolve_database_url(deployed=True) == "postgresql://u@h/d"
    assert resolve_database_url(deployed=False) == "postgresql://u@h/d"


def test_a_deployed_run_on_an_outdated_schema_fails_naming_the_revision_and_never_migrates(
    scratch_database: Callable[[], str],
) -> None:
    url = scratch_database()
    migrate.upgrade(db.get_engine(url), "0001")
    with pytest.raises(ResourceError) as caught:
        billing_engine(url, deployed=True)
    message = str(caught.value)
    assert "revision 0001" in message and migrate.head_revision() in message
    assert "tallyflow db upgrade" in message
    assert migrate.current_revision(db.get_engine(url)) == "0001"  # untouched


def test_a_deployed_run_on_an_empty_database_says_it_has_no_schema(
    scratch_database: Callable[[], str],
) -> None:
    url = scratch_database()
    with pytest.raises(ResourceError, match="no Tallyflow schema"):
        billing_engine(url, deployed=True)
    assert migrate.current_revision(db.get_engine(url)) is None


def test_a_schema_newer_than_the_code_asks_for_the_same_version_on_the_worker(
    scratch_database: Callable[[], str],
) -> None:
    url = scratch_database()
    engine = db.get_engine(url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("update alembic_version set version_num = '9999_future'"))
    with pytest.raises(ResourceError, match="newer than this code"):
        billing_engine(url, deployed=True)


def test_interactive_use_migrates_a_fresh_database(scratch_database: Callable[[], str]) -> None:
    url = scratch_database()
    billing_engine(url, deployed=False)
    assert migrate.current_revision(db.get_engine(url)) == migrate.head_revision()
    assert migrate.schema_problem(db.get_engine(url)) is None


@pytest.mark.usefixtures("prefect_harness")
def test_deployed_run_tells_a_deployment_s_run_from_a_direct_call_without_asking_the_api() -> None:
    """What the flow run in context says decides; a direct run (the CLI) is interactive."""
    import asyncio

    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    from tallyflow.infra.resources import deployed_run

    @task
    def in_a_task() -> bool:
        return deployed_run()

    @flow
    def probe() -> tuple[bool, bool]:
        return deployed_run(), in_a_task()

    assert deployed_run() is False  # outside any run
    assert probe() == (False, False)

    async def deployed_flow_run() -> object:
        async with get_client() as client:
            flow_id = await client.create_flow_from_name("probe")
            deployment_id = await client.create_deployment(flow_id=flow_id, name="probe-test")
            return await client.create_flow_run_from_deployment(deployment_id)

    flow_run = asyncio.run(deployed_flow_run())
    assert run_flow(probe, flow_run=flow_run) == (True, True)  # type: ignore[arg-type]
