"""The one typed Settings (docs/architecture.md §12): each variable parsed as before, read once
per process and never at import, every name in the code a field, the docs' tables generated."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tallyflow.errors import UserError
from tallyflow.infra import settings as s
from tallyflow.infra.settings import Settings, get_settings

PROJECT = Path(__file__).parents[3]
PAGES = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]
# Where code lives (tallyflow/ links tasks/, flows/, ... in: walked once, from the real folders).
CODE = ["tasks", "models", "flows", "deployments", "migrations", "examples", "benchmarks",
        "tests", "tallyflow/api", "tallyflow/cli", "tallyflow/infra", "tallyflow/errors.py",
        "tallyflow/plugin.py", "tallyflow/testing"]
PRODUCT = ["tasks", "models", "flows", "deployments", "migrations", "tallyflow/api",
           "tallyflow/cli", "tallyflow/infra", "tallyflow/errors.py", "tallyflow/plugin.py",
           "tallyflow/testing"]
# Read from the environment outside the model: the CLI's set-up of Prefect's own settings,
# before Prefect is imported (§12), and its fallback when the settings themselves failed.
ENVIRONMENT_READERS = {"tallyflow/infra/settings.py", "tallyflow/cli/main.py"}
NAME = re.compile(r"\bTALLYFLOW_[A-Z0-9_]*[A-Z0-9]\b")


def _files(roots: list[str], suffixes: tuple[str, ...] = (".py",)) -> list[Path]:
    found: list[Path] = []
    for root in roots:
        path = PROJECT / root
        if path.is_file():
            found.append(path)
            continue
        for folder, _, names in os.walk(path):
            found += [Path(folder) / n for n in names if n.endswith(suffixes)]
    return found


def _fields_by_env() -> dict[str, str]:
    return {s.env_name(field): field for field in Settings.model_fields}


# -- parsing: as each variable was read before there was a model ------------------------------


def _read(monkeypatch: pytest.MonkeyPatch, **values: str) -> Settings:
    for name in list(os.environ):
        if name.startswith(s.PREFIX):
            monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(s.PREFIX + name, value)
    return get_settings()


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _read(monkeypatch)
    assert (settings.database_url, settings.home, settings.api_bucket) == (None, None, None)
    assert (settings.invoice_settle_hours, settings.invoice_prefix) == (2, "TF")
    assert (settings.heartbeat_seconds, settings.stale_seconds) == (5.0, 30.0)
    assert (settings.api_commit_seconds, settings.api_commit_events) == (0.2, 5000)
    assert settings.api_max_body_bytes == 4 * 1024 * 1024
    assert (settings.billing_retry_delay_seconds, settings.prefect_port) == (60, 4200)
    assert not (settings.embedded or settings.wallets_settle_paid or settings.debug)


def test_empty_is_unset_where_it_always_was(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _read(monkeypatch, HOME="", DATABASE_URL="", HEARTBEAT_SECONDS="",
                     PREFECT_PORT="", API_COMMIT_EVENTS="  ", INVOICE_PREFIX="")
    assert settings.home is None and settings.database_url is None
    assert (settings.heartbeat_seconds, settings.prefect_port) == (5.0, 4200)
    assert settings.api_commit_events == 5000
    assert settings.invoice_prefix == ""  # an empty prefix is a prefix


@pytest.mark.parametrize(("text", "embedded", "settle_paid"), [
    ("1", True, True), (" Yes ", True, True), ("TRUE", True, True), ("on", False, True),
    ("0", False, False), ("maybe", False, False), ("", False, False),
])
def test_flags_keep_their_own_words(
    monkeypatch: pytest.MonkeyPatch, text: str, embedded: bool, settle_paid: bool
) -> None:
    settings = _read(monkeypatch, EMBEDDED=text, WALLETS_SETTLE_PAID=text)
    assert (settings.embedded, settings.wallets_settle_paid) == (embedded, settle_paid)


@pytest.mark.parametrize(("text", "on"), [("1", True), ("true", False), (" 1", False)])
def test_debug_is_exactly_one(monkeypatch: pytest.MonkeyPatch, text: str, on: bool) -> None:
    assert _read(monkeypatch, DEBUG=text).debug is on


@pytest.mark.parametrize(("name", "text"), [
    ("INVOICE_SETTLE_HOURS", ""), ("INVOICE_SETTLE_HOURS", "3.0"),
    ("BILLING_RETRY_DELAY_SECONDS", "soon"), ("STALE_SECONDS", "x"),
])
def test_a_value_that_does_not_parse_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, text: str
) -> None:
    with pytest.raises(UserError, match=f"TALLYFLOW_{name}={text!r} is not a valid"):
        _read(monkeypatch, **{name: text})


@pytest.mark.parametrize(("text", "message", "hint"), [
    ("fast", "is not a number", "unset it or give a number (default 0.2)"),
    ("-1", "must be positive", "default 0.2"),
])
def test_the_api_numbers_keep_their_messages(
    monkeypatch: pytest.MonkeyPatch, text: str, message: str, hint: str
) -> None:
    with pytest.raises(UserError) as raised:
        _read(monkeypatch, API_COMMIT_SECONDS=text)
    assert raised.value.message == f"TALLYFLOW_API_COMMIT_SECONDS={text!r} {message}"
    assert raised.value.hint == hint


def test_api_bucket_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert _read(monkeypatch, HOME=str(tmp_path)).api_bucket_url() == \
        (tmp_path / "api-bucket").as_uri()
    assert _read(monkeypatch, API_BUCKET="s3://b/x/").api_bucket_url() == "s3://b/x"
    assert _read(monkeypatch, API_BUCKET=str(tmp_path)).api_bucket_url() == tmp_path.as_uri()


# -- read once per process -------------------------------------------------------------------


def test_read_once_until_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    first = _read(monkeypatch, INVOICE_PREFIX="A")
    os.environ["TALLYFLOW_INVOICE_PREFIX"] = "B"  # behind the settings' back: not seen
    assert get_settings() is first and get_settings().invoice_prefix == "A"
    s.reset_settings()
    assert get_settings().invoice_prefix == "B"
    s.set_in_environment("TALLYFLOW_INVOICE_PREFIX", "C")
    assert get_settings().invoice_prefix == "C"
    s.set_in_environment("TALLYFLOW_INVOICE_PREFIX", None)
    assert "TALLYFLOW_INVOICE_PREFIX" not in os.environ and get_settings().invoice_prefix == "TF"


def test_the_billing_retry_delay_is_read_when_a_run_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tallyflow.flows.billing import billing_cycle

    monkeypatch.setenv("TALLYFLOW_BILLING_RETRY_DELAY_SECONDS", "7")
    assert billing_cycle.retry_delay_seconds == 7
    monkeypatch.setenv("TALLYFLOW_BILLING_RETRY_DELAY_SECONDS", "2")
    assert billing_cycle.retry_delay_seconds == 2
    assert billing_cycle.with_options().retry_delay_seconds == 2
    assert (billing_cycle.name, billing_cycle.retries) == ("billing-cycle", 2)


def test_importing_the_code_reads_no_setting() -> None:
    """Every module of the flows, tasks, infrastructure, API, deployments and CLI imported
    (and the CLI built) in a fresh process with a setting that cannot be parsed: nothing
    fails and the settings are still unread."""
    script = """
import importlib, pkgutil, tallyflow
from tallyflow.infra import settings
for package in ("flows", "tasks", "infra", "api", "deployments", "cli"):
    root = importlib.import_module("tallyflow." + package)
    for module in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
from tallyflow.cli.main import build_app
build_app()
print(settings.get_settings.cache_info().currsize)
"""
    env = {**os.environ, "TALLYFLOW_INVOICE_SETTLE_HOURS": "not at import",
           "PYTHONPATH": str(PROJECT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300, cwd=PROJECT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0"


# -- every name a field, read only through the model ----------------------------------------


def test_every_tallyflow_name_in_the_code_is_a_field() -> None:
    fields = _fields_by_env()
    used: dict[str, set[str]] = {}
    for path in _files(CODE, (".py", ".yaml", ".yml")):
        for name in NAME.findall(path.read_text()):
            used.setdefault(name, set()).add(str(path.relative_to(PROJECT)))
    unknown = {name: sorted(where) for name, where in used.items() if name not in fields}
    assert not unknown, f"TALLYFLOW_ names that are no field of Settings: {unknown}"
    assert set(fields) <= set(used), "a field no code uses"


def _environment_reads(tree: ast.AST, constants: set[str]) -> list[int]:
    """Lines reading a TALLYFLOW_ variable from the environment: ``os.environ.get(X)``,
    ``os.getenv(X)``, ``os.environ[X]``, ``X in os.environ``, where X is a TALLYFLOW_ string
    or a constant naming one."""

    def names_a_setting(node: ast.AST | None) -> bool:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value.startswith(s.PREFIX)
        if isinstance(node, ast.Name | ast.Attribute):
            return (node.id if isinstance(node, ast.Name) else node.attr) in constants
        return False

    def is_environ(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "environ"

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            func = node.func
            reads = (func.attr == "get" and is_environ(func.value)) or func.attr == "getenv"
            if reads and names_a_setting(node.args[0]):
                lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            if is_environ(node.value) and names_a_setting(node.slice):
                lines.append(node.lineno)
        elif isinstance(node, ast.Compare) and any(is_environ(c) for c in node.comparators):
            if names_a_setting(node.left):
                lines.append(node.lineno)
    return lines


def test_nothing_but_the_settings_reads_a_setting_from_the_environment() -> None:
    trees = {path: ast.parse(path.read_text()) for path in _files(PRODUCT)}
    constants = {  # module constants naming a variable: SETTLE_ENV = "TALLYFLOW_..."
        target.id
        for tree in trees.values() for node in ast.walk(tree)
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str) and node.value.value.startswith(s.PREFIX)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    found = {
        str(path.relative_to(PROJECT)): lines
        for path, tree in trees.items()
        if (lines := _environment_reads(tree, constants))
        and str(path.relative_to(PROJECT)) not in ENVIRONMENT_READERS
    }
    assert not found, f"read get_settings() instead: {found}"
    # the check can fail: the reads it was written to catch
    sample = ast.parse('import os\nos.environ.get("TALLYFLOW_HOME")\nos.environ[HOME_ENV]\n'
                       'x = HOME_ENV in os.environ\nos.getenv("TALLYFLOW_DEBUG", "")\n'
                       'os.environ["TALLYFLOW_HOME"] = "w"\nos.environ.get("PATH")\n')
    assert _environment_reads(sample, {"HOME_ENV"}) == [2, 3, 4, 5]


# -- the configuration tables ------------------------------------------------------------------


def test_the_docs_tables_are_the_models() -> None:
    """After changing a setting: ``python -m tallyflow.infra.settings --write README.md
    docs/*.md``."""
    stale = [page.name for page in PAGES
             if s.render_tables(page.read_text()) != page.read_text()]
    assert not stale, f"regenerate the settings tables of {stale}"


def test_every_group_has_its_table_and_the_api_its_own() -> None:
    shown = {(page.name, selector) for page in PAGES
             for selector in s.marked_selectors(page.read_text())}
    assert shown == {("README.md", "user"), ("operations.md", "user"),
                     ("operations.md", "deploy-time"), ("development.md", "test-only"),
                     ("api.md", "TALLYFLOW_API_"), ("webhooks.md", "TALLYFLOW_WEBHOOK_")}


def test_a_table_lists_each_variable_of_its_selector_once() -> None:
    table = s.markdown_table("TALLYFLOW_API_")
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == [
        "TALLYFLOW_API_BUCKET", "TALLYFLOW_API_COMMIT_SECONDS", "TALLYFLOW_API_COMMIT_EVENTS",
        "TALLYFLOW_API_MAX_BODY_BYTES", "TALLYFLOW_API_MAX_PENDING",
        "TALLYFLOW_API_MAX_INFLIGHT", "TALLYFLOW_API_RATE_LIMIT"]
    assert "| `TALLYFLOW_API_COMMIT_EVENTS` | integer | `5000` |" in table
    with pytest.raises(ValueError):
        s.markdown_table("nobody")


def test_every_field_is_described_and_grouped() -> None:
    for field, info in Settings.model_fields.items():
        assert info.description and info.description.endswith("."), field
        assert s.group_of(info) in s.GROUPS, field
