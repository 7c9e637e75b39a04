"""Lago's ``GET /api/v1/customers/{external_customer_id}/current_usage``: the figures of
``tallyflow usage`` (``tasks.usage.current_usage``)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Engine

from tallyflow.api.deps import AUTH, get_engine, only_params
from tallyflow.api.lago import LagoError, LagoJSON, invalid, not_found
from tallyflow.api.objects import with_total_units
from tallyflow.tasks.catalog import customer_id, subscription_owners

router = APIRouter(prefix="/api/v1/customers", tags=["usage"], dependencies=AUTH)


@router.get("/{external_customer_id}/current_usage")
def current_usage(request: Request, external_customer_id: str,
                  external_subscription_id: str | None = None,
                  engine: Engine = Depends(get_engine)) -> LagoJSON:
    """Lago's `customer_usage`: the subscription's current period, every event so far (the
    same code as `tallyflow usage`)."""
    from tallyflow.tasks.usage import current_usage as usage_of

    only_params(request, ("external_subscription_id",))
    if not external_subscription_id:
        raise invalid({"external_subscription_id": ["value_is_mandatory"]})
    owner = subscription_owners(engine, [external_subscription_id]).get(external_subscription_id)
    if customer_id(engine, external_customer_id) is None:
        raise not_found("customer")
    if owner != external_customer_id:
        raise not_found("subscription")
    try:
        usage = usage_of(engine, external_subscription_id, datetime.now(UTC))
    except LookupError:
        raise not_found("subscription") from None
    except ValueError as exc:  # the subscription has not started or has ended
        raise LagoError(405, "no_active_subscription", error=str(exc)) from None
    return LagoJSON({"customer_usage": with_total_units(usage)})
