"""Access: hashed API keys for the HTTP API.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Table,
    Text,
    func,
)

from tallyflow.models.tables.base import _pk, metadata

# API keys of `tallyflow api` (Lago's `Authorization: Bearer <key>`). Only a SHA-256 of the
# key is stored: a leaked database does not give working keys. ``prefix`` (the key's first
# characters) lets people tell keys apart in `tallyflow api-keys list`. Revoked keys stay as a
# record of who had access; they no longer authenticate.
api_keys = Table(
    "api_keys",
    metadata,
    _pk(),
    Column("name", Text, nullable=False),
    Column("prefix", Text, nullable=False),
    Column("key_hash", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
)
