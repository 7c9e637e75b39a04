"""The API's shape (docs/architecture.md, "The HTTP API"): its modules import each other in one
direction only, a resource's router never imports another's, the SQL is in tasks, no function
is longer than 80 lines, and the OpenAPI document builds with every body described."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from tallyflow.api.app import ROUTERS, create_app
from tallyflow.api.settings import ApiSettings

API = Path(__file__).resolve().parents[3] / "tallyflow" / "api"
MAX_LINES = 80


def _module(path: Path) -> str:
    parts = path.relative_to(API.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, ast.Module]:
    return {_module(p): ast.parse(p.read_text(), str(p)) for p in sorted(API.rglob("*.py"))}


def _api_imports(tree: ast.Module, modules: set[str]) -> set[str]:
    """The API modules a module imports, at its top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph (its modules in order), None when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _graph() -> dict[str, set[str]]:
    sources = _sources()
    modules = set(sources)
    return {name: _api_imports(tree, modules) - {name} for name, tree in sources.items()}


def test_the_api_modules_import_each_other_without_a_cycle() -> None:
    assert _cycle(_graph()) is None


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = _graph()
    graph["tallyflow.api.lago"] = graph["tallyflow.api.lago"] | {"tallyflow.api.app"}
    found = _cycle(graph)
    assert found is not None and found[0] == found[-1]


def test_a_router_imports_no_other_router() -> None:
    """Only the catalog routes' factory is shared between routers."""
    shared = {"tallyflow.api.routers", "tallyflow.api.routers.catalog"}
    for name, imports in _graph().items():
        if name.startswith("tallyflow.api.routers."):
            others = {i for i in imports if i.startswith("tallyflow.api.routers")} - shared
            assert not others, f"{name} imports {sorted(others)}"


def test_the_api_holds_no_sql_of_its_own() -> None:
    """The SQL is in tasks (the feature's package); keys.py is the API key store (its table
    is the API's alone, read by the CLI's ``tallyflow api-keys`` too)."""
    for name, tree in _sources().items():
        if name == "tallyflow.api.keys":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "sqlalchemy":
                used = {a.name for a in node.names} & {"text", "select", "update", "insert",
                                                        "delete"}
                assert not used, f"{name} imports sqlalchemy's {sorted(used)}"


@pytest.mark.parametrize("path", sorted(API.rglob("*.py")), ids=lambda p: p.name)
def test_no_function_is_longer_than_80_lines(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= MAX_LINES, f"{path.name}:{node.name} has {length} lines"


# Lago's writes that take no body (the path says everything)
BODILESS = {("put", "/api/v1/credit_notes/{lago_id}/void"),
            ("put", "/api/v1/invoices/{lago_id}/finalize"),
            ("put", "/api/v1/invoices/{lago_id}/refresh")}


def test_every_router_is_included_and_the_openapi_document_builds(tmp_path: Path) -> None:
    engine = create_engine("postgresql+psycopg://127.0.0.1/unused")  # never connected
    app = create_app(engine, ApiSettings(tmp_path.as_uri(), 0.1, 10, 1024), load=False)
    document = app.openapi()
    for module in ROUTERS:
        for route in module.router.routes:
            if getattr(route, "include_in_schema", False):
                assert route.path in document["paths"]  # type: ignore[attr-defined]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method in ("post", "put") and (method, path) not in BODILESS:
                schema = operation["requestBody"]["content"]["application/json"]["schema"]
                assert schema["properties"], f"{method} {path}"
    events = document["paths"]["/api/v1/events/batch"]["post"]["requestBody"]
    batch = events["content"]["application/json"]["schema"]
    assert list(batch["$defs"]["LagoEvent"]["properties"]) == [
        "transaction_id", "external_subscription_id", "code", "timestamp", "properties",
        "precise_total_amount_cents", "external_customer_id"]
