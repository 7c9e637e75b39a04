"""A failure stays with its unit: one subscription or customer never stops everyone's billing.

Every billing step works in batches (one transaction for 2,000 subscriptions or customers)
because that is what keeps 100,000 subscriptions within the hour. A batch is all or nothing,
so one unit that cannot be billed (bad data, a bug on one code path) would roll back and
fail its 1,999 neighbours, and with them the steps after it for every customer.
``contain`` keeps the fast path (the whole batch, one transaction) and only when it fails
bisects the batch: the healthy halves commit as batches of their own, the failing half is
split again, down to the single units that fail on their own. One poisoned unit in 2,000 costs
about 2 x 11 extra transactions, not 2,000.

What is not contained (it propagates, as before): transient trouble (``tasks/runs/retry.py``: the
task's retries and then the whole run's retries deal with it) and the survival suite's
``FailpointHit`` (a simulated crash must look like one). docs/architecture.md §3 and
docs/data-quality.md ("A failure stays with its customer").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from prefect import task
from sqlalchemy import Connection, text

from tallyflow.infra.failpoints import FailpointHit
from tallyflow.infra.resources import billing_engine
from tallyflow.models.lago.results import PrefectEvent
from tallyflow.models.lago.summaries import ContainedFailure
from tallyflow.tasks.runs.history import describe_error
from tallyflow.tasks.runs.retry import is_transient, transient_retries

U = TypeVar("U")
R = TypeVar("R")

# How many contained failures a run lists by name (artifact, run history, its error message);
# the count is always complete.
LISTED = 50
# The Prefect event the automations notify on (deployments/automations.yaml).
EVENT = "tallyflow.billing.contained-failure"


class ContainedFailures(RuntimeError):
    """Raised at the end of a run whose other units all completed: names the failed units.

    ``summary`` is the run's summary (the run history keeps its figures and the list)."""

    def __init__(self, failures: Sequence[ContainedFailure], summary: Mapping[str, Any]) -> None:
        self.failures = list(failures)
        self.summary = summary
        super().__init__(failure_message(self.failures))

    def __reduce__(self) -> tuple[Any, ...]:
        # Prefect keeps a failed run's exception (pickled): rebuild it from its parts.
        return (type(self), (self.failures, self.summary))


def containable(exc: BaseException) -> bool:
    """Whether a failure belongs to the units it was raised for (else it propagates)."""
    return isinstance(exc, Exception) and not isinstance(exc, FailpointHit) \
        and not is_transient(exc)


def contain(
    units: Sequence[U], run: Callable[[list[U]], R]
) -> tuple[list[R], list[tuple[U, BaseException]]]:
    """``run`` the units as one batch; if it fails for a unit-level reason, bisect.

    Returns the results of the parts that committed and each unit that failed alone, with its
    error. ``run`` must be all or nothing for its part (one transaction), which is what makes
    a failed part's retry in halves safe.
    """
    results: list[R] = []
    failed: list[tuple[U, BaseException]] = []
    stack = [list(units)] if units else []
    while stack:
        part = stack.pop()
        try:
            results.append(run(part))
        except Exception as exc:
            if not containable(exc):
                raise
            if len(part) == 1:
                failed.append((part[0], exc))
                continue
            middle = len(part) // 2
            stack += [part[middle:], part[:middle]]  # the first half runs first
    return results, failed


def failure(
    step: str, unit: str, unit_id: int, external_id: str | None, customer: str | None,
    error: BaseException | str, *, withheld: bool = False, subscription: str | None = None,
) -> ContainedFailure:
    """One contained failure as plain values (it travels in Prefect results and jsonb).

    ``withheld``: not an error of this unit's own in this step, but work held back because an
    earlier step failed for it (no deduction or close on a stale snapshot)."""
    return {
        "step": step, "unit": unit, "id": unit_id, "external_id": external_id,
        "customer": customer, "subscription": subscription,
        "error": error if isinstance(error, str) else describe_error(error),
        "withheld": withheld, "hint": None if isinstance(error, str) else _hint(error),
    }


def _hint(error: BaseException) -> str | None:
    """What to do about a known failure (tallyflow.errors.explain); none for the unknown."""
    from tallyflow.errors import explain

    message, hint = explain(error)
    return None if message.startswith("unexpected error") else hint


def failure_message(failures: Sequence[ContainedFailure]) -> str:
    """The run's error: how many units failed, that the others completed, and which."""
    own = [f for f in failures if not f["withheld"]]
    held = len(failures) - len(own)
    named = "; ".join(f"{f['step']} {f['unit']} {f['external_id'] or f['id']}: {f['error']}"
                      for f in (own or list(failures))[:10])
    more = f" (and {len(own) - 10} more)" if len(own) > 10 else ""
    withheld = f"; {held} unit(s) withheld from later steps because of them" if held else ""
    return (f"{len(own)} unit(s) failed and were contained, every other unit completed:"
            f" {named}{more}{withheld}")


def withheld_customers(failures: Iterable[ContainedFailure]) -> list[str]:
    """Customers later steps must leave alone this hour (their usage or ledger is stale)."""
    return sorted({customer for f in failures if (customer := f.get("customer"))})


_SUBSCRIPTIONS = text(
    """
    select s.id, s.external_id, c.external_id as customer from subscriptions s
    join customers c on c.id = s.customer_id where s.id = any(cast(:ids as bigint[]))
    """
)
_CUSTOMERS = text(
    "select id, external_id, external_id as customer from customers"
    " where id = any(cast(:ids as bigint[]))"
)


def names_of(conn: Connection, unit: str, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    """External ids of failed units and of their customers (read only when something failed)."""
    query = _SUBSCRIPTIONS if unit == "subscription" else _CUSTOMERS
    return {int(r.id): (r.external_id, r.customer)
            for r in conn.execute(query, {"ids": list(ids)})}


# A run emits at most this many single events; beyond that, one more event carries the count
# (thousands of failing units is one incident, and would flood the event bus).
MAX_EVENTS = 20


def contained_event(item: ContainedFailure, flow_run_id: str | None) -> PrefectEvent:
    """The Prefect event of one contained failure (``emit_event`` keywords)."""
    name = item["external_id"] or str(item["id"])
    resource = {"prefect.resource.id": f"tallyflow.{item['unit']}.{name}",
                "prefect.resource.name": name, "tallyflow.step": item["step"]}
    if item["customer"]:
        resource["tallyflow.customer"] = item["customer"]
    related = ([{"prefect.resource.id": f"prefect.flow-run.{flow_run_id}",
                 "prefect.resource.role": "flow-run"}] if flow_run_id else [])
    return {"event": EVENT, "resource": resource, "related": related,
            "payload": {**{k: item[k] for k in ("step", "unit", "subscription", "error")},
                        "hint": item.get("hint")}}


def contained_events(
    failures: Sequence[ContainedFailure], flow_run_id: str | None
) -> list[PrefectEvent]:
    """The events of a run's own failures (withheld work is a consequence, not news)."""
    own = [f for f in failures if not f["withheld"]]
    events = [contained_event(f, flow_run_id) for f in own[:MAX_EVENTS]]
    if len(own) > MAX_EVENTS:
        events.append({
            "event": EVENT,
            "resource": {"prefect.resource.id": f"tallyflow.billing-run.{flow_run_id}",
                         "prefect.resource.name": "several units"},
            "related": events[0]["related"],
            "payload": {"failed_units": len(own), "announced_one_by_one": MAX_EVENTS,
                        "message": failure_message(own)},
        })
    return events


def withheld(
    conn: Connection, step: str, customers: Sequence[str], reason: str
) -> list[ContainedFailure]:
    """Customers a step left alone because an earlier step failed for them, as failures
    marked ``withheld`` (so the run names them too)."""
    rows = conn.execute(text("select id, external_id from customers"
                             " where external_id = any(cast(:ids as text[])) order by id"),
                        {"ids": list(customers)})
    return [failure(step, "customer", int(r.id), r.external_id, r.external_id, reason,
                    withheld=True) for r in rows]


@task(name="withhold", **transient_retries(retries=3, backoff_factor=1))
def withheld_task(step: str, customers: list[str], reason: str) -> list[ContainedFailure]:
    if not customers:
        return []
    with billing_engine().connect() as conn:
        return withheld(conn, step, customers, reason)
