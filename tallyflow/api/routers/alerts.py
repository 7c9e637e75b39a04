"""Lago's usage alerts of a subscription: ``/api/v1/subscriptions/{external_id}/alerts``
(list, create) and ``.../alerts/{code}`` (get, update, delete) (lago-api
``app/controllers/api/v1/subscriptions/alerts_controller.rb``, objects as
``V1::UsageMonitoring::AlertSerializer``). The work is ``tallyflow.tasks.alerts``'s, as
`tallyflow alerts` does it (docs/alerts.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine

from tallyflow.api.deps import AUTH, Paging, document_body, get_engine, only_params, page_params
from tallyflow.api.lago import LagoError, LagoJSON, invalid, page_args, paginated
from tallyflow.api.schemas import request_body


class AlertThreshold(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str | None = None
    value: str | float
    recurring: bool = False


class Alert(BaseModel):
    """Lago's alert body (``alert_type`` ``lifetime_usage_amount`` and the wallet types are
    refused by name: docs/alerts.md)."""

    model_config = ConfigDict(extra="forbid")
    alert_type: str | None = None
    code: str | None = None
    name: str | None = None
    billable_metric_code: str | None = None
    direction: str | None = None
    thresholds: list[AlertThreshold] | None = None


class AlertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alert: Alert


_BODY = request_body(AlertRequest)
router = APIRouter(prefix="/api/v1/subscriptions", tags=["alerts"], dependencies=AUTH)


@contextmanager
def _answered() -> Iterator[None]:
    """A refusal of the task in Lago's error shape (422 ``validation_errors``, 404)."""
    from tallyflow.models.alerts import AlertError
    from tallyflow.tasks.alerts import AlertNotFound

    try:
        yield
    except AlertError as exc:
        raise invalid({exc.field: [exc.code]}) from None
    except AlertNotFound as exc:
        raise LagoError(404, str(exc.args[0])) from None


def _fields(body: Any) -> dict[str, object]:
    """The alert's fields from ``{"alert": {...}}``; other keys refused by name."""
    if not isinstance(body, dict):
        raise LagoError(400, "invalid_body", {"body": ["must_be_an_object"]})
    unknown = sorted(set(body) - {"alert"})
    if unknown:
        raise invalid({name: ["unknown_field"] for name in unknown})
    fields = body.get("alert")
    if not isinstance(fields, dict):
        raise LagoError(400, "missing_parameter", {"alert": ["value_is_mandatory"]})
    return fields


@router.get("/{external_id}/alerts")
def list_alerts(request: Request, external_id: str, paging: Paging = Depends(page_params),
                engine: Engine = Depends(get_engine)) -> LagoJSON:
    from tallyflow.tasks.alerts import list_alerts as alerts

    only_params(request)
    page, per_page = page_args(paging.page, paging.per_page)
    return LagoJSON(paginated("alerts", alerts(engine, external_id), page, per_page))


@router.post("/{external_id}/alerts", openapi_extra=_BODY)
def create_alert(request: Request, external_id: str, body: Any = Depends(document_body),
                 engine: Engine = Depends(get_engine)) -> LagoJSON:
    from tallyflow.tasks.alerts import create_alert as create

    only_params(request)
    with _answered():
        return LagoJSON({"alert": create(engine, external_id, _fields(body))})


@router.get("/{external_id}/alerts/{code}")
def get_alert(request: Request, external_id: str, code: str,
              engine: Engine = Depends(get_engine)) -> LagoJSON:
    from tallyflow.tasks.alerts import get_alert as one

    only_params(request)
    with _answered():
        return LagoJSON({"alert": one(engine, external_id, code)})


@router.put("/{external_id}/alerts/{code}", openapi_extra=_BODY)
def update_alert(request: Request, external_id: str, code: str,
                 body: Any = Depends(document_body),
                 engine: Engine = Depends(get_engine)) -> LagoJSON:
    from tallyflow.tasks.alerts import update_alert as update

    only_params(request)
    with _answered():
        return LagoJSON({"alert": update(engine, external_id, code, _fields(body))})


@router.delete("/{external_id}/alerts/{code}")
def delete_alert(request: Request, external_id: str, code: str,
                 engine: Engine = Depends(get_engine)) -> LagoJSON:
    from tallyflow.tasks.alerts import delete_alert as delete

    only_params(request)
    with _answered():
        return LagoJSON({"alert": delete(engine, external_id, code)})
