"""Lago's ``/api/v1/webhook_endpoints``: list (paged), get, create, update, delete
(lago-api ``app/controllers/api/v1/webhook_endpoints_controller.rb``, objects as
``V1::WebhookEndpointSerializer``). The work is ``tallyflow.tasks.webhooks``'s, as
`tallyflow webhooks endpoints` does it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Engine

from tallyflow.api.deps import AUTH, Paging, document_body, get_engine, only_params, page_params
from tallyflow.api.lago import LagoError, LagoJSON, invalid, page_args, paginated
from tallyflow.api.schemas import WebhookEndpoint, WebhookEndpointRequest, request_body

router = APIRouter(prefix="/api/v1/webhook_endpoints", tags=["webhook_endpoints"],
                   dependencies=AUTH)
FIELDS = tuple(WebhookEndpoint.model_fields)


@contextmanager
def _answered() -> Iterator[None]:
    """A refusal of the task, in Lago's error shape (422 ``validation_errors``, 404)."""
    from tallyflow.tasks.webhooks import WebhookError

    try:
        yield
    except WebhookError as exc:
        if exc.status == 422:
            raise invalid(exc.errors) from None
        raise LagoError(exc.status, exc.code) from None


def _fields(body: Any) -> dict[str, object]:
    """The endpoint's fields from ``{"webhook_endpoint": {...}}``; unknown keys refused."""
    if not isinstance(body, dict):
        raise LagoError(400, "invalid_body", {"body": ["must_be_an_object"]})
    unknown = sorted(set(body) - set(WebhookEndpointRequest.model_fields))
    if unknown:
        raise invalid({name: ["unknown_field"] for name in unknown})
    fields = body.get("webhook_endpoint")
    if not isinstance(fields, dict):
        raise LagoError(400, "missing_parameter", {"webhook_endpoint": ["value_is_mandatory"]})
    return fields


@router.get("")
def list_endpoints(request: Request, paging: Paging = Depends(page_params),
                   engine: Engine = Depends(get_engine)) -> LagoJSON:
    from tallyflow.tasks.webhooks import list_endpoints as endpoints

    only_params(request)
    page, per_page = page_args(paging.page, paging.per_page)
    found, total = endpoints(engine, page, per_page)
    return LagoJSON(paginated("webhook_endpoints", found, page, per_page, total))


@router.get("/{lago_id}")
def get_endpoint(request: Request, lago_id: str,
                 engine: Engine = Depends(get_engine)) -> LagoJSON:
    from tallyflow.tasks.webhooks import get_endpoint as endpoint

    only_params(request)
    with _answered():
        return LagoJSON({"webhook_endpoint": endpoint(engine, lago_id)})


@router.post("", openapi_extra=request_body(WebhookEndpointRequest))
def create_endpoint(request: Request, body: Any = Depends(document_body),
                    engine: Engine = Depends(get_engine)) -> LagoJSON:
    from tallyflow.tasks.webhooks import add_endpoint

    only_params(request)
    with _answered():
        return LagoJSON({"webhook_endpoint": add_endpoint(engine, _fields(body))})


@router.put("/{lago_id}", openapi_extra=request_body(WebhookEndpointRequest))
def update_endpoint(request: Request, lago_id: str, body: Any = Depends(document_body),
                    engine: Engine = Depends(get_engine)) -> LagoJSON:
    from tallyflow.tasks.webhooks import update_endpoint as update

    only_params(request)
    fields = {k: v for k, v in _fields(body).items() if k != "id"}  # Lago drops its id
    with _answered():
        return LagoJSON({"webhook_endpoint": update(engine, lago_id, fields)})


@router.delete("/{lago_id}")
def delete_endpoint(request: Request, lago_id: str,
                    engine: Engine = Depends(get_engine)) -> LagoJSON:
    from tallyflow.tasks.webhooks import remove_endpoint

    only_params(request)
    with _answered():
        return LagoJSON({"webhook_endpoint": remove_endpoint(engine, lago_id)})
