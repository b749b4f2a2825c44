"""Expiry reminders: the pure stage decision and the scan over the store (SQLite and PG)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from renewal import days_left, queue_due_reminders, reminder_stage_due
from store import (
    Certificate,
    CertificateStatus,
    MailOutbox,
    ReminderSent,
    UserStatus,
    days_until_expiry,
    reminder_banner_due,
    transaction,
)
from tests.conftest import FakeClock
from tests.renewal.conftest import CertFactory

STAGES = (60, 14, 3)
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("left", "sent", "expected"),
    [
        (timedelta(days=90), set(), None),  # not yet
        (timedelta(days=60, seconds=1), set(), None),  # one second before the window
        (timedelta(days=60), set(), 60),  # window opens
        (timedelta(days=30), set(), 60),
        (timedelta(days=30), {60}, None),  # already sent
        (timedelta(days=14), {60}, 14),
        (timedelta(days=10), set(), 14),  # first seen late: only the most urgent due stage
        (timedelta(days=10), {14}, None),
        (timedelta(days=2), {60}, 3),  # 14 was missed (scheduler down): no late 14
        (timedelta(days=2), {3}, None),
        (timedelta(seconds=1), set(), 3),
        (timedelta(0), set(), None),  # expired: nothing
        (-DAY, set(), None),
    ],
)
def test_reminder_stage_due(left: timedelta, sent: set[int], expected: int | None) -> None:
    assert reminder_stage_due(NOW + left, NOW, STAGES, sent) == expected


@given(
    left_seconds=st.integers(min_value=-10 * 86400, max_value=400 * 86400),
    sent=st.sets(st.sampled_from(STAGES)),
)
def test_reminder_stage_due_properties(left_seconds: int, sent: set[int]) -> None:
    stage = reminder_stage_due(NOW + timedelta(seconds=left_seconds), NOW, STAGES, sent)
    if stage is not None:
        assert stage in STAGES and stage not in sent
        assert left_seconds > 0 and timedelta(seconds=left_seconds) <= timedelta(days=stage)
        # Never a less urgent stage than one already sent.
        assert all(stage < s for s in sent)
        # Once recorded, the same moment yields nothing more.
        assert (
            reminder_stage_due(NOW + timedelta(seconds=left_seconds), NOW, STAGES, sent | {stage})
            is None
        )


def test_days_left() -> None:
    assert days_left(NOW + timedelta(days=14, hours=3), NOW) == 14
    assert days_left(NOW + timedelta(hours=3), NOW) == 0
    assert days_left(NOW - DAY, NOW) == 0


def _reminders(sessions: sessionmaker[Session]) -> list[tuple[int, int]]:
    with transaction(sessions) as s:
        return sorted(
            (r.certificate_id, r.stage_days) for r in s.scalars(select(ReminderSent)).all()
        )


def _mails(sessions: sessionmaker[Session]) -> list[MailOutbox]:
    with transaction(sessions) as s:
        return list(s.scalars(select(MailOutbox).order_by(MailOutbox.id)).all())


def test_each_stage_fires_once_as_time_passes(
    sessions: sessionmaker[Session], certs: CertFactory, clock: FakeClock
) -> None:
    user = certs.user(locale="nl", name="Jan de Vries")
    cert = certs.cert(user, not_after=clock() + timedelta(days=100))
    fired: list[int] = []
    for _ in range(110):  # walk day by day past the expiry, running the job twice a day
        for _ in range(2):
            report = queue_due_reminders(sessions, now=clock(), stages=STAGES)
            fired += [stage for stage, n in report.by_stage.items() for _ in range(n)]
        clock.advance(DAY)
    assert fired == [60, 14, 3]
    assert set(_reminders(sessions)) == {(cert, 60), (cert, 14), (cert, 3)}
    mails = _mails(sessions)
    assert [m.context["stage_days"] for m in mails] == [60, 14, 3]
    assert {m.template for m in mails} == {"reminder"} and {m.locale for m in mails} == {"nl"}
    assert [m.dedupe_key for m in mails] == [f"reminder:{cert}:{s}" for s in (60, 14, 3)]
    first = mails[0]
    assert first.to_addr.endswith("@example.org") and first.context["name"] == "Jan de Vries"
    assert first.context["days_left"] == 60 and first.secret_sealed is None
    with transaction(sessions) as s:  # each reminder row points at its mail
        links = dict(s.execute(select(ReminderSent.stage_days, ReminderSent.outbox_id)).all())
    assert links == {60: mails[0].id, 14: mails[1].id, 3: mails[2].id}


def test_revoked_superseded_expired_and_disabled_get_none(
    sessions: sessionmaker[Session], certs: CertFactory, clock: FakeClock
) -> None:
    soon = clock() + timedelta(days=10)
    revoked_user = certs.user()
    certs.cert(revoked_user, not_after=soon, status=CertificateStatus.REVOKED)
    renewed_user = certs.user()
    old = certs.cert(renewed_user, not_after=soon, first_used_at=clock() - DAY * 300)
    # The renewal has logged in: the old certificate is superseded, no reminder.
    new = certs.cert(renewed_user, not_after=clock() + timedelta(days=730), first_used_at=clock())
    disabled_user = certs.user(status=UserStatus.DISABLED)
    certs.cert(disabled_user, not_after=soon)
    expired_user = certs.user()
    certs.cert(expired_user, not_after=clock() - DAY)
    # A *revoked* newer certificate does not supersede: its holder still needs the reminder.
    broken_renewal_user = certs.user()
    kept = certs.cert(broken_renewal_user, not_after=soon)
    certs.cert(
        broken_renewal_user, not_after=soon + timedelta(days=700), status=CertificateStatus.REVOKED
    )
    report = queue_due_reminders(sessions, now=clock(), stages=STAGES)
    assert report.queued == 1
    assert _reminders(sessions) == [(kept, 14)]
    assert old != new


def test_a_renewal_never_imported_does_not_stop_the_reminders(
    sessions: sessionmaker[Session], certs: CertFactory, clock: FakeClock
) -> None:
    """Downloaded but never presented: the broker still logs in with the old certificate,
    so its reminders go on (issue 15), until the new one has logged in."""
    user = certs.user()
    old = certs.cert(user, not_after=clock() + timedelta(days=10), first_used_at=clock() - DAY)
    new = certs.cert(user, not_after=clock() + timedelta(days=730))
    assert queue_due_reminders(sessions, now=clock(), stages=STAGES).queued == 1
    assert _reminders(sessions) == [(old, 14)]
    with transaction(sessions) as session:
        row = session.get(Certificate, new)
        assert row is not None
        row.first_used_at = clock()
    clock.advance(timedelta(days=8))  # the 3-day stage opens: superseded now, none sent
    assert queue_due_reminders(sessions, now=clock(), stages=STAGES).queued == 0


@pytest.mark.parametrize(
    ("now", "not_after", "expected"),
    [
        # issued for 59 days on 3 December: 59 calendar days, not 58 whole 24-hour periods
        (datetime(2026, 12, 3, 9, 0, tzinfo=UTC), datetime(2027, 1, 31, 9, 0, tzinfo=UTC), 59),
        (datetime(2026, 12, 3, 22, 0, tzinfo=UTC), datetime(2027, 1, 31, 9, 0, tzinfo=UTC), 59),
        # 23:39 UTC on 23 December is 00:39 on the 24th in Berlin: one more day
        (datetime(2026, 12, 23, 12, 0, tzinfo=UTC), datetime(2026, 12, 23, 23, 39, tzinfo=UTC), 1),
        # the last day counts 0, after expiry too
        (datetime(2027, 1, 31, 1, 0, tzinfo=UTC), datetime(2027, 1, 31, 9, 0, tzinfo=UTC), 0),
        (datetime(2027, 2, 1, 0, 0, tzinfo=UTC), datetime(2027, 1, 31, 9, 0, tzinfo=UTC), 0),
        # across 29 February 2028 and the month end
        (datetime(2028, 2, 27, 12, 0, tzinfo=UTC), datetime(2028, 3, 1, 12, 0, tzinfo=UTC), 3),
        # across the change to summer time (29 March 2026) and back (25 October 2026)
        (datetime(2026, 3, 28, 23, 30, tzinfo=UTC), datetime(2026, 3, 30, 21, 59, tzinfo=UTC), 1),
        (datetime(2026, 10, 24, 22, 30, tzinfo=UTC), datetime(2026, 10, 26, 22, 30, tzinfo=UTC), 1),
    ],
)
def test_days_left_in_calendar_days_of_the_brokers_zone(
    now: datetime, not_after: datetime, expected: int
) -> None:
    assert days_left(not_after, now, ZoneInfo("Europe/Berlin")) == expected


def test_days_left_in_another_zone() -> None:
    # 23:30 UTC on 1 March: still 1 March in London, already 2 March in Berlin.
    now, not_after = datetime(2027, 3, 1, 23, 30, tzinfo=UTC), datetime(2027, 3, 3, 12, tzinfo=UTC)
    assert days_left(not_after, now, ZoneInfo("Europe/London")) == 2
    assert days_left(not_after, now, ZoneInfo("Europe/Berlin")) == 1


def test_rerun_and_overlapping_scans_queue_nothing_new(
    sessions: sessionmaker[Session], certs: CertFactory, clock: FakeClock
) -> None:
    for i in range(30):
        certs.cert(certs.user(), not_after=clock() + timedelta(days=1 + i * 3))
    first = queue_due_reminders(sessions, now=clock(), stages=STAGES, page_size=7)
    assert first.queued == 20  # 1..58 days left: all inside the 60-day window
    assert queue_due_reminders(sessions, now=clock(), stages=STAGES, page_size=7).queued == 0
    assert len(_mails(sessions)) == 20

    # Two scans at once (two machines): each reminder is queued by exactly one of them.
    clock.advance(timedelta(days=40))
    reports = []

    def scan() -> None:
        reports.append(queue_due_reminders(sessions, now=clock(), stages=STAGES, page_size=3))

    threads = [threading.Thread(target=scan) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(reports) == 4
    pairs = _reminders(sessions)
    assert len(pairs) == len(set(pairs))
    with transaction(sessions) as s:
        n_mails = s.scalar(select(func.count()).select_from(MailOutbox))
        n_reminders = s.scalar(select(func.count()).select_from(ReminderSent))
    assert n_mails == n_reminders == len(pairs) == 20 + sum(r.queued for r in reports)
    assert sum(r.queued for r in reports) > 0


@pytest.mark.parametrize(
    ("left", "shown"),
    [
        (timedelta(days=61), False),
        (timedelta(days=60, seconds=1), False),
        (timedelta(days=60), True),  # the banner starts with the first reminder mail
        (timedelta(days=3), True),
        (timedelta(seconds=1), True),
        (timedelta(0), False),  # expired: the gateway shows its expired page instead
        (-DAY, False),
    ],
)
def test_reminder_banner_due_for_the_account_page(left: timedelta, shown: bool) -> None:
    assert reminder_banner_due(NOW + left, NOW, max(STAGES)) is shown
    assert days_until_expiry(NOW + left, NOW) == max(0, left // DAY)
