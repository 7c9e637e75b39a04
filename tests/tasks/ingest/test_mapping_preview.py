"""A mapping tried on an object without writing: the first rows only, read the way ingestion
reads them (here Bedrock's gzip invocation logs named .json.gz)."""

from __future__ import annotations

import gzip
from pathlib import Path

from tallyflow.tasks.ingest import preview
from tallyflow.tasks.ingest.mappings import HERE


def test_preview_reads_the_first_rows_of_a_compressed_object(tmp_path: Path) -> None:
    lines = (HERE / "bedrock_invocation_log.golden.jsonl").read_bytes()
    (tmp_path / "log.json.gz").write_bytes(gzip.compress(lines))
    whole = preview("bedrock-invocation-log", str(tmp_path / "log.json.gz"), rows=100)
    assert (whole.records, len(whole.events), len(whole.rejects)) == (3, 7, 1)
    assert whole.rejects[0]["reason"] == "provider_error"
    first = preview("bedrock-invocation-log", (tmp_path / "log.json.gz").as_uri(), rows=1)
    assert first.records == 1
    assert [e["properties"]["type"] for e in first.events] == ["input", "cache_read", "output"]
    assert "output.outputBodyJson.usage.cacheDetails[ttl=1h].inputTokens|output.outputBodyJson" \
        ".usage.cache_creation.ephemeral_1h_input_tokens" in first.paths_never_matched
