"""Wallet alerts: evaluate rules against ongoing balances; the webhook and the Prefect events
that announce them come from the same alert row (docs/architecture.md §21)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import Connection, Engine, text

from tallyflow.infra.failpoints import failpoint
from tallyflow.infra.settings import get_settings
from tallyflow.models.lago.money import money as as_money
from tallyflow.models.lago.results import PrefectEvent
from tallyflow.models.wallets import (
    ALERT_BELOW,
    ALERT_DEPLETED,
    AlertRule,
    UsageScope,
    WalletFunds,
    alert_changes,
    cents_for,
    credits_text,
    ongoing_balances,
    running_fresh,
)
from tallyflow.tasks.wallets.announce import announce_depleted
from tallyflow.tasks.wallets.balance import last_pass, running_scopes
from tallyflow.tasks.wallets.ledger import WalletError, _customer_id, _pick_wallet

MAX_ALERT_EVENTS: Final = 100


@dataclass
class AlertSummary:
    """Alerts opened (new crossings) and resolved by one evaluation."""

    opened: int = 0
    resolved: int = 0


def evaluate_alerts(engine: Engine, as_of: datetime, run_id: int | None = None,
                    max_age_seconds: float | None = None) -> AlertSummary:
    """Open an alert when a wallet's ongoing balance crosses into an alert rule, once per
    crossing; the webhook (``wallet.depleted_ongoing_balance``) in the same transaction, the
    operator's Prefect event from the same row once it committed (``pending_alert_events``).

    Rules: every row of ``wallet_alert_rules`` (a wallet's own, or all wallets' when
    ``wallet_id`` is null) plus the built-in "balance depleted" (ongoing credits <= 0, Lago's
    ``ongoing_balance_cents <= 0``). The ongoing balance is the settled one less the running
    usage not deducted yet (``_ongoing``). An alert stays open while the condition holds and
    is resolved when it stops; the next crossing is a new alert. ``alert_key`` (rule, wallet,
    crossing) is unique, so concurrent runs add it once.
    """
    if max_age_seconds is None:
        max_age_seconds = get_settings().balance_max_age_seconds
    summary = AlertSummary()
    with engine.begin() as conn:
        rules = [
            AlertRule(f"rule-{r.id}", r.id, r.kind, r.threshold_credits, r.wallet_id)
            for r in conn.execute(
                text("select id, wallet_id, kind, threshold_credits from wallet_alert_rules"
                     " order by id")
            )
        ]
        open_alerts = {
            (r.rule_key, int(r.wallet_id)): int(r.id)
            for r in conn.execute(text(
                "select id, rule_key, wallet_id from wallet_alerts where resolved_at is null"))
        }
        last = {
            (r.rule_key, int(r.wallet_id)): int(r.crossing)
            for r in conn.execute(text(
                "select rule_key, wallet_id, max(crossing) as crossing from wallet_alerts"
                " group by rule_key, wallet_id"))
        }
        ongoing = _ongoing(conn, as_of, max_age_seconds)
        balances = [(wallet_id, customer_id, credits)
                    for wallet_id, (customer_id, credits, _) in sorted(ongoing.items())]
        opened, resolve = alert_changes(rules, balances, open_alerts, last)
        new_rows: list[dict[str, Any]] = [
            {
                "wallet_id": o.wallet_id, "customer_id": o.customer_id,
                "rule_id": o.rule.rule_id, "rule_key": o.rule.rule_key, "kind": o.rule.kind,
                "threshold": o.rule.threshold_credits, "credits": o.credits,
                "crossing": o.crossing, "alert_key": o.alert_key,
                "as_of": as_of, "run_id": run_id,
            }
            for o in opened
        ]
        if new_rows:
            summary.opened = _insert_alerts_bulk(conn, new_rows, ongoing)
        if resolve:
            summary.resolved = conn.execute(
                text("update wallet_alerts set resolved_at = :as_of"
                     " where id = any(cast(:ids as bigint[])) and resolved_at is null"),
                {"as_of": as_of, "ids": resolve},
            ).rowcount
        failpoint("wallets.before_alerts_commit")
    return summary


_FUNDS = text(
    """
    select b.wallet_id, b.customer_id, b.credits_balance, b.granted_credits_balance,
           b.balance_cents, w.priority, w.created_at, w.rate_amount, w.currency
    from wallet_balances b join wallets w on w.id = b.wallet_id where w.status = 'active'
    order by b.wallet_id
    """
)


def _ongoing(conn: Connection, as_of: datetime,
             max_age_seconds: float) -> dict[int, tuple[int, Decimal, Decimal]]:
    """Every active wallet's customer and ongoing balance (credits, money): its balance less
    what the next deduction would take of the balance refresh's running figures, the one
    derivation the wallet endpoints and the balance endpoint read (§21). When the refresh's
    last pass is not fresh at ``as_of`` nothing is counted as pending: the settled balance."""
    funds = [(int(r.customer_id), WalletFunds(
        int(r.wallet_id), r.priority, r.created_at, r.rate_amount, r.currency,
        r.credits_balance, r.granted_credits_balance, r.balance_cents))
        for r in conn.execute(_FUNDS)]
    scopes = [
        UsageScope((int(r.subscription_id), r.period_start), int(r.customer_id), r.currency,
                   Decimal(r.amount_cents), Decimal(r.deducted_cents))
        for r in running_scopes(conn)
    ] if running_fresh(last_pass(conn), as_of, max_age_seconds) else []
    owners = {wallet.wallet_id: customer_id for customer_id, wallet in funds}
    return {wallet_id: (owners[wallet_id], credits, cents)
            for wallet_id, (credits, cents) in ongoing_balances(scopes, funds).items()}


def _insert_alerts_bulk(conn: Connection, rows: list[dict[str, Any]],
                        ongoing: dict[int, tuple[int, Decimal, Decimal]]) -> int:
    columns = ("wallet_id", "customer_id", "rule_id", "rule_key", "kind", "threshold",
               "credits", "crossing", "alert_key", "run_id")
    result = conn.execute(
        text(
            """
            insert into wallet_alerts (wallet_id, customer_id, rule_id, rule_key, kind,
              threshold_credits, credits_balance, crossing, alert_key, run_id, as_of)
            select *, cast(:as_of as timestamptz) from unnest(
              cast(:wallet_id as bigint[]), cast(:customer_id as bigint[]),
              cast(:rule_id as bigint[]), cast(:rule_key as text[]), cast(:kind as text[]),
              cast(:threshold as numeric[]), cast(:credits as numeric[]),
              cast(:crossing as integer[]), cast(:alert_key as text[]),
              cast(:run_id as bigint[]))
            on conflict (alert_key) do nothing
            returning wallet_id, kind, alert_key
            """
        ),
        {**{c: [r[c] for r in rows] for c in columns}, "as_of": rows[0]["as_of"]},
    ).all()
    announce_depleted(conn, [(int(r.wallet_id), r.alert_key) for r in result
                             if r.kind == ALERT_DEPLETED],
                      {w: (credits, cents) for w, (_, credits, cents) in ongoing.items()})
    return len(result)


@dataclass
class PendingAlerts:
    """Alerts not announced yet: the first ``limit`` in full, the rest as counts."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    up_to_id: int = 0


def pending_alert_events(engine: Engine, limit: int = MAX_ALERT_EVENTS) -> PendingAlerts:
    """Alerts whose Prefect event has not been emitted yet (emitted after they commit)."""
    with engine.connect() as conn:
        counts = conn.execute(text(
            "select kind, count(*) as n, max(id) as up_to from wallet_alerts"
            " where emitted_at is null group by kind"
        )).all()
        if not counts:
            return PendingAlerts()
        up_to = max(int(c.up_to) for c in counts)
        alerts = [
            dict(r._mapping)
            for r in conn.execute(text(
                """
                select a.id, a.wallet_id, w.code as wallet_code, c.external_id
                  as external_customer_id, a.kind, a.threshold_credits, a.credits_balance,
                  a.crossing, a.as_of, w.currency, w.rate_amount
                from wallet_alerts a join wallets w on w.id = a.wallet_id
                join customers c on c.id = a.customer_id
                where a.emitted_at is null and a.id <= :up_to order by a.id limit :n
                """
            ), {"up_to": up_to, "n": limit})
        ]
    return PendingAlerts(
        alerts, sum(int(c.n) for c in counts), {c.kind: int(c.n) for c in counts}, up_to
    )


def mark_alerts_emitted(engine: Engine, up_to_id: int) -> None:
    """Mark every pending alert up to ``up_to_id`` as announced."""
    with engine.begin() as conn:
        conn.execute(
            text("update wallet_alerts set emitted_at = now()"
                 " where emitted_at is null and id <= :up_to"),
            {"up_to": up_to_id},
        )


def alert_event(alert: dict[str, Any]) -> PrefectEvent:
    """The Prefect event for an alert: name, resource and payload (see ``emit_event``)."""
    low = alert["kind"] == ALERT_BELOW
    return {
        "event": "tallyflow.wallet.balance-low" if low else "tallyflow.wallet.balance-depleted",
        "resource": {
            "prefect.resource.id": f"tallyflow.wallet.{alert['wallet_id']}",
            "prefect.resource.name": alert["wallet_code"],
            "tallyflow.customer": alert["external_customer_id"],
        },
        "payload": {
            "kind": alert["kind"],
            "crossing": alert["crossing"],
            "credits_balance": credits_text(alert["credits_balance"]),
            "threshold_credits": (
                None if alert["threshold_credits"] is None
                else credits_text(alert["threshold_credits"])
            ),
            "as_of": alert["as_of"].isoformat(),
            **_money_fields(alert),
        },
    }


def _money_fields(alert: dict[str, Any]) -> dict[str, str]:
    """The balance (and threshold) as money in the wallet's currency, for a person to read."""
    currency, rate = alert.get("currency"), alert.get("rate_amount")
    if not currency or rate is None:
        return {}

    def money(credits: Decimal) -> str:
        return as_money(cents_for(credits, Decimal(rate), str(currency)), str(currency))

    out = {"currency": str(currency), "balance": money(alert["credits_balance"])}
    if alert["threshold_credits"] is not None:
        out["threshold"] = money(alert["threshold_credits"])
    return out


def alerts_summary_event(pending: PendingAlerts, run_id: int | None) -> PrefectEvent:
    """One event for all of a run's alerts beyond its single-event budget (counts per kind);
    its resource is the wallet run, or the balance refresh (``run_id`` None)."""
    resource = ("tallyflow.balance-refresh" if run_id is None
                else f"tallyflow.wallet-run.{run_id}")
    return {
        "event": "tallyflow.wallet.balance-alerts",
        "resource": {"prefect.resource.id": resource},
        "payload": {
            "alerts": pending.total,
            "announced_one_by_one": len(pending.alerts),
            "by_kind": pending.by_kind,
        },
    }


def add_alert_rule(
    engine: Engine, kind: str, threshold_credits: Decimal | None = None,
    external_customer_id: str | None = None, wallet_code: str | None = None,
) -> int:
    """Configure an alert (all wallets, or one customer's wallet); returns the rule id."""
    if kind == ALERT_BELOW and threshold_credits is None:
        raise WalletError("balance_below needs a threshold in credits")
    with engine.begin() as conn:
        wallet_id = None
        if external_customer_id is not None:
            wallet_id = _pick_wallet(conn, _customer_id(conn, external_customer_id),
                                     wallet_code)
        return int(conn.execute(
            text("insert into wallet_alert_rules (wallet_id, kind, threshold_credits)"
                 " values (:w, :k, :t) returning id"),
            {"w": wallet_id, "k": kind, "t": threshold_credits},
        ).scalar_one())
