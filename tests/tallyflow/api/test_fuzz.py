"""Every answer is Lago's JSON, for any path, query or body: schemathesis draws requests from
the served OpenAPI document (both what it allows and what it does not) and no answer may be
a 500, ``text/plain``, or an error outside Lago's envelope (``app/controllers/concerns/
api_errors.rb``). Derandomized and a few examples per operation: the same cases on every
run (``-m slow``); the crashes it and the issue found run in every run."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode
from sqlalchemy import Engine

from tests.tallyflow.api.test_writes import create_mistral

EXAMPLES = 4  # per operation and mode (about 30 operations, two modes: ~250 requests)
NOT_LAGO = ("/metrics", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect")


def check(answer: Any) -> None:
    """Lago's shape: JSON always; an error has ``status`` (the HTTP one) and ``error``; a
    422 has ``code`` and ``error_details``; never a 500."""
    assert answer.status_code < 500, (answer.request.method, answer.request.url, answer.text)
    assert answer.headers["content-type"] == "application/json", answer.text
    if answer.status_code >= 400:
        body = answer.json()
        assert body["status"] == answer.status_code and body["error"], body
        if answer.status_code == 422:
            assert body["code"] and isinstance(body["error_details"], dict), body


def send(client: TestClient, case: Any) -> Any:
    """The case as schemathesis serializes it (its odd bodies too), sent with the test key."""
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    headers = {k: str(v) for k, v in kwargs["headers"].items() if k.lower() != "authorization"}
    body = {"json": kwargs["json"]} if "json" in kwargs else {"content": kwargs.get("data")}
    return client.request(kwargs["method"], kwargs["url"], params=kwargs["params"],
                          headers=headers, **body)


@pytest.mark.slow  # ~30 s: the reported crashes below are the quick guard in every run
def test_every_answer_to_any_request_is_lagos_json(client: TestClient) -> None:
    create_mistral(client)  # something for the reads and the writes to find
    schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in NOT_LAGO:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def one(case: Any) -> None:
                check(send(client, case))

            try:
                one()
            except Unsatisfiable:  # nothing of this operation can be broken (no parameter)
                assert mode is GenerationMode.NEGATIVE, operation.path


CRASHES = [
    ("/api/v1/wallets/²", {}),  # "²".isdigit() is true
    ("/api/v1/wallets/99999999999999999999999", {}),
    ("/api/v1/wallets/²/wallet_transactions", {}),
    ("/api/v1/invoices/²", {}),
    ("/api/v1/invoices/99999999999999999999999", {}),
    ("/api/v1/plans", {"page": "100000000000000000000"}),
    ("/api/v1/plans", {"per_page": "100000000000000000000"}),
    ("/api/v1/invoices", {"page": str(2**70)}),
    ("/api/v1/subscriptions", {"status[]": "gone"}),
    ("/api/v1/nowhere/at/all", {}),
]


def test_the_reported_crashes_are_lagos_errors(client: TestClient) -> None:
    """Issue 28's findings: each was a ``text/plain`` 500 (one SQL ``DataError``, one
    ``int("²")``); now Lago's 404 or 422."""
    for path, params in CRASHES:
        check(client.get(path, params=params))


def test_a_crash_is_a_json_500_and_its_error_has_no_sql_parameters(
    make_client: Any, engine: Engine
) -> None:
    """What no route foresaw: Lago's JSON 500, never ``text/plain``; the error the server
    logs names no bound value (the API's engine hides them)."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    app = make_client().app
    query = text("select cast(:secret as text), 1 / 0")  # the error quotes no value itself

    @app.get("/api/v1/tallyflow/boom")  # type: ignore[untyped-decorator]
    def boom() -> None:
        with app.state.engine.connect() as conn:
            conn.execute(query, {"secret": "tf_secret"})

    answer = TestClient(app, raise_server_exceptions=False).get("/api/v1/tallyflow/boom")
    assert (answer.status_code, answer.headers["content-type"]) == (500, "application/json")
    assert answer.json() == {"status": 500, "error": "Internal Server Error",
                             "code": "internal_error"}
    for used, shown in ((engine, True), (app.state.engine, False)):
        with pytest.raises(DBAPIError) as failed, used.connect() as conn:
            conn.execute(query, {"secret": "tf_secret"})
        assert ("tf_secret" in str(failed.value)) is shown
