"""Past usage: a subscription's usage in each period it was invoiced for, from the finalized
invoices' charge fees (Lago's ``GET /customers/{id}/past_usage``).

Lago (``app/queries/past_usage_query.rb``, ``serializers/v1/customers/past_usage_serializer.rb``
and ``charge_usage_serializer.rb``): the invoice subscriptions of the subscription, newest
``charges_from_datetime`` first, paginated, cut to ``periods_count``; each with its invoice's
charge fees of that subscription (``billable_metric_code``: that metric's only; an unknown
code is ``billable_metric_not_found``), summed per charge, with its filter and group fees.
Here only finalized invoices count (a draft's fees are rewritten until it is finalized; a
voided invoice's usage is in its regeneration), and the figures are the invoice's as kept.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, text

from tallyflow.models.lago.money import plain
from tallyflow.models.lago.results import PastUsageFigures, PastUsagePeriod
from tallyflow.models.lago.times import iso

_PERIODS = text(
    """
    select p.from_datetime, p.to_datetime, i.id, i.lago_id, i.issuing_date, i.currency,
           i.fees_amount_cents,
           (select coalesce(sum(f.taxes_amount_cents), 0) from invoice_fees f
            where f.invoice_id = i.id) as taxes_amount_cents,
           count(*) over () as total
    from invoice_subscriptions p
    join subscriptions s on s.id = p.subscription_id
    join invoices i on i.id = p.invoice_id
    where s.external_id = :sub and i.status = 'finalized'
    order by p.from_datetime desc, i.id desc
    limit :limit offset :offset
    """
)
_FEES = text(
    """
    select f.invoice_id, f.charge_id, f.units, f.events_count, f.amount_cents, f.grouped_by,
           f.filter_invoice_display_name, c.charge_model, c.invoice_display_name,
           m.id as metric_id, m.name as metric_name, m.code as metric_code, m.aggregation_type,
           (select cf.values from charge_filters cf where cf.charge_id = f.charge_id
            and cf.invoice_display_name = f.filter_invoice_display_name limit 1) as values
    from invoice_fees f
    join charges c on c.id = f.charge_id
    join billable_metrics m on m.id = c.billable_metric_id
    where f.invoice_id = any(cast(:ids as bigint[])) and f.item_type = 'charge'
      and f.external_subscription_id = :sub and (cast(:code as text) is null or m.code = :code)
    order by f.invoice_id, f.position
    """
)


def past_usage(
    engine: Engine,
    external_subscription_id: str,
    *,
    page: int,
    per_page: int,
    periods_count: int | None = None,
    billable_metric_code: str | None = None,
) -> tuple[list[PastUsagePeriod], int]:
    """One page of usage periods (Lago's ``usage_periods``) and how many there are in all.
    ``LookupError`` for an unknown ``billable_metric_code``."""
    limit = periods_count if periods_count is not None else per_page
    with engine.connect() as conn:
        if (
            billable_metric_code is not None
            and conn.execute(
                text("select 1 from billable_metrics where code = :c"), {"c": billable_metric_code}
            ).first()
            is None
        ):
            raise LookupError(billable_metric_code)
        periods = conn.execute(
            _PERIODS,
            {"sub": external_subscription_id, "limit": limit, "offset": (page - 1) * per_page},
        ).all()
        fees: dict[int, list[Any]] = defaultdict(list)
        for fee in conn.execute(
            _FEES,
            {
                "ids": [int(p.id) for p in periods],
                "sub": external_subscription_id,
                "code": billable_metric_code,
            },
        ):
            fees[int(fee.invoice_id)].append(fee)
    total = int(periods[0].total) if periods else 0
    return [_period(p, fees[int(p.id)]) for p in periods], total


def _period(row: Any, fees: list[Any]) -> PastUsagePeriod:
    taxes = int(row.taxes_amount_cents)
    return {
        "from_datetime": iso(row.from_datetime),
        "to_datetime": iso(row.to_datetime),
        "issuing_date": row.issuing_date.isoformat(),
        "currency": row.currency,
        "amount_cents": int(row.fees_amount_cents),
        "total_amount_cents": int(row.fees_amount_cents) + taxes,
        "taxes_amount_cents": taxes,
        "lago_invoice_id": str(row.lago_id),
        "charges_usage": _charges(fees, row.currency),
    }


def _figures(fees: list[Any]) -> PastUsageFigures:
    return {
        "units": plain(sum((Decimal(f.units) for f in fees), Decimal(0))),
        "events_count": sum(int(f.events_count) for f in fees),
        "amount_cents": sum(int(f.amount_cents) for f in fees),
    }


def _filters(fees: list[Any]) -> list[dict[str, Any]]:
    named: dict[str | None, list[Any]] = defaultdict(list)
    for fee in fees:
        if fee.filter_invoice_display_name is not None:
            named[fee.filter_invoice_display_name].append(fee)
    return [
        {**_figures(group), "invoice_display_name": name, "values": group[0].values}
        for name, group in named.items()
    ]


def _charges(fees: list[Any], currency: str) -> list[dict[str, Any]]:
    """Lago's ``ChargeUsageSerializer``: the fees summed per charge, with their filters and
    pricing groups."""
    by_charge: dict[int, list[Any]] = defaultdict(list)
    for fee in fees:
        by_charge[int(fee.charge_id)].append(fee)
    out = []
    for charge_id, group in by_charge.items():
        first = group[0]
        groups: dict[str, list[Any]] = defaultdict(list)
        for fee in group:
            if fee.grouped_by:
                groups[repr(sorted(fee.grouped_by.items()))].append(fee)
        out.append(
            {
                **_figures(group),
                "amount_currency": currency,
                "charge": {
                    "lago_id": str(charge_id),
                    "charge_model": first.charge_model,
                    "invoice_display_name": first.invoice_display_name or first.metric_name,
                },
                "billable_metric": {
                    "lago_id": str(first.metric_id),
                    "name": first.metric_name,
                    "code": first.metric_code,
                    "aggregation_type": first.aggregation_type,
                },
                "filters": _filters(group),
                "grouped_usage": [
                    {**_figures(g), "grouped_by": dict(g[0].grouped_by), "filters": _filters(g)}
                    for g in groups.values()
                ],
            }
        )
    return out
