"""Every Tallyflow setting, in one typed model read once per process (docs/architecture.md §12).

Environment variables only: flows run in Prefect workers, CLIs and tests, and the environment is
the one channel all of them share (a worker's or served run's subprocess inherits it and reads
it once itself). Nothing reads a setting at import: code calls ``get_settings()`` when it needs
one, so importing a module never freezes a value.

Each field is one ``TALLYFLOW_<NAME>`` variable; its description is its documentation, and its
group says who sets it: ``user`` (people running Tallyflow), ``deploy-time`` (read when
deployments are created or served) or ``test-only`` (the test and survival suites). The
configuration tables of README.md and docs/ are generated from these fields
(``python -m tallyflow.infra.settings --markdown``; ``--write`` rewrites the tables between
their ``<!-- settings:begin ... -->`` and ``<!-- settings:end -->`` markers), and a test keeps
them equal.

Each value is parsed exactly as the code that read it before this model did (an empty
``TALLYFLOW_INVOICE_PREFIX`` is an empty prefix, an empty ``TALLYFLOW_HOME`` is unset). A value
that cannot be parsed is a one-line ``UserError`` naming the variable, at the first read.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import platformdirs
from pydantic import BeforeValidator, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from tallyflow.errors import UserError

PREFIX: Final = "TALLYFLOW_"
Group = Literal["user", "deploy-time", "test-only"]
GROUPS: Final[tuple[Group, ...]] = ("user", "deploy-time", "test-only")

DATABASE_URL_ENV: Final = "TALLYFLOW_DATABASE_URL"
HOME_ENV: Final = "TALLYFLOW_HOME"
# Deployed runs (served or on a worker) use the embedded server only when this says so: a worker
# that silently started its own empty database would bill into it and nobody would notice.
EMBEDDED_ENV: Final = "TALLYFLOW_EMBEDDED"
# Where Prefect automations send notifications (failed/crashed runs, wallet alerts).
NOTIFY_WEBHOOK_ENV: Final = "TALLYFLOW_NOTIFY_WEBHOOK_URL"
# Where `tallyflow api` writes event objects (under api/); the ingest-events/api deployment
# reads the same place.
API_BUCKET_ENV: Final = "TALLYFLOW_API_BUCKET"
API_PREFIX: Final = "api"  # the API's objects' prefix inside its bucket


# -- parsing, as each variable was parsed before it was a field ---------------------------------


def _or_none(value: Any) -> Any:
    """An empty variable is an unset one."""
    return value if value not in ("", None) else None


def _flag(*truthy: str) -> Callable[[Any], bool]:
    """A flag on when the text is one of ``truthy`` (case and spaces aside); anything else is
    off, never an error."""

    def parse(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        return str(value).strip().lower() in truthy

    return parse


def _exactly_one(value: Any) -> bool:
    """``1`` and nothing else (``TALLYFLOW_DEBUG``, ``TALLYFLOW_TEST_EMBEDDED``)."""
    return value is True or value == "1"


def _number(kind: type[int] | type[float], blank: float | None) -> Callable[[Any], Any]:
    """Python's ``int``/``float`` of the text (so ``3.0`` is no integer); an empty variable is
    ``blank`` when there is one, else an error."""

    def parse(value: Any) -> Any:
        if value == "" and blank is not None:
            return blank
        return kind(value)

    return parse


def _positive(env: str, default: float | None,
              kind: type[int] | type[float]) -> Callable[[Any], Any]:
    """The API's numbers: blank is the default; otherwise a positive number, else a UserError
    raised as is (pydantic passes non-ValueError exceptions through)."""

    def parse(value: Any) -> Any:
        if value is None or not str(value).strip():
            return default
        try:
            number = kind(value)
        except ValueError:
            raise UserError(f"{env}={value!r} is not a number", "unset it or give a number"
                                 f" (default {default})") from None
        if number <= 0:
            raise UserError(f"{env}={value!r} must be positive", f"default {default}")
        return number

    return parse


def _setting(group: Group, description: str, shown_default: str | None = None,
             default: Any = None) -> Any:
    """A field: its description is its documentation, its group says who sets it, and
    ``shown_default`` is its default as the tables say it, when the value itself says little
    (``None``: a computed default, ``False``: unset)."""
    schema: dict[str, Any] = {"group": group}
    if shown_default is not None:
        schema["shown_default"] = shown_default
    return Field(default=default, description=description, json_schema_extra=schema)


_OrNone = BeforeValidator(_or_none)


class Settings(BaseSettings):
    """The settings of one process (``get_settings()``)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="ignore",
                                      validate_default=False)

    # -- user-facing -----------------------------------------------------------------------------
    database_url: Annotated[str | None, _OrNone] = _setting(
        "user",
        "Any PostgreSQL 14+ (`postgresql://user:pass@host:5432/db`). Overrides the embedded "
        "server.", "unset: an embedded PostgreSQL 16")
    home: Annotated[Path | None, _OrNone] = _setting(
        "user",
        "Where the embedded PostgreSQL keeps its data (`pgdata/`), the local Prefect server its "
        "state (`prefect/`), the demo its bucket. Keep the path short: Postgres' socket path "
        "must stay under ~100 bytes.", "`~/.local/share/tallyflow`")
    prefect_port: Annotated[int, BeforeValidator(_number(int, 4200))] = _setting(
        "user", "Port of the local Prefect server that Tallyflow starts when `PREFECT_API_URL` "
        "is unset (another free port if taken).", default=4200)
    api_bucket: Annotated[str | None, _OrNone] = _setting(
        "user",
        "Where `tallyflow api` writes event objects (under `api/`), a URL or a local path; also "
        "what `ingest-events/api` reads.", "`TALLYFLOW_HOME/api-bucket`")
    api_commit_seconds: Annotated[
        float, BeforeValidator(_positive("TALLYFLOW_API_COMMIT_SECONDS", 0.2, float))
    ] = _setting("user", "Group commit of `tallyflow api`: at most one object per this many "
                 "seconds, sooner when `TALLYFLOW_API_COMMIT_EVENTS` events wait.", default=0.2)
    api_commit_events: Annotated[
        int, BeforeValidator(_positive("TALLYFLOW_API_COMMIT_EVENTS", 5000, int))
    ] = _setting("user", "Group commit of `tallyflow api`: an object at once when this many "
                 "events wait.", default=5000)
    api_max_body_bytes: Annotated[
        int, BeforeValidator(_positive("TALLYFLOW_API_MAX_BODY_BYTES", 4 * 1024 * 1024, int))
    ] = _setting("user", "Larger request bodies get 413.", "`4194304` (4 MiB)",
                 default=4 * 1024 * 1024)
    api_max_pending: Annotated[
        int, BeforeValidator(_positive("TALLYFLOW_API_MAX_PENDING", 50000, int))
    ] = _setting("user", "Bounded intake of `tallyflow api`: events accepted but not yet loaded "
                 "(waiting, being written, written and queued for the loader); a request that "
                 "would pass it gets 429 with `Retry-After`.", default=50000)
    api_max_inflight: Annotated[
        int, BeforeValidator(_positive("TALLYFLOW_API_MAX_INFLIGHT", 64, int))
    ] = _setting("user", "Event requests `tallyflow api` works on at once; past it, 429 with "
                 "`Retry-After` before the body is read.", default=64)
    api_rate_limit: Annotated[
        float | None, BeforeValidator(_positive("TALLYFLOW_API_RATE_LIMIT", None, float))
    ] = _setting("user", "Events per second each API key may post (a token bucket holding one "
                 "second's worth, at least one batch of 100); past it, 429 with `Retry-After`. "
                 "Unset: no per-key limit.", "unset (no limit)")
    invoice_settle_hours: Annotated[int, BeforeValidator(_number(int, None))] = _setting(
        "user", "How long after a period's end an invoice may finalize.", default=2)
    invoice_prefix: str = _setting("user", "The invoice number's prefix.", default="TF")
    wallets_settle_paid: Annotated[
        bool, BeforeValidator(_flag("1", "true", "yes", "on"))
    ] = _setting("user", "`1`: purchased credits settle at once instead of waiting for "
                 "payment.", "unset", default=False)
    notify_webhook_url: Annotated[str | None, _OrNone] = _setting(
        "user", "Where failed or crashed runs and wallet alerts are announced (JSON "
        "`{\"subject\", \"body\", \"source\"}`), through Prefect automations.", "unset: none")
    webhook_timeout_seconds: Annotated[
        float, BeforeValidator(_positive("TALLYFLOW_WEBHOOK_TIMEOUT_SECONDS", 10.0, float))
    ] = _setting("user", "How long one webhook POST may take (connect, send, answer) before it "
                 "counts as failed and is retried later (docs/webhooks.md).", default=10.0)
    webhook_attempts: Annotated[
        int, BeforeValidator(_positive("TALLYFLOW_WEBHOOK_ATTEMPTS", 10, int))
    ] = _setting("user", "Attempts per webhook before it is marked `failed` (backoff doubling "
                 "from 30 s, at most 6 h apart); `tallyflow webhooks redeliver` tries once "
                 "more.", default=10)
    balance_overdraft_cents: Annotated[int, BeforeValidator(_number(int, 0))] = _setting(
        "user", "How far below zero a customer's ongoing balance may go while "
        "`/api/v1/tallyflow/customers/{id}/balance` still answers `allowed: true` (cents).",
        default=0)
    balance_max_age_seconds: Annotated[
        float, BeforeValidator(_positive("TALLYFLOW_BALANCE_MAX_AGE_SECONDS", 120.0, float))
    ] = _setting("user", "How old the last balance refresh may be for `tallyflow wallets show` "
                 "and the wallet endpoints to read its running figures; older (the refresh not "
                 "running), they rate the period live.", default=120.0)
    billing_retry_delay_seconds: Annotated[int, BeforeValidator(_number(int, None))] = _setting(
        "user", "Delay between the billing cycle's two whole-run retries (read when a run "
        "starts).", default=60)
    heartbeat_seconds: Annotated[float, BeforeValidator(_number(float, 5.0))] = _setting(
        "user", "How often a running flow marks itself alive.", "`5`", default=5.0)
    stale_seconds: Annotated[float, BeforeValidator(_number(float, 30.0))] = _setting(
        "user", "After how long without a mark a run is recorded `crashed` (at least three "
        "heartbeats).", "`30`", default=30.0)
    embedded: Annotated[bool, BeforeValidator(_flag("1", "true", "yes"))] = _setting(
        "user", "`1`: deployed runs may use this machine's embedded PostgreSQL (`tallyflow "
        "serve --embedded` sets it).", "unset", default=False)
    debug: Annotated[bool, BeforeValidator(_exactly_one)] = _setting(
        "user", "`1`: errors print their traceback (as `tallyflow --debug ...`).", "unset",
        default=False)

    # -- deploy-time: read by `prefect deploy` (deployments/prefect.yaml) and `tallyflow serve` --
    source_url: Annotated[str | None, _OrNone] = _setting(
        "deploy-time", "What the `ingest-events/interval` deployment reads (`tallyflow api` "
        "refuses a bucket inside it).", "unset (`tallyflow serve`: `.tallyflow-bucket` in the "
        "project)")
    project_dir: Annotated[str | None, _OrNone] = _setting(
        "deploy-time", "Where workers find this project's code (the pull step of "
        "`deployments/prefect.yaml`).", "unset (`tallyflow serve`: this checkout)")

    # -- test-only -----------------------------------------------------------------------------
    failpoints: Annotated[str | None, _OrNone] = _setting(
        "test-only", "Named failure points to arm, e.g. `ingest.after_merge=3` (kill the "
        "process the third time it passes there; `:raise`, `:pause`): the survival suite's "
        "one fault-injection mechanism (`tallyflow/infra/failpoints.py`).", "unset")
    test_embedded: Annotated[bool, BeforeValidator(_exactly_one)] = _setting(
        "test-only", "`1`: the tests run on an embedded PostgreSQL even when the local server "
        "answers, so both paths are exercised.", "unset", default=False)

    # -- derived values ---------------------------------------------------------------------------

    def tallyflow_home(self) -> Path:
        """The folder for the embedded database and local state (made if missing).

        Kept short by default because PostgreSQL's unix socket path must stay under ~100 bytes.
        """
        path = self.home or Path(platformdirs.user_data_dir("tallyflow"))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def api_bucket_url(self) -> str:
        """The API's bucket as a URL: ``TALLYFLOW_API_BUCKET`` (a URL or a local path), else the
        folder ``api-bucket`` under ``TALLYFLOW_HOME``."""
        configured = self.api_bucket
        if not configured:
            return (self.tallyflow_home() / "api-bucket").as_uri()
        if "://" not in configured:
            return Path(configured).expanduser().resolve().as_uri()
        return configured.rstrip("/")


def env_name(field: str) -> str:
    """The variable of a field: ``database_url`` -> ``TALLYFLOW_DATABASE_URL``."""
    return PREFIX + field.upper()


def group_of(info: FieldInfo) -> Group:
    extra = info.json_schema_extra
    assert isinstance(extra, dict), "every setting names its group (_setting)"
    group = extra["group"]
    assert group in GROUPS
    return group


@functools.cache
def get_settings() -> Settings:
    """The settings of this process, read from its environment on first use.

    Code that changes a setting for the rest of its process (and the processes it starts) calls
    ``set_in_environment``; tests get a fresh read per test and per ``monkeypatch.setenv``
    (tests/conftest.py); each command of the CLI reads them anew when it starts
    (``tallyflow/cli/main.py``), so in-process callers running several commands see each one's
    environment.
    """
    try:
        return Settings()
    except ValidationError as exc:
        raise _one_line(exc) from None


def reset_settings() -> None:
    """Forget the settings read so far: the next ``get_settings()`` reads the environment."""
    get_settings.cache_clear()


def set_in_environment(name: str, value: str | None) -> None:
    """Set (``None``: remove) a setting's variable for the rest of this process and the
    processes it starts, and read the settings again on next use."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    reset_settings()


def _one_line(exc: ValidationError) -> UserError:
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "?"
    name = env_name(field)
    raw = os.environ.get(name)
    info = Settings.model_fields.get(field)
    kind = _type_name(info) if info is not None else "value"
    default = _shown_default(info) if info is not None else "unset"
    return UserError(f"{name}={raw!r} is not a valid {kind}",
                     f"unset it for the default ({default}), or give {_article(kind)} {kind}")


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


# -- the older spellings, kept for their callers ----------------------------------------------


def tallyflow_home() -> Path:
    return get_settings().tallyflow_home()


def configured_database_url() -> str | None:
    return get_settings().database_url


def embedded_opted_in() -> bool:
    return get_settings().embedded


def notify_webhook_url() -> str | None:
    return get_settings().notify_webhook_url


def api_bucket() -> str:
    return get_settings().api_bucket_url()


@dataclass(frozen=True)
class ApiSettings:
    """What `tallyflow api` runs with (``api_settings()``, or built by tests)."""

    bucket: str  # any fsspec URL; objects go under <bucket>/api/YYYY/MM/DD/HH/
    commit_seconds: float  # at most one object per this many seconds (group commit)
    commit_events: int  # ... unless this many events wait: then at once
    max_body_bytes: int
    max_pending: int = 50000  # events accepted and not yet loaded; past it, 429
    rate_limit: float | None = None  # events per second per API key; None: no limit
    max_inflight: int = 64  # event requests worked on at once; past it, 429
    key_cache_seconds: float = 5.0  # an active API key is trusted this long without a query
    balance_cache_seconds: float = 0.5  # a balance answer is served this long without a query

    @property
    def source_url(self) -> str:
        """The ingest source that reads the API's objects: the same ledger key whether the
        API's loader or the scheduled ``ingest-events/api`` deployment loads an object."""
        return f"{self.bucket.rstrip('/')}/{API_PREFIX}"


def api_settings() -> ApiSettings:
    settings = get_settings()
    return ApiSettings(bucket=settings.api_bucket_url(),
                       commit_seconds=settings.api_commit_seconds,
                       commit_events=settings.api_commit_events,
                       max_body_bytes=settings.api_max_body_bytes,
                       max_pending=settings.api_max_pending,
                       rate_limit=settings.api_rate_limit,
                       max_inflight=settings.api_max_inflight)


# -- the configuration tables -------------------------------------------------------------------

_TYPE_NAMES = {str: "text", int: "integer", float: "number", bool: "flag", Path: "path"}
_MARKER = re.compile(r"(<!-- settings:begin (?P<selector>[\w\-]+) -->\n)(?P<body>.*?)"
                     r"(<!-- settings:end -->)", re.DOTALL)


def _type_name(info: FieldInfo) -> str:
    annotation = info.annotation
    for kind, name in _TYPE_NAMES.items():
        if annotation is kind or annotation == (kind | None):
            return name
    return str(annotation)


def _shown_default(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and "shown_default" in extra:
        return str(extra["shown_default"])
    if info.default is None:
        return "unset"
    return f"`{info.default}`"


def fields_of(selector: str) -> list[str]:
    """The fields a table shows: a group's (``user``, ``deploy-time``, ``test-only``), or the
    user-facing ones whose variable starts with ``selector`` (``TALLYFLOW_API_``)."""
    if selector in GROUPS:
        return [f for f, info in Settings.model_fields.items() if group_of(info) == selector]
    if selector.startswith(PREFIX):
        return [f for f, info in Settings.model_fields.items()
                if group_of(info) == "user" and env_name(f).startswith(selector)]
    raise ValueError(f"no settings table {selector!r}: a group {GROUPS} or a variable prefix")


def markdown_table(selector: str) -> str:
    """The markdown table of the settings ``selector`` names (see ``fields_of``)."""
    lines = ["| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
    for field in fields_of(selector):
        info = Settings.model_fields[field]
        lines.append(f"| `{env_name(field)}` | {_type_name(info)} | {_shown_default(info)} | "
                     f"{info.description} |")
    return "\n".join(lines) + "\n"


def render_tables(text: str) -> str:
    """``text`` with each marked table regenerated from the model."""
    return _MARKER.sub(
        lambda m: f"{m.group(1)}\n{markdown_table(m.group('selector'))}\n{m.group(4)}", text)


def marked_selectors(text: str) -> list[str]:
    return [m.group("selector") for m in _MARKER.finditer(text)]


def _main(argv: Iterable[str]) -> int:
    args = list(argv)
    if args[:1] == ["--markdown"]:
        for group in GROUPS:
            print(f"{group}:\n\n{markdown_table(group)}")
        return 0
    if args[:1] == ["--write"] and args[1:]:
        for page in map(Path, args[1:]):
            text = page.read_text()
            page.write_text(render_tables(text))
        return 0
    print("usage: python -m tallyflow.infra.settings --markdown | --write PAGE.md...",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
