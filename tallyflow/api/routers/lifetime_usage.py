"""Lago's lifetime usage of a subscription: ``GET`` and ``PUT
/api/v1/subscriptions/{external_id}/lifetime_usage`` (lago-api
``app/controllers/api/v1/subscriptions/lifetime_usages_controller.rb``, the object as
``V1::LifetimeUsageSerializer`` with its ``usage_thresholds``). The PUT sets
``external_historical_usage_amount_cents``, the usage before Tallyflow. The work is
``tallyflow.tasks.invoicing``'s, as ``tallyflow subscriptions lifetime-usage`` does it
(docs/progressive-billing.md, docs/architecture.md §20)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine

from tallyflow.api.deps import AUTH, document_body, get_engine, only_params
from tallyflow.api.lago import LagoError, LagoJSON, invalid, not_found
from tallyflow.api.schemas import request_body


class LifetimeUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    external_historical_usage_amount_cents: int


class LifetimeUsageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lifetime_usage: LifetimeUsage


_BODY = request_body(LifetimeUsageRequest)
router = APIRouter(prefix="/api/v1/subscriptions", tags=["lifetime_usage"], dependencies=AUTH)


def _cents(body: Any) -> int:
    """``external_historical_usage_amount_cents`` from ``{"lifetime_usage": {...}}``: a whole
    number of cents, not negative; every other key refused by name."""
    if not isinstance(body, dict):
        raise LagoError(400, "invalid_body", {"body": ["must_be_an_object"]})
    unknown = sorted(set(body) - {"lifetime_usage"})
    if unknown:
        raise invalid({name: ["unknown_field"] for name in unknown})
    fields = body.get("lifetime_usage")
    if not isinstance(fields, dict):
        raise LagoError(400, "missing_parameter", {"lifetime_usage": ["value_is_mandatory"]})
    unknown = sorted(set(fields) - {"external_historical_usage_amount_cents"})
    if unknown:
        raise invalid({name: ["unknown_field"] for name in unknown})
    cents = fields.get("external_historical_usage_amount_cents")
    if isinstance(cents, bool) or not isinstance(cents, int):
        raise invalid({"external_historical_usage_amount_cents": ["value_is_invalid"]})
    if cents < 0:
        raise invalid({"external_historical_usage_amount_cents": ["value_is_out_of_range"]})
    return cents


@router.get("/{external_id}/lifetime_usage")
def get_lifetime_usage(request: Request, external_id: str,
                       engine: Engine = Depends(get_engine)) -> LagoJSON:
    from tallyflow.tasks.invoicing import lifetime_usage

    only_params(request)
    try:
        return LagoJSON({"lifetime_usage": lifetime_usage(engine, external_id,
                                                          datetime.now(UTC))})
    except LookupError:
        raise not_found("lifetime_usage") from None


@router.put("/{external_id}/lifetime_usage", openapi_extra=_BODY)
def update_lifetime_usage(request: Request, external_id: str,
                          body: Any = Depends(document_body),
                          engine: Engine = Depends(get_engine)) -> LagoJSON:
    from tallyflow.tasks.invoicing import set_historical_usage

    only_params(request)
    cents = _cents(body)
    try:
        return LagoJSON({"lifetime_usage": set_historical_usage(engine, external_id, cents,
                                                                datetime.now(UTC))})
    except LookupError:
        raise not_found("lifetime_usage") from None
