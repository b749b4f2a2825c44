"""Broker certificates last two calendar years, not 730 days (issue 12)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from ca import BROKER_TIME_ZONE, CASettings, CertificateAuthority, add_calendar_years
from store import Certificate, transaction
from tests.conftest import FakeClock, UserFactory

BERLIN = BROKER_TIME_ZONE


def berlin(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        # Across 29 February 2028: 730 days would end on 2029-02-28, a day short.
        (berlin(2027, 3, 1, 9, 0), berlin(2029, 3, 1, 9, 0)),
        (berlin(2027, 6, 1, 9, 0), berlin(2029, 6, 1, 9, 0)),
        # Issued on 29 February: ends on 28 February (BGB § 188 Abs. 3), never on 1 March.
        (berlin(2028, 2, 29, 12, 0), berlin(2030, 2, 28, 12, 0)),
        # The calendar is the broker's: 00:30 in Berlin on 29 February is still 28 February
        # in UTC, and UTC arithmetic would end on 1 March in Berlin.
        (berlin(2028, 2, 29, 0, 30), berlin(2030, 2, 28, 0, 30)),
        # Summer time at both ends, and winter time at both ends.
        (berlin(2026, 7, 1, 10, 0), berlin(2028, 7, 1, 10, 0)),
        (berlin(2026, 11, 25, 10, 0), berlin(2028, 11, 25, 10, 0)),
    ],
)
def test_two_calendar_years(start: datetime, end: datetime) -> None:
    result = add_calendar_years(start.astimezone(UTC), 2)
    assert result == end
    assert result.tzinfo is UTC
    assert result.astimezone(BERLIN).timetuple()[:5] == end.timetuple()[:5]


def test_across_29_february_is_731_days() -> None:
    start = datetime(2027, 3, 1, 8, 0, tzinfo=UTC)
    assert add_calendar_years(start, 2) - start == timedelta(days=731)
    assert start + timedelta(days=730) < add_calendar_years(start, 2)


def test_naive_datetime_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        add_calendar_years(datetime(2028, 2, 29, 12, 0), 2)


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(UTC)
    )
)
def test_same_day_two_years_later_in_berlin(moment: datetime) -> None:
    local = moment.astimezone(BERLIN)
    result = add_calendar_years(moment, 2).astimezone(BERLIN)
    expected_day = 28 if (local.month, local.day) == (2, 29) else local.day
    assert (result.year, result.month, result.day) == (local.year + 2, local.month, expected_day)
    # Same wall-clock time, except where the spring DST gap moves it by the hour.
    assert abs((result.hour * 60 + result.minute) - (local.hour * 60 + local.minute)) in (0, 60)
    # Never shorter than 730 days nor longer than 731 (plus the DST hour).
    elapsed = add_calendar_years(moment, 2) - moment
    assert timedelta(days=729, hours=23) <= elapsed <= timedelta(days=731, hours=1)


def test_certificate_issued_on_29_february_2028(
    authority: CertificateAuthority, make_user: UserFactory, clock: FakeClock
) -> None:
    clock.now = datetime(2028, 2, 29, 10, 0, tzinfo=UTC)  # 11:00 in Berlin
    authority.issue_certificate(make_user().id, "ops:test")
    with transaction(authority.sessions) as session:
        row = session.scalars(select(Certificate)).one()
        cert = x509.load_pem_x509_certificate(row.cert_pem.encode())
    assert cert.not_valid_after_utc == datetime(2030, 2, 28, 10, 0, tzinfo=UTC)
    assert row.not_after.replace(tzinfo=UTC) == cert.not_valid_after_utc


def test_leaf_years_must_fit_the_issuing_ca() -> None:
    with pytest.raises(ValueError, match="leaf_validity_years"):
        CASettings(leaf_validity_years=0)
    with pytest.raises(ValueError, match="shorter than issuing_validity"):
        CASettings(leaf_validity_years=6)
    assert CASettings().leaf_validity_years == 2
