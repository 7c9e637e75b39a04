"""One LLM request billed once across mappings (docs/architecture.md §3, invariant 2): the
same OpenAI completion read from a LiteLLM spend log and from the gateway's response log bills
once, as the first source read it; a different split is a conflict (reported, not billed),
never extra events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from tallyflow.infra import failpoints
from tallyflow.tasks.ingest import SourceSpec, build_source, ingest_object, register_objects

CHAT = {"id": "chatcmpl-X1", "object": "chat.completion", "created": 1764000000,
        "model": "gpt-4o-mini", "user": "sub_acme", "choices": [],
        "usage": {"prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280,
                  "prompt_tokens_details": {"cached_tokens": 1024}}}
# LiteLLM's row for the same call, with its usage object: the same split once mapped
SPEND = {"request_id": "chatcmpl-X1", "model": "gpt-4o-mini", "end_user": "sub_acme",
         "startTime": "2025-11-24T16:00:00", "prompt_tokens": 1200, "completion_tokens": 80,
         "spend": 0.0004,
         "metadata": {"usage_object": {"prompt_tokens": 1200, "completion_tokens": 80,
                                       "prompt_tokens_details": {"cached_tokens": 1024}}}}
# ... and a row exported without the usage object: input includes the cached tokens
SPEND_BARE = {k: v for k, v in SPEND.items() if k != "metadata"}


def _ingest(engine: Engine, folder: Path, name: str, mapping: str, record: dict[str, Any]
            ) -> Any:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(json.dumps(record) + "\n")
    source = build_source(SourceSpec(url=folder.as_uri(), pattern=name, mapping=mapping))
    (object_id,) = register_objects(engine, source, source.list())
    return ingest_object(engine, source, object_id)


def _billed(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(text(
            "select properties->>'type', sum((properties->>'tokens')::int) from events"
            " where voided_at is null group by 1")).all())


def _rejects(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "select reason, field from rejected_rows order by row_number, sub_index"))]


def test_the_same_request_through_two_mappings_bills_once(engine: Engine, tmp_path: Path
                                                          ) -> None:
    first = _ingest(engine, tmp_path / "gw", "a.jsonl", "openai-chat", CHAT)
    assert first.accepted == 3
    again = _ingest(engine, tmp_path / "ll", "b.jsonl", "litellm-spend", SPEND)
    assert (again.accepted, again.duplicates, again.conflicts) == (0, 3, 0)
    assert _billed(engine) == {"input": 176, "cache_read": 1024, "output": 80}
    assert _rejects(engine) == []


def test_another_split_of_the_same_request_is_a_conflict_not_extra_events(
    engine: Engine, tmp_path: Path
) -> None:
    first = _ingest(engine, tmp_path / "ll", "a.jsonl", "litellm-spend", SPEND_BARE)
    assert first.accepted == 2  # input 1200 (cached inside), output 80
    again = _ingest(engine, tmp_path / "gw", "b.jsonl", "openai-chat", CHAT)
    assert (again.accepted, again.duplicates, again.conflicts) == (0, 0, 3)
    assert _billed(engine) == {"input": 1200, "output": 80}  # the cached tokens billed once
    assert _rejects(engine) == [("request_conflict", "properties.request_id")] * 3
    with engine.connect() as conn:
        message, raw = conn.execute(text(
            "select message, raw from rejected_rows order by sub_index limit 1")).one()
    assert "chatcmpl-X1" in message and "litellm-spend" in message and "a.jsonl" in message
    assert json.loads(raw)["transaction_id"] == "chatcmpl-X1:input"


def test_the_same_record_again_through_its_mapping_is_a_plain_duplicate(
    engine: Engine, tmp_path: Path
) -> None:
    _ingest(engine, tmp_path / "gw", "a.jsonl", "openai-chat", CHAT)
    again = _ingest(engine, tmp_path / "gw", "b.jsonl", "openai-chat", CHAT)
    assert (again.accepted, again.duplicates, again.conflicts) == (0, 3, 0)
    changed = {**CHAT, "usage": {**CHAT["usage"], "completion_tokens": 81}}
    third = _ingest(engine, tmp_path / "gw", "c.jsonl", "openai-chat", changed)
    assert (third.accepted, third.conflicts) == (0, 3)  # the whole record, not just output
    assert _billed(engine) == {"input": 176, "cache_read": 1024, "output": 80}


def test_a_different_subscriber_for_the_same_request_is_a_conflict(
    engine: Engine, tmp_path: Path
) -> None:
    _ingest(engine, tmp_path / "gw", "a.jsonl", "openai-chat", CHAT)
    other = _ingest(engine, tmp_path / "ll", "b.jsonl", "litellm-spend",
                    {**SPEND, "end_user": "sub_beta"})
    assert (other.accepted, other.conflicts) == (0, 3)
    with engine.connect() as conn:
        subscribers = conn.execute(text(
            "select distinct external_subscription_id from events")).scalars().all()
    assert subscribers == ["sub_acme"]


def test_a_crash_after_the_merge_leaves_no_request_owned(engine: Engine, tmp_path: Path) -> None:
    """The request ledger commits with the events: a failure after the merge rolls back both,
    and the rerun bills the request once, still owned by its first source."""
    folder = tmp_path / "gw"
    folder.mkdir()
    (folder / "a.jsonl").write_text(json.dumps(CHAT) + "\n")
    source = build_source(SourceSpec(url=folder.as_uri(), mapping="openai-chat"))
    (object_id,) = register_objects(engine, source, source.list())

    def boom(_: Any) -> None:
        raise RuntimeError("injected after the merge")

    with failpoints.hooked("ingest.after_merge", boom):
        failed = ingest_object(engine, source, object_id)
    assert failed.status == "failed"
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from event_requests")).scalar_one() == 0
    assert _billed(engine) == {}
    assert ingest_object(engine, source, object_id).accepted == 3
    later = _ingest(engine, tmp_path / "ll", "b.jsonl", "litellm-spend", SPEND_BARE)
    assert (later.accepted, later.conflicts) == (0, 2)
    assert _billed(engine) == {"input": 176, "cache_read": 1024, "output": 80}
