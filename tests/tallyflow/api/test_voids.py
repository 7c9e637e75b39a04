"""Tallyflow's extension ``/api/v1/tallyflow/events``: a void by the API key's name, re-rated
at once; all or none (one refused key voids nothing, 422 with each reason code); Lago's error
shapes for bad bodies, unknown events and missing keys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.summaries import VoidSummary
from tests.tasks.corrections.test_voids import WALLET, _used, events_stored
from tests.tasks.rating_fixtures import SUB
from tests.tasks.wallets.test_wallets_support import balances

VOID = "/api/v1/tallyflow/events/void"


def test_void_through_the_api(engine: Engine, tmp_path: Path,
                              make_client: Callable[..., TestClient]) -> None:
    _used(engine, tmp_path)
    client = make_client(load=False)
    done = client.post(VOID, json={"external_subscription_id": SUB, "transaction_id": "b2",
                                   "reason": "sent twice"})
    assert done.status_code == 200, done.text
    void = done.json()["void"]
    assert void["actor"] == "tests" and void["counts"] == {"voided": 1}
    assert void["rerate"]["wallet_corrections"] == 1
    assert void["rerate"]["credited_back_cents"] == "600"
    assert mismatches(void, VoidSummary) == []
    assert balances(engine)[WALLET]["cents"] == 12500 - 1000

    shown = client.get(f"/api/v1/tallyflow/events/{SUB}/b2")
    assert shown.status_code == 200
    event = shown.json()["event"]
    assert event["status"] == "voided"
    assert event["history"][-1] | {"at": None} == {
        "at": None, "event": "voided", "actor": "tests", "reason": "sent twice"}

    # all or none: one unknown key, and a1 (voidable) is not voided either
    refused = client.post(VOID, json={"external_subscription_id": SUB,
                                      "transaction_ids": ["a1", "nope", "b2"],
                                      "reason": "cleanup"})
    assert refused.status_code == 422
    assert refused.json() == {"status": 422, "error": "Unprocessable Entity",
                              "code": "void_refused", "error_details": {"nope": ["not_found"]}}
    assert events_stored(engine) == [("a1", False), ("a2", False), ("b1", False), ("b2", True)]
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from event_voids")).scalar_one() == 1

    bad = client.post(VOID, json={"external_subscription_id": SUB, "transaction_ids": [],
                                  "extra": 1})
    assert bad.status_code == 422
    assert bad.json()["error_details"] == {"extra": ["unknown_field"],
                                           "reason": ["value_is_mandatory"],
                                           "transaction_ids": ["value_is_invalid"]}
    missing = client.get(f"/api/v1/tallyflow/events/{SUB}/nope")
    assert missing.status_code == 404 and missing.json()["code"] == "event_not_found"
    anonymous = client.post(VOID, headers={"Authorization": "Bearer tf_wrong"},
                            json={"external_subscription_id": SUB, "transaction_id": "b1",
                                  "reason": "x"})
    assert anonymous.status_code == 401
    assert events_stored(engine)[2] == ("b1", False)
