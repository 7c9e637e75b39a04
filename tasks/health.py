"""Billing health, one look away: the figures ``tallyflow health``, the API's
``/api/v1/tallyflow/health``, the ``billing-health`` artifact of the hourly cycle and the
Prometheus metrics all show, computed here once (``billing_health``).

Every read is cheap: the run history (a few rows an hour), the partial indexes of what is
waiting (``ix_ingest_objects_pending``, ``ix_invoices_status``, ``ix_wallet_alerts_open``), one
row per wallet; never the events (docs/architecture.md §3, invariant 6).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from prefect import task
from sqlalchemy import Connection, Engine, text

from tallyflow.infra.resources import billing_engine
from tallyflow.models.lago.summaries import BillingHealthFigures, ContainedFailure
from tallyflow.tasks.invoicing import ingest_watermark, pending_pdfs, settle_hours
from tallyflow.tasks.runs import reap_stale, transient_retries

LISTED: Final = 20  # names listed per figure; the counts are whole

# Why a draft is not finalized yet (the period close's rule, tasks/invoicing/close.py).
DRAFT_REASONS: Final = ("in_period_or_grace", "ingest_watermark", "next_cycle")

_LAST_BILLING = text(
    """
    select max(cast(figures->>'hour' as timestamptz)) filter (where status = 'completed')
             as last_good_hour,
           (select flow_run_id from run_history
             where kind = 'billing' and status <> 'running'
             order by started_at desc limit 1) as last_run
    from run_history where kind = 'billing'
    """
)
_RUN = text(
    "select flow_run_id, name, status, error, figures, finished_at from run_history"
    " where flow_run_id = :id"
)
_FAILED_OBJECTS = text(
    "select count(*) from ingest_objects where status = 'failed'"
)
_DRAFTS = text(
    """
    select case
             when v.finalize_after > :now then 'in_period_or_grace'
             when p.period_end is not null and (cast(:watermark as timestamptz) is null
                  or cast(:watermark as timestamptz) < p.period_end + :settle)
               then 'ingest_watermark'
             else 'next_cycle'
           end as reason, count(*) as n, min(v.finalize_after) as oldest
    from invoices v
    left join lateral (select max(s.to_datetime) as period_end from invoice_subscriptions s
                       where s.invoice_id = v.id) p on true
    where v.status = 'draft'
    group by 1
    """
)
_LOW_WALLETS = text(
    """
    select a.kind, c.external_id as customer, a.wallet_id, a.credits_balance,
           a.threshold_credits, a.as_of
    from wallet_alerts a join customers c on c.id = a.customer_id
    where a.resolved_at is null
    order by a.as_of desc
    """
)
_NEGATIVE = text(
    """
    select c.external_id as customer, b.wallet_id, b.credits_balance
    from wallet_balances b join customers c on c.id = b.customer_id
    where b.credits_balance < 0 and b.terminated_at is null
    order by b.credits_balance
    """
)


@dataclass(frozen=True)
class BillingHealth:
    """One look at billing: what finalization waits for, what failed, what needs money."""

    now: datetime
    last_good_hour: datetime | None  # the latest hour a billing cycle completed
    last_run: dict[str, Any] | None  # the latest finished billing run: status, error, name
    contained: list[ContainedFailure]  # the units that latest run contained (tasks/runs/)
    watermark: datetime | None  # tasks/invoicing/watermark.py
    watermark_lag_seconds: float | None
    watermark_holder: dict[str, Any] | None  # tasks/ingest_claims.watermark_holder
    objects_failed: int
    drafts: dict[str, int]  # reason -> count (DRAFT_REASONS)
    settle_hours: int
    wallets_below_threshold: list[dict[str, Any]]  # open alerts
    wallets_negative: list[dict[str, Any]]
    wallets_below_count: int = 0
    wallets_negative_count: int = 0
    pdfs_pending: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def drafts_waiting(self) -> int:
        return sum(self.drafts.values())

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> BillingHealthFigures:
        return {
            "ok": self.ok, "problems": self.problems, "now": self.now.isoformat(),
            "last_good_hour": _plain(self.last_good_hour), "last_run": self.last_run,
            "contained": self.contained,
            "watermark": self.watermark.isoformat() if self.watermark else None,
            "watermark_lag_seconds": self.watermark_lag_seconds,
            "watermark_holder": self.watermark_holder,
            "objects_failed": self.objects_failed,
            "drafts_waiting": self.drafts_waiting, "drafts": self.drafts,
            "settle_hours": self.settle_hours,
            "wallets_below_threshold": self.wallets_below_count,
            "wallets_below_threshold_listed": self.wallets_below_threshold,
            "wallets_negative": self.wallets_negative_count,
            "wallets_negative_listed": self.wallets_negative,
            "pdfs_pending": self.pdfs_pending,
        }

    def log_line(self) -> str:
        """The figures in one line, for the hourly run's INFO log."""
        return (f"billing health: last good hour {_iso(self.last_good_hour)},"
                f" watermark {_iso(self.watermark)} (lag {_lag(self.watermark_lag_seconds)}),"
                f" objects failed {self.objects_failed}, drafts waiting {self.drafts_waiting}"
                f" ({_reasons(self.drafts)}), contained {len(self.contained)},"
                f" wallets below threshold {self.wallets_below_count},"
                f" negative {self.wallets_negative_count}, PDFs pending {self.pdfs_pending}")

    def markdown(self) -> str:
        """The one page of the ``billing-health`` artifact."""
        status = "OK" if self.ok else "needs attention: " + "; ".join(self.problems)
        lines = [
            "# Billing health", "", f"As of {_iso(self.now)}: **{status}**", "",
            "| figure | value |", "| --- | --- |",
            f"| last completed billing hour | {_iso(self.last_good_hour)} |",
            f"| latest billing run | {_run(self.last_run)} |",
            f"| ingest watermark | {_iso(self.watermark)} |",
            f"| watermark lag | {_lag(self.watermark_lag_seconds)} |",
            f"| objects failed to load | {self.objects_failed} |",
            f"| drafts waiting | {self.drafts_waiting} ({_reasons(self.drafts)}) |",
            f"| contained failures (latest run) | {len(self.contained)} |",
            f"| wallets below threshold | {self.wallets_below_count} |",
            f"| wallets negative | {self.wallets_negative_count} |",
            f"| invoices awaiting PDFs | {self.pdfs_pending} |",
        ]
        if self.watermark_holder:
            h = self.watermark_holder
            lines += ["", f"The watermark is held by {h['object']} (since {h['since']},"
                          f" {h['status']}; `tallyflow runs --objects`)."]
        if self.contained:
            lines += ["", "## Contained failures (latest billing run)", "",
                      "| step | unit | id | customer | error |", "| --- | --- | --- | --- | --- |"]
            lines += [f"| {c.get('step')} | {c.get('unit')} |"
                      f" {c.get('external_id') or c.get('id')} | {c.get('customer') or ''} |"
                      f" {str(c.get('error', '')).replace('|', '/')[:120]} |"
                      for c in self.contained]
        wallets = [*self.wallets_below_threshold, *self.wallets_negative]
        if wallets:
            lines += ["", "## Wallets", "", "| customer | wallet | balance (credits) | why |",
                      "| --- | --- | ---: | --- |"]
            lines += [f"| {w['customer']} | {w['wallet_id']} | {w['credits_balance']} |"
                      f" {w.get('kind', 'negative')} |" for w in wallets]
        return "\n".join(lines)


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else "none yet"


def _lag(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return str(timedelta(seconds=int(seconds)))


def _reasons(drafts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in drafts.items() if v) or "none"


def _run(run: dict[str, Any] | None) -> str:
    if not run:
        return "none yet"
    return f"{run['name'] or run['flow_run_id']}: {run['status']}"


def _plain(value: Any) -> Any:
    return format(value, "f") if hasattr(value, "as_tuple") else (
        value.isoformat() if isinstance(value, datetime) else value)


@dataclass(frozen=True)
class CurrentRun:
    """The billing run computing the figures at its end: not finished in the run history yet,
    it counts as the latest run (completed unless it contained failures)."""

    flow_run_id: str
    name: str | None
    hour: datetime
    contained: list[ContainedFailure]


def billing_health(engine: Engine, now: datetime,
                   current: CurrentRun | None = None) -> BillingHealth:
    """Every health figure as of ``now`` (the caller's clock; the hourly run passes its own
    moment and itself as ``current``)."""
    from tallyflow.tasks.ingest import watermark_holder

    reap_stale(engine)  # a dead run is shown crashed, not running
    settle = settle_hours()
    with engine.connect() as conn:
        last_good, last_id = conn.execute(_LAST_BILLING).one()
        last_run, contained = _last_run(conn, last_id)
        if current is not None:
            last_run = {"flow_run_id": current.flow_run_id, "name": current.name,
                        "status": "failed" if current.contained else "completed",
                        "error": None, "finished_at": None}
            contained = current.contained[:LISTED]
            if not current.contained and (last_good is None or current.hour > last_good):
                last_good = current.hour
        watermark = ingest_watermark(conn)
        failed = int(conn.execute(_FAILED_OBJECTS).scalar_one())
        drafts = dict.fromkeys(DRAFT_REASONS, 0)
        for row in conn.execute(_DRAFTS, {"now": now, "watermark": watermark,
                                          "settle": timedelta(hours=settle)}):
            drafts[row.reason] = int(row.n)
        low = [{k: _plain(v) for k, v in r.items()}
               for r in conn.execute(_LOW_WALLETS).mappings()]
        negative = [{k: _plain(v) for k, v in r.items()}
                    for r in conn.execute(_NEGATIVE).mappings()]
    holder = watermark_holder(engine, reap=False)
    lag = (now - watermark).total_seconds() if watermark else None
    health = BillingHealth(
        now=now, last_good_hour=last_good, last_run=last_run, contained=contained,
        watermark=watermark, watermark_lag_seconds=lag,
        watermark_holder={k: _plain(v) for k, v in holder.as_dict().items()} if holder else None,
        objects_failed=failed, drafts=drafts, settle_hours=settle,
        wallets_below_threshold=low[:LISTED], wallets_negative=negative[:LISTED],
        wallets_below_count=len(low), wallets_negative_count=len(negative),
        pdfs_pending=pending_pdfs(engine),
    )
    health.problems.extend(_problems(health))
    return health


def _last_run(conn: Connection, flow_run_id: str | None
              ) -> tuple[dict[str, Any] | None, list[ContainedFailure]]:
    if flow_run_id is None:
        return None, []
    row = conn.execute(_RUN, {"id": flow_run_id}).mappings().one()
    figures = row["figures"] or {}
    run = {"flow_run_id": row["flow_run_id"], "name": row["name"], "status": row["status"],
           "error": row["error"], "finished_at": _plain(row["finished_at"])}
    return run, list(figures.get("contained") or [])[:LISTED]


def _problems(h: BillingHealth) -> list[str]:
    """What a person should look at (empty: healthy)."""
    out = []
    if h.last_run and h.last_run["status"] != "completed":
        out.append(f"the latest billing run ended {h.last_run['status']}")
    if h.objects_failed:
        out.append(f"{h.objects_failed} object(s) failed to load")
    if h.watermark_holder and h.watermark_holder.get("dead"):
        out.append("a dead run's claim holds the ingest watermark")
    if h.drafts["next_cycle"]:
        out.append(f"{h.drafts['next_cycle']} draft(s) due and not finalized")
    if h.wallets_negative_count:
        out.append(f"{h.wallets_negative_count} wallet(s) negative")
    return out


@task(name="billing-health", **transient_retries())
def billing_health_task(now: datetime, current: CurrentRun | None = None) -> BillingHealth:
    """The figures for the hourly run's ``billing-health`` artifact and its INFO log."""
    return billing_health(billing_engine(), now, current)


# --------------------------------------------------------------------------------------------
# Prometheus: the same figures as gauges (``/metrics`` on ``tallyflow api`` and ``serve``)
# --------------------------------------------------------------------------------------------

METRIC_PREFIX: Final = "tallyflow_"


def metric_families(health: BillingHealth) -> list[Any]:
    """The health figures as Prometheus metric families (computed per scrape)."""
    from prometheus_client.core import GaugeMetricFamily

    def gauge(name: str, doc: str, value: float | None) -> Any:
        family = GaugeMetricFamily(METRIC_PREFIX + name, doc)
        family.add_metric([], float("nan") if value is None else value)
        return family

    drafts = GaugeMetricFamily(METRIC_PREFIX + "drafts_waiting",
                               "Draft invoices not finalized yet, by why they wait",
                               labels=["reason"])
    for reason, count in health.drafts.items():
        drafts.add_metric([reason], count)
    last_good = health.last_good_hour
    watermark = health.watermark
    return [
        gauge("up", "1 when the health figures could be read", 1),
        gauge("healthy", "1 when nothing needs attention (tallyflow health)",
              1 if health.ok else 0),
        gauge("last_good_billing_hour_timestamp_seconds",
              "The latest hour a billing cycle completed (Unix time)",
              last_good.timestamp() if last_good else None),
        gauge("ingest_watermark_timestamp_seconds",
              "Up to when every ingested event is loaded (Unix time)",
              watermark.timestamp() if watermark else None),
        gauge("ingest_watermark_lag_seconds", "How far the ingest watermark is behind now",
              health.watermark_lag_seconds),
        gauge("objects_failed", "Objects that failed to load (retried by their source's next run)",
              health.objects_failed),
        drafts,
        gauge("contained_failures", "Units the latest billing run contained",
              len(health.contained)),
        gauge("wallets_below_threshold", "Wallets with an open balance alert",
              health.wallets_below_count),
        gauge("wallets_negative", "Active wallets with a negative balance",
              health.wallets_negative_count),
        gauge("invoice_pdfs_pending", "Finalized invoices awaiting their PDF",
              health.pdfs_pending),
    ]


class HealthCollector:
    """A Prometheus collector reading ``billing_health`` on each scrape; a database it cannot
    read gives ``tallyflow_up 0`` rather than an error page."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self) -> list[Any]:
        return []  # computed per scrape: no registration-time read of the database

    def collect(self) -> list[Any]:
        from datetime import UTC

        from prometheus_client.core import GaugeMetricFamily

        try:
            return metric_families(billing_health(self.engine, datetime.now(UTC)))
        except Exception:  # the scrape says "down" instead of failing
            down = GaugeMetricFamily(METRIC_PREFIX + "up",
                                     "1 when the health figures could be read")
            down.add_metric([], 0)
            return [down]


def metrics_text(engine: Engine) -> bytes:
    """The Prometheus text exposition of the health figures."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(engine))
    return generate_latest(registry)


def serve_metrics(engine: Engine, host: str, port: int) -> Any:
    """Serve ``/metrics`` from a thread of this process (``tallyflow serve``)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(engine))
    return start_http_server(port, addr=host, registry=registry)


__all__ = ["DRAFT_REASONS", "BillingHealth", "CurrentRun", "HealthCollector", "billing_health",
           "billing_health_task", "metrics_text", "serve_metrics"]
