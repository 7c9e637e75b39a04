"""Pure wallet rules: units and rounding, allocation, corrections, intervals, top-ups, alerts."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tallyflow.models.wallets import (
    ALERT_BELOW,
    ALERT_DEPLETED,
    AlertRule,
    Deducted,
    InvoiceDue,
    UsageScope,
    WalletFunds,
    alert_change,
    alert_changes,
    alert_condition,
    allocate_correction,
    allocate_usage,
    apply_posting,
    cents_for,
    credits_for,
    interval_start,
    ongoing_usage,
    plan_deductions,
    plan_invoice_payments,
    round_credits,
    top_up_credits,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def funds(wallet_id: int, credits: str, priority: int = 50, rate: str = "1",
          granted: str = "0", age: int = 0, currency: str = "USD") -> WalletFunds:
    c = Decimal(credits)
    return WalletFunds(wallet_id, priority, T0 + timedelta(seconds=age), Decimal(rate),
                       currency, c, Decimal(granted), cents_for(c, Decimal(rate), currency))


def test_units_round_half_up() -> None:
    assert credits_for(Decimal(1), Decimal(3), "USD") == Decimal("0.00333")
    assert credits_for(Decimal(2), Decimal(3), "USD") == Decimal("0.00667")
    assert cents_for(Decimal("0.005"), Decimal(1), "USD") == Decimal(1)
    assert cents_for(Decimal("123"), Decimal("1.0"), "USD") == Decimal(12300)


@pytest.mark.parametrize(
    ("currency", "minor", "rate", "credits"),
    [
        # usage in minor units -> credits, for rate 1 and rates that are not 1
        ("USD", "100000", "1", "1000.00000"),  # $1,000
        ("JPY", "1000", "1", "1000.00000"),  # ¥1,000 is 1,000 credits (was 10)
        ("KWD", "1000", "1", "1.00000"),  # 1,000 fils = 1 KWD (was 10 credits)
        ("USD", "100000", "2.5", "400.00000"),
        ("JPY", "1000", "2.5", "400.00000"),
        ("KWD", "1000", "0.5", "2.00000"),
        ("JPY", "1", "3", "0.33333"),
        ("KWD", "1", "3", "0.00033"),
    ],
)
def test_credits_for_in_every_currency(currency: str, minor: str, rate: str, credits: str) -> None:
    assert credits_for(Decimal(minor), Decimal(rate), currency) == Decimal(credits)


@pytest.mark.parametrize(
    ("currency", "credits", "rate", "minor"),
    [
        ("USD", "10", "1", 1000),
        ("JPY", "10", "1", 10),  # 10 credits at ¥1 are ¥10, not 1,000 "cents"
        ("KWD", "10", "1", 10000),
        ("USD", "0.005", "1", 1),  # half a cent rounds up
        ("JPY", "0.5", "1", 1),  # half a yen rounds up
        ("KWD", "0.0005", "1", 1),  # half a fils rounds up
        ("JPY", "3", "2.5", 8),  # 7.5 yen
        ("KWD", "3", "0.0015", 5),  # 4.5 fils
    ],
)
def test_cents_for_in_every_currency(currency: str, credits: str, rate: str, minor: int) -> None:
    assert cents_for(Decimal(credits), Decimal(rate), currency) == minor


@pytest.mark.parametrize(("currency", "rate"), [("USD", "1"), ("JPY", "1"), ("KWD", "1"),
                                                ("USD", "2.5"), ("JPY", "0.1"), ("KWD", "4")])
def test_allocation_posts_credits_in_the_wallet_currency(currency: str, rate: str) -> None:
    """A usage delta in minor units takes the matching credits from a wallet of any currency."""
    wallet = funds(1, "1000", rate=rate, currency=currency)
    [posting] = allocate_usage(Decimal(250), [wallet]).postings
    assert posting.amount_cents == 250
    assert posting.credits == credits_for(Decimal(250), Decimal(rate), currency)
    expected_major = Decimal(250).scaleb(-{"USD": 2, "JPY": 0, "KWD": 3}[currency])
    assert posting.credits == (expected_major / Decimal(rate)).quantize(Decimal("0.00001"))


def test_priority_then_oldest_then_overflow_into_the_last() -> None:
    wallets = [funds(1, "10", priority=2, age=0), funds(2, "5", priority=1, age=5),
               funds(3, "3", priority=2, age=9)]
    result = allocate_usage(Decimal(2000), wallets)
    assert [(p.wallet_id, p.amount_cents) for p in result.postings] == [
        (2, 500), (1, 1000), (3, 500),
    ]
    assert result.overflow_cents == 200 and result.uncovered_cents == 0


def test_granted_before_purchased_and_exact_drain() -> None:
    wallet = funds(1, "10", granted="4")
    [part] = allocate_usage(Decimal(250), [wallet]).postings
    assert (part.credits, part.granted_credits) == (Decimal("2.5"), Decimal("2.5"))
    [whole] = allocate_usage(Decimal(1000), [funds(1, "10", rate="1", granted="4")]).postings
    assert whole.credits == Decimal(10) and whole.granted_credits == Decimal(4)


def test_no_wallet_means_uncovered_and_nothing_posted() -> None:
    result = allocate_usage(Decimal(100), [])
    assert result.postings == [] and result.uncovered_cents == 100
    assert allocate_usage(Decimal(0), [funds(1, "1")]).postings == []


def test_correction_undoes_the_last_consumption_first() -> None:
    one, two = funds(1, "0", priority=1), funds(2, "8", priority=2)
    taken = [Deducted(one, Decimal(300), Decimal(3), Decimal(3)),
             Deducted(two, Decimal(200), Decimal(2), Decimal(0))]
    result = allocate_correction(Decimal(250), taken)
    assert [(p.wallet_id, p.direction, p.amount_cents) for p in result.postings] == [
        (2, "inbound", 200), (1, "inbound", 50),
    ]
    assert result.postings[1].granted_credits == Decimal("0.5")
    assert allocate_correction(Decimal(900), taken).uncovered_cents == 400


@given(
    st.lists(st.integers(min_value=0, max_value=5_000), min_size=1, max_size=6),
    st.lists(st.tuples(st.integers(0, 20_000), st.sampled_from(["1", "3", "0.7", "2.5"]),
                       st.integers(1, 3)), min_size=1, max_size=4),
)
def test_allocations_sum_to_usage_to_the_cent(
    totals: list[int], specs: list[tuple[int, str, int]]
) -> None:
    """Any sequence of usage totals (growing and shrinking) leaves exactly the last total
    deducted, in whole cents, across however many wallets."""
    wallets = {i: funds(i, format(Decimal(c) / 100, "f"), priority=p, rate=r, age=i)
               for i, (c, r, p) in enumerate(specs)}
    deducted = Decimal(0)
    per_wallet: dict[int, list[Decimal]] = {i: [Decimal(0)] * 3 for i in wallets}
    for total in totals:
        delta = Decimal(total) - deducted
        if delta >= 0:
            result = allocate_usage(delta, list(wallets.values()))
        else:
            result = allocate_correction(-delta, [
                Deducted(wallets[i], *values) for i, values in per_wallet.items()
            ])
        for p in result.postings:
            wallets[p.wallet_id] = apply_posting(wallets[p.wallet_id], p)
            sign = 1 if p.direction == "outbound" else -1
            per_wallet[p.wallet_id][0] += sign * p.amount_cents
            per_wallet[p.wallet_id][1] += sign * p.credits
            per_wallet[p.wallet_id][2] += sign * p.granted_credits
            assert p.amount_cents == p.amount_cents.to_integral_value()
            assert p.credits.as_tuple().exponent >= -5
            deducted += sign * p.amount_cents
        assert deducted == total
        assert all(v[0] >= 0 for v in per_wallet.values())


def test_interval_starts_from_the_anchor_without_drift() -> None:
    anchor = datetime(2025, 1, 31, 9, tzinfo=UTC)
    assert interval_start(anchor, "monthly", anchor - timedelta(seconds=1)) is None
    assert interval_start(anchor, "monthly", anchor) == (0, anchor)
    assert interval_start(anchor, "monthly", datetime(2025, 3, 1, tzinfo=UTC)) == (
        1, datetime(2025, 2, 28, 9, tzinfo=UTC))
    assert interval_start(anchor, "monthly", datetime(2025, 3, 31, 10, tzinfo=UTC)) == (
        2, datetime(2025, 3, 31, 9, tzinfo=UTC))
    assert interval_start(anchor, "weekly", anchor + timedelta(days=15))[0] == 2
    assert interval_start(anchor, "quarterly", datetime(2025, 7, 30, tzinfo=UTC))[0] == 1
    assert interval_start(anchor, "yearly", datetime(2026, 1, 31, 9, tzinfo=UTC))[0] == 1
    with pytest.raises(ValueError):
        interval_start(anchor, "daily", anchor)


def test_top_up_amounts_fixed_and_target() -> None:
    assert top_up_credits("fixed", Decimal(20), Decimal(5), None, Decimal(1)) == (20, 5)
    assert top_up_credits("target", Decimal(0), Decimal(0), Decimal(50), Decimal("1.5")) == (
        Decimal("48.5"), 0)
    assert top_up_credits("target", Decimal(0), Decimal(0), Decimal(50), Decimal(60)) == (0, 0)


def test_alert_once_per_crossing() -> None:
    assert alert_condition(ALERT_BELOW, Decimal(5), Decimal("4.99999"))
    assert not alert_condition(ALERT_BELOW, Decimal(5), Decimal(5))
    assert alert_condition(ALERT_DEPLETED, None, Decimal(0))
    assert alert_change(True, False, 0).open_crossing == 1
    assert alert_change(True, True, 1).open_crossing is None
    assert alert_change(False, True, 1).resolve
    assert alert_change(True, False, 1).open_crossing == 2


# plan_deductions: a batch of scopes, each seeing what the earlier ones left.
P1, P2 = (1, T0), (2, T0)


def scope(key: tuple[int, datetime], usage: str, deducted: str = "0", customer: int = 7,
          currency: str = "USD", taken: tuple[tuple[int, Decimal, Decimal, Decimal], ...] = ()
          ) -> UsageScope:
    return UsageScope(key, customer, currency, Decimal(usage), Decimal(deducted), taken)


@pytest.mark.parametrize(
    ("scopes", "wallets", "active", "moved", "balances", "uncovered", "overflow"),
    [
        # nothing changed: no plan
        ([scope(P1, "500", "500")], {1: funds(1, "10")}, {1}, [], {1: 1000}, 0, {}),
        # usage rounds half up to the cent before the delta
        ([scope(P1, "0.5")], {1: funds(1, "10")}, {1}, [1], {1: 999}, 0, {}),
        ([scope(P1, "0.49")], {1: funds(1, "10")}, {1}, [], {1: 1000}, 0, {}),
        # the second subscription draws on what the first left, then overflows the last wallet
        ([scope(P1, "800"), scope(P2, "300")], {1: funds(1, "10")}, {1}, [800, 300],
         {1: -100}, 0, {1: 100}),
        # a decrease refunds the wallet that took it
        ([scope(P1, "200", "500", taken=((1, Decimal(500), Decimal(5), Decimal(0)),))],
         {1: funds(1, "5")}, {1}, [-300], {1: 800}, 0, {}),
        # the deducting wallet was terminated: the refund goes to the first usable one
        ([scope(P1, "200", "500", taken=((1, Decimal(500), Decimal(5), Decimal(0)),))],
         {1: funds(1, "5"), 2: funds(2, "0")}, {2}, [-300], {1: 500, 2: 300}, 0, {}),
        # no wallet in the scope's currency: uncovered, nothing posted
        ([scope(P1, "100", currency="EUR")], {1: funds(1, "10")}, {1}, [], {1: 1000}, 100, {}),
        # an inactive wallet takes no part
        ([scope(P1, "100")], {1: funds(1, "10")}, set(), [], {1: 1000}, 100, {}),
    ],
)
def test_plan_deductions(
    scopes: list[UsageScope], wallets: dict[int, WalletFunds], active: set[int],
    moved: list[int], balances: dict[int, int], uncovered: int, overflow: dict[int, int],
) -> None:
    before = copy.deepcopy(wallets)
    plan = plan_deductions(scopes, wallets, {7: sorted(wallets)}, active)
    assert wallets == before  # the inputs are not changed
    assert [p.moved_cents for p in plan.scopes] == [Decimal(m) for m in moved]
    assert {w: f.balance_cents for w, f in plan.funds.items()} == {
        w: Decimal(b) for w, b in balances.items()
    }
    assert plan.uncovered_cents == uncovered
    assert plan.overflow_cents == {w: Decimal(c) for w, c in overflow.items()}


@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=6),
       st.lists(st.integers(min_value=0, max_value=10**4), min_size=1, max_size=3))
def test_plan_moves_exactly_each_delta(usages: list[int], credits: list[int]) -> None:
    wallets = {i + 1: funds(i + 1, str(c), age=i) for i, c in enumerate(credits)}
    scopes = [scope((i, T0), str(u)) for i, u in enumerate(usages)]
    plan = plan_deductions(scopes, wallets, {7: sorted(wallets)}, set(wallets))
    assert sum(p.moved_cents for p in plan.scopes) == sum(usages)
    assert sum(f.balance_cents for f in plan.funds.values()) == (
        sum(w.balance_cents for w in wallets.values()) - sum(usages)
    )


@pytest.mark.parametrize("cents", [10**24, 10**30, 10**37 + 1])
def test_credits_of_usage_at_the_number_rules_bound_are_exact(cents: int) -> None:
    """A billion events at the bound (docs/architecture.md §7) price to ~1e37 cents: their
    credits and back are exact, where the default context's 28 digits made quantize raise."""
    dollars = Decimal(f"{cents // 100}.{cents % 100:02d}")  # exact, from text
    credits = credits_for(Decimal(cents), Decimal("1"), "USD")
    assert credits == dollars
    assert cents_for(credits, Decimal("1"), "USD") == cents
    half = Decimal(f"{cents // 100}.{cents % 100:02d}0005")
    assert round_credits(half) == Decimal(f"{cents // 100}.{cents % 100:02d}001")


@pytest.mark.parametrize(
    ("scopes", "wallets", "pending", "usage", "deducted"),
    [
        # fully deducted: nothing pending
        ([scope(P1, "500", "500")], {1: funds(1, "10")}, {}, 500, 500),
        # usage rounds half up before the delta
        ([scope(P1, "0.5")], {1: funds(1, "10")}, {1: 1}, 1, 0),
        ([scope(P1, "0.49")], {1: funds(1, "10")}, {}, 0, 0),
        # a decrease is not pending (the run refunds it), but counts in the totals
        ([scope(P1, "200", "500")], {1: funds(1, "10")}, {}, 200, 500),
        # the second scope sees what the first left: priority first, the last wallet overflows
        ([scope(P1, "800"), scope(P2, "300")], {1: funds(1, "5", priority=1), 2: funds(2, "5")},
         {1: 500, 2: 600}, 1100, 0),
        # another currency's wallet takes no part
        ([scope(P1, "100", currency="EUR")], {1: funds(1, "10")}, {}, 100, 0),
    ],
)
def test_ongoing_usage(
    scopes: list[UsageScope], wallets: dict[int, WalletFunds], pending: dict[int, int],
    usage: int, deducted: int,
) -> None:
    before = copy.deepcopy(wallets)
    ongoing = ongoing_usage(scopes, wallets)
    assert wallets == before  # the inputs are not changed
    assert ongoing.pending_cents == {w: Decimal(c) for w, c in pending.items()}
    assert ongoing.pending_credits == {
        w: credits_for(Decimal(c), Decimal(1), "USD") for w, c in pending.items()
    }
    assert (ongoing.usage_cents, ongoing.deducted_cents) == (usage, deducted)


@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=6),
       st.lists(st.integers(min_value=0, max_value=10**4), min_size=1, max_size=3))
def test_ongoing_usage_is_what_the_next_run_would_deduct(
    usages: list[int], credits: list[int]
) -> None:
    wallets = {i + 1: funds(i + 1, str(c), age=i) for i, c in enumerate(credits)}
    scopes = [scope((i, T0), str(u)) for i, u in enumerate(usages)]
    plan = plan_deductions(scopes, wallets, {7: sorted(wallets)}, set(wallets))
    ongoing = ongoing_usage(scopes, wallets)
    assert {w: wallets[w].balance_cents - ongoing.pending_cents.get(w, Decimal(0))
            for w in wallets} == {w: f.balance_cents for w, f in plan.funds.items()}



def took(wallet: int, cents: int) -> tuple[int, Decimal, Decimal, Decimal]:
    """A usage deduction of ``cents`` from ``wallet`` (rate 1, nothing granted)."""
    return (wallet, Decimal(cents), credits_for(Decimal(cents), Decimal(1), "USD"), Decimal(0))


@pytest.mark.parametrize(
    ("owed", "taken", "wallets", "moved"),
    [
        # the hourly deductions took it all: nothing moves
        (500, (took(1, 500),), {1: funds(1, "10")}, [[]]),
        # the rest (fee, taxes) by priority, as far as the balances go, never past zero
        (1500, (took(1, 500),), {1: funds(1, "5", priority=1), 2: funds(2, "3")},
         [[(1, "outbound", 500), (2, "outbound", 300)]]),
        (800, (), {1: funds(1, "10")}, [[(1, "outbound", 800)]]),
        # nothing left to take: the rest is due from the customer
        (800, (), {1: funds(1, "0")}, [[]]),
        # the deductions took more than the invoice owes: the excess back, last taken first
        (300, (took(1, 400), took(2, 200)), {1: funds(1, "1", priority=1), 2: funds(2, "1")},
         [[(2, "inbound", 200), (1, "inbound", 100)]]),
        # a wallet no longer active gets nothing back
        (300, (took(1, 400), took(2, 200)), {1: funds(1, "1", priority=1)},
         [[(1, "inbound", 300)]]),
    ],
)
def test_plan_invoice_payments(
    owed: int, taken: tuple[tuple[int, Decimal, Decimal, Decimal], ...],
    wallets: dict[int, WalletFunds], moved: list[list[tuple[int, str, int]]],
) -> None:
    before = copy.deepcopy(wallets)
    plans = plan_invoice_payments([InvoiceDue(7, "USD", Decimal(owed), taken)], wallets,
                                  {7: sorted(wallets)})
    assert wallets == before  # the inputs are not changed
    assert [[(p.wallet_id, p.direction, p.amount_cents) for p in a.postings] for a in plans] == [
        [(w, d, Decimal(c)) for w, d, c in m] for m in moved
    ]


def test_invoice_payments_see_what_earlier_invoices_left() -> None:
    wallets = {1: funds(1, "10"), 2: funds(2, "10", currency="EUR")}
    plans = plan_invoice_payments(
        [InvoiceDue(7, "USD", Decimal(600)), InvoiceDue(7, "USD", Decimal(600)),
         InvoiceDue(7, "EUR", Decimal(50))],
        wallets, {7: [1, 2]},
    )
    assert [[(p.wallet_id, p.amount_cents) for p in a.postings] for a in plans] == [
        [(1, Decimal(600))], [(1, Decimal(400))], [(2, Decimal(50))],
    ]



BELOW_5 = AlertRule("rule-1", 1, ALERT_BELOW, Decimal(5))  # every wallet's
BELOW_9_ON_2 = AlertRule("rule-2", 2, ALERT_BELOW, Decimal(9), wallet_id=2)


@pytest.mark.parametrize(
    ("credits", "open_alerts", "last", "opened", "resolved"),
    [
        # above every threshold: nothing
        ("10", {}, {}, [], []),
        # below the shared rule: one alert, its first crossing
        ("4", {}, {}, [("rule-1:1:1", 1)], []),
        # still below with the alert open: nothing new
        ("4", {("rule-1", 1): 41}, {("rule-1", 1): 1}, [], []),
        # back above: the open alert is resolved; below again: the next crossing
        ("6", {("rule-1", 1): 41}, {("rule-1", 1): 1}, [], [41]),
        ("4", {}, {("rule-1", 1): 1}, [("rule-1:1:2", 2)], []),
        # depleted (the built-in rule) and below at once: two alerts, depleted first
        ("0", {}, {}, [("depleted:1:1", 1), ("rule-1:1:1", 1)], []),
    ],
)
def test_alert_changes(
    credits: str, open_alerts: dict[tuple[str, int], int], last: dict[tuple[str, int], int],
    opened: list[tuple[str, int]], resolved: list[int],
) -> None:
    opens, resolve = alert_changes([BELOW_5, BELOW_9_ON_2], [(1, 7, Decimal(credits))],
                                   open_alerts, last)
    assert [(o.alert_key, o.crossing) for o in opens] == opened
    assert resolve == resolved


def test_a_wallets_own_rule_applies_to_it_alone() -> None:
    opens, _ = alert_changes([BELOW_5, BELOW_9_ON_2],
                             [(1, 7, Decimal(8)), (2, 7, Decimal(8))], {}, {})
    assert [o.alert_key for o in opens] == ["rule-2:2:1"]
    assert opens[0].rule.threshold_credits == 9 and opens[0].customer_id == 7


@pytest.mark.parametrize(("prepaid", "granted", "split"), [
    (5170, Decimal("2500"), (2500, 2670)),
    (1760, Decimal("1760"), (1760, None)),
    (1000, Decimal("0"), (None, 1000)),
    (0, Decimal("0"), (None, None)),
    (1000, Decimal("333.5"), (334, 666)),  # ROUND_HALF_UP, the parts add up
    (500, Decimal("800"), (500, None)),  # never more than was applied
], ids=["both", "granted-only", "purchased-only", "none", "half-up", "capped"])
def test_prepaid_breakdown_splits_granted_and_purchased(
    prepaid: int, granted: Decimal, split: tuple[int | None, int | None]
) -> None:
    from tallyflow.models.wallets import prepaid_breakdown

    assert prepaid_breakdown(prepaid, granted) == split


def test_granted_cents_is_the_granted_share_of_a_movement() -> None:
    from tallyflow.models.wallets import granted_cents

    assert granted_cents(Decimal(1000), Decimal("10"), Decimal("2.5")) == Decimal(250)
    assert granted_cents(Decimal(0), Decimal(0), Decimal(0)) == Decimal(0)
