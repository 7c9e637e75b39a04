"""Pay in advance: charges billed per event when rated, each on its own invoice, and regrouped
at the period's close. One home for what ``advance`` names in tasks/.

Inside the invoicing room; outside it, import these names from ``tallyflow.tasks.invoicing``.
"""

from tallyflow.tasks.invoicing.advance.charges import (
    AdvanceSummary,
    advance_charges_task,
    bill_advance_charges,
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
    "advance_charges_task",
    "bill_advance_charges",
    "charge_taxes",
    "issue_invoice",
    "list_advance_fees",
    "regroup_paid_fees",
]
