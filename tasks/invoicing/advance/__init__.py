"""Pay in advance: charges billed per event when rated, each on its own invoice, and regrouped
at the period's close. One home for what ``advance`` names in tasks/.

Inside the invoicing room; outside it, import these names from ``tallyflow.tasks.invoicing``.
"""

from tallyflow.tasks.invoicing.advance.charges import (
    AdvanceSummary,
    EstimateError,
    advance_charges_task,
    bill_advance_charges,
    estimate_advance_fees,
)
from tallyflow.tasks.invoicing.advance.issue import (
    AdvanceLine,
    charge_taxes,
    issue_invoice,
    list_advance_fees,
    regroup_paid_fees,
)

__all__ = [
    "AdvanceLine",
    "AdvanceSummary",
    "EstimateError",
    "advance_charges_task",
    "bill_advance_charges",
    "charge_taxes",
    "estimate_advance_fees",
    "issue_invoice",
    "list_advance_fees",
    "regroup_paid_fees",
]
