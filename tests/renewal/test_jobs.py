"""The other jobs: CRL re-publication, clean-up; and the scheduler that runs them all."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ca import CertificateAuthority
from renewal import (
    MailSettings,
    ReminderReport,
    RenewalJobs,
    RenewalSettings,
    build_scheduler,
    delete_expired,
)
from renewal._process import run_until_stopped
from store import (
    ActivationToken,
    CAGeneration,
    Certificate,
    CertificateStatus,
    EmailTan,
    Level,
    MailOutbox,
    MailStatus,
    RateLimit,
    RememberedDevice,
    ReminderSent,
    RevocationReason,
    WebSession,
    transaction,
)
from tests.conftest import FakeClock, UserFactory
from tests.renewal.conftest import CertFactory, DeliveryFactory, SmtpServer

HOUR, DAY = timedelta(hours=1), timedelta(days=1)


def make_jobs(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    make_delivery: DeliveryFactory,
    authority: CertificateAuthority | None = None,
) -> RenewalJobs:
    return RenewalJobs(
        sessions=sessions,
        settings=RenewalSettings(),
        delivery=make_delivery(),
        clock=clock,
        publish_due_crls=authority.publish_due_crls if authority else None,
        supersede_replaced=authority.supersede_replaced if authority else None,
    )


def test_daily_job_supersedes_unused_renewals_after_the_grace_period(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    make_delivery: DeliveryFactory,
    authority: CertificateAuthority,
    make_user: UserFactory,
) -> None:
    """A broker who renewed but never came back: the old certificate goes after the grace."""
    user = make_user()
    old = authority.issue_certificate(user.id, "ops:test")
    new = authority.issue_certificate(user.id, "ops:test", replaces_id=old.certificate_id)
    jobs = make_jobs(sessions, clock, make_delivery, authority)
    assert jobs.supersede() == []
    clock.advance(authority.settings.superseded_grace)
    assert jobs.supersede() == [old.serial]
    assert jobs.supersede() == []
    with transaction(sessions) as session:
        rows = {c.serial: c for c in session.scalars(select(Certificate))}
        assert rows[old.serial].revocation_reason == RevocationReason.SUPERSEDED
        assert rows[new.serial].status == CertificateStatus.VALID


def test_crls_are_republished_before_next_update_lapses(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    make_delivery: DeliveryFactory,
    authority: CertificateAuthority,
) -> None:
    jobs = make_jobs(sessions, clock, make_delivery, authority)
    with transaction(sessions) as session:
        gen = session.get(CAGeneration, 1)
        assert gen is not None and gen.crl_next_update is not None
        first_next_update = gen.crl_next_update
    assert jobs.crls() == []  # fresh CRL: nothing to do
    # republish_before is 6 days of a 7-day CRL: due one day after publication.
    clock.advance(DAY + timedelta(minutes=1))
    assert jobs.crls() == [1]
    assert jobs.crls() == []  # once is enough
    with transaction(sessions) as session:
        gen = session.get(CAGeneration, 1)
        assert gen is not None and gen.crl_next_update is not None
        assert gen.crl_next_update > first_next_update > clock()


def test_crl_job_without_a_ca_does_nothing(
    sessions: sessionmaker[Session], clock: FakeClock, make_delivery: DeliveryFactory
) -> None:
    assert make_jobs(sessions, clock, make_delivery).crls() == []


def test_cleanup_deletes_what_expired_and_keeps_the_rest(
    sessions: sessionmaker[Session], clock: FakeClock, certs: CertFactory
) -> None:
    user = certs.user()
    now = clock()
    with transaction(sessions) as s:
        for i, expires in enumerate((now - HOUR, now + HOUR)):
            s.add(
                WebSession(
                    id=f"{i:064x}",
                    user_id=user,
                    level=Level.BASIC,
                    created_at=now,
                    last_seen_at=now,
                    absolute_expires_at=expires,
                    csrf_token="x",
                )
            )
            s.add(
                RememberedDevice(
                    user_id=user, token_hash=f"{i:064x}", created_at=now, expires_at=expires
                )
            )
            s.add(RateLimit(key=f"login:{i}", window_start=now, count=1, expires_at=expires))
        s.add(EmailTan(user_id=user, tan_hash="old", created_at=now, expires_at=now - 2 * DAY))
        s.add(EmailTan(user_id=user, tan_hash="recent", created_at=now, expires_at=now - HOUR))
        s.add(
            ActivationToken(
                user_id=user, token_hash="a" * 64, created_at=now, expires_at=now - 2 * DAY
            )
        )
        s.add(
            ActivationToken(
                user_id=user,
                token_hash="b" * 64,
                created_at=now,
                expires_at=now + DAY,
                used_at=now - 2 * DAY,
            )
        )
        s.add(
            ActivationToken(user_id=user, token_hash="c" * 64, created_at=now, expires_at=now + DAY)
        )
        # A locked-out key whose window ended stays until the lock ends.
        s.add(
            RateLimit(
                key="locked",
                window_start=now,
                count=9,
                expires_at=now - HOUR,
                locked_until=now + HOUR,
            )
        )
        failed = MailOutbox(
            created_at=now - 8 * DAY,
            kind="email_tan",
            to_addr="a@example.org",
            locale="de",
            template="email_tan",
            context={},
            secret_sealed=b"s",
            status=MailStatus.FAILED,
            attempts=1,
            next_attempt_at=now,
        )
        sent = MailOutbox(
            created_at=now - 100 * DAY,
            kind="reminder",
            to_addr="a@example.org",
            locale="de",
            template="reminder",
            context={},
            status=MailStatus.SENT,
            attempts=1,
            next_attempt_at=now,
            sent_at=now - 91 * DAY,
        )
        s.add_all([failed, sent])
        s.flush()
    cert_id = certs.cert(user, not_after=now + 10 * DAY)
    with transaction(sessions) as s:
        s.add(ReminderSent(certificate_id=cert_id, stage_days=14, queued_at=now, outbox_id=sent.id))

    counts = delete_expired(
        sessions, now=now, failed_secret_retention=7 * DAY, sent_retention=90 * DAY
    )
    assert counts == {
        "web_sessions": 1,
        "email_tans": 1,
        "remembered_devices": 1,
        "rate_limits": 1,
        "activation_tokens": 2,
        "outbox_secrets_wiped": 1,
        "outbox_sent_deleted": 1,
    }
    with transaction(sessions) as s:
        assert s.scalar(select(func.count()).select_from(WebSession)) == 1
        assert s.scalars(select(EmailTan.tan_hash)).all() == ["recent"]
        assert s.scalar(select(func.count()).select_from(RateLimit)) == 2
        assert s.scalars(select(ActivationToken.token_hash)).all() == ["c" * 64]
        kept = s.get(MailOutbox, failed.id)
        assert kept is not None and kept.secret_sealed is None and kept.status is MailStatus.FAILED
        assert s.get(MailOutbox, sent.id) is None
        reminder = s.scalars(select(ReminderSent)).one()  # still blocks a second reminder
        assert reminder.outbox_id is None
    assert set(
        delete_expired(
            sessions, now=now, failed_secret_retention=7 * DAY, sent_retention=90 * DAY
        ).values()
    ) == {0}


def test_scheduler_has_every_job_due_at_start(
    sessions: sessionmaker[Session], clock: FakeClock, make_delivery: DeliveryFactory
) -> None:
    jobs = make_jobs(sessions, clock, make_delivery)
    scheduler = build_scheduler(jobs, poll_interval=timedelta(seconds=5), start=clock())
    found = {job.id: job for job in scheduler.get_jobs()}
    assert set(found) == {"deliver", "supersede", "reminders", "crls", "cleanup"}
    assert all(job.next_run_time == clock() for job in found.values())
    assert "cron[hour='6', minute='0']" in str(found["reminders"].trigger)


async def test_run_until_stopped_runs_the_jobs_and_stops_cleanly(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    make_delivery: DeliveryFactory,
    smtp_server: SmtpServer,
    certs: CertFactory,
) -> None:
    """The real scheduler, on the real clock for *when*, the fake clock for *what*."""
    certs.cert(certs.user(), not_after=clock() + 10 * DAY)
    jobs = make_jobs(sessions, clock, make_delivery)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_until_stopped(jobs, poll_interval=timedelta(seconds=1), stop=stop)
    )
    # The reminder is queued by the job run at start, then delivered by the first poll.
    assert await asyncio.to_thread(smtp_server.sink.delivered.wait, 30)
    stop.set()
    await asyncio.wait_for(task, timeout=30)
    [msg] = smtp_server.sink.messages
    assert "Ihr Zertifikat läuft am" in str(msg["Subject"])


async def test_a_stop_during_a_job_lets_it_finish_without_a_traceback(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    make_delivery: DeliveryFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """CI caught `renewal` logging ``CancelledError`` when stopped mid reminder scan:
    APScheduler's executor cancels pending futures at shutdown, even with wait=False."""
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    class SlowJobs(RenewalJobs):
        def reminders(self) -> ReminderReport:
            started.set()
            release.wait(30)
            report = super().reminders()
            finished.set()
            return report

    jobs = SlowJobs(
        sessions=sessions, settings=RenewalSettings(), delivery=make_delivery(), clock=clock
    )
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_until_stopped(jobs, poll_interval=timedelta(seconds=1), stop=stop)
    )
    assert await asyncio.to_thread(started.wait, 30)
    stop.set()
    done, _ = await asyncio.wait({task}, timeout=0.3)
    assert not done, "the process stopped while the reminder scan was still running"
    release.set()
    await asyncio.wait_for(task, timeout=30)
    assert finished.is_set()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"claim_lease": timedelta(seconds=60)}, "claim_lease"),
        ({"username": "mailer"}, "needs tls"),
        ({"batch_size": 0}, "batch_size"),
        ({"retry_cap": timedelta(seconds=1)}, "retry_cap"),
        ({"smtp_port": 0}, "smtp_port"),
    ],
)
def test_mail_settings_refuse_unsafe_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MailSettings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reminder_stages_days": (60, 60)}, "repeat"),
        ({"reminder_stages_days": ()}, "non-empty"),
        ({"daily_run_at": "25:00"}, "HH:MM"),
        ({"cleanup_interval": timedelta(0)}, "positive"),
    ],
)
def test_renewal_settings_refuse_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RenewalSettings(**kwargs)  # type: ignore[arg-type]
