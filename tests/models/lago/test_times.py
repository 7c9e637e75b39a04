"""The four timestamp forms (docs/architecture.md §11): each pinned, so none drifts into
another (a changed key form would post a ledger row twice)."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tallyflow.models.lago.times import iso, iso_key, iso_utc, iso_z

PARIS = timezone(timedelta(hours=1))
WITH_MICROS = datetime(2026, 11, 27, 10, 0, 5, 123456, tzinfo=UTC)
WHOLE = datetime(2026, 11, 27, 10, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize(("moment", "expected"), [
    (WHOLE, "2026-11-27T10:00:05Z"),
    (WITH_MICROS, "2026-11-27T10:00:05Z"),  # Lago's documents drop microseconds
    (datetime(2026, 11, 27, 11, 0, 5, tzinfo=PARIS), "2026-11-27T10:00:05Z"),
])
def test_iso_is_lagos_whole_second_utc_form(moment: datetime, expected: str) -> None:
    assert iso(moment) == expected


def test_every_nullable_form_keeps_null() -> None:
    assert iso(None) is None
    assert iso_z(None) is None


@pytest.mark.parametrize(("moment", "expected"), [
    (WHOLE, "2026-11-27T10:00:05Z"),
    (WITH_MICROS, "2026-11-27T10:00:05.123456Z"),
    # the API writes the moment as read: another offset stays as it is
    (datetime(2026, 11, 27, 11, 0, 5, tzinfo=PARIS), "2026-11-27T11:00:05+01:00"),
])
def test_iso_z_is_the_apis_form(moment: datetime, expected: str) -> None:
    assert iso_z(moment) == expected


@pytest.mark.parametrize(("moment", "expected"), [
    (WHOLE, "2026-11-27T10:00:05+00:00"),
    (WITH_MICROS, "2026-11-27T10:00:05.123456+00:00"),
    (datetime(2026, 11, 27, 11, 0, 5, tzinfo=PARIS), "2026-11-27T10:00:05+00:00"),
])
def test_iso_utc_is_the_stored_states_form(moment: datetime, expected: str) -> None:
    assert iso_utc(moment) == expected
    assert datetime.fromisoformat(iso_utc(moment)) == moment


@pytest.mark.parametrize(("moment", "expected"), [
    (WHOLE, "2026-11-27T10:00:05.000000Z"),  # always six decimals: one key per moment
    (WITH_MICROS, "2026-11-27T10:00:05.123456Z"),
    (datetime(2026, 11, 27, 11, 0, 5, tzinfo=PARIS), "2026-11-27T10:00:05.000000Z"),
])
def test_iso_key_is_the_ledger_key_form(moment: datetime, expected: str) -> None:
    assert iso_key(moment) == expected
