"""The shared ``metadata`` (naming convention) and the column helpers every table uses.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    MetaData,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _pk() -> Column[Any]:
    return Column("id", BigInteger, Identity(always=False), primary_key=True)


def _timestamps() -> list[Column[Any]]:
    return [
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ]


def _document() -> list[Column[Any]]:
    # The normalised Lago payload as applied, for export (round trip) and for "did it change"
    # checks: re-applying an identical document is a no-op because the digest matches.
    return [
        Column("document", JSONB, nullable=False),
        Column("digest", Text, nullable=False),
    ]
