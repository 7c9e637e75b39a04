"""What single tasks and commands return beyond the run summaries of ``summaries.py``: the
``--json`` outputs, Prefect results and API bodies of the catalog, exports, archive,
subscription lifecycle, event status, replay, usage thresholds and alerts, a customer's
running balance, projected and past usage (docs/architecture.md §11).

TypedDicts like the rest of the package: at runtime the plain dicts the code builds, so the
bytes on the wire do not change; tests hold real outputs to them with
``conformance.mismatches``.

What stays ``dict[str, Any]`` (or ``dict[str, object]``) and why: SQL parameter dicts and
rows read back (they never leave the function's module and their keys are the statement's),
pass-through documents (a plan's, a customer's, a source's spec: Lago's or the user's JSON,
stored and returned as given), and Prefect's own mappings (task options, parameters).
"""

# No `from __future__ import annotations`: Python 3.11 reads NotRequired only from real
# annotations, and conformance.mismatches needs __required_keys__ right.
from typing import Any, NotRequired, TypedDict

from tallyflow.models.lago.resources import UnbillableCount

# ------------------------------------------------------------------------------- catalog


class CatalogKindCounts(TypedDict):
    created: int
    updated: int
    unchanged: int


class CatalogErrorEntry(TypedDict):
    file: str
    path: str
    message: str


class CatalogApplyResult(TypedDict):
    """What an apply did (tasks/catalog/apply.py, ``ApplyResult``)."""

    ok: bool
    kinds: dict[str, CatalogKindCounts]  # every catalog kind, by name
    errors: list[CatalogErrorEntry]


class CatalogApplyOutput(CatalogApplyResult):
    """``tallyflow catalog apply --json`` (tallyflow/cli/catalog.py): the apply, and the
    catalog's wallets it opened."""

    wallets_opened: int


# ------------------------------------------------------------------------------- exports


class ExportWritten(TypedDict):
    """One export written (tasks/exports.py, ``Written``)."""

    export: str
    file: str
    rows: int
    watermark: int | None  # incremental exports: the next run's ``after``


# ------------------------------------------------------------------------------- archive


class EventArchiveSummary(TypedDict):
    """What archiving events did (tasks/archive/events.py, ``ArchiveSummary``)."""

    before: str
    files: list[str]
    rows: int
    finished_moves: int
    removed_temporary: int


class SnapshotArchiveFigures(EventArchiveSummary):
    """The archive's ``snapshots`` (tasks/archive/snapshots.py)."""

    months: list[str]
    kept: int


class ArchiveOutput(EventArchiveSummary):
    """``tallyflow archive --json`` (tallyflow/cli/archive.py): the events, then the
    snapshots."""

    snapshots: SnapshotArchiveFigures


# ------------------------------------------------------------------- subscription lifecycle


class SubscriptionStanding(TypedDict):
    """Where a subscription stands (tasks/subscriptions/lifecycle.py, ``Standing``)."""

    external_id: str
    status: str
    subscription_at: str
    terminated_at: str | None
    unbillable_events_before_start: int
    unbillable_events_after_end: int


class TerminationInvoice(TypedDict):
    """The invoice holding a subscription's last period (tasks/subscriptions/lifecycle.py)."""

    number: str | None
    status: str
    issuing_date: str
    currency: str
    fees_amount_cents: int
    total_amount_cents: int
    from_datetime: str
    to_datetime: str


class SubscriptionTermination(TypedDict):
    """``tallyflow subscriptions terminate --json`` (``Termination``)."""

    external_id: str
    external_customer_id: str
    terminated_at: str
    status: str
    rerun: bool
    events_refolded: int
    periods_zeroed: int
    final_snapshot_cents: int | None
    wallet_deducted_cents: str
    wallet_credited_back_cents: str
    on_termination_invoice: str
    invoices: list[TerminationInvoice]
    advance_fee_not_credited: bool
    credit_note: dict[str, Any] | None  # a resources.CreditNote, as the CLI reads it


class PlanChangeSummary(TypedDict):
    """``tallyflow subscriptions change-plan --json`` (``PlanChangeResult``)."""

    external_id: str
    kind: str  # upgrade | downgrade
    previous_plan_code: str
    plan_code: str
    effective_at: str
    previous_subscription_id: int
    subscription_id: int
    previous_invoice: list[TerminationInvoice]
    advance_fee_not_credited: bool
    credit_note: dict[str, Any] | None  # a resources.CreditNote, as the CLI reads it


# ----------------------------------------------------------------------------- event status


class EventHistoryEntry(TypedDict):
    at: str
    event: str  # ingested | voided
    object: NotRequired[str]  # ingested
    row: NotRequired[int]  # ingested
    actor: NotRequired[str]  # voided
    reason: NotRequired[str]  # voided


class EventStatus(TypedDict):
    """``tallyflow events show --json`` and the API's GET of one event
    (tasks/corrections/voids.py, ``event_status``). An archived key has only the key, the
    status and an empty history."""

    external_subscription_id: str
    transaction_id: str
    status: str  # voided | on_finalized_invoice | billed_in_advance | accepted | archived
    history: list[EventHistoryEntry]
    code: NotRequired[str]
    timestamp: NotRequired[str]
    object: NotRequired[str]
    row: NotRequired[int]
    sub_index: NotRequired[int]
    ingested_at: NotRequired[str]
    invoice: NotRequired[str | None]
    voided_at: NotRequired[str | None]


# ----------------------------------------------------------------------------------- replay


class ReplayedObject(TypedDict):
    """What a replay did to one object's records (tasks/ingest/replay.py, ``Reconciled``);
    an ingest object's ``replay``."""

    replaces: int
    records_unchanged: int
    records_replaced: int
    records_kept: int
    events_voided: int
    events_renamed: int
    kept: list[dict[str, Any]]  # the kept records' rows, for a credit note


# --------------------------------------------------------------------- thresholds and alerts


class RunFailure(TypedDict):
    subscription: str
    error: str


class IssuedProgressiveInvoice(TypedDict):
    invoice: str | None
    subscription: str
    thresholds: list[int]
    total_amount_cents: int


class ThresholdRunSummary(TypedDict):
    """``bill-usage-thresholds`` (tasks/invoicing/progressive.py): a Prefect result."""

    subscriptions: int
    issued: list[IssuedProgressiveInvoice]
    failed: list[RunFailure]


class AlertRunSummary(TypedDict):
    """``evaluate-alerts`` (tasks/alerts/tasks.py): a Prefect result."""

    subscriptions: int
    triggered: int
    failed: list[RunFailure]


class ThresholdCompletion(TypedDict):
    amount_cents: int
    completion_ratio: float
    reached_at: str | None


class LagoLifetimeUsage(TypedDict):
    """Lago's ``lifetime_usage`` (``V1::LifetimeUsageSerializer``;
    tasks/invoicing/progressive.py, ``lifetime_usage``)."""

    lago_id: str
    lago_subscription_id: str
    external_subscription_id: str
    external_historical_usage_amount_cents: int
    invoiced_usage_amount_cents: int
    current_usage_amount_cents: int
    from_datetime: str
    to_datetime: str
    usage_thresholds: NotRequired[list[ThresholdCompletion]]  # when the plan has thresholds


# ------------------------------------------------------------------------ events sent out


class PrefectEvent(TypedDict):
    """The keywords of ``prefect.events.emit_event`` for the events Tallyflow emits (a
    contained failure: tasks/runs/containment.py; a dead claim holding the watermark:
    tasks/ingest/claims.py)."""

    event: str
    resource: dict[str, str]
    related: NotRequired[list[dict[str, str]]]
    payload: dict[str, Any]


class EventErrorObject(TypedDict):
    """Lago's ``event_error`` webhook object (tasks/webhooks/events.py)."""

    status: int
    error: str
    message: str  # the errors, as JSON text
    event: dict[str, Any]  # the record as sent (a non-object under ``value``)


class InvoiceCustomer(TypedDict):
    """The customer an invoice stores and shows (``invoices.customer``;
    tasks/invoicing/writing.py, ``customer_object``). The API adds Lago's customer fields."""

    lago_id: str
    external_id: str
    name: str | None
    email: str | None
    currency: str | None
    timezone: str | None
    tax_codes: list[str]
    invoice_grace_period: int | None
    net_payment_term: int | None


# ------------------------------------------------------------------------- sources list


class PluginOption(TypedDict):
    name: str
    type: str
    default: Any  # the option's default as its model gives it (null when required)
    required: bool
    description: str


class SourceKind(TypedDict):
    kind: str
    origin: str
    description: str
    fields: list[str]
    options: list[PluginOption]


class MappingKind(TypedDict):
    name: str
    origin: str
    description: str
    options: list[PluginOption]


class BrokenPlugin(TypedDict):
    group: str
    name: str
    target: str
    error: str


class SourceRegistry(TypedDict):
    """``tallyflow sources list --json`` (tallyflow/cli/ingest.py, ``describe_registry``)."""

    sources: list[SourceKind]
    mappings: list[MappingKind]
    broken: list[BrokenPlugin]


# -------------------------------------------------------------------- balance and usage


class CustomerBalance(TypedDict):
    """A customer's running balance (tasks/wallets/balance.py, ``customer_balance``):
    ``tallyflow wallets balance`` and ``GET /api/v1/tallyflow/customers/{id}/balance``."""

    external_customer_id: str
    currency: str | None
    balance_cents: int | str
    ongoing_usage_cents: int | str
    ongoing_balance_cents: int | str
    overdraft_cents: int
    allowed: bool
    refreshed_at: str | None


class ProjectedUsage(TypedDict):
    """Lago's ``customer_projected_usage`` (tasks/usage/rating.py, ``projected_usage``;
    models/rating/projection.py, ``with_projection``): a ``resources.CustomerUsage`` with
    ``lago_invoice_id`` and the projected total."""

    external_subscription_id: str
    from_datetime: str
    to_datetime: str
    issuing_date: str
    currency: str
    amount_cents: int
    precise_amount_cents: str
    taxes_amount_cents: int
    total_amount_cents: int
    events_count: int
    # ``resources.ChargeUsage`` with ``projected_units``/``projected_amount_cents`` beside
    # every figure (and ``groups``)
    charges_usage: list[dict[str, Any]]
    tallyflow_unbillable: NotRequired[list[UnbillableCount]]
    lago_invoice_id: None
    projected_amount_cents: int


class PastUsageFigures(TypedDict):
    """Fees summed (tasks/invoicing/past_usage.py, ``_figures``)."""

    units: str
    events_count: int
    amount_cents: int


class PastUsagePeriod(TypedDict):
    """One of Lago's ``usage_periods`` (``GET /customers/{id}/past_usage``;
    tasks/invoicing/past_usage.py, ``_period``)."""

    from_datetime: str
    to_datetime: str
    issuing_date: str
    currency: str
    amount_cents: int
    total_amount_cents: int
    taxes_amount_cents: int
    lago_invoice_id: str
    charges_usage: list[dict[str, Any]]  # Lago's ChargeUsageSerializer, from the fees
