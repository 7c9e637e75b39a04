"""The schema package: every table is reachable under its own name (no submodule shadows one)
and the package's ``metadata`` holds them all (Alembic's target, the drift test's reference)."""

from __future__ import annotations

import pkgutil

from sqlalchemy import Table

from tallyflow.models import tables


def test_every_table_is_the_attribute_of_its_name() -> None:
    assert tables.metadata.tables
    for name, table in tables.metadata.tables.items():
        assert getattr(tables, name) is table, name
        assert isinstance(getattr(tables, name), Table)


def test_no_module_is_named_like_a_table() -> None:
    modules = {m.name for m in pkgutil.iter_modules(tables.__path__)}
    assert not modules & set(tables.metadata.tables)
