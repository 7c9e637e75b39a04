"""The built-in mapping files are read with libyaml's parser (start-up cost); they must mean
exactly what the pure-Python parser, which reads a user's mapping file, makes of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tallyflow.tasks import mappings


@pytest.mark.parametrize("path", sorted(mappings.HERE.glob("*.yaml")), ids=lambda p: p.name)
def test_a_built_in_file_reads_the_same_with_either_parser(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert yaml.load(text, Loader=mappings._FAST_SAFE_LOADER) == yaml.safe_load(text)


def test_the_built_ins_use_libyaml_where_it_is_installed() -> None:
    assert mappings._FAST_SAFE_LOADER is (yaml.CSafeLoader if yaml.__with_libyaml__
                                          else yaml.SafeLoader)
    assert set(mappings.BUILTIN) == {
        mappings.load_file(p).name for p in mappings.HERE.glob("*.yaml")}
