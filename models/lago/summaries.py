"""What the flows and tasks return: the Prefect results, the run history figures and the
billing artifacts read these (docs/architecture.md §11).

TypedDicts, so a result stays the plain dict Prefect stores and the type checker holds its
keys; a key present only sometimes is ``NotRequired`` and says when.
"""

# No `from __future__ import annotations`: Python 3.11 reads NotRequired only from real
# annotations, and conformance.mismatches needs __required_keys__ right.
from typing import Any, NotRequired, TypedDict


class ContainedFailure(TypedDict):
    """One unit whose step failed alone, or was withheld (tasks/runs/containment.py)."""

    step: str
    unit: str
    id: int
    external_id: str | None
    customer: str | None
    subscription: str | None
    error: str
    withheld: bool
    hint: str | None


class FoldFigures(TypedDict):
    folds: int
    objects: int
    events: int
    folded: int
    unbillable: int
    subscriptions: int


class ChangeSetSummary(TypedDict):
    """An hour's change set (tasks/usage/changes.py, ``ChangeSet.as_dict``): ``full`` (every
    subscription) or its members' count and why."""

    as_of: str
    full: bool
    base_as_of: str | None
    subscriptions: int
    reasons: dict[str, int]


class UsageSnapshotSummary(TypedDict):
    """``usage-snapshot`` (flows/usage_snapshot.py)."""

    as_of: str
    fold: FoldFigures
    subscriptions: int
    snapshots: int
    amount_cents: int
    final_snapshots: int
    subscriptions_as_of: int
    amount_cents_as_of: int
    not_a_number: int  # unbillable events by reason (models/rating/unbillable.py)
    unpriced: int
    contained: list[ContainedFailure]
    # the hour's change set when the billing cycle asked for one (docs/architecture.md §24)
    change_set: NotRequired[ChangeSetSummary]


class NegativeWallet(TypedDict):
    """A wallet an overflow left below zero (tasks/wallets/deductions.py, ``Negative``)."""

    wallet_id: int
    wallet_code: str
    external_customer_id: str
    credits_balance: str
    overflow_cents: int | str


class TopDeduction(TypedDict):
    """One of the run's largest deductions."""

    customer: str
    subscription: str
    amount_cents: int | str
    usage_cents: int | str


class DeductionBatchFigures(TypedDict):
    """One deduction batch as plain values (tasks/wallets/deductions.py, ``batch_dict``)."""

    customers: int
    wallets: list[int]
    transactions: int
    credits_deducted: str
    amount_cents_deducted: str
    corrections: int
    credits_corrected: str
    amount_cents_corrected: str
    uncovered_cents: str
    negative: list[NegativeWallet]
    top: list[TopDeduction]
    failed: list[ContainedFailure]


class DeductionTotals(TypedDict):
    """The deduction batches of a wallet run, summed."""

    customers: int
    wallets_touched: int
    transactions: int
    credits_deducted: str
    amount_cents_deducted: str
    corrections: int
    credits_corrected: str
    amount_cents_corrected: str
    uncovered_cents: str
    negative_wallets: int
    negative: list[NegativeWallet]
    top: list[TopDeduction]


class WalletRunSummary(DeductionTotals):
    """``wallet-deductions`` (flows/wallet_deductions.py); kept in ``wallet_runs.summary``. A
    run that fails records what it had: ``run_id``, ``as_of`` and the steps reached."""

    run_id: int
    as_of: str
    opened: int
    expired: int
    due_customers: int
    top_ups: int
    interval_top_ups: int
    threshold_top_ups: int
    alerts: int
    alerts_resolved: int
    events_emitted: int
    contained: list[ContainedFailure]


class AdvanceSummary(TypedDict):
    """Charges paid in advance (tasks/invoicing/advance/charges.py)."""

    subscriptions: int
    fees: int
    amount_cents: int
    invoices: int
    invoice_numbers: list[str]
    paid_cents: str
    contained: list[ContainedFailure]


class InvoiceOutcome(TypedDict):
    """One invoice a close wrote (tasks/invoicing/writing.py)."""

    invoice_id: int
    number: str | None
    customer: str
    status: str  # draft | finalized
    issuing_date: str
    currency: str
    total_amount_cents: int
    prepaid_credit_amount_cents: int


class CloseSummary(TypedDict):
    """``close-periods``: the task's figures, then the flow's (credit invoices, events,
    PDFs pending)."""

    drafts: int
    finalized: int
    finalized_invoices: list[InvoiceOutcome]
    prepaid_credit_amount_cents: int
    watermark: str | None
    late_events: int
    advance_charges_invoices: int
    contained: list[ContainedFailure]
    credit_invoices: NotRequired[int]
    events_emitted: NotRequired[int]
    pdfs_pending: NotRequired[int]


class ReplayTotals(TypedDict):
    objects: int
    records_unchanged: int
    records_replaced: int
    records_kept: int
    events_voided: int
    events_renamed: int
    kept: list[Any]
    rerate: NotRequired["VoidRerate | None"]  # reingest-source's re-rating of the replay


class IngestFigures(TypedDict):
    """The totals of an ingest run's objects (``tasks/ingest/load.py``, ``summarise``)."""

    objects: int
    failed_objects: int
    skipped_objects: int
    accepted: int
    duplicates: int
    rejected: int
    unbillable: int
    conflicts: int
    bytes: int
    records: int
    records_emitted: int
    records_empty: int
    events: int
    unmapped_usage_fields: dict[str, int]
    paths_never_matched: dict[str, int]
    replay: NotRequired[ReplayTotals]


class IngestRunSummary(IngestFigures):
    """A finished ingest run (``finish_run``): its figures with its row and status."""

    run_id: int
    status: str
    seconds: float


class IngestSummary(IngestRunSummary):
    """``ingest-events`` and ``reingest-source``: the run, and how many objects of the source
    were read with other settings (a replay's cue)."""

    other_settings: int


class ReingestSummary(IngestSummary):
    """``reingest-object``: the run, and whether the object was queued again."""

    requeued: int


class ReclaimedObject(TypedDict):
    object: str
    status: str
    accepted: int
    error: str | None


class ReclaimSummary(TypedDict):
    """Objects reclaimed from dead ingest runs (tasks/ingest/claims.py). Nothing reclaimed:
    only ``reclaimed`` and ``objects``; else the reclaim run's figures too (an
    :class:`IngestRunSummary` whose ``objects`` is the list of objects, not their count), and
    ``held_by`` when a dead claim was holding the watermark."""

    reclaimed: int
    objects: list[ReclaimedObject]
    run_id: NotRequired[int]
    status: NotRequired[str]
    failed_objects: NotRequired[int]
    skipped_objects: NotRequired[int]
    accepted: NotRequired[int]
    duplicates: NotRequired[int]
    rejected: NotRequired[int]
    unbillable: NotRequired[int]
    conflicts: NotRequired[int]
    bytes: NotRequired[int]
    records: NotRequired[int]
    records_emitted: NotRequired[int]
    records_empty: NotRequired[int]
    events: NotRequired[int]
    unmapped_usage_fields: NotRequired[dict[str, int]]
    paths_never_matched: NotRequired[dict[str, int]]
    replay: NotRequired[ReplayTotals]
    seconds: NotRequired[float]
    held_by: NotRequired[dict[str, Any]]


class BillingCycleSummary(TypedDict):
    """``billing-cycle`` (flows/billing.py)."""

    hour: str
    usage: UsageSnapshotSummary
    advance: AdvanceSummary
    wallets: WalletRunSummary
    invoices: CloseSummary
    reclaimed: ReclaimSummary
    contained: list[ContainedFailure]
    contained_units: int


class BackfillSummary(TypedDict):
    hours: int
    first: str
    last: str
    results: list[BillingCycleSummary]


class RerateSummary(TypedDict):
    """``rerate-subscription``: the snapshot, and the wallet run (``{}`` when the subscription
    has no customer to deduct from)."""

    usage: UsageSnapshotSummary
    wallets: WalletRunSummary | dict[str, Any]


class PdfChunk(TypedDict):
    """One chunk of invoice PDFs (tasks/invoicing/pdfs.py): claimed, rendered, stored."""

    claimed: int
    rendered: int
    stored: int


class PdfRunSummary(TypedDict):
    """``invoice-pdfs`` (flows/invoice_pdfs.py)."""

    rendered: int
    stored: int
    remaining: int
    chunks: int
    seconds: float
    pdfs_per_second: float
    stopped: str  # which bound ended the run, or "nothing left to claim"


class WebhookRunSummary(TypedDict):
    """``deliver-webhooks`` (flows/webhooks.py): what one delivery run did."""

    claimed: int
    succeeded: int
    retrying: int  # failed this time, tried again after the backoff
    failed: int  # failed for good (the last attempt)
    lost_lease: int  # sent, but another deliverer had already recorded the attempt


class BalanceRunSummary(TypedDict):
    """``refresh-balances`` (flows/balances.py): one balance refresh and the wallet alerts it
    evaluated (docs/architecture.md §21)."""

    refreshed_at: str  # the moment the pass rated at
    rated: int  # subscriptions rated into running_usage
    watermark: int  # the highest event id counted
    alerts: int  # wallet alerts opened (new crossings)
    alerts_resolved: int
    events_emitted: int  # wallet alerts announced to Prefect (the operator's automations)


class BillingHealthFigures(TypedDict):
    """Billing health (tasks/health.py): ``tallyflow health --json``, ``GET /health/billing``
    and the ``billing-health`` artifact's figures."""

    ok: bool
    problems: list[str]
    now: str
    last_good_hour: str | None
    last_run: dict[str, Any] | None
    contained: list[ContainedFailure]
    watermark: str | None
    watermark_lag_seconds: float | None
    watermark_holder: dict[str, Any] | None
    objects_failed: int
    drafts_waiting: int
    drafts: dict[str, int]
    settle_hours: int
    wallets_below_threshold: int
    wallets_below_threshold_listed: list[dict[str, Any]]
    wallets_negative: int
    wallets_negative_listed: list[dict[str, Any]]
    pdfs_pending: int


# ------------------------------------------------------------------------------ event voids


class VoidedEvent(TypedDict):
    """What a void did to one key (``tasks/corrections/voids.py``, ``KeyOutcome``)."""

    external_subscription_id: str
    transaction_id: str
    outcome: str  # voided | already_voided | not_found | a refusal code
    message: str | None  # why it was refused
    timestamp: str | None
    voided_at: str | None


class ReratedPeriod(TypedDict):
    external_subscription_id: str
    period_start: str
    as_of: str


class VoidRerate(TypedDict):
    """What re-rating the voided periods moved (the wallet figures are this void's own)."""

    snapshots: int
    periods: list[ReratedPeriod]
    wallet_corrections: int
    credited_back_cents: str
    deducted_cents: str


class VoidSummary(TypedDict):
    """A void (``tallyflow events void --json``, ``POST /api/v1/tallyflow/events/void``)."""

    actor: str
    reason: str
    at: str
    applied: bool  # False when only_if_all held every key back
    counts: dict[str, int]
    events: list[VoidedEvent]
    events_refolded: int
    rerate: VoidRerate | None  # None until the periods were re-rated


# ---------------------------------------------------------------------------- invoice voids


class WalletRestore(TypedDict):
    wallet_id: int
    direction: str
    amount_cents: int
    idempotency_key: str


class InvoiceVoidSummary(TypedDict):
    """``tallyflow invoices void --json``: what the wallets got back."""

    invoice_id: int
    number: str
    status: str  # voided
    restored_cents: int
    corrections: list[WalletRestore]
    not_restored: dict[str, int]  # wallet id -> what it had paid (no longer active)


class RegenerateSummary(TypedDict):
    """``tallyflow invoices regenerate --json``: the invoice that replaces a voided one."""

    invoice_id: int
    number: str
    status: str  # finalized
    voided_invoice_id: int
    prepaid_credit_amount_cents: int
    total_amount_cents: int
