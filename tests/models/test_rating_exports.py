"""``tallyflow.models.rating`` loads its submodules on first use; what it exports must stay
what its submodules define, and importing one submodule must not load the others."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import tallyflow.models.rating as rating

INIT = Path(rating.__file__)


def test_the_lazy_table_is_the_type_checking_imports_and_all() -> None:
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    imported: dict[str, tuple[str, ...]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(rating.__name__):
            imported[node.module.rsplit(".", 1)[1]] = tuple(a.name for a in node.names)
    assert imported == rating._EXPORTS
    assert sorted(rating._SUBMODULE_OF) == sorted(rating.__all__)


def test_every_export_is_its_submodule_s_object() -> None:
    for module, names in rating._EXPORTS.items():
        sub = importlib.import_module(f"{rating.__name__}.{module}")
        for name in names:
            assert getattr(rating, name) is getattr(sub, name), name
        assert getattr(rating, module) is sub
    assert set(rating.__all__) <= set(dir(rating))


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        rating.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("no AttributeError")


def test_money_alone_does_not_load_the_rating_code() -> None:
    code = ("import sys\n"
            "from tallyflow.models.rating.money import plain_text\n"
            "from tallyflow.models.rating import to_minor\n"
            "print(sorted(m for m in sys.modules if m.startswith('tallyflow.models.rating.')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert ast.literal_eval(done.stdout) == ["tallyflow.models.rating.money"]
