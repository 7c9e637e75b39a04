"""run history: one row per flow run with a liveness heartbeat; final states for every run

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_FINAL = "('running', 'completed', 'failed', 'cancelled', 'crashed')"


def upgrade() -> None:
    op.create_table(
        "run_history",
        sa.Column("flow_run_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("parent_flow_run_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), server_default=sa.text("'running'"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("figures", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("host", sa.Text(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "heartbeat_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"status in {_FINAL}", name=op.f("ck_run_history_status")),
        sa.PrimaryKeyConstraint("flow_run_id", name=op.f("pk_run_history")),
    )
    op.create_index("ix_run_history_started_at", "run_history", ["started_at"])
    op.create_index(
        "ix_run_history_running", "run_history", ["heartbeat_at"],
        postgresql_where=sa.text("status = 'running'"),
    )
    op.add_column("ingest_runs", sa.Column("error", sa.Text(), nullable=True))
    op.create_check_constraint(op.f("ck_ingest_runs_status"), "ingest_runs", f"status in {_FINAL}")
    op.drop_constraint(op.f("ck_wallet_runs_status"), "wallet_runs", type_="check")
    op.create_check_constraint(op.f("ck_wallet_runs_status"), "wallet_runs", f"status in {_FINAL}")


def downgrade() -> None:
    op.drop_constraint(op.f("ck_wallet_runs_status"), "wallet_runs", type_="check")
    op.create_check_constraint(
        op.f("ck_wallet_runs_status"), "wallet_runs", "status in ('running', 'completed', 'failed')"
    )
    op.drop_constraint(op.f("ck_ingest_runs_status"), "ingest_runs", type_="check")
    op.drop_column("ingest_runs", "error")
    op.drop_index("ix_run_history_running", table_name="run_history")
    op.drop_index("ix_run_history_started_at", table_name="run_history")
    op.drop_table("run_history")
