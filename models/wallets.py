"""Prepaid wallets, the pure part: money <-> credits, allocation, top-up and alert rules.

No I/O and no Prefect here, so every rule that decides *how much* moves where is tested with
plain values; ``tasks.wallets`` reads the inputs under a per-customer lock and writes what these
functions return.

Money here is in *minor units* of the wallet's currency (cents, yen, fils: Lago's
``amount_cents``); the currency's size of minor unit comes from ``models.rating.money``, never
from an assumed 100. Rounding is explicit and happens in one place each:
- money is allocated in whole minor units (usage amounts are already rounded ROUND_HALF_UP by
  rating), so the amounts posted for a (subscription, period) always sum to its usage;
- credits = money (major units) / rate_amount, ROUND_HALF_UP to 5 decimals (Lago's credit
  precision); money = credits x rate_amount, ROUND_HALF_UP to a whole minor unit (the same
  rule as rating: ``round_minor``); a posting that takes a wallet's whole remaining money
  takes its exact remaining credits, so a drained wallet reads 0 in both units instead of a
  rounding residue;
- a wallet's capacity is its money balance rounded *down* to a minor unit: never take what is
  not there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Final, Literal

from tallyflow.models.rating.money import WIDE, from_minor, precise_minor, round_minor
from tallyflow.models.rating.periods import INTERVAL_MONTHS, add_months

ZERO: Final = Decimal(0)
CENT: Final = Decimal(1)  # one minor unit
CREDIT_SCALE: Final = Decimal("0.00001")

Direction = Literal["inbound", "outbound"]
ALERT_BELOW: Final = "balance_below"
ALERT_DEPLETED: Final = "balance_depleted"


# --------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------


def round_credits(credits: Decimal) -> Decimal:
    """Credits at Lago's precision (5 decimals), ROUND_HALF_UP. WIDE: usage at the number
    rule's bound (docs/architecture.md §7) is worth more credits than the default context's 28
    digits hold, and quantize would raise rather than round."""
    return Decimal(credits).quantize(CREDIT_SCALE, rounding=ROUND_HALF_UP, context=WIDE)


def credits_for(amount_cents: Decimal, rate_amount: Decimal, currency: str) -> Decimal:
    """The credits worth ``amount_cents`` minor units: major units / rate, to 5 decimals."""
    return round_credits(WIDE.divide(from_minor(amount_cents, currency), Decimal(rate_amount)))


def cents_for(credits: Decimal, rate_amount: Decimal, currency: str) -> Decimal:
    """The money (whole minor units) ``credits`` are worth: credits x rate, ROUND_HALF_UP."""
    return round_minor(precise_minor(WIDE.multiply(Decimal(credits), Decimal(rate_amount)),
                                     currency))


def credits_text(credits: Decimal) -> str:
    """Credits as Lago prints them in JSON: a decimal string (here always 5 decimals)."""
    return format(round_credits(credits), "f")


def cents_value(cents: Decimal) -> int | str:
    """Cents as a JSON integer when whole (always, for amounts this module produced)."""
    value = Decimal(cents)
    return int(value) if value == value.to_integral_value() else format(value, "f")


# --------------------------------------------------------------------------------------------
# Allocation
# --------------------------------------------------------------------------------------------


@dataclass
class WalletFunds:
    """One active wallet as allocation sees it: its order and its settled balance."""

    wallet_id: int
    priority: int
    created_at: datetime
    rate_amount: Decimal
    currency: str
    credits_balance: Decimal = ZERO
    granted_credits_balance: Decimal = ZERO
    balance_cents: Decimal = ZERO

    @property
    def order(self) -> tuple[int, datetime, int]:
        """Consumption order: priority 1 first, then the oldest wallet, then the lowest id."""
        return (self.priority, self.created_at, self.wallet_id)

    @property
    def capacity_cents(self) -> Decimal:
        """Whole cents that can be taken without going below zero."""
        return max(ZERO, self.balance_cents).quantize(CENT, rounding=ROUND_DOWN)


@dataclass(frozen=True)
class Posting:
    """One ledger movement for one wallet (money in cents, credits, the granted part)."""

    wallet_id: int
    direction: Direction
    amount_cents: Decimal
    credits: Decimal
    granted_credits: Decimal = ZERO


@dataclass
class Allocation:
    """What one usage delta does: the postings, what overflowed into a negative balance."""

    postings: list[Posting] = field(default_factory=list)
    overflow_cents: Decimal = ZERO
    uncovered_cents: Decimal = ZERO


def ordered(wallets: Sequence[WalletFunds]) -> list[WalletFunds]:
    return sorted(wallets, key=lambda w: w.order)


def apply_posting(funds: WalletFunds, posting: Posting) -> WalletFunds:
    """The wallet's funds after a settled posting (used to chain several deltas in a run)."""
    sign = 1 if posting.direction == "inbound" else -1
    return replace(
        funds,
        credits_balance=funds.credits_balance + sign * posting.credits,
        granted_credits_balance=funds.granted_credits_balance + sign * posting.granted_credits,
        balance_cents=funds.balance_cents + sign * posting.amount_cents,
    )


def _take(funds: WalletFunds, cents: Decimal) -> Posting:
    if cents == funds.capacity_cents and cents == funds.balance_cents:
        credits = funds.credits_balance  # drains the wallet exactly in both units
    else:
        credits = credits_for(cents, funds.rate_amount, funds.currency)
    granted = min(credits, max(ZERO, funds.granted_credits_balance))
    return Posting(funds.wallet_id, "outbound", cents, credits, granted)


def allocate_usage(delta_cents: Decimal, wallets: Sequence[WalletFunds]) -> Allocation:
    """Spread a positive usage delta over the active wallets in consumption order.

    Each wallet gives what it has; the last wallet takes whatever is left even past zero
    (the overflow is reported) because usage happened and must be accounted for somewhere.
    With no wallet at all the whole delta is ``uncovered`` and nothing is posted.
    """
    delta = round_minor(delta_cents)
    result = Allocation()
    if delta <= 0:
        return result
    queue = ordered(wallets)
    if not queue:
        result.uncovered_cents = delta
        return result
    remaining = delta
    for index, funds in enumerate(queue):
        last = index == len(queue) - 1
        take = remaining if last else min(remaining, funds.capacity_cents)
        if take <= 0:
            continue
        if last and take > funds.capacity_cents:
            result.overflow_cents = take - funds.capacity_cents
        result.postings.append(_take(funds, take))
        remaining -= take
        if remaining == 0:
            break
    return result


@dataclass(frozen=True)
class Deducted:
    """What usage of one (subscription, period) has taken from one wallet so far (net)."""

    funds: WalletFunds
    amount_cents: Decimal
    credits: Decimal
    granted_credits: Decimal


def allocate_correction(refund_cents: Decimal, deducted: Sequence[Deducted]) -> Allocation:
    """Give back a usage decrease, undoing the last consumption first.

    Wallets are refunded in reverse consumption order, each at most what this period's usage
    took from it; within a wallet purchased credits come back before granted ones (the reverse
    of granted-first consumption). A refund that no deducting wallet can take is ``uncovered``.
    """
    refund = round_minor(refund_cents)
    result = Allocation()
    if refund <= 0:
        return result
    remaining = refund
    for item in sorted(deducted, key=lambda d: d.funds.order, reverse=True):
        give = min(remaining, max(ZERO, item.amount_cents))
        if give <= 0:
            continue
        if give == item.amount_cents:
            credits, granted = item.credits, item.granted_credits
        else:
            credits = credits_for(give, item.funds.rate_amount, item.funds.currency)
            purchased = max(ZERO, item.credits - item.granted_credits)
            granted = min(max(ZERO, credits - purchased), item.granted_credits)
        result.postings.append(Posting(item.funds.wallet_id, "inbound", give, credits, granted))
        remaining -= give
        if remaining == 0:
            break
    result.uncovered_cents = remaining
    return result


# --------------------------------------------------------------------------------------------
# Recurring top-ups
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageScope:
    """One (subscription, period) as the deduction sees it: its rated usage (unrounded), what
    the ledger has deducted for it, and (for a decrease) what each wallet took:
    ``(wallet_id, amount_cents, credits, granted_credits)``."""

    key: tuple[int, datetime]
    customer_id: int
    currency: str
    amount_cents: Decimal
    deducted_cents: Decimal
    taken: tuple[tuple[int, Decimal, Decimal, Decimal], ...] = ()


@dataclass(frozen=True)
class ScopePlan:
    """The postings for one scope and the net cents they deduct (negative: a refund)."""

    scope: UsageScope
    allocation: Allocation
    moved_cents: Decimal


@dataclass(frozen=True)
class DeductionPlan:
    """What a batch of customers does to the ledger, before anything is written."""

    scopes: tuple[ScopePlan, ...]
    uncovered_cents: Decimal
    overflow_cents: dict[int, Decimal]
    funds: dict[int, WalletFunds]  # the balances after every posting of the plan


def refund_rest(allocation: Allocation, usable: Sequence[WalletFunds]) -> Allocation:
    """A refund the deducting wallets cannot take (they were terminated) goes to the first
    usable wallet, so a usage decrease is never lost."""
    rest = allocation.uncovered_cents
    if rest <= 0 or not usable:
        return allocation
    first = ordered(usable)[0]
    credits = credits_for(rest, first.rate_amount, first.currency)
    return Allocation(
        [*allocation.postings, Posting(first.wallet_id, "inbound", rest, credits)],
        allocation.overflow_cents, ZERO,
    )


def plan_deductions(
    scopes: Sequence[UsageScope],
    funds: Mapping[int, WalletFunds],
    wallets_of: Mapping[int, Sequence[int]],
    active: AbstractSet[int],
) -> DeductionPlan:
    """Allocate each scope's delta (its usage rounded to cents minus what is deducted).

    Scopes are taken in the given order and each sees the balances the earlier ones left, so a
    customer's second subscription draws on what the first did not use. Growth is taken
    outbound by priority (``allocate_usage``), a decrease refunded last consumption first
    (``allocate_correction``, then ``refund_rest``); only active wallets in the scope's
    currency take part. Pure: the task reads the inputs under the customers' locks and posts
    the result (docs/architecture.md §3, invariant 4).
    """
    after = dict(funds)
    plans: list[ScopePlan] = []
    uncovered = ZERO
    overflow: dict[int, Decimal] = {}
    for scope in scopes:
        delta = round_minor(scope.amount_cents) - scope.deducted_cents
        if delta == 0:
            continue
        usable = [
            after[w] for w in wallets_of.get(scope.customer_id, ())
            if w in active and after[w].currency == scope.currency
        ]
        if delta > 0:
            allocation = allocate_usage(delta, usable)
        else:
            taken = [
                Deducted(after[w], cents, credits, granted)
                for w, cents, credits, granted in scope.taken
                if w in after and w in active
            ]
            allocation = refund_rest(allocate_correction(-delta, taken), usable)
        if not allocation.postings:
            uncovered += abs(delta)
            continue
        moved = ZERO
        for posting in allocation.postings:
            after[posting.wallet_id] = apply_posting(after[posting.wallet_id], posting)
            outbound = posting.direction == "outbound"
            moved += posting.amount_cents if outbound else -posting.amount_cents
        if allocation.overflow_cents:
            last = allocation.postings[-1].wallet_id
            overflow[last] = overflow.get(last, ZERO) + allocation.overflow_cents
        uncovered += allocation.uncovered_cents
        plans.append(ScopePlan(scope, allocation, moved))
    return DeductionPlan(tuple(plans), uncovered, overflow, after)




@dataclass(frozen=True)
class InvoiceDue:
    """An invoice being finalized, as its payment from the wallets sees it: what it owes
    (``sub_total_including_taxes_amount_cents``), in which currency, and what the hourly usage
    deductions of its periods took: ``(wallet_id, amount_cents, credits, granted_credits)``
    per ledger row."""

    customer_id: int
    currency: str
    owed_cents: Decimal
    taken: tuple[tuple[int, Decimal, Decimal, Decimal], ...] = ()

    @property
    def deducted_cents(self) -> Decimal:
        return sum((cents for _, cents, _, _ in self.taken), ZERO)


def plan_invoice_payments(
    invoices: Sequence[InvoiceDue],
    funds: Mapping[int, WalletFunds],
    wallets_of: Mapping[int, Sequence[int]],
) -> list[Allocation]:
    """The last deduction of each invoice at finalization, in the order given, each seeing the
    balances the earlier ones left (``funds``: the active wallets).

    What the hourly deductions did not take (subscription fee, true-ups, taxes, usage not
    deducted yet) is taken by the usual priority as far as the balances go, never past zero:
    the rest is due from the customer. When the hourly deductions took more than the invoice
    owes, the excess goes back, last consumption first, to the wallets that took it.
    """
    after = dict(funds)
    out: list[Allocation] = []
    for invoice in invoices:
        delta = invoice.owed_cents - invoice.deducted_cents
        if delta > 0:
            usable = [after[w] for w in wallets_of.get(invoice.customer_id, ())
                      if after[w].currency == invoice.currency]
            take = min(delta, sum((max(f.capacity_cents, ZERO) for f in usable), ZERO))
            allocation = allocate_usage(take, usable) if take > 0 else Allocation()
        elif delta < 0:
            net: dict[int, tuple[Decimal, Decimal, Decimal]] = {}
            for wallet, cents, credits, granted in invoice.taken:
                was = net.get(wallet, (ZERO, ZERO, ZERO))
                net[wallet] = (was[0] + cents, was[1] + credits, was[2] + granted)
            allocation = allocate_correction(-delta, [
                Deducted(after[w], *values) for w, values in sorted(net.items()) if w in after
            ])
        else:
            allocation = Allocation()
        for posting in allocation.postings:
            after[posting.wallet_id] = apply_posting(after[posting.wallet_id], posting)
        out.append(allocation)
    return out


def granted_cents(amount_cents: Decimal, credits: Decimal, granted_credits: Decimal) -> Decimal:
    """The money of the granted credits of one movement, unrounded: its amount in the share
    its granted credits have of its credits (a movement records how many of its credits were
    granted ones: consumed first, refunded last)."""
    if credits == 0:
        return ZERO
    return WIDE.divide(WIDE.multiply(Decimal(amount_cents), Decimal(granted_credits)),
                       Decimal(credits))


def prepaid_breakdown(
    prepaid_cents: int, granted_precise: Decimal
) -> tuple[int | None, int | None]:
    """Lago's split of an invoice's prepaid credits into granted and purchased
    (``prepaid_granted_credit_amount_cents``, ``prepaid_purchased_credit_amount_cents``):
    the granted part is the money of the granted credits its wallet movements consumed,
    ROUND_HALF_UP to a whole minor unit and never more than was applied; purchased is the
    rest, so the two add up to ``prepaid_credit_amount_cents``. A part that is zero is None:
    Lago sets each only when positive (``Credits::AppliedPrepaidCreditsService``)."""
    granted = max(0, min(int(round_minor(granted_precise)), prepaid_cents))
    purchased = max(0, prepaid_cents - granted)
    return (granted or None, purchased or None)


@dataclass(frozen=True)
class OngoingUsage:
    """What the next deduction run would still take, per wallet, in money and in credits, and
    the usage and deducted totals of the scopes (``wallet_overview``'s ongoing figures)."""

    pending_cents: Mapping[int, Decimal]
    pending_credits: Mapping[int, Decimal]
    usage_cents: Decimal
    deducted_cents: Decimal


def ongoing_usage(scopes: Sequence[UsageScope], funds: Mapping[int, WalletFunds]) -> OngoingUsage:
    """The usage not deducted yet, allocated as the next run would allocate it.

    Each scope's growth (usage rounded to cents minus what is deducted) is spread with
    ``allocate_usage`` over the wallets in its currency, each scope seeing the balances the
    earlier ones left; a decrease is not pending (the run refunds it, nothing is owed). So a
    wallet's ongoing balance is exact between hourly runs.
    """
    after = dict(funds)
    pending_cents: dict[int, Decimal] = {}
    pending_credits: dict[int, Decimal] = {}
    usage = deducted = ZERO
    for scope in scopes:
        target = round_minor(scope.amount_cents)
        usage += target
        deducted += scope.deducted_cents
        delta = target - scope.deducted_cents
        if delta <= 0:
            continue
        usable = [f for f in after.values() if f.currency == scope.currency]
        for posting in allocate_usage(delta, usable).postings:
            after[posting.wallet_id] = apply_posting(after[posting.wallet_id], posting)
            wallet = posting.wallet_id
            pending_cents[wallet] = pending_cents.get(wallet, ZERO) + posting.amount_cents
            pending_credits[wallet] = pending_credits.get(wallet, ZERO) + posting.credits
    return OngoingUsage(pending_cents, pending_credits, usage, deducted)


def ongoing_balances(
    scopes: Sequence[UsageScope], funds: Sequence[tuple[int, WalletFunds]]
) -> dict[int, tuple[Decimal, Decimal]]:
    """Every wallet's ongoing balance, ``(credits, money)``: its balance minus what the next
    run would still take of its customer's ``scopes`` (``ongoing_usage``, per customer; the
    figures ``wallet_overview`` shows as ``credits_ongoing_balance`` and
    ``ongoing_balance_cents``). ``funds``: (customer id, wallet) of the active wallets."""
    wallets: dict[int, dict[int, WalletFunds]] = {}
    for customer_id, wallet in funds:
        wallets.setdefault(customer_id, {})[wallet.wallet_id] = wallet
    usage: dict[int, list[UsageScope]] = {}
    for scope in scopes:
        usage.setdefault(scope.customer_id, []).append(scope)
    out: dict[int, tuple[Decimal, Decimal]] = {}
    for customer_id, own in wallets.items():
        pending = ongoing_usage(usage.get(customer_id, []), own)
        for wallet_id, wallet in own.items():
            out[wallet_id] = (
                wallet.credits_balance - pending.pending_credits.get(wallet_id, ZERO),
                wallet.balance_cents - pending.pending_cents.get(wallet_id, ZERO),
            )
    return out


def _add_months(moment: datetime, months: int) -> datetime:
    """``moment`` moved by ``months`` months, same time of day, its day clamped."""
    day = add_months(moment.date(), months, moment.day)
    return moment.replace(year=day.year, month=day.month, day=day.day)


def interval_start(anchor: datetime, interval: str, at: datetime) -> tuple[int, datetime] | None:
    """``(n, start)`` of the interval containing ``at``, counted from ``anchor`` (n = 0 is the
    interval starting at the anchor); None before the anchor.

    Month arithmetic is always from the anchor (a 31st anchor gives Feb 28/29, then the 31st
    again), so intervals never drift.
    """
    if at < anchor:
        return None
    if interval == "weekly":
        n = (at - anchor) // timedelta(days=7)
        return n, anchor + timedelta(days=7 * n)
    step = INTERVAL_MONTHS.get(interval)
    if step is None:
        raise ValueError(f"unknown interval {interval!r}")
    months = (at.year - anchor.year) * 12 + at.month - anchor.month
    n = max(0, months // step)
    start = _add_months(anchor, n * step)
    while start > at:
        n -= 1
        start = _add_months(anchor, n * step)
    return n, start


def top_up_credits(
    method: str,
    paid_credits: Decimal,
    granted_credits: Decimal,
    target_ongoing_balance: Decimal | None,
    ongoing_credits: Decimal,
) -> tuple[Decimal, Decimal]:
    """(paid, granted) credits of a recurring top-up.

    ``fixed``: the rule's amounts. ``target``: purchased credits up to the target ongoing
    balance (nothing when already there), as Lago's target method does.
    """
    if method == "target":
        if target_ongoing_balance is None:
            raise ValueError("a target top-up needs target_ongoing_balance")
        return max(ZERO, round_credits(target_ongoing_balance - ongoing_credits)), ZERO
    return round_credits(paid_credits), round_credits(granted_credits)


def running_fresh(pass_at: datetime | None, moment: datetime, max_age_seconds: float) -> bool:
    """Whether the running figures (``running_usage``, kept by the balance refresh) answer a
    read at ``moment``: the last pass rated as of ``pass_at``, not after ``moment`` (its figure
    could hold later events) and at most ``max_age_seconds`` before it (at the boundary still
    fresh). No pass yet, or an older one: not fresh (the reader rates live)."""
    if pass_at is None:
        return False
    return timedelta(0) <= moment - pass_at <= timedelta(seconds=max_age_seconds)


def threshold_reached(ongoing_credits: Decimal, threshold_credits: Decimal) -> bool:
    """Lago fires a threshold top-up when the ongoing balance falls *to* the threshold."""
    return ongoing_credits <= threshold_credits


# --------------------------------------------------------------------------------------------
# Alerts
# --------------------------------------------------------------------------------------------


def alert_condition(kind: str, threshold_credits: Decimal | None, credits: Decimal) -> bool:
    """Whether a wallet with ``credits`` is in the alerting state of a rule."""
    if kind == ALERT_DEPLETED:
        return credits <= 0
    if kind == ALERT_BELOW:
        if threshold_credits is None:
            raise ValueError("balance_below needs threshold_credits")
        return credits < threshold_credits
    raise ValueError(f"unknown alert kind {kind!r}")


@dataclass(frozen=True)
class AlertChange:
    """What to do for one (rule, wallet): open a new crossing, resolve the open one, or not."""

    open_crossing: int | None = None
    resolve: bool = False


def alert_change(condition: bool, open_alert: bool, last_crossing: int) -> AlertChange:
    """Once per crossing: alert when the condition starts to hold, resolve when it stops."""
    if condition and not open_alert:
        return AlertChange(open_crossing=last_crossing + 1)
    if open_alert and not condition:
        return AlertChange(resolve=True)
    return AlertChange()


@dataclass(frozen=True)
class AlertRule:
    """One alert rule: a ``wallet_alert_rules`` row (``rule-<id>``; ``wallet_id`` None: every
    wallet's) or the built-in ``depleted`` one."""

    rule_key: str
    rule_id: int | None
    kind: str
    threshold_credits: Decimal | None = None
    wallet_id: int | None = None


DEPLETED_RULE: Final = AlertRule("depleted", None, ALERT_DEPLETED)


@dataclass(frozen=True)
class AlertOpening:
    """A new crossing of ``rule`` by a wallet with ``credits``: the alert to open."""

    rule: AlertRule
    wallet_id: int
    customer_id: int
    credits: Decimal
    crossing: int

    @property
    def alert_key(self) -> str:
        """Unique per rule, wallet and crossing, so concurrent runs add the alert once."""
        return f"{self.rule.rule_key}:{self.wallet_id}:{self.crossing}"


def alert_changes(
    rules: Sequence[AlertRule],
    balances: Iterable[tuple[int, int, Decimal]],
    open_alerts: Mapping[tuple[str, int], int],
    last_crossing: Mapping[tuple[str, int], int],
) -> tuple[list[AlertOpening], list[int]]:
    """Every active wallet (``balances``: wallet id, customer id, credits) against the built-in
    "depleted" rule and the ``balance_below`` rules that apply to it: the alerts to open (a new
    crossing) and the ids of the open alerts to resolve (``open_alerts``: (rule key, wallet)
    -> alert id; ``last_crossing``: (rule key, wallet) -> its last crossing number)."""
    opened: list[AlertOpening] = []
    resolve: list[int] = []
    below = [r for r in rules if r.kind == ALERT_BELOW]
    for wallet_id, customer_id, credits in balances:
        applicable = [DEPLETED_RULE] + [
            r for r in below if r.wallet_id is None or r.wallet_id == wallet_id
        ]
        for rule in applicable:
            key = (rule.rule_key, wallet_id)
            change = alert_change(
                alert_condition(rule.kind, rule.threshold_credits, credits),
                key in open_alerts, last_crossing.get(key, 0),
            )
            if change.open_crossing is not None:
                opened.append(AlertOpening(rule, wallet_id, customer_id, credits,
                                           change.open_crossing))
            elif change.resolve:
                resolve.append(open_alerts[key])
    return opened, resolve
