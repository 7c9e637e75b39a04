"""Apply ``deployments/automations.yaml`` to a Prefect server: who is notified of what.

Prefect's automations run on the server (its triggers and actions services), so notifications
reach someone whichever worker ran the flow, and even when that worker died (a crashed run is
detected by the server). This module only declares them; Prefect sends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

AUTOMATIONS_YAML = Path(__file__).resolve().parent / "automations.yaml"
BLOCK_NAME = "tallyflow-notify"


def automation_specs(path: Path = AUTOMATIONS_YAML) -> list[dict[str, Any]]:
    return list(yaml.safe_load(path.read_text())["automations"])


def save_notification_block(webhook_url: str) -> Any:
    """The one notification block every automation sends through (created or updated)."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name="tallyflow",
        url=webhook_url,
        json_data={"subject": "{{subject}}", "body": "{{body}}", "source": "tallyflow"},
    )
    block.save(BLOCK_NAME, overwrite=True)
    loaded = CustomWebhookNotificationBlock.load(BLOCK_NAME)
    assert isinstance(loaded, CustomWebhookNotificationBlock)  # loaded synchronously
    return loaded._block_document_id


def apply_automations(webhook_url: str, path: Path = AUTOMATIONS_YAML) -> list[str]:
    """Create or replace every automation of the file (matched by name); returns their names."""
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client

    block_id = save_notification_block(webhook_url)
    applied: list[str] = []
    with get_client(sync_client=True) as client:
        for spec in automation_specs(path):
            for existing in client.read_automations_by_name(spec["name"]):
                client.delete_automation(existing.id)
            actions = [
                {**action, "block_document_id": str(block_id)}
                if action.get("type") == "send-notification" else action
                for action in spec["actions"]
            ]
            Automation.model_validate({**spec, "actions": actions, "enabled": True}).create()
            applied.append(spec["name"])
    return applied
