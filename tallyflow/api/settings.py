"""Settings of `tallyflow api`: part of the one typed ``Settings`` (tallyflow/infra/settings.py,
the ``TALLYFLOW_API_*`` variables, documented in docs/api.md), re-exported for the API's
modules."""

from __future__ import annotations

from tallyflow.infra.settings import API_PREFIX as PREFIX
from tallyflow.infra.settings import ApiSettings, api_settings

MAX_BATCH = 100  # Lago's LAGO_EVENTS_BATCH_MAX_LENGTH default

__all__ = ["MAX_BATCH", "PREFIX", "ApiSettings", "api_settings"]
