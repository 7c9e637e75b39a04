"""Usage state is exact: after any interleaving of ingests and folds it equals a recomputation
from raw events (the pure aggregation code over every event) and a rebuild; current usage is the
same before and after a fold; concurrent folds never fold an object twice."""

from __future__ import annotations

import copy
import json
import threading
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from tallyflow.models.rating import EventPoint, assign_bucket, empty_state, metric_filter_key
from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.folding import (
    fold_pending,
    keeps_days,
    load_metrics,
    load_subscription_rows,
    loads_exact,
    rebuild_states,
    state_of_row,
)
from tallyflow.tasks.usage import current_usage, load_charges
from tests.tasks.rating_fixtures import load_rows

START = datetime(2025, 1, 15, 10, tzinfo=UTC)


def latest_rows(conn: Any) -> dict[str, Any]:
    """The latest row of each external id (rows come oldest first)."""
    return {s.external_id: s for s in load_subscription_rows(conn)}
SUBS = ("s_month", "s_week")
AT = datetime(2025, 2, 20, tzinfo=UTC)


def _metric(code: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "billable_metric": {
            "name": code,
            "code": code,
            "aggregation_type": kind,
            "field_name": None if kind == "count_agg" else extra.pop("field", "v"),
            "filters": [{"key": "model", "values": ["a", "b"]}],
            **extra,
        }
    }


def _charge(code: str, **properties: Any) -> dict[str, Any]:
    return {
        "billable_metric_code": code,
        "charge_model": "standard",
        "properties": {"amount": "0.01", **properties},
        "filters": [{"values": {"model": ["a"]}, "properties": {"amount": "0.02"}}],
    }


# For the differential test: declared values include the text forms of a number and a boolean
# (the SQL fold and the pure code must agree on how a property compares), and charge filters
# overlap (the most specific one takes an event).
WIDE_METRIC_FILTERS = [
    {"key": "model", "values": ["a", "b", "1", "2.5", "true"]},
    {"key": "region", "values": ["eu", "us"]},
]
WIDE_CHARGE_FILTERS = [
    {"values": {"model": ["a"]}, "properties": {"amount": "0.02"}},
    {"values": {"model": ["a", "b"], "region": ["eu"]}, "properties": {"amount": "0.03"}},
    {"values": {"region": ["us"]}, "properties": {"amount": "0.04"}},
    {"values": {"model": ["1", "true"]}, "properties": {"amount": "0.05"}},
    {"values": {"model": ["__ALL_FILTER_VALUES__"], "region": ["eu", "us"]},
     "properties": {"amount": "0.06"}},
]


METRICS = [
    _metric("m_count", "count_agg"),
    _metric("m_sum", "sum_agg"),
    _metric("m_max", "max_agg"),
    _metric("m_latest", "latest_agg"),
    _metric("m_unique", "unique_count_agg", field="user"),
    _metric("m_weighted", "weighted_sum_agg", recurring=True, weighted_interval="seconds"),
    _metric("m_rsum", "sum_agg", recurring=True),
    _metric("m_runique", "unique_count_agg", field="user", recurring=True),
]


def _catalog(folder: Path, wide_filters: bool = False) -> Path:
    metrics = copy.deepcopy(METRICS)
    charges = [_charge(m["billable_metric"]["code"]) for m in metrics]
    charges[1]["properties"]["pricing_group_keys"] = ["region"]
    for charge in charges:  # prorated: priced from the per-day state, pending or folded
        charge["prorated"] = charge["billable_metric_code"] in ("m_rsum", "m_runique")
    if wide_filters:
        for metric in metrics:
            metric["billable_metric"]["filters"] = copy.deepcopy(WIDE_METRIC_FILTERS)
        for charge in charges:
            charge["filters"] = copy.deepcopy(WIDE_CHARGE_FILTERS)
    docs: list[dict[str, Any]] = [
        *metrics,
        {"customer": {"external_id": "c", "currency": "EUR", "timezone": "Europe/Paris"}},
    ]
    for interval in ("monthly", "weekly"):
        docs.append(
            {
                "plan": {
                    "code": f"p_{interval}",
                    "name": interval,
                    "interval": interval,
                    "amount_cents": 0,
                    "amount_currency": "EUR",
                    "charges": charges,
                }
            }
        )
    docs.append(
        {
            "subscription": {
                "external_id": "s_month",
                "external_customer_id": "c",
                "plan_code": "p_monthly",
                "subscription_at": START.isoformat(),
            }
        }
    )
    docs.append(
        {
            "subscription": {
                "external_id": "s_week",
                "external_customer_id": "c",
                "plan_code": "p_weekly",
                "billing_time": "anniversary",
                "subscription_at": START.isoformat(),
            }
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    for index, doc in enumerate(docs):
        (folder / f"{index:02d}.json").write_text(json.dumps(doc))
    return folder


events_st = st.fixed_dictionaries(
    {
        "sub": st.sampled_from([*SUBS, "s_unknown"]),
        "code": st.sampled_from([m["billable_metric"]["code"] for m in METRICS] + ["m_none"]),
        "minutes": st.integers(min_value=-60 * 24 * 3, max_value=60 * 24 * 45),
        "v": st.one_of(
            st.integers(-5, 1000), st.sampled_from(["1.5", "-2.25", "x", "1e3", True, None])
        ),
        "model": st.sampled_from(
            ["a", "b", "c", None, 1, 2.5, True, False, "1", "true", "A", {"x": "a"}, ["a"]]
        ),
        "region": st.sampled_from(["eu", "us", None, "EU", 1]),
        "user": st.sampled_from(["u1", "u2", "u3"]),
        "op": st.sampled_from(["add", "remove", None, "bogus"]),
    }
)
steps_st = st.lists(
    st.one_of(
        st.tuples(st.just("ingest"), st.lists(events_st, min_size=0, max_size=12)),
        st.tuples(st.just("fold"), st.integers(1, 3)),
    ),
    min_size=1,
    max_size=8,
)


def _row(n: int, event: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {"user": event["user"]}
    for key in ("v", "model", "region"):
        if event[key] is not None:
            properties[key] = event[key]
    if event["op"] is not None:
        properties["operation_type"] = event["op"]
    return {
        "sub": event["sub"],
        "txn": f"t{n}",
        "code": event["code"],
        "ts": START + timedelta(minutes=event["minutes"]),
        "properties": properties,
    }


def stored_states(engine: Engine) -> dict[tuple, Any]:
    with engine.connect() as conn:
        metrics = load_metrics(conn)
        rows = conn.execute(
            text(
                "select *, filter_key::text as fk, group_key::text as gk, state::text as state"
                " from usage_states"
            )
        ).mappings()
        return {
            (
                r["subscription_id"],
                r["billable_metric_id"],
                r["period_start"],
                tuple(sorted(loads_exact(r["fk"]).items())),
                tuple(sorted(loads_exact(r["gk"]).items())),
            ): state_of_row(metrics[r["billable_metric_id"]].aggregation_type, r)
            for r in rows
        }


def _point(row: Any, metric: Any, sub: Any) -> EventPoint:
    """One raw event row as the pure aggregation sees it (what the SQL fold is compared to);
    recurring sums carry the event's local day (their per-day totals, for prorated charges)."""
    point = EventPoint.from_event(
        timestamp=row.ts,
        seq=row.id,
        properties=loads_exact(row.properties),
        field_name=metric.field_name,
        precise_total_amount_cents=row.precise,
    )
    if keeps_days(metric):
        point = replace(point, day=row.ts.astimezone(ZoneInfo(sub.timezone or "UTC")).date())
    return point


def recomputed_states(engine: Engine, only_folded: bool = True) -> dict[tuple, Any]:
    """The pure aggregation code over every event of folded objects: the reference."""
    with engine.connect() as conn:
        metrics = {m.code: m for m in load_metrics(conn).values()}
        subs = latest_rows(conn)
        rows = conn.execute(
            text(
                """
                select e.external_subscription_id as sub, e.code, e."timestamp" as ts, e.id,
                       e.properties::text as properties, e.precise_total_amount_cents as precise
                from events e join ingest_objects o on o.id = e.object_id
                where (not :folded or o.folded_at is not null)
                """
            ),
            {"folded": only_folded},
        ).all()
    out: dict[tuple, Any] = {}
    for row in rows:
        sub, metric = subs.get(row.sub), metrics.get(row.code)
        if sub is None or metric is None or row.ts < sub.subscription_at:
            continue
        point = _point(row, metric, sub)
        key = (
            sub.id,
            metric.id,
            sub.period_at(row.ts).period_start,
            metric_filter_key(metric.filters, point.properties),
            tuple((k, point.properties.get(k)) for k in sorted(metric.group_keys)),
        )
        current = out.get(key, empty_state(metric.aggregation_type))
        out[key] = current.add(point)
    return out


def stored_buckets(engine: Engine) -> dict[tuple, Any]:
    """Stored states bucketed by every charge's filters after folding (what pricing does)."""
    with engine.connect() as conn:
        metrics = load_metrics(conn)
        subs = {s.id: s for s in latest_rows(conn).values()}
        charges = load_charges(conn, {s.plan_id for s in subs.values()}, metrics)
    per_charge: dict[tuple, list[tuple]] = defaultdict(list)
    for (sub_id, metric_id, start, filter_key, group_values), state in stored_states(
        engine
    ).items():
        for charge in charges[subs[sub_id].plan_id]:
            if charge.metric.id == metric_id:
                groups = dict(group_values)
                group = tuple(groups.get(k) for k in charge.pricing_group_keys)
                per_charge[(sub_id, charge.id, start)].append((filter_key, group, state))
    out: dict[tuple, Any] = {}
    for (sub_id, charge_id, start), keyed in per_charge.items():
        charge = next(c for c in charges[subs[sub_id].plan_id] if c.id == charge_id)
        for bucket, groups in charge.buckets(keyed).items():
            for group, state in groups.items():
                out[(sub_id, charge_id, start, bucket, group)] = state
    return out


def recomputed_buckets(engine: Engine) -> dict[tuple, Any]:
    """The reference: every folded event goes to the charge filter its own properties match
    (no filter key in between), then is folded with the pure aggregation code."""
    with engine.connect() as conn:
        metrics = {m.code: m for m in load_metrics(conn).values()}
        subs = latest_rows(conn)
        charges = load_charges(conn, {s.plan_id for s in subs.values()}, load_metrics(conn))
        rows = conn.execute(text(
            """
            select e.external_subscription_id as sub, e.code, e."timestamp" as ts, e.id,
                   e.properties::text as properties, e.precise_total_amount_cents as precise
            from events e join ingest_objects o on o.id = e.object_id
            where o.folded_at is not null
            """
        )).all()
    out: dict[tuple, Any] = {}
    for row in rows:
        sub, metric = subs.get(row.sub), metrics.get(row.code)
        if sub is None or metric is None or row.ts < sub.subscription_at:
            continue
        point = _point(row, metric, sub)
        for charge in charges[sub.plan_id]:
            if charge.metric.id != metric.id:
                continue
            key = (
                sub.id,
                charge.id,
                sub.period_at(row.ts).period_start,
                assign_bucket(charge.charge_filters, point.properties),
                tuple(point.properties.get(k) for k in charge.pricing_group_keys),
            )
            out[key] = out.get(key, empty_state(metric.aggregation_type)).add(point)
    return out


def _reset(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "truncate usage_states, usage_marks, usage_folds, usage_snapshots, usage_amounts,"
                " events, rejected_rows, ingest_objects restart identity cascade"
            )
        )


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=steps_st)
def test_state_equals_recomputation_after_any_interleaving(
    engine: Engine, tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, Any]]
) -> None:
    with engine.connect() as conn:
        has_catalog = conn.execute(text("select count(*) from subscriptions")).scalar_one()
    if not has_catalog:
        catalog = _catalog(tmp_path_factory.mktemp("catalog"), wide_filters=True)
        result = apply_catalog(engine, [catalog])
        assert result.ok, result.errors
    _reset(engine)
    counter = 0
    for kind, payload in steps:
        if kind == "ingest":
            rows = [_row(counter + i, e) for i, e in enumerate(payload)]
            counter += len(payload)
            load_rows(engine, rows)
        else:
            fold_pending(engine, max_objects=payload)
    assert stored_states(engine) == recomputed_states(engine)

    # Current usage (stored + not yet folded) does not change when the rest is folded.
    before = {sub: current_usage(engine, sub, AT) for sub in SUBS}
    fold_pending(engine)
    assert {sub: current_usage(engine, sub, AT) for sub in SUBS} == before
    folded = stored_states(engine)
    assert folded == recomputed_states(engine)
    # Charge filters: bucketing the folded state equals bucketing each event by itself.
    assert stored_buckets(engine) == recomputed_buckets(engine)
    rebuild_states(engine)
    assert stored_states(engine) == folded


def test_concurrent_folds_fold_each_object_once(engine: Engine, tmp_path: Path) -> None:
    apply_catalog(engine, [_catalog(tmp_path / "catalog")])
    for batch in range(12):
        load_rows(
            engine,
            [
                _row(
                    batch * 50 + i,
                    {
                        "sub": SUBS[i % 2],
                        "code": "m_sum",
                        "minutes": 60 * 24 * 10 + i,
                        "v": i,
                        "model": "a",
                        "region": "eu",
                        "user": "u1",
                        "op": None,
                    },
                )
                for i in range(50)
            ],
        )
    results = []

    def run() -> None:
        results.append(fold_pending(engine, max_objects=1))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.objects for r in results) == 12
    assert sum(r.folded for r in results) == 600
    assert stored_states(engine) == recomputed_states(engine)
    with engine.connect() as conn:
        total = conn.execute(text("select sum(total) from usage_states")).scalar_one()
    assert total == 12 * sum(range(50))
