"""A whole apply: every issue of every document, then the documents in apply order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tallyflow.models.catalog.canonical import digest
from tallyflow.models.catalog.documents import (
    LagoModel,
    Subscription,
    ValidDocument,
    describe_key,
    natural_key,
    normalise,
)
from tallyflow.models.catalog.errors import CatalogError, Issue, Loc, format_path
from tallyflow.models.catalog.fields import (
    ADD_ON,
    APPLIED_COUPON,
    BILLABLE_METRIC,
    BILLING_ENTITY,
    COUPON,
    PLAN,
    TAX,
    WALLET,
)
from tallyflow.models.catalog.references import Catalog, _change_issues, reference_issues
from tallyflow.models.catalog.rules import _DOCUMENT_CHECKS, envelope_kind, parse_body


@dataclass
class Validation:
    documents: list[ValidDocument]
    errors: list[CatalogError]

    @property
    def ok(self) -> bool:
        return not self.errors


DATABASE = "(database)"


def validate_documents(
    documents: Sequence[tuple[str, int, Any]],
    existing: Catalog | None = None,
    *,
    now: datetime | None = None,
) -> Validation:
    """Validate a whole apply: every document alone, duplicates, changes and references.

    ``documents`` are ``(file, index, envelope)`` as ``tasks.catalog.load_documents`` returns
    them; ``existing`` is what the database holds. ``now`` is the default subscription_at for
    new subscriptions; an existing subscription keeps its stored start when the file omits it,
    so re-applying the same file never moves it.
    """
    existing = existing or Catalog()
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    per_file = Counter(file for file, _, _ in documents)
    errors: list[CatalogError] = []
    valid: list[ValidDocument] = []
    first_seen: dict[tuple[str, tuple[str, ...]], str] = {}
    broken: set[tuple[str, tuple[str, ...]]] = set()
    for file, index, envelope in documents:
        prefix: Loc = (index,) if per_file[file] > 1 else ()

        def report(issues: Iterable[Issue], file: str = file, prefix: Loc = prefix) -> None:
            errors.extend(CatalogError(file, format_path((*prefix, *i.loc)), i.message)
                          for i in issues)

        try:
            kind = envelope_kind(envelope)
        except ValueError as exc:
            report([Issue((), str(exc))])
            continue
        model, issues = parse_body(kind, envelope[kind])
        if model is None:
            broken.update(_raw_keys(kind, envelope[kind]))
            report(issues)
            continue
        key = natural_key(kind, model)
        label = file + (f"[{index}]" if prefix else "")
        first = first_seen.setdefault((kind, key), label)
        if first != label:
            issues.append(Issue((kind, _key_field(kind)), f"duplicate {describe_key(kind, key)} "
                                                          f"in this apply (first in {first})"))
        previous = existing.get(kind, *key)
        _resolve_defaults(model, previous, now)
        issues += _change_issues(kind, model, previous)
        issues += [Issue((kind, *i.loc), i.message) for i in _DOCUMENT_CHECKS[kind](model)]
        report(issues)
        if not issues:
            document = normalise(model)
            valid.append(ValidDocument(file, index, kind, key, model, document,
                                       digest(document)))
    errors += _all_reference_errors(valid, existing, per_file, broken)
    return Validation(valid if not errors else [], errors)


def _raw_keys(kind: str, body: Any) -> set[tuple[str, tuple[str, ...]]]:
    """The key of a document that failed to parse, when it can be read, so that references to
    it are not reported a second time as "unknown"."""
    if not isinstance(body, Mapping):
        return set()
    coded = (TAX, BILLING_ENTITY, BILLABLE_METRIC, PLAN, ADD_ON, COUPON)
    value = body.get("code") if kind in coded else body.get("external_id")
    return {(kind, (value,))} if isinstance(value, str) else set()


def _key_field(kind: str) -> str:
    return {TAX: "code", BILLING_ENTITY: "code", BILLABLE_METRIC: "code", PLAN: "code",
            WALLET: "code", ADD_ON: "code", COUPON: "code",
            APPLIED_COUPON: "coupon_code"}.get(kind, "external_id")


def _resolve_defaults(model: LagoModel, previous: LagoModel | None, now: datetime) -> None:
    if isinstance(model, Subscription) and model.subscription_at is None:
        started = previous.subscription_at if isinstance(previous, Subscription) else None
        model.subscription_at = started or now


def _all_reference_errors(
    valid: Sequence[ValidDocument],
    existing: Catalog,
    per_file: Mapping[str, int],
    broken: set[tuple[str, tuple[str, ...]]],
) -> list[CatalogError]:
    """References of the files' documents, and of stored objects that the files change under
    them (a stored wallet whose customer changes currency, a stored plan whose metric loses a
    filter value)."""
    effective = existing.overlay(valid)
    effective.broken = existing.broken | broken
    applied = {(d.kind, d.key) for d in valid}
    errors: list[CatalogError] = []
    for document in valid:
        prefix: Loc = (document.index,) if per_file[document.file] > 1 else ()
        errors += [CatalogError(document.file, format_path((*prefix, *i.loc)), i.message)
                   for i in reference_issues(document.kind, document.model, effective)]
    if not valid:
        return errors
    for kind, objects in existing.objects.items():
        for key, model in objects.items():
            if (kind, key) in applied:
                continue
            errors += [CatalogError(f"{DATABASE} {describe_key(kind, key)}", format_path(i.loc),
                                    i.message)
                       for i in reference_issues(kind, model, effective)]
    return errors
