"""Run history across the flows, readable without SQL (``tallyflow runs``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, text

# One query per kind: each flow keeps its own run record, shaped for what it does.
_QUERIES = {
    "ingest": """
        select started_at, status, flow_run_id, jsonb_build_object(
          'source', source, 'objects', objects, 'accepted', accepted,
          'duplicates', duplicates, 'conflicts', conflicts, 'rejected', rejected,
          'unbillable', unbillable,
          'failed_objects', failed_objects, 'seconds', seconds) as figures
        from ingest_runs order by id desc limit :n
    """,
    "usage snapshot": """
        select min(created_at) as started_at, 'completed' as status, flow_run_id,
               jsonb_build_object('as_of', max(as_of), 'snapshots', count(*),
                 'amount_cents', sum(amount_cents)) as figures
        from usage_snapshots group by flow_run_id order by min(created_at) desc limit :n
    """,
    "wallets": """
        select started_at, status, flow_run_id, jsonb_build_object(
          'as_of', as_of, 'customers', customers, 'wallets_touched', wallets_touched,
          'credits_deducted', credits_deducted, 'corrections', corrections,
          'alerts', alerts, 'negative_wallets', negative_wallets) as figures
        from wallet_runs order by id desc limit :n
    """,
}


def recent_runs(engine: Engine, limit: int = 20) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for kind, sql in _QUERIES.items():
            for row in conn.execute(text(sql), {"n": limit}).mappings():
                figures = {
                    k: (format(v, "f") if isinstance(v, Decimal) else v)
                    for k, v in (row["figures"] or {}).items()
                }
                rows.append(
                    {
                        "kind": kind,
                        "started_at": row["started_at"],
                        "status": row["status"],
                        "flow_run_id": row["flow_run_id"],
                        "figures": figures,
                    }
                )
    rows.sort(key=lambda r: r["started_at"], reverse=True)
    return rows
