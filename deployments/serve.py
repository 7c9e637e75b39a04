"""Serve the deployments of ``deployments/prefect.yaml`` from one process (a single machine).

The YAML stays the one definition of names, entrypoints, schedules, default parameters and
concurrency; this module turns each entry into a ``RunnerDeployment`` and hands them all to
``prefect.serve``. Schedules stay active when the process stops (``pause_on_shutdown=False``):
stopping a server for maintenance must not silently stop billing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parents[1]
PREFECT_YAML = Path(__file__).resolve().parent / "prefect.yaml"
_ENV = re.compile(r"\{\{\s*\$([A-Z0-9_]+)\s*\}\}")
DEFAULTS = {
    "TALLYFLOW_PROJECT_DIR": str(PROJECT),
    "TALLYFLOW_SOURCE_URL": (PROJECT / ".tallyflow-bucket").as_uri(),
}


def _value(name: str) -> str:
    """A ``{{ $VAR }}`` of prefect.yaml: Tallyflow's deploy-time settings from the settings
    (the API's bucket exactly as `tallyflow api` reads it), any other variable from the
    environment, as Prefect does."""
    from tallyflow.infra.settings import API_BUCKET_ENV, get_settings

    settings = get_settings()
    if name == API_BUCKET_ENV:
        return settings.api_bucket_url()
    if name == "TALLYFLOW_PROJECT_DIR":
        return settings.project_dir or DEFAULTS[name]
    if name == "TALLYFLOW_SOURCE_URL":
        return settings.source_url or DEFAULTS[name]
    return os.environ.get(name) or ""


def _expand(value: Any) -> Any:
    """Prefect's ``{{ $VAR }}`` templating, for the values serve reads itself."""
    if isinstance(value, str):
        return _ENV.sub(lambda m: _value(m.group(1)), value)
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def deployment_specs() -> list[dict[str, Any]]:
    document = yaml.safe_load(PREFECT_YAML.read_text())
    return [_expand(spec) for spec in document["deployments"]]


def load_flow(entrypoint: str) -> Any:
    """Import ``package.module:function``, the module-path entrypoint Prefect workers use too.

    Module paths (not file paths) so a flow module is imported once, under its package name,
    whether the CLI, ``serve`` or a worker loads it (docs/architecture.md §1).
    """
    module_name, _, name = entrypoint.partition(":")
    if "/" in module_name or module_name.endswith(".py"):
        raise ImportError(f"entrypoint {entrypoint!r}: use a module path (package.module:flow)")
    if importlib.util.find_spec(module_name) is None:
        raise ImportError(f"entrypoint {entrypoint!r}: no module {module_name}")
    module = importlib.import_module(module_name)
    return getattr(module, name)


def schedules(spec: dict[str, Any]) -> list[Any]:
    from prefect.schedules import Cron, Interval

    result = []
    for item in spec.get("schedules") or []:
        if "cron" in item:
            result.append(Cron(item["cron"], timezone=item.get("timezone")))
        elif "interval" in item:
            result.append(Interval(item["interval"], timezone=item.get("timezone")))
        else:
            raise ValueError(f"deployment {spec['name']!r}: unknown schedule {item!r}")
    return result


def runner_deployments(only: list[str] | None = None) -> list[Any]:
    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    deployments = []
    for spec in deployment_specs():
        if only and spec["name"] not in only:
            continue
        flow = load_flow(spec["entrypoint"])
        limit = spec.get("concurrency_limit")
        deployments.append(
            flow.to_deployment(
                name=spec["name"],
                schedules=schedules(spec),
                parameters=spec.get("parameters") or {},
                description=spec.get("description"),
                tags=spec.get("tags"),
                concurrency_limit=ConcurrencyLimitConfig(**limit) if limit else None,
            )
        )
    return deployments


HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"


def serve(only: list[str] | None = None) -> None:
    from prefect import serve as prefect_serve

    # Served runs are subprocesses of this one: like a worker's (prefect.yaml's job variables),
    # they send heartbeats, so a run whose process died is marked Crashed by the server.
    os.environ[HEARTBEAT_ENV] = os.environ.get(HEARTBEAT_ENV) or "30"

    prefect_serve(*runner_deployments(only), pause_on_shutdown=False)


if __name__ == "__main__":
    serve(sys.argv[1:] or None)
