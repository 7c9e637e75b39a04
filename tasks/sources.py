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
from tallyflow.errors import SourceError
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
        raise SourceError(
            f"unknown source kind {spec.kind!r}", f"choose one of: {', '.join(sorted(SOURCES))}"
        ) from None
    return cls(spec)


S3_CONNECT_TIMEOUT = 3
S3_READ_TIMEOUT = 30
S3FS_RETRIES = 2
S3_PROBE_SECONDS = 8.0  # one small request before listing: unreachable fails in this time


def protocol_of(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


def _probe_s3(fs: Any, root: str) -> None:
    """Ask for one key under the prefix, with a deadline, before the (unbounded) listing: a
    missing bucket, bad credentials or an endpoint that never answers fail here in seconds
    rather than after the clients' retries; a big bucket still lists in full afterwards."""
    from fsspec.asyn import sync

    bucket, _, prefix = root.partition("/")
    sync(fs.loop, fs._call_s3, "list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=1,
         timeout=S3_PROBE_SECONDS)
_CREDENTIALS_HINT = (
    "check the credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a "
    "Prefect Secret block given with --secret-block"
)


@contextmanager
def _listing_errors(url: str, config: FsspecOptions) -> Iterator[None]:
    """Say what went wrong with a source in one line a person can act on."""
    try:
        yield
    except SourceError:
        raise
    except Exception as exc:  # classified below, else re-raised as is
        problem = _classify(exc, url, config)
        if problem is None:
            raise
        raise problem from exc


def _classify(exc: BaseException, url: str, config: FsspecOptions) -> SourceError | None:
    names: list[str] = []
    codes: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        names.append(type(current).__name__)
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            codes.append(str(response.get("Error", {}).get("Code", "")))
        current = current.__cause__ or current.__context__
    text = " ".join(str(exc).split())[:300] or f"no answer within {S3_PROBE_SECONDS:g} s"
    endpoint = config.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or "AWS S3"
    bucket = url.split("://", 1)[-1].split("/", 1)[0]
    if "NoCredentialsError" in names or "PartialCredentialsError" in names:
        return SourceError(f"no credentials found for {url}", _CREDENTIALS_HINT)
    if {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403",
            "ExpiredToken", "InvalidToken"} & set(codes) or "PermissionError" in names:
        return SourceError(f"access denied to {url} ({', '.join(c for c in codes if c) or text})",
                           _CREDENTIALS_HINT)
    if "NoSuchBucket" in codes or (
        "FileNotFoundError" in names and url.startswith(("s3://", "s3a://"))
    ):
        return SourceError(f"bucket {bucket!r} does not exist at {endpoint}",
                           "check the bucket name and --endpoint-url")
    if {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionError",
            "ClientConnectorError", "ConnectionRefusedError", "ReadTimeoutError",
            "FSTimeoutError"} & set(names):
        return SourceError(f"cannot reach the storage endpoint {endpoint} for {url}: {text}",
                           "check --endpoint-url and the network; nothing was ingested")
    if "FileNotFoundError" in names:
        return SourceError(f"not found: {url}", "check the path or URL")
    return None


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
        # Bounded waits: an unreachable endpoint fails in seconds, retries included, instead of
        # minutes of botocore and s3fs retries on top of each other.
        options["config_kwargs"] = {
            "connect_timeout": S3_CONNECT_TIMEOUT, "read_timeout": S3_READ_TIMEOUT,
            "retries": {"max_attempts": 2, "mode": "standard"},
        }
        return options

    def _fs(self) -> tuple[Any, str]:
        from fsspec.core import url_to_fs

        protocol = self.spec.url.split("://", 1)[0] if "://" in self.spec.url else "file"
        try:
            fs, root = url_to_fs(self.spec.url, **self._storage_options())
            if protocol in ("s3", "s3a"):
                fs.retries = S3FS_RETRIES  # s3fs's own retries, on top of botocore's
            return fs, root
        except (ValueError, ImportError) as exc:
            from fsspec.registry import known_implementations

            if protocol in known_implementations and isinstance(exc, ImportError):
                raise SourceError(
                    f"{protocol}:// needs a package that is not installed: {exc}",
                    "install it (see fsspec's list of implementations)",
                ) from exc
            if protocol not in known_implementations:
                raise SourceError(
                    f"unknown URL scheme {protocol + '://'!r} in {self.spec.url}",
                    "use a local path, file://, s3:// or another fsspec protocol "
                    "(gs://, az://, memory://)",
                ) from exc
            raise

    def list(self) -> Iterator[ObjectRef]:
        with _listing_errors(self.spec.url, self.config):  # type: ignore[arg-type]
            fs, root = self._fs()
            root = root.rstrip("/")
            if fs.protocol in ("file", "local") or "file" in fs.protocol:
                if not fs.exists(root):
                    raise SourceError(
                        f"no such file or folder: {root}",
                        "check the path (it is read on the machine that runs the flow)",
                    )
            if protocol_of(self.spec.url) in ("s3", "s3a"):
                _probe_s3(fs, root)
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

    block = Secret.load(name)
    assert isinstance(block, Secret)  # loaded synchronously: we are not in an event loop
    value = block.get()
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
