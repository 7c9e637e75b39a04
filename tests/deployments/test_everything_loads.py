"""Everything loads: every flow imports, every deployment's entrypoint resolves, its schedule
parses and its default parameters validate against the flow (as the Prefect UI would send)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from prefect import Flow

import flows
from deployments.serve import deployment_specs, load_flow, schedules

SPECS = {spec["name"]: spec for spec in deployment_specs()}
# What a person fills in on the UI form of the on-demand deployments.
FORMS = {
    "backfill": {"window": {"start": "2026-11-27T08:00:00Z", "end": "2026-11-27T10:00:00Z"}},
    "rerate": {"request": {"external_subscription_id": "sub_acme_001"}},
    "reingest": {"request": {"object_url": "s3://bucket/events/a.jsonl"}},
}


def test_every_flow_module_imports_and_defines_flows() -> None:
    found = {}
    for module in pkgutil.iter_modules(flows.__path__):
        imported = importlib.import_module(f"flows.{module.name}")
        found[module.name] = [v.name for v in vars(imported).values() if isinstance(v, Flow)]
    assert found["ingest"] and found["billing"] and found["usage_snapshot"]
    assert found["wallet_deductions"]


def test_the_expected_deployments_exist() -> None:
    assert set(SPECS) == {"interval", "hourly", "backfill", "rerate", "reingest"}
    hourly = SPECS["hourly"]
    assert hourly["schedules"] == [{"cron": "0 * * * *", "timezone": "UTC"}]
    assert hourly["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_deployment_entrypoint_schedule_and_parameters(name: str) -> None:
    spec = SPECS[name]
    flow = load_flow(spec["entrypoint"])
    assert isinstance(flow, Flow)
    for schedule in schedules(spec):
        assert schedule is not None
    parameters = {**(spec.get("parameters") or {}), **FORMS.get(name, {})}
    validated = flow.validate_parameters(parameters)
    assert set(validated) >= set(parameters)
    schema = flow.parameters.model_dump()
    required = set(schema.get("required") or [])
    assert required <= set(parameters), f"{name}: the form needs {required - set(parameters)}"


def test_bad_form_input_is_refused_with_a_reason() -> None:
    backfill = load_flow(SPECS["backfill"]["entrypoint"])
    with pytest.raises(Exception, match="end must not be before start"):
        backfill.validate_parameters(
            {"window": {"start": "2026-11-27T10:00:00Z", "end": "2026-11-27T08:00:00Z"}}
        )
