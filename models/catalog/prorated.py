"""Which charges may be prorated: Lago's ``Charge#validate_prorated``, refused by name.

Lago allows ``prorated: true`` only on a recurring metric that is not a weighted sum (which
already weighs time), and then only for standard, graduated or volume charges paid in arrears,
or standard charges paid in advance (recurring metrics are sums, unique counts and weighted
sums). Tallyflow prorates recurring sums and unique counts in arrears (``prorate_sum``,
``prorate_unique`` in ``tallyflow.models.rating.aggregation``); it refuses, by name, the Lago
combination it does not bill yet: prorated pay-in-advance charges. The models that may be
prorated are the charge model registry's (``PRORATED_MODELS``).
"""

from __future__ import annotations

from tallyflow.models.catalog.documents import BillableMetric, Charge
from tallyflow.models.catalog.errors import Issue, Loc
from tallyflow.models.rating.aggregation import AggregationType
from tallyflow.models.rating.charge_models import CHARGE_MODELS, PRORATED_MODELS

# "standard, graduated and volume": the registry's prorated models, in its order
_NAMES = [name for name in CHARGE_MODELS if name in PRORATED_MODELS]
_PRORATED_NAMES = " and ".join(filter(None, (", ".join(_NAMES[:-1]), _NAMES[-1])))


def prorated_issues(charge: Charge, loc: Loc) -> list[Issue]:
    """The rules that need only the charge."""
    if not charge.prorated:
        return []
    where = (*loc, "prorated")
    if charge.pay_in_advance:
        return [Issue(where, "prorated pay-in-advance charges are not supported yet "
                             "(Lago prorates standard ones); set prorated or pay_in_advance "
                             "to false")]
    if charge.charge_model not in PRORATED_MODELS:
        return [Issue(where, f"is available for {_PRORATED_NAMES} charges only, "
                             f"not {charge.charge_model}")]
    return []


def prorated_metric_issues(charge: Charge, metric: BillableMetric, loc: Loc) -> list[Issue]:
    """The rules that need the charge's billable metric."""
    if not charge.prorated:
        return []
    where = (*loc, "prorated")
    agg = metric.aggregation_type
    if agg == AggregationType.WEIGHTED_SUM:
        return [Issue(where, f"is not available for weighted_sum_agg metrics ({metric.code!r}): "
                             f"a weighted sum already weighs time")]
    if not metric.recurring:
        return [Issue(where, f"needs a recurring billable metric; {metric.code!r} is not "
                             f"recurring")]
    return []
