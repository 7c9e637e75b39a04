"""Ingestion sources: where batch objects come from, behind one small typed registry.

A source is one class: a pydantic ``Config`` (its options, with descriptions: what the CLI's
``--option``, the flow form and validation use; secrets by reference only), ``list()`` (every
object with a version, so the ledger can tell new from seen), ``open()`` (bytes of one object)
and optionally ``map_record()`` (its records into Lago events; by default the chosen mapping).
Sources and mappings are found through ``tallyflow.tasks.ingest.plugins`` (built-ins, then
entry points).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
)

from tallyflow.errors import SourceError
from tallyflow.models.mappings import Mapping, MappingInvalid, MapResult, describe_errors
from tallyflow.tasks.ingest import plugins
from tallyflow.tasks.ingest.readers import FORMATS, CheckedZstdReader, detect

DEFAULT_MAPPING = "lago"


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
    """What a flow run is asked to ingest, in its generic form (code, tests, the ledger).

    The flow's form shows ``source_parameter()`` instead: one typed model per registered kind.
    """

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
    mapping: str = Field(
        DEFAULT_MAPPING,
        title="Record mapping",
        description="A registered mapping (lago, cloudevents, openai-chat, ...) or the path of "
        "a YAML/JSON mapping file on the machine that runs the flow",
    )
    mapping_options: dict[str, Any] = Field(
        default_factory=dict, title="Mapping options",
        description="Per-run settings of the mapping, e.g. code or external_subscription_id",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        title="Source options",
        description="Passed to the source, e.g. endpoint_url or secret_block for S3",
    )

    def read_settings(self) -> dict[str, object]:
        """What decides what an object's records give (``Source.fingerprint``)."""
        return self.model_dump(mode="json", include={"kind", "mapping", "mapping_options",
                                                     "format"})

    def ledger_spec(self) -> dict[str, object]:
        """What the ledger keeps of the source that read an object (to read it again)."""
        return self.model_dump(mode="json", exclude={"url"})


class Source(ABC):
    """Base of every source. Subclasses set ``kind`` and ``Config``; ``description`` and
    ``spec_fields`` (which generic fields the form shows for it) are optional."""

    kind: ClassVar[str]
    Config: ClassVar[type[BaseModel]]
    description: ClassVar[str] = ""
    # Generic SourceSpec fields this source uses (url always). A source that ignores the
    # record mapping leaves "mapping" out, and the form does not offer it.
    spec_fields: ClassVar[tuple[str, ...]] = ("mapping", "mapping_options")

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        for name in ("pattern", "format", "mapping", "mapping_options"):
            if name not in self.spec_fields and getattr(spec, name) not in (
                SourceSpec.model_fields[name].get_default(call_default_factory=True), None
            ):  # never accepted and then ignored
                raise SourceError(f"source {self.kind!r} does not take {name} "
                                  f"(given {getattr(spec, name)!r})",
                                  f"it takes: url, {', '.join(self.spec_fields) or 'options'}")
        options = spec.options.model_dump(exclude_none=True) if isinstance(
            spec.options, BaseModel) else spec.options
        try:
            self.config = self.Config.model_validate(options)
        except ValidationError as exc:
            raise SourceError(describe_errors(f"source {self.kind!r} options", exc),
                              f"see `tallyflow sources list` for {self.kind}'s options") from None
        self.mapping = resolve_mapping(spec.mapping)
        try:
            self.mapping_options = self.mapping.options(spec.mapping_options)
        except ValidationError as exc:
            raise SourceError(describe_errors(f"mapping {self.mapping.name!r} options", exc),
                              "see `tallyflow sources list` for the mapping's options") from None
        self._map = self.mapping.map

    @property
    def key(self) -> str:
        """The ledger's name for this source: objects are unique per (key, url, version).

        The kind, the mapping and the URL identify a source, so two sources reading one folder
        keep separate ledgers (each reads every object its own way). The original pairing
        (fsspec, lago) keeps the plain URL, so existing ledgers stay valid.
        """
        url = self.spec.url.rstrip("/")
        if self.kind == "fsspec" and self.spec.mapping == DEFAULT_MAPPING:
            return url
        return f"{self.kind}+{self.spec.mapping}:{url}"

    @property
    def fingerprint(self) -> str:
        """The settings that decide what an object gives, as one hash: the mapping, its
        options, the format (``SourceSpec.read_settings``) and, for a mapping file, its
        content. Not the source's options (an endpoint, a block size, ``min_age``: how objects
        are reached, not what they give) nor the pattern (which objects). The ledger keeps it
        per object; a run counts the objects read with another one, and ``tallyflow reingest``
        replays them (tasks/ingest/replay.py)."""
        digest = hashlib.sha256(json.dumps(self.spec.read_settings(), sort_keys=True,
                                           default=str).encode())
        from tallyflow.tasks.ingest.mappings import is_mapping_file

        if self.spec.mapping not in plugins.mappings() and is_mapping_file(self.spec.mapping):
            try:
                digest.update(Path(self.spec.mapping).read_bytes())
            except OSError:
                pass  # resolved already (``__init__``); a file gone since changes nothing read
        return digest.hexdigest()

    @classmethod
    def golden_case(cls, folder: Path) -> SourceSpec | None:
        """Conformance: the spec that lists the golden object put in ``folder`` (a local
        folder holding ``golden.jsonl``), reading it as Lago events. None: not given yet."""
        return None

    @classmethod
    def missing_case(cls, folder: Path) -> SourceSpec | None:
        """Conformance: a spec naming something that is not there (``folder`` does not
        exist), whose listing must raise ``SourceError``. None: the suite lists the
        ``golden_case`` of a folder removed after the spec was made."""
        return None

    @abstractmethod
    def list(self) -> Iterator[ObjectRef]:
        """Every object the source holds now (the ledger filters out what is done)."""

    @abstractmethod
    def open(self, ref: ObjectRef) -> AbstractContextManager[IO[bytes]]:
        """The object's bytes, decompressed."""

    def map_record(self, record: Any) -> MapResult:
        """One record -> a dict (one event), ``Events`` (any number) or a ``Rejection``."""
        return self._map(record, self.mapping_options)


def resolve_mapping(name: str) -> Mapping:
    """A registered mapping by name, or a mapping file by path; one-line errors."""
    from tallyflow.tasks.ingest.mappings import is_mapping_file, load_file

    registered = plugins.mappings()
    if name in registered:
        return registered[name]
    if is_mapping_file(name):
        try:
            return load_file(name)
        except MappingInvalid as exc:
            raise SourceError(str(exc), "fix the mapping file (see docs/ingest.md)"
                              ) from None
    raise SourceError(f"unknown mapping {name!r}",
                      f"choose one of: {', '.join(sorted(registered))}, or a .yaml/.json file")


def build_source(spec: SourceSpec | BaseModel) -> Source:
    spec = as_spec(spec)
    registered = plugins.sources()
    try:
        cls = registered[spec.kind]
    except KeyError:
        raise SourceError(
            f"unknown source kind {spec.kind!r}",
            f"choose one of: {', '.join(sorted(registered))}",
        ) from None
    return cls(spec)


# --------------------------------------------------------------------------------------------
# The flow's parameter: a discriminated union of the registered kinds
# --------------------------------------------------------------------------------------------


def as_spec(value: Any) -> SourceSpec:
    """The generic spec of a form value (a kind's model), a dict, or a spec."""
    if isinstance(value, SourceSpec):
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_none=True)
    data = dict(value)
    if isinstance(data.get("options"), BaseModel):
        data["options"] = data["options"].model_dump(exclude_none=True)
    return SourceSpec.model_validate(data)


def _as_form_value(value: Any) -> Any:
    """Accept a generic ``SourceSpec`` (or a dict without ``kind``) where a kind's model is
    expected: code and deployments written before the union keep working."""
    if isinstance(value, SourceSpec):
        value = value.model_dump(exclude_none=True)
    if isinstance(value, dict):
        value = {"kind": "fsspec", **value}
        cls = plugins.sources().get(value["kind"])
        if cls is not None:  # generic fields this kind does not take: dropped at their default
            for name in ("pattern", "format", "mapping", "mapping_options"):
                if (name not in cls.spec_fields and name in value
                        and value[name] in (SourceSpec.model_fields[name].get_default(
                            call_default_factory=True), None)):
                    value.pop(name)
    return value


def spec_model(cls: type[Source], mapping_names: list[str]) -> type[BaseModel]:
    """The form of one source kind: its kind, the URL, the generic fields it uses, and its own
    ``Config`` as typed ``options``."""
    generic = SourceSpec.model_fields
    fields: dict[str, Any] = {
        "kind": (Literal[cls.kind], Field(cls.kind, title="Source kind",
                                          description=cls.description or cls.__doc__ or "")),
        "url": (str, generic["url"]),
    }
    for name in cls.spec_fields:
        if name == "mapping":
            choice = Literal[tuple(mapping_names)]  # type: ignore[valid-type]
            fields[name] = (
                Union[choice, Annotated[str, Field(pattern=r"(?i)\.(ya?ml|json)$")]],  # noqa: UP007
                Field(DEFAULT_MAPPING, title="Record mapping",
                      description="A registered mapping, or a .yaml/.json mapping file"),
            )
        else:
            fields[name] = (generic[name].annotation, generic[name])
    fields["options"] = (cls.Config, Field(default_factory=cls.Config, title="Source options"))
    return create_model(
        f"{cls.__name__}Form", __config__=ConfigDict(extra="forbid", title=cls.kind), **fields
    )


def source_parameter() -> Any:
    """The type of the flow's ``source`` parameter, from what is registered now (so a
    deployment's form offers the kinds installed when it was registered)."""
    registry = plugins.registry()
    names = sorted(registry.mappings)
    models = [spec_model(cls, names) for _, cls in sorted(registry.sources.items())]
    union: Any = models[0] if len(models) == 1 else Union[tuple(models)]  # noqa: UP007
    if len(models) == 1:
        return Annotated[union, BeforeValidator(_as_form_value)]
    return Annotated[union, Field(discriminator="kind"), BeforeValidator(_as_form_value)]


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
    missing_ok: bool | None = Field(
        None, description="A local folder that does not exist (yet) holds no objects, instead "
        "of failing the run: the API's bucket before its first event"
    )
    min_age: float | None = Field(
        None, ge=0, description="Seconds since an object was last modified before it is "
        "listed: a writer still writing it is not read half-written (an object whose store "
        "gives no modification time is listed)"
    )


class FsspecSource(Source):
    """Any filesystem fsspec reaches: local folders, S3, GCS, Azure, memory, ..."""

    kind = "fsspec"
    Config = FsspecOptions
    description = "Any fsspec URL: a local folder, s3://, gs://, az://, memory:// (by glob)"
    spec_fields = ("pattern", "format", "mapping", "mapping_options")

    @classmethod
    def golden_case(cls, folder: Path) -> SourceSpec:
        return SourceSpec(kind=cls.kind, url=folder.as_uri())

    def _storage_options(self) -> dict[str, object]:
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

    def filesystem(self) -> tuple[Any, str]:
        """The filesystem and root path of the URL (also where ``tallyflow archive`` writes),
        with the same one-line errors as a listing."""
        with _listing_errors(self.spec.url, self.config):  # type: ignore[arg-type]
            return self._fs()

    def list(self) -> Iterator[ObjectRef]:
        with _listing_errors(self.spec.url, self.config):  # type: ignore[arg-type]
            fs, root = self._fs()
            root = root.rstrip("/")
            if fs.protocol in ("file", "local") or "file" in fs.protocol:
                if not fs.exists(root):
                    if self.config.missing_ok:  # type: ignore[attr-defined]
                        return  # nothing written there yet: an empty source, not a failure
                    raise SourceError(
                        f"no such file or folder: {root}",
                        "check the path (it is read on the machine that runs the flow)",
                    )
            if protocol_of(self.spec.url) in ("s3", "s3a"):
                _probe_s3(fs, root)
            found = fs.find(root, detail=True)
        min_age = self.config.min_age  # type: ignore[attr-defined]
        too_young = (datetime.now(UTC) - timedelta(seconds=min_age)) if min_age else None
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
            modified = _modified(info)
            if too_young is not None and modified is not None and modified > too_young:
                continue  # maybe still being written: the next run lists it
            yield ObjectRef(
                url=fs.unstrip_protocol(path),
                version=_version(info),
                size=info.get("size"),
                modified_at=modified,
                format=fmt,
                compression=compression,
            )

    def ref(self, url: str) -> ObjectRef:
        """One object exactly as ``list()`` gives it (url, version, size, time, format), for a
        writer that knows what it just wrote: the API's loader registers its objects under the
        same identity the scheduled listing would, without listing the whole prefix."""
        fs, _ = self._fs()
        path = fs._strip_protocol(url)
        # find(), as list() does: some stores describe an object differently in info()
        found = fs.find(path, detail=True)
        if path not in found:
            raise FileNotFoundError(url)
        info = found[path]
        detected, compression = detect(path)
        fmt = detected if self.spec.format == "auto" else self.spec.format
        if fmt is None or fmt not in FORMATS:
            raise ValueError(f"{url} is not an event object (format unknown)")
        return ObjectRef(url=fs.unstrip_protocol(path), version=_version(info),
                         size=info.get("size"), modified_at=_modified(info), format=fmt,
                         compression=compression)

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


def _secret_block_credentials(name: str) -> dict[str, object]:
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
