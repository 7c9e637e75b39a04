"""The conformance suite for sources and mappings, shipped as a pytest plugin.

A plugin's own repository runs it against the installed Tallyflow::

    pytest --tallyflow-conformance                      # the sources/mappings its entry points add
    pytest --tallyflow-conformance --tallyflow-source manifest   # or these, by name

or calls it from a test of its own through the ``tallyflow_conformance`` fixture
(``tallyflow_conformance.check("manifest")``). Tallyflow's own suite runs the same checks for
every registered source and mapping, built-ins included
(tests/tasks/ingest/test_sources_conformance.py).

Nothing here knows a particular source or mapping. A source says how to list a folder holding
the golden Lago batch (``Source.golden_case``) and, optionally, how to name something missing
(``Source.missing_case``); a mapping ships its golden records and the exact events and rejects
they give (``Mapping.golden``, ``Mapping.expected``). The checks (``SOURCE_CHECKS``,
``MAPPING_CHECKS``) are the contract of docs/ingest.md, "Adding a source". Those marked
``needs_database`` ingest through the real loader: they use a scratch database they create on
the server of ``TALLYFLOW_DATABASE_URL`` (dropped afterwards; never the database itself) and
are skipped, saying so, when it is not set. The others need nothing but the source.

Without ``--tallyflow-conformance`` the plugin adds only the fixture: it collects nothing and
imports no Tallyflow module until a check runs, so loading it costs a test run nothing.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tallyflow.plugin import Mapping, ObjectRef, Source, SourceSpec

GOLDEN = Path(__file__).parent / "golden"
# The fields the ingest ledger keeps of a listed object: a reread (``reingest-object``, a failed
# object retried, a replay) opens a ref rebuilt from these alone.
LEDGER_FIELDS = frozenset({"url", "version", "size", "modified_at", "format", "compression"})
COMPRESSIONS = (None, "gzip", "zstd")
DATABASE_ENV = "TALLYFLOW_DATABASE_URL"


def _database_url() -> str | None:
    """``TALLYFLOW_DATABASE_URL`` as every Tallyflow process reads it: through the one Settings
    (docs/architecture.md §12), imported only when a check asks."""
    from tallyflow.infra.settings import configured_database_url

    return configured_database_url()


class ConformanceError(AssertionError):
    """A check failed: the message says what the contract requires and what was seen."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConformanceError(message)


@dataclass
class Context:
    """What one check works with: a fresh local folder, and the database when it needs one."""

    folder: Path
    engine: Engine | None = None


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Any, Context], None]
    needs_database: bool = False
    doc: str = ""


# --------------------------------------------------------------------------------------------
# Source checks
# --------------------------------------------------------------------------------------------


def _golden_lines() -> list[str]:
    return (GOLDEN / "lago.jsonl").read_text().splitlines()


def _golden_folder(ctx: Context) -> Path:
    """The golden Lago batch in a folder, with a marker file no source may list as an object."""
    folder = ctx.folder / "bucket"
    folder.mkdir(exist_ok=True)
    shutil.copy(GOLDEN / "lago.jsonl", folder / "golden.jsonl")
    (folder / "_SUCCESS").write_text("")
    return folder


def _golden_spec(cls: type[Source], folder: Path) -> SourceSpec:
    spec = cls.golden_case(folder)
    _require(spec is not None, f"source kind {cls.kind!r} needs a golden_case: the spec that "
             "lists the golden object put in a local folder (docs/ingest.md, Adding a source)")
    assert spec is not None
    return spec


def _listed(cls: type[Source], ctx: Context) -> tuple[Source, list[ObjectRef]]:
    from tallyflow.plugin import build_source

    source = build_source(_golden_spec(cls, _golden_folder(ctx)))
    return source, list(source.list())


def _is_file_url(url: str) -> bool:
    """A URL fsspec resolves (a path, file://, s3://, memory://, ...) names a file."""
    from fsspec.registry import known_implementations

    return "://" not in url or url.split("://", 1)[0] in known_implementations


def check_lists_the_golden_object(cls: type[Source], ctx: Context) -> None:
    """Exactly the golden object is listed, as an ``ObjectRef`` the ledger can keep."""
    from fsspec.core import url_to_fs

    from tallyflow.plugin import FORMATS, ObjectRef

    _source, listed = _listed(cls, ctx)
    _require(len(listed) == 1, f"a folder holding golden.jsonl (and a _SUCCESS marker) lists "
             f"exactly one object; got {len(listed)}: {[r.url for r in listed]}")
    ref = listed[0]
    _require(isinstance(ref, ObjectRef), f"list() yields ObjectRef, not {type(ref).__name__}")
    _require(bool(ref.url), "ObjectRef.url is the object's identity: it must not be empty")
    _require(bool(ref.version), "ObjectRef.version must not be empty: it tells a rewritten "
             "object (a new version, read again) from one already read")
    _require(ref.format in FORMATS, f"ObjectRef.format {ref.format!r} is not one of {FORMATS}")
    _require(ref.compression in COMPRESSIONS,
             f"ObjectRef.compression {ref.compression!r} is not one of {COMPRESSIONS}")
    _require(ref.size is None or ref.size >= 0, f"ObjectRef.size {ref.size!r} is negative")
    _require(ref.modified_at is None or ref.modified_at.tzinfo is not None,
             f"ObjectRef.modified_at {ref.modified_at!r} must be timezone-aware")
    if _is_file_url(ref.url):
        fs, path = url_to_fs(ref.url)
        _require(fs.exists(path), f"{ref.url} is a file URL (fsspec resolves it) but no file "
                 "is there; a source whose objects are not files names them <kind>://...")
        size = fs.info(path).get("size")
        _require(ref.size == size, f"a file's ObjectRef.size is its size in bytes: {size}, "
                 f"listed as {ref.size!r}")
    else:
        _require("://" in ref.url and ref.url.split("://", 1)[0] != "",
                 f"an object that is not a file is named <kind>://..., got {ref.url!r}")


def check_listing_is_stable(cls: type[Source], ctx: Context) -> None:
    """Listing again, nothing having changed, gives the same objects with the same versions:
    the ledger reads an object once per version, and a replay reads only objects still at the
    version that was read."""
    source, first = _listed(cls, ctx)
    second = list(source.list())
    before = sorted((r.url, r.version) for r in first)
    after = sorted((r.url, r.version) for r in second)
    _require(before == after, f"listing twice gave other objects or versions: {before} then "
             f"{after} (a version must change only when the object's bytes do)")
    _require(len(set(before)) == len(before), f"an object is listed twice: {before}")


def _records(ref: ObjectRef, stream: Any) -> list[Any]:
    from tallyflow.tasks.ingest import READERS

    return [record for chunk in READERS[ref.format](stream, 1000) for _row, record, _ in chunk]


def check_opens_what_it_lists(cls: type[Source], ctx: Context) -> None:
    """``open()`` gives the object's records (decompressed), also from a ref rebuilt from
    the ledger's fields alone, as a reread does."""
    from tallyflow.plugin import ObjectRef

    source, listed = _listed(cls, ctx)
    _require(len(listed) == 1, f"exactly the golden object is listed; got {len(listed)}")
    with (GOLDEN / "lago.jsonl").open("rb") as golden:
        expected = _records(ObjectRef(url="golden", version="1", format="jsonl"), golden)
    for ref in (listed[0], ObjectRef(**listed[0].model_dump(include=set(LEDGER_FIELDS)))):
        with source.open(ref) as stream:
            data = stream.read()
        _require(isinstance(data, bytes), f"open() gives a binary stream, read() gave "
                 f"{type(data).__name__}")
        got = _records(ref, io.BytesIO(data))
        _require(got == expected, f"open({ref.url}) does not give the golden records: "
                 f"{len(got)} record(s), first {got[:1]}")


def check_missing_is_a_source_error(cls: type[Source], ctx: Context) -> None:
    """Listing something that is not there raises ``SourceError`` (one line and a hint), the
    error a run reports as such; anything else is a bug in the source."""
    from tallyflow.plugin import SourceError, build_source

    missing = ctx.folder / "missing"
    spec = cls.missing_case(missing / "bucket")
    if spec is None:
        missing.mkdir()
        spec = _golden_spec(cls, _golden_folder(Context(missing)))
        shutil.rmtree(missing)
    try:
        list(build_source(spec).list())
    except SourceError as exc:
        _require(bool(exc.message) and "\n" not in str(exc),
                 f"a SourceError is one line: {str(exc)!r}")
        return
    except Exception as exc:
        raise ConformanceError(
            f"listing a missing {spec.url} raised {type(exc).__name__}: {exc}; a source raises "
            "SourceError(message, hint) for what cannot be listed (tallyflow.plugin)") from exc
    raise ConformanceError(f"listing a missing {spec.url} raised nothing: it must raise "
                           "SourceError (an empty listing hides a wrong URL)")


def _ingest_golden(cls: type[Source], ctx: Context) -> tuple[Source, int]:
    from tallyflow.plugin import build_source

    assert ctx.engine is not None
    folder = _golden_folder(ctx)
    source = build_source(_golden_spec(cls, folder))
    expected = json.loads((GOLDEN / "lago.expected.json").read_text())
    object_id = _check(ctx.engine, source, expected, _golden_lines())
    from sqlalchemy import text

    with ctx.engine.connect() as conn:
        medium = conn.execute(text("select properties->>'tokens' from events"
                                   " where transaction_id = 'g-3'")).scalar_one()
    _require(medium == "0.5", f"g-3's tokens are the exact decimal 0.5, got {medium!r}")
    return source, object_id


def check_ingests_the_golden_batch(cls: type[Source], ctx: Context) -> None:
    """Listed, registered and loaded by the real loader: the exact Lago outcome (events,
    rejects at their own row with their original text, counts), exactly once."""
    _ingest_golden(cls, ctx)


def check_reingest(cls: type[Source], ctx: Context) -> None:
    """After reading: listing again gives the same versions (nothing new to read); the object
    read again on its own, as ``reingest-object`` does (the source built on the object's URL
    lists exactly that object, same version), counts every event once; and the same records
    under another object name add nothing (derived transaction ids are stable)."""
    from tallyflow.plugin import SourceSpec, build_source
    from tallyflow.tasks.ingest import ingest_object, register_objects

    assert ctx.engine is not None
    source, _object_id = _ingest_golden(cls, ctx)
    expected = json.loads((GOLDEN / "lago.expected.json").read_text())
    again = list(source.list())
    _require(len(again) == 1, f"after reading, the golden object is still the one listed: "
             f"{[r.url for r in again]}")
    _require(register_objects(ctx.engine, source, again) == [],
             "after reading, listing again must find nothing new (same URL and version)")
    ref = again[0]
    one = build_source(SourceSpec.model_validate(
        {**source.spec.model_dump(), "url": ref.url, "pattern": None}))
    alone = [(r.url, r.version) for r in one.list()]
    _require(alone == [(ref.url, ref.version)], f"built on the object's own URL {ref.url} "
             f"(tallyflow's reingest-object), the source lists {alone}, not that object")
    (object_id,) = register_objects(ctx.engine, one, one.list())
    reread = ingest_object(ctx.engine, one, object_id)
    _require(reread.status == "ingested", f"reading the object again failed: {reread.error}")
    _counted_once(reread, expected, "read again")
    _replay(ctx.engine, ctx.folder / "bucket", lambda f: _golden_spec(cls, f), expected)


SOURCE_CHECKS: tuple[Check, ...] = (
    Check("lists_the_golden_object", check_lists_the_golden_object),
    Check("listing_is_stable", check_listing_is_stable),
    Check("opens_what_it_lists", check_opens_what_it_lists),
    Check("missing_is_a_source_error", check_missing_is_a_source_error),
    Check("ingests_the_golden_batch", check_ingests_the_golden_batch, needs_database=True),
    Check("reingest", check_reingest, needs_database=True),
)


# --------------------------------------------------------------------------------------------
# Mapping checks
# --------------------------------------------------------------------------------------------


def check_ships_a_golden_fixture(mapping: Mapping, ctx: Context) -> None:
    """A mapping ships its golden records and the exact events and rejects they give."""
    golden, expected = mapping.golden, mapping.expected
    _require(bool(golden and golden.is_file() and expected and expected.is_file()),
             f"mapping {mapping.name!r} needs golden records and expected events (its golden "
             f"and expected files): golden={golden}, expected={expected}")
    assert expected is not None
    _require(bool(json.loads(expected.read_text()).get("rejects")),
             f"{mapping.name}'s golden records must include a rejected one")


def check_mapping_ingests_its_golden_records(mapping: Mapping, ctx: Context) -> None:
    """Its golden records, read from a folder by the built-in source, give exactly the
    expected events and rejects, once; replayed under another name, nothing new."""
    from tallyflow.plugin import SourceSpec, build_source

    check_ships_a_golden_fixture(mapping, ctx)
    assert mapping.golden is not None and mapping.expected is not None and ctx.engine
    expected = json.loads(mapping.expected.read_text())
    folder = ctx.folder / "bucket"
    folder.mkdir()
    shutil.copy(mapping.golden, folder / f"golden{mapping.golden.suffix}")
    (folder / "_SUCCESS").write_text("")  # marker files in a bucket are not events
    spec = SourceSpec(kind="fsspec", url=folder.as_uri(), mapping=mapping.name)
    _check(ctx.engine, build_source(spec), expected, mapping.golden.read_text().splitlines())
    _replay(ctx.engine, folder, lambda _folder: spec, expected)


MAPPING_CHECKS: tuple[Check, ...] = (
    Check("ships_a_golden_fixture", check_ships_a_golden_fixture),
    Check("ingests_its_golden_records", check_mapping_ingests_its_golden_records,
          needs_database=True),
)


# --------------------------------------------------------------------------------------------
# Through the loader (the checks that need PostgreSQL)
# --------------------------------------------------------------------------------------------


def _events(engine: Engine, object_id: int) -> list[dict[str, Any]]:
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(
            text('select row_number, sub_index, transaction_id, external_subscription_id, code,'
                 ' "timestamp", properties from events where object_id = :o'
                 " order by row_number, sub_index"), {"o": object_id}).all()
    return [{"row": r[0], "sub": r[1], "transaction_id": r[2], "external_subscription_id": r[3],
             "code": r[4], "timestamp": r[5].isoformat(), "properties": r[6]} for r in rows]


def _rejects(engine: Engine, object_id: int) -> list[tuple[Any, ...]]:
    from sqlalchemy import text

    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            text("select row_number, reason, field, raw from rejected_rows where object_id = :o"
                 " order by row_number, sub_index"), {"o": object_id})]


def _check(engine: Engine, source: Source, expected: dict[str, Any], lines: list[str]) -> int:
    from tallyflow.tasks.ingest import ingest_object, register_objects

    listed = list(source.list())
    _require(len(listed) == 1, f"exactly the golden object is listed, got {len(listed)}")
    _require([r.version for r in source.list()] == [listed[0].version], "versions are stable")
    (object_id,) = register_objects(engine, source, listed)
    result = ingest_object(engine, source, object_id)
    _require(result.status == "ingested", f"the golden object failed to load: {result.error}")
    events = _events(engine, object_id)
    _require(events == expected["events"],
             f"events differ from the expected ones:\n got      {events}\n expected "
             f"{expected['events']}")
    rejects = _rejects(engine, object_id)
    got = [(r[0], r[1], r[2]) for r in rejects]
    want = [(r["row"], r["reason"], r["field"]) for r in expected["rejects"]]
    _require(got == want, f"rejects (row, reason, field) {got}, expected {want}")
    # a reject keeps the record as it came, at its own line (a conflicting duplicate keeps
    # the event that was kept out, as a Lago event to fix and replay)
    for row, reason, _field, raw in rejects:
        if reason != "conflicting_duplicate":
            _require(raw == lines[row - 1], f"row {row}'s reject keeps the original record")
    _require(result.accepted == len(expected["events"]), f"{result.accepted} accepted")
    _require(result.duplicates == expected["duplicates"], f"{result.duplicates} duplicates")
    conflicts = sum(r["reason"] == "conflicting_duplicate" for r in expected["rejects"])
    _require((result.rejected, result.conflicts) == (len(expected["rejects"]) - conflicts,
                                                     conflicts),
             f"{result.rejected} rejected and {result.conflicts} conflicts")
    _accounted(engine, result, lines, expected)
    # exactly once: listing again finds nothing to do
    _require(register_objects(engine, source, source.list()) == [],
             "listing again after loading registered the object again (exactly once)")
    return object_id


def _accounted(engine: Engine, result: Any, lines: list[str], expected: dict[str, Any]) -> None:
    """Every record read is emitted, rejected or empty, and the ledger says the same."""
    from sqlalchemy import text

    records = sum(1 for line in lines if line.strip())
    _require(result.records == records, f"{result.records} records read, {records} there")
    _require(result.records == result.records_emitted + result.rejected + result.records_empty,
             "records = emitted + rejected + empty")
    _require(result.events == result.accepted + result.duplicates + result.conflicts,
             "events = accepted + duplicates + conflicts")
    emitted = {event["row"] for event in expected["events"]} | {
        r["row"] for r in expected["rejects"] if r["reason"] == "conflicting_duplicate"}
    if not expected["duplicates"]:
        _require(result.records_emitted == len(emitted), "emitted records = rows with events")
    with engine.connect() as conn:
        ledger = conn.execute(
            text("select records, records_emitted, records_empty, events, rejected"
                 " from ingest_objects where id = :o"), {"o": result.object_id}).one()
    _require(tuple(ledger) == (result.records, result.records_emitted, result.records_empty,
                               result.events, result.rejected), "the ledger's counts agree")


def _replay(engine: Engine, folder: Path, spec: Callable[[Path], SourceSpec | None],
            expected: dict[str, Any]) -> None:
    """The same records under another object name: nothing new, every event a duplicate."""
    from tallyflow.plugin import build_source
    from tallyflow.tasks.ingest import ingest_object, register_objects

    first = next(folder.glob("golden.*"))
    (folder / f"zz-replay{first.suffix}").write_bytes(first.read_bytes())
    again = spec(folder)
    assert again is not None
    source = build_source(again)
    (object_id,) = register_objects(engine, source, source.list())
    _counted_once(ingest_object(engine, source, object_id), expected,
                  "under another object name")


def _counted_once(result: Any, expected: dict[str, Any], how: str) -> None:
    """The golden records loaded a second time: no event added, each a duplicate (derived
    transaction ids are stable), the conflicts as before."""
    _require(result.accepted == 0, f"the same records {how} add nothing: {result.accepted} "
             "accepted (derived transaction ids must be stable)")
    _require(result.conflicts == sum(r["reason"] == "conflicting_duplicate"
                                     for r in expected["rejects"]),
             f"the same records {how}: {result.conflicts} conflicts")
    _require(result.duplicates == len(expected["events"]) + expected["duplicates"],
             f"the same records {how}: every event is a duplicate, {result.duplicates} were")


# --------------------------------------------------------------------------------------------
# The runner, the fixture and the pytest plugin
# --------------------------------------------------------------------------------------------


def _emptied(engine: Engine) -> Engine:
    """Every table emptied: each check starts from nothing (its golden events are new)."""
    from sqlalchemy import text

    from tallyflow.models.tables import metadata

    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"truncate {names} restart identity cascade"))
    return engine


class ScratchDatabase:
    """A database of its own on the server of ``TALLYFLOW_DATABASE_URL``, migrated once
    (emptied before each check); dropped at the end. Never the configured database itself: the
    checks empty every table."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._admin: Engine | None = None
        self._name = f"tallyflow_conformance_{uuid.uuid4().hex[:10]}"

    def engine(self) -> Engine:
        from sqlalchemy import create_engine, make_url, text

        from tallyflow.infra import db, migrate

        if self._engine is None:
            url = make_url(db.normalise_url(self.url))
            self._admin = create_engine(url.set(database="postgres"),
                                        isolation_level="AUTOCOMMIT")
            with self._admin.connect() as conn:
                conn.execute(text(f'create database "{self._name}"'))
            self._engine = create_engine(url.set(database=self._name))
            migrate.upgrade(self._engine)
        return self._engine

    def drop(self) -> None:
        from sqlalchemy import text

        if self._engine is not None:
            self._engine.dispose()
        if self._admin is not None:
            with self._admin.connect() as conn:
                conn.execute(text(f'drop database if exists "{self._name}" with (force)'))
            self._admin.dispose()


class Conformance:
    """Runs the checks for a source kind or a mapping name (the ``tallyflow_conformance``
    fixture). ``engine``: a migrated test database whose tables each check empties
    (Tallyflow's own suite passes its test database); otherwise the checks that need one use
    a ``ScratchDatabase`` on the server of ``TALLYFLOW_DATABASE_URL``, skipped without it."""

    def __init__(self, workdir: Path | None = None, engine: Engine | None = None) -> None:
        self.workdir = workdir
        self.engine = engine
        self._scratch: ScratchDatabase | None = None

    @staticmethod
    def registry() -> Any:
        from tallyflow.tasks.ingest import plugins

        return plugins.registry()

    def plugin_names(self) -> list[str]:
        """What installed plugins register (entry points), not the built-ins."""
        origin = self.registry().origin
        return sorted({key.split(":", 1)[1] for key, where in origin.items()
                       if where != "built-in"})

    def checks(self, name: str) -> list[Check]:
        """The checks that apply to ``name``: a source kind's, a mapping's, or both."""
        registry = self.registry()
        found = (list(SOURCE_CHECKS) if name in registry.sources else []) + (
            list(MAPPING_CHECKS) if name in registry.mappings else [])
        if not found:
            broken = [b for b in registry.broken if b.name == name]
            raise ConformanceError(
                f"{name!r} failed to load: {broken[0].error}" if broken else
                f"{name!r} is not a registered source or mapping; registered: sources "
                f"{sorted(registry.sources)}, mappings {sorted(registry.mappings)}")
        return found

    def run(self, name: str, check: Check | str) -> None:
        """One check for one source or mapping; skips (pytest.skip) a check that needs a
        database when none is given or configured."""
        registry = self.registry()
        if isinstance(check, str):
            named = {c.name: c for c in self.checks(name)}
            if check not in named:
                raise ConformanceError(f"no check {check!r} for {name!r}; its checks: "
                                       f"{', '.join(named)}")
            check = named[check]
        target = registry.sources[name] if check in SOURCE_CHECKS else registry.mappings[name]
        engine = None
        if check.needs_database:
            engine = _emptied(self.engine or self._scratch_engine())
        with self._folder() as folder:
            check.run(target, Context(folder, engine))

    def check(self, name: str) -> int:
        """Every check for ``name``; returns how many ran (a failure raises)."""
        ran = 0
        for check in self.checks(name):
            if check.needs_database and self.engine is None and not _database_url():
                continue
            self.run(name, check)
            ran += 1
        return ran

    def no_plugin_is_broken(self) -> None:
        broken = self.registry().broken
        _require(not broken, "plugin(s) failed to load: " + "; ".join(
            f"{b.name} ({b.group}, {b.target}): {b.error}" for b in broken))

    def _scratch_engine(self) -> Engine:
        url = _database_url()
        if not url:
            pytest.skip(f"needs PostgreSQL: set {DATABASE_ENV} to a server where a scratch "
                        "database may be created (the checks never touch the database it names)")
        if self._scratch is None:
            self._scratch = ScratchDatabase(url)
        return self._scratch.engine()

    @contextmanager
    def _folder(self) -> Iterator[Path]:
        base = Path(tempfile.mkdtemp(prefix="tallyflow-conformance-", dir=self.workdir))
        try:
            yield base
        finally:
            shutil.rmtree(base, ignore_errors=True)

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.drop()
            self._scratch = None


class ConformanceItem(pytest.Item):
    """One check for one source or mapping, collected by ``--tallyflow-conformance``."""

    def __init__(self, *, target: str, check: Check | None, runner: Conformance,
                 problem: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = target  # a source kind or mapping name; "" for the registry itself
        self.check = check
        self.runner = runner
        self.problem = problem  # what made the selection impossible, reported as a failure

    def runtest(self) -> None:
        if self.problem is not None:
            raise ConformanceError(self.problem)
        if self.check is None:
            self.runner.no_plugin_is_broken()
        else:
            self.runner.run(self.target, self.check)

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        if isinstance(excinfo.value, ConformanceError):
            return f"{self.name}: {excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[str, int | None, str]:
        return "tallyflow-conformance", None, self.name


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tallyflow", "Tallyflow plugin conformance")
    group.addoption("--tallyflow-conformance", action="store_true", default=False,
                    help="run Tallyflow's conformance suite for the installed plugins' sources "
                    "and mappings (docs/ingest.md, Adding a source)")
    group.addoption("--tallyflow-source", action="append", default=[], metavar="NAME",
                    help="check this source kind or mapping (repeatable) instead of every one "
                    "installed plugins register")


_RUNNER = pytest.StashKey[Conformance]()


@pytest.hookimpl(tryfirst=True)  # before -k and -m deselect
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    if not config.getoption("tallyflow_conformance"):
        return
    runner = config.stash.setdefault(_RUNNER, Conformance())
    added: list[pytest.Item] = []

    def add(node: str, target: str = "", check: Check | None = None,
            problem: str | None = None) -> None:
        node = f"tallyflow-conformance::{node}"
        added.append(ConformanceItem.from_parent(
            session, name=node, nodeid=node, target=target, check=check, runner=runner,
            problem=problem))

    add("no_plugin_is_broken")
    names = config.getoption("tallyflow_source") or runner.plugin_names()
    if not names:
        add("nothing_to_check", problem="no installed plugin registers a source or mapping "
            "(entry points tallyflow.sources, tallyflow.mappings); is the package installed? "
            "Or name one with --tallyflow-source")
    for name in names:
        try:
            checks = runner.checks(name)
        except ConformanceError as exc:
            add(name, problem=str(exc))
            continue
        for check in checks:
            add(f"{name}::{check.name}", name, check)
    items[:0] = added


def pytest_unconfigure(config: pytest.Config) -> None:
    runner = config.stash.get(_RUNNER, None)
    if runner is not None:
        runner.close()


@pytest.fixture()
def tallyflow_conformance(tmp_path: Path) -> Iterator[Conformance]:
    """The conformance suite as an object: ``tallyflow_conformance.check("my-source")`` runs
    every check for a source kind or mapping name and returns how many ran."""
    runner = Conformance(workdir=tmp_path)
    try:
        yield runner
    finally:
        runner.close()
