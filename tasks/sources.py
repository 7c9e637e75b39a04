"""Ingestion sources: where batch objects come from, behind one small typed registry.

A source is one class: a pydantic ``Config`` (what a user fills in; secrets by reference only),
``list()`` (every object with a version, so the ledger can tell new from seen), ``open()``
(bytes of one object) and optionally ``map_record()`` (its records into Lago's event shape).
Registering it with ``@register_source`` is all it takes: the flow, the CLI, the Prefect UI form
and the conformance test find it through ``SOURCES``.
"""

from __future__ import annotations

import fnmatch
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import IO, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from models.events import RECORD_MAPPINGS
from tasks.readers import FORMATS, CheckedZstdReader, detect


class ObjectRef(BaseModel):
    """One object as listed: identity (url + version) and what readers need to know."""

    model_config = ConfigDict(frozen=True)

    url: str
    version: str
    size: int | None = None
    modified_at: datetime | None = None
    format: str
    compression: str | None = None


class SourceSpec(BaseModel):
    """What a flow run is asked to ingest; the Prefect UI renders this as a form."""

    kind: str = Field("fsspec", title="Source kind", description="A registered source kind.")
    url: str = Field(
        ...,
        title="URL",
        description="Folder, prefix or object: file:///data/events, s3://bucket/prefix, memory://x",
    )
    pattern: str | None = Field(
        None,
        title="Glob",
        description="Only objects whose path below the URL matches, e.g. *.jsonl",
    )
    format: Literal["auto", "jsonl", "json", "csv", "parquet"] = Field(
        "auto", title="Format", description="auto: by extension (.jsonl .json .csv .parquet)"
    )
    mapping: Literal["lago", "cloudevents"] = Field(
        "lago", title="Record shape", description="lago events, or CloudEvents (OpenMeter)"
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        title="Source options",
        description="Passed to the source, e.g. endpoint_url or secret_block for S3",
    )


class Source(ABC):
    """Base of every source. Subclasses set ``kind`` and ``Config`` and register themselves."""

    kind: ClassVar[str]
    Config: ClassVar[type[BaseModel]]

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.config = self.Config.model_validate(spec.options)
        self._map: Callable[[Any], Any] = RECORD_MAPPINGS[spec.mapping]

    @property
    def key(self) -> str:
        """The ledger's name for this source: objects are unique per (key, url, version)."""
        return self.spec.url.rstrip("/")

    @abstractmethod
    def list(self) -> Iterator[ObjectRef]:
        """Every object the source holds now (the ledger filters out what is done)."""

    @abstractmethod
    def open(self, ref: ObjectRef) -> AbstractContextManager[IO[bytes]]:
        """The object's bytes, decompressed."""

    def map_record(self, record: Any) -> Any:
        return self._map(record)


SOURCES: dict[str, type[Source]] = {}
_S = TypeVar("_S", bound=type[Source])


def register_source(cls: _S) -> _S:
    if cls.kind in SOURCES:
        raise ValueError(f"source kind {cls.kind!r} is registered twice")
    SOURCES[cls.kind] = cls
    return cls


def build_source(spec: SourceSpec) -> Source:
    try:
        cls = SOURCES[spec.kind]
    except KeyError:
        raise ValueError(f"unknown source kind {spec.kind!r}; known: {sorted(SOURCES)}") from None
    return cls(spec)


class FsspecOptions(BaseModel):
    """Options for any fsspec filesystem.

    There is deliberately no field for a key or secret: options travel as flow parameters, which
    Prefect stores and shows. Credentials come from the usual AWS settings (environment, config
    files, instance roles) or from a Prefect Secret block named here, and are resolved inside the
    task that opens the store.
    """

    model_config = ConfigDict(extra="forbid")

    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto)")
    secret_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding {key, secret} as JSON"
    )
    anon: bool | None = None
    region_name: str | None = None
    block_size: int | None = Field(
        None, ge=64 * 1024, description="Bytes per ranged read (remote stores); bounds memory"
    )


@register_source
class FsspecSource(Source):
    """Any filesystem fsspec reaches: local folders, S3, GCS, Azure, memory, ..."""

    kind = "fsspec"
    Config = FsspecOptions

    def _storage_options(self) -> dict[str, Any]:
        config: FsspecOptions = self.config  # type: ignore[assignment]
        protocol = self.spec.url.split("://", 1)[0] if "://" in self.spec.url else "file"
        if protocol not in ("s3", "s3a"):
            return {}
        options: dict[str, Any] = {}
        if config.secret_block:
            options.update(_secret_block_credentials(config.secret_block))
        if config.anon is not None:
            options["anon"] = config.anon
        client_kwargs: dict[str, Any] = {}
        endpoint = config.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
        if endpoint:
            client_kwargs["endpoint_url"] = endpoint
        if config.region_name:
            client_kwargs["region_name"] = config.region_name
        if client_kwargs:
            options["client_kwargs"] = client_kwargs
        # A listing must see objects written a moment ago (another run, a test, a producer).
        options["use_listings_cache"] = False
        return options

    def _fs(self) -> tuple[Any, str]:
        from fsspec.core import url_to_fs

        return url_to_fs(self.spec.url, **self._storage_options())

    def list(self) -> Iterator[ObjectRef]:
        fs, root = self._fs()
        root = root.rstrip("/")
        found = fs.find(root, detail=True)
        for path in sorted(found):
            info = found[path]
            if info.get("type") == "directory":
                continue
            relative = path[len(root) :].lstrip("/") or path.rsplit("/", 1)[-1]
            if self.spec.pattern and not fnmatch.fnmatch(relative, self.spec.pattern):
                continue
            detected, compression = detect(path)
            fmt = detected if self.spec.format == "auto" else self.spec.format
            if fmt is None or fmt not in FORMATS:
                continue  # not an event object (a marker file, a README): leave it alone
            yield ObjectRef(
                url=fs.unstrip_protocol(path),
                version=_version(info),
                size=info.get("size"),
                modified_at=_modified(info),
                format=fmt,
                compression=compression,
            )

    def open(self, ref: ObjectRef) -> AbstractContextManager[IO[bytes]]:
        fs, _ = self._fs()
        path = fs._strip_protocol(ref.url)
        config: FsspecOptions = self.config  # type: ignore[assignment]
        extra = {"block_size": config.block_size} if config.block_size else {}
        if ref.compression == "zstd":
            return _closing(CheckedZstdReader(fs.open(path, "rb", **extra)))
        return fs.open(path, "rb", compression=ref.compression, **extra)


@contextmanager
def _closing(reader: CheckedZstdReader) -> Iterator[IO[bytes]]:
    try:
        yield reader  # type: ignore[misc]
    finally:
        reader.close()
        reader._raw.close()


def _secret_block_credentials(name: str) -> dict[str, Any]:
    from prefect.blocks.system import Secret

    value = Secret.load(name).get()
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise ValueError(f"Secret block {name!r} must hold a JSON object of storage options")
    return value


def _version(info: dict[str, Any]) -> str:
    """An object's version: its ETag (+ version id) where the store has one, else size+mtime."""
    etag = info.get("ETag") or info.get("etag") or info.get("md5")
    version_id = info.get("VersionId") or info.get("version_id")
    if etag:
        return f"{str(etag).strip(chr(34))}{'@' + str(version_id) if version_id else ''}"
    stamp = info.get("mtime") or info.get("LastModified") or info.get("created") or ""
    if isinstance(stamp, datetime):
        stamp = stamp.isoformat()
    return f"{info.get('size')}:{stamp}"


def _modified(info: dict[str, Any]) -> datetime | None:
    stamp = info.get("LastModified") or info.get("mtime") or info.get("created")
    if isinstance(stamp, datetime):
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    if isinstance(stamp, int | float):
        return datetime.fromtimestamp(stamp, UTC)
    return None
