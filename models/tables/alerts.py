"""Usage alerts on subscriptions, their thresholds and the alerts triggered
(docs/architecture.md §18; Lago's ``usage_monitoring_alerts``,
``usage_monitoring_alert_thresholds``, ``usage_monitoring_triggered_alerts``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Numeric,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from tallyflow.models.tables.base import _pk, _timestamps, metadata

# One alert of a subscription (by external id, as Lago: it outlives a plan change's rows).
# ``previous_value`` is the value the last evaluation saw, in the period starting at
# ``period_from`` (a new period starts again from 0); ``last_processed_at`` is the time that
# evaluation read usage at, so an older evaluation committing late changes nothing.
# Deleted alerts are kept (``deleted_at``) so their triggered alerts still name them.
usage_alerts = Table(
    "usage_alerts",
    metadata,
    _pk(),
    Column("lago_id", Text, nullable=False, unique=True),
    Column("subscription_external_id", Text, nullable=False),
    Column("alert_type", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("name", Text),
    Column("billable_metric_id", BigInteger, ForeignKey("billable_metrics.id")),
    Column("previous_value", Numeric(30, 5), nullable=False, server_default=text("0")),
    Column("period_from", DateTime(timezone=True)),
    Column("last_processed_at", DateTime(timezone=True)),
    # when the evaluator last wrote this row (migration 0031): ``updated_at`` later is an edit
    Column("evaluated_at", DateTime(timezone=True)),
    Column("deleted_at", DateTime(timezone=True)),
    *_timestamps(),
    Index("ux_usage_alerts_live_code", "subscription_external_id", "code", unique=True,
          postgresql_where=text("deleted_at is null")),
    Index("ux_usage_alerts_live_type", "subscription_external_id", "alert_type", unique=True,
          postgresql_where=text("deleted_at is null and billable_metric_id is null")),
    Index("ux_usage_alerts_live_type_metric", "subscription_external_id", "alert_type",
          "billable_metric_id", unique=True,
          postgresql_where=text("deleted_at is null and billable_metric_id is not null")),
)

usage_alert_thresholds = Table(
    "usage_alert_thresholds",
    metadata,
    _pk(),
    Column("alert_id", BigInteger, ForeignKey("usage_alerts.id", ondelete="CASCADE"),
           nullable=False, index=True),
    Column("code", Text),
    Column("value", Numeric(30, 5), nullable=False),
    Column("recurring", Boolean, nullable=False, server_default=text("false")),
)

# One row per evaluation that crossed something: written with the alert's new previous_value
# and the ``alert.triggered`` webhook in one transaction, so each crossing triggers once.
triggered_alerts = Table(
    "triggered_alerts",
    metadata,
    _pk(),
    Column("lago_id", Text, nullable=False, unique=True),
    Column("alert_id", BigInteger, ForeignKey("usage_alerts.id"), nullable=False, index=True),
    Column("subscription_id", BigInteger, ForeignKey("subscriptions.id"), nullable=False),
    Column("current_value", Numeric(30, 5), nullable=False),
    Column("previous_value", Numeric(30, 5), nullable=False),
    Column("crossed_thresholds", JSONB, nullable=False),
    Column("triggered_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


# One row: when the last evaluation pass that failed nowhere started looking (the oldest open
# transaction's start then); the next pass evaluates only the subscriptions with a change since
# (migration 0031, tasks/alerts/evaluate.py, docs/architecture.md §24).
alert_evaluations = Table(
    "alert_evaluations",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("captured_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("id = 1", name="one_row"),
)
