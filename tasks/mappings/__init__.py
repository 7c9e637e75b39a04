"""Declarative mappings: one YAML/JSON file each (plus its golden fixture), read on first use.

``load_file`` is also what ``--mapping FILE`` and the flow form use for a user's own mapping.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from models.mappings import DeclarativeMapping, MappingInvalid

HERE = Path(__file__).resolve().parent


def load_file(path: str | Path) -> DeclarativeMapping:
    """A mapping file; every problem is a ``MappingInvalid`` naming the file and the place."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingInvalid(f"{path}: cannot read the mapping file ({exc.strerror})") from None
    try:
        data: Any = (json.loads(text) if path.suffix.lower() == ".json"
                     else yaml.safe_load(text))
    except (ValueError, yaml.YAMLError) as exc:
        raise MappingInvalid(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: "
                             f"{' '.join(str(exc).split())[:300]}") from None
    return DeclarativeMapping.from_data(data, str(path), base=path.parent)


def is_mapping_file(name: str) -> bool:
    return name.lower().endswith((".yaml", ".yml", ".json"))


openai_chat = load_file(HERE / "openai_chat.yaml")
openai_responses = load_file(HERE / "openai_responses.yaml")
openai_batch = load_file(HERE / "openai_batch.yaml")
anthropic_messages = load_file(HERE / "anthropic_messages.yaml")
mistral_chat = load_file(HERE / "mistral_chat.yaml")
bedrock_converse = load_file(HERE / "bedrock_converse.yaml")
litellm_spend = load_file(HERE / "litellm_spend.yaml")
