"""Links from artifacts to runs in the Prefect UI."""

from __future__ import annotations


def ui_url() -> str | None:
    """The Prefect UI's address when a server is configured."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    api = PREFECT_API_URL.value()
    if not ui and api:
        ui = str(api).removesuffix("/").removesuffix("/api")
    return ui or None


def run_link(flow_run_id: object, label: str) -> str:
    """A markdown link to a flow run's page (plain text without a UI to link to)."""
    ui = ui_url()
    return f"[{label}]({ui}/runs/flow-run/{flow_run_id})" if ui and flow_run_id else label
