"""deployments/automations.yaml: every automation is one Prefect accepts, and the contained
failures of a billing run are among what it notifies on."""

from __future__ import annotations

import uuid

from prefect.automations import Automation

from tallyflow.deployments.automations import automation_specs
from tallyflow.tasks.runs.containment import EVENT


def test_every_automation_validates_and_contained_failures_notify() -> None:
    block = str(uuid.uuid4())
    names = []
    for spec in automation_specs():
        actions = [{**a, "block_document_id": block} for a in spec["actions"]]
        automation = Automation.model_validate({**spec, "actions": actions, "enabled": True})
        names.append(automation.name)
        if automation.name == "tallyflow-contained-failure":
            assert EVENT in automation.trigger.expect  # type: ignore[union-attr]
    assert "tallyflow-contained-failure" in names
