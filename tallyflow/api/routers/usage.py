"""Lago's usage of a customer: ``GET /api/v1/customers/{external_customer_id}/current_usage``
(the figures of ``tallyflow usage``, ``tasks.usage.current_usage``), ``/projected_usage`` (the
same, projected to the period's end by the same rating code) and ``/past_usage`` (finalized
invoices' charge fees, ``tasks.invoicing.past_usage``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Engine

from tallyflow.api.deps import AUTH, Paging, get_engine, only_params, page_params
from tallyflow.api.lago import LagoError, LagoJSON, invalid, not_found, page_args, paginated
from tallyflow.api.objects import with_total_units
from tallyflow.tasks.catalog import customer_id, subscription_owners

T = TypeVar("T")

router = APIRouter(prefix="/api/v1/customers", tags=["usage"], dependencies=AUTH)


@router.get("/{external_customer_id}/current_usage")
def current_usage(request: Request, external_customer_id: str,
                  external_subscription_id: str | None = None,
                  engine: Engine = Depends(get_engine)) -> LagoJSON:
    """Lago's `customer_usage`: the subscription's current period, every event so far (the
    same code as `tallyflow usage`)."""
    from tallyflow.tasks.usage import current_usage as usage_of

    only_params(request, ("external_subscription_id",))
    _owned(engine, external_customer_id, external_subscription_id)
    assert external_subscription_id is not None
    usage = _now(lambda: usage_of(engine, external_subscription_id, datetime.now(UTC)))
    return LagoJSON({"customer_usage": with_total_units(usage)})


@router.get("/{external_customer_id}/projected_usage")
def projected_usage(request: Request, external_customer_id: str,
                    external_subscription_id: str | None = None,
                    engine: Engine = Depends(get_engine)) -> LagoJSON:
    """Lago's `customer_projected_usage` (``ProjectedUsageController``): the current usage and
    each charge's usage projected to the period's end, priced by the cycle's own code
    (models/rating/projection.py). ``apply_taxes`` is refused by name: usage carries no
    taxes here (``taxes_amount_cents`` 0), so it could not be carried out."""
    from tallyflow.tasks.usage import projected_usage as projected_of

    only_params(request, ("external_subscription_id",))
    _owned(engine, external_customer_id, external_subscription_id)
    assert external_subscription_id is not None
    usage = _now(lambda: projected_of(engine, external_subscription_id, datetime.now(UTC)))
    return LagoJSON({"customer_projected_usage": with_total_units(usage)})  # type: ignore[arg-type]


@router.get("/{external_customer_id}/past_usage")
def past_usage(request: Request, external_customer_id: str,
               external_subscription_id: str | None = None,
               billable_metric_code: str | None = None, periods_count: str | None = None,
               paging: Paging = Depends(page_params),
               engine: Engine = Depends(get_engine)) -> LagoJSON:
    """Lago's past usage (``PastUsageQuery``, ``V1::Customers::PastUsageSerializer``): one
    usage period per finalized invoice of the subscription, newest first, from the invoice's
    charge fees (``billable_metric_code`` keeps one metric's, ``periods_count`` the newest
    periods)."""
    from tallyflow.tasks.invoicing import past_usage as periods_of

    only_params(request, ("external_subscription_id", "billable_metric_code", "periods_count"))
    _owned(engine, external_customer_id, external_subscription_id)
    assert external_subscription_id is not None
    count = None
    if periods_count is not None:
        count = int(periods_count) if periods_count.isdigit() else -1
        if not 0 < count <= 10**6:
            raise invalid({"periods_count": ["value_is_invalid"]})
    page, per_page = page_args(paging.page, paging.per_page)
    try:
        periods, total = periods_of(engine, external_subscription_id, page=page,
                                    per_page=per_page, periods_count=count,
                                    billable_metric_code=billable_metric_code)
    except LookupError:
        raise not_found("billable_metric") from None
    shaped = [with_total_units(p) for p in periods]  # type: ignore[arg-type]
    return LagoJSON(paginated("usage_periods", shaped, page, per_page, total))


def _owned(engine: Engine, external_customer_id: str,
           external_subscription_id: str | None) -> None:
    """422 without a subscription; 404 for an unknown customer, or a subscription not its."""
    if not external_subscription_id:
        raise invalid({"external_subscription_id": ["value_is_mandatory"]})
    owner = subscription_owners(engine, [external_subscription_id]).get(external_subscription_id)
    if customer_id(engine, external_customer_id) is None:
        raise not_found("customer")
    if owner != external_customer_id:
        raise not_found("subscription")


def _now(read: Callable[[], T]) -> T:
    """The current period's usage; 404/405 as Lago when there is none."""
    try:
        return read()
    except LookupError:
        raise not_found("subscription") from None
    except ValueError as exc:  # the subscription has not started or has ended
        raise LagoError(405, "no_active_subscription", error=str(exc)) from None
