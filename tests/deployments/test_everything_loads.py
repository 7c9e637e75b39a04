"""Everything loads: every flow imports, every deployment's entrypoint resolves, its schedule
parses and its default parameters validate against the flow (as the Prefect UI would send)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import zoneinfo
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect import Flow
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from pydantic import BaseModel

from tallyflow import flows
from tallyflow.deployments.serve import deployment_specs, load_flow, schedules

SPECS = {spec["name"]: spec for spec in deployment_specs()}
# What a person fills in on the UI form of the on-demand deployments.
FORMS = {
    "backfill": {"start": "2026-11-27T08:00:00Z", "hours": 3},
    "rerate": {"external_subscription_id": "sub_acme_001"},
    "reingest": {"object_url": "s3://bucket/events/a.jsonl"},
    "replay": {"source": {"kind": "fsspec", "url": "s3://bucket/logs/",
                          "mapping": "openai-chat"}},
}


def test_every_flow_module_imports_and_defines_flows() -> None:
    found = {}
    for module in pkgutil.iter_modules(flows.__path__):
        imported = importlib.import_module(f"tallyflow.flows.{module.name}")
        found[module.name] = [v.name for v in vars(imported).values() if isinstance(v, Flow)]
    assert found["ingest"] and found["billing"] and found["usage_snapshot"]
    assert found["wallet_deductions"] and found["invoice_pdfs"] and found["webhooks"]
    assert found["balances"] == ["refresh-balances"]


def test_the_expected_deployments_exist() -> None:
    assert set(SPECS) == {"interval", "api", "hourly", "pdfs", "backfill", "rerate", "reingest",
                          "replay", "webhooks", "balances"}
    hourly = SPECS["hourly"]
    assert hourly["schedules"] == [{"cron": "0 * * * *", "timezone": "UTC"}]
    assert hourly["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    # invoice PDFs: their own flow and schedule, bounded runs shorter than the interval
    pdfs = SPECS["pdfs"]
    assert pdfs["entrypoint"] == "tallyflow.flows.invoice_pdfs:invoice_pdfs"
    assert pdfs["schedules"] == [{"interval": 600}]
    assert pdfs["parameters"]["max_seconds"] < pdfs["schedules"][0]["interval"]
    assert pdfs["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    # the running balances and the wallet alerts on them: every minute, one pass at a time
    balances = SPECS["balances"]
    assert balances["entrypoint"] == "tallyflow.flows.balances:refresh_balances"
    assert balances["schedules"] == [{"interval": 60}]
    assert balances["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}


def _schedule_of(item: dict[str, Any]) -> CronSchedule | IntervalSchedule:
    """The YAML schedule through Prefect's own validating schema (cron syntax, timezone)."""
    assert len({"cron", "interval"} & set(item)) == 1, f"one of cron/interval: {item}"
    if "cron" in item:
        return CronSchedule(cron=item["cron"], timezone=item.get("timezone"))
    return IntervalSchedule(
        interval=timedelta(seconds=item["interval"]), timezone=item.get("timezone")
    )


@pytest.mark.parametrize("name", sorted(SPECS))
def test_deployment_entrypoint_resolves_to_the_flow_it_names(name: str) -> None:
    """A module path (as workers load it), naming a flow defined in that module's file."""
    from prefect.flows import load_flow_from_entrypoint

    entrypoint = SPECS[name]["entrypoint"]
    module, _, function = entrypoint.partition(":")
    assert module.startswith("tallyflow.flows."), f"{name}: {entrypoint} is not a module path"
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"{name}: no module {module}"
    flow = load_flow(entrypoint)
    assert isinstance(flow, Flow), f"{name}: {function} is not a flow"
    assert load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False) is flow
    defined = inspect.unwrap(flow.fn)  # under Tallyflow's run-history wrapper
    assert defined.__name__ == function
    assert Path(inspect.getsourcefile(defined) or "").resolve() == Path(spec.origin).resolve()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_deployment_schedules_are_valid_and_served_as_written(name: str) -> None:
    spec = SPECS[name]
    written = spec.get("schedules") or []
    served = schedules(spec)
    assert len(served) == len(written)
    for item, schedule in zip(written, served, strict=True):
        valid = _schedule_of(item)
        if isinstance(valid, CronSchedule):
            assert (schedule.cron, schedule.timezone) == (valid.cron, valid.timezone)
        else:
            assert schedule.interval == valid.interval
        if item.get("timezone"):
            assert item["timezone"] in zoneinfo.available_timezones()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_deployment_default_parameters_fit_the_flow_signature(name: str) -> None:
    spec = SPECS[name]
    flow = load_flow(spec["entrypoint"])
    signature = inspect.signature(flow.fn).parameters
    defaults = spec.get("parameters") or {}
    unknown = set(defaults) - set(signature)
    assert not unknown, f"{name}: the flow takes no parameter(s) {sorted(unknown)}"
    parameters = {**defaults, **FORMS.get(name, {})}
    validated = flow.validate_parameters(parameters)  # raises on a value the flow refuses
    required = {p for p, v in signature.items() if v.default is inspect.Parameter.empty}
    assert required <= set(parameters), f"{name}: the form needs {required - set(parameters)}"
    for key, value in defaults.items():  # what the YAML says is what the flow gets
        typed = validated[key]
        as_data = typed.model_dump(mode="json") if isinstance(typed, BaseModel) else typed
        assert _given(as_data, value) == value, (
            f"{name}: default {key} changed on validation: {as_data!r}")


def _given(data: object, written: object) -> object:
    """``data`` cut to the keys the YAML writes, at every level (the rest are defaults)."""
    if isinstance(written, dict) and isinstance(data, dict):
        return {k: _given(data.get(k), v) for k, v in written.items()}
    return data


def _submit_errors(name: str, parameters: dict) -> list[str]:
    """What the Prefect server says when a run of deployment ``name`` is submitted with these
    parameters: the same JSON-schema check it applies before creating the run."""
    from prefect.utilities.schema_tools import validate

    schema = load_flow(SPECS[name]["entrypoint"]).parameters.model_dump()
    return [error.message for error in validate(parameters, schema)]


@pytest.mark.parametrize(
    ("name", "parameters", "refused"),
    [
        ("hourly", {"hour": "2026-11-27T10:00:00Z"}, False),
        ("hourly", {"hour": "2026-11-27T10:00:00+01:00"}, False),
        ("hourly", {"hour": "2026-11-27T10:00:00.000Z"}, False),
        ("hourly", {}, False),
        ("hourly", {"hour": "2026-11-27T10:00:00"}, True),
        ("hourly", {"hour": "2026-11-27"}, True),
        ("backfill", {"start": "2026-11-27T10:00:00Z", "hours": 1}, False),
        ("backfill", {"start": "2026-11-27T10:00:00Z", "hours": 0}, True),
        ("backfill", {"start": "2026-11-27T10:00:00Z", "hours": -3}, True),
        ("backfill", {"start": "2026-11-27T10:00:00Z", "hours": 92 * 24 + 1}, True),
        ("backfill", {"start": "2026-11-27T10:00:00", "hours": 2}, True),
        ("rerate", {"external_subscription_id": "s", "at": "2026-11-27T10:30:00Z"}, False),
        ("rerate", {"external_subscription_id": "s", "at": "2026-11-27 10:30"}, True),
        ("rerate", {"external_subscription_id": ""}, True),
        ("pdfs", {}, False),
        ("pdfs", {"max_pdfs": 100, "max_seconds": 60, "chunk": 10}, False),
        ("pdfs", {"max_pdfs": 0}, True),
        ("pdfs", {"max_seconds": 0}, True),
        ("pdfs", {"max_seconds": 7200}, True),
        ("pdfs", {"chunk": 0}, True),
        ("webhooks", {}, False),
        ("webhooks", {"limit": 0}, True),
        ("balances", {}, False),
    ],
)
def test_the_server_refuses_bad_form_input_at_submit(
    name: str, parameters: dict, refused: bool
) -> None:
    assert bool(_submit_errors(name, parameters)) is refused, _submit_errors(name, parameters)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_form_field_has_a_title_and_a_description_and_no_none_toggle(name: str) -> None:
    schema = load_flow(SPECS[name]["entrypoint"]).parameters.model_dump()
    for field, prop in schema["properties"].items():
        assert prop.get("title") and prop["title"] != field, f"{name}.{field}: raw title"
        assert prop.get("description"), f"{name}.{field}: no description"
        assert "anyOf" not in prop, f"{name}.{field}: the form would offer None"


def test_code_callers_get_the_same_checks() -> None:
    hourly = load_flow(SPECS["hourly"]["entrypoint"])
    with pytest.raises(Exception, match="timezone offset"):
        hourly.validate_parameters({"hour": "2026-11-27T10:00:00"})
    assert hourly.validate_parameters({"hour": "2026-11-27T10:45:00+01:00"})["hour"].isoformat() \
        == "2026-11-27T09:00:00+00:00"


def test_run_names_write_hours_one_way() -> None:
    from datetime import UTC, datetime

    from tallyflow.flows.params import moment_label

    expected = "2026-11-29T01:00Z"
    assert moment_label("2026-11-29T01:00:00Z") == expected
    assert moment_label("2026-11-28T20:00:00-05:00") == expected
    assert moment_label(datetime(2026, 11, 29, 1, tzinfo=UTC)) == expected
    assert moment_label("2026-11-29T01:30:00Z") == "2026-11-29T01:30:00Z"
    assert moment_label(None) is None
    assert moment_label("not a time") == "not a time"


def test_prefect_yaml_names_the_installed_prefect_and_the_scheduler_safe_sqlalchemy() -> None:
    """A fresh install gets the tested set: Prefect as prefect.yaml says, and SQLAlchemy below
    2.1 (with 2.1, Prefect 3.9's scheduler fails every loop and no scheduled run is created)."""
    from importlib.metadata import version
    from pathlib import Path

    import yaml

    root = Path(__file__).parents[2]
    document = yaml.safe_load((root / "deployments" / "prefect.yaml").read_text())
    assert document["prefect-version"] == version("prefect")
    pins = dict(
        line.split("==", 1) for line in (root / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert pins["prefect"] == version("prefect")
    assert pins["SQLAlchemy"] == version("sqlalchemy")
    assert tuple(int(p) for p in version("sqlalchemy").split(".")[:2]) < (2, 1)
