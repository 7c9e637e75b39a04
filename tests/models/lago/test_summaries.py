"""The run summaries' shapes against the rules they report (docs/architecture.md §11)."""

from tallyflow.models.lago.summaries import UsageSnapshotSummary
from tallyflow.models.rating.unbillable import UnbillableReason


def test_the_usage_summary_counts_every_unbillable_reason() -> None:
    """A new reason must get its key in the usage-snapshot summary (flows/usage_snapshot.py
    writes one count per reason, by name)."""
    reasons = {str(reason) for reason in UnbillableReason}
    assert reasons <= UsageSnapshotSummary.__required_keys__
    assert reasons == {"not_a_number", "unpriced"}
