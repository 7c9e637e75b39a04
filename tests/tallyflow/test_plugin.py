"""The plugin contract (docs/ingest.md, "Adding a source"): ``tallyflow.plugin`` names what a
source or mapping package imports, each the very object of its home module, and the path
plugins used before it, ``tallyflow.tasks.sources``, still gives what they imported."""

from __future__ import annotations

import importlib

import pytest

import tallyflow.plugin as plugin

# Where each public name lives; a name moved by the architecture round changes here (and its
# old path stays an alias), never in a plugin.
HOMES = {
    "SourceError": "tallyflow.errors",
    "Reason": "tallyflow.models.events",
    "Rejection": "tallyflow.models.events",
    "DeclarativeMapping": "tallyflow.models.mappings",
    "Events": "tallyflow.models.mappings",
    "Mapping": "tallyflow.models.mappings",
    "MappingInvalid": "tallyflow.models.mappings",
    "MapResult": "tallyflow.models.mappings",
    "NoOptions": "tallyflow.models.mappings",
    "MAPPING_GROUP": "tallyflow.tasks.plugins",
    "SOURCE_GROUP": "tallyflow.tasks.plugins",
    "PluginWarning": "tallyflow.tasks.plugins",
    "FORMATS": "tallyflow.tasks.ingest.readers",
    "ObjectRef": "tallyflow.tasks.sources",
    "Source": "tallyflow.tasks.sources",
    "SourceSpec": "tallyflow.tasks.sources",
    "build_source": "tallyflow.tasks.sources",
    "resolve_mapping": "tallyflow.tasks.sources",
}


def test_all_names_the_contract_and_nothing_else() -> None:
    assert sorted(plugin.__all__) == sorted([*HOMES, "CONTRACT_VERSION"])
    assert len(set(plugin.__all__)) == len(plugin.__all__)
    # "@py_builtins" and "@pytest_ar": pytest's assertion rewriting, which covers Tallyflow's
    # modules once the installed package registers its pytest plugin (pytest11)
    public = {name for name in vars(plugin)
              if not name.startswith(("_", "@")) and name != "annotations"}
    assert public == set(plugin.__all__), public ^ set(plugin.__all__)
    assert isinstance(plugin.CONTRACT_VERSION, int) and plugin.CONTRACT_VERSION >= 1


@pytest.mark.parametrize("name", sorted(HOMES))
def test_each_name_is_the_object_of_its_home(name: str) -> None:
    assert getattr(plugin, name) is getattr(importlib.import_module(HOMES[name]), name)


def test_the_old_path_still_gives_what_plugins_imported() -> None:
    """What plugins written before ``tallyflow.plugin`` import (the guide's example did)."""
    import tallyflow.tasks.sources as old

    for name in ("Source", "ObjectRef", "SourceSpec", "SourceError", "build_source",
                 "resolve_mapping", "Mapping"):
        assert getattr(old, name) is getattr(plugin, name), name


def test_a_source_written_against_the_contract_is_registered_and_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic import BaseModel, ConfigDict

    from tallyflow.tasks.ingest import plugins

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class Inbox(plugin.Source):
        kind = "inbox"
        Config = Options

        def list(self):
            yield plugin.ObjectRef(url="inbox://a/1", version="v1", format="jsonl")

        def open(self, ref):
            raise plugin.SourceError("gone", "hint")

    monkeypatch.setitem(plugins.registry().sources, "inbox", Inbox)
    built = plugin.build_source(plugin.SourceSpec(kind="inbox", url="inbox://a"))
    assert [r.url for r in built.list()] == ["inbox://a/1"]
    with pytest.raises(plugin.SourceError, match="does not take pattern"):
        plugin.build_source(plugin.SourceSpec(kind="inbox", url="inbox://a", pattern="*.x"))
