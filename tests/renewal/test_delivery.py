"""Delivering the outbox to a real SMTP server on loopback (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import renewal._outbox as ob
from renewal import requeue_mail, retry_delay
from renewal._outbox import WorkerId, claim_batch, mark_sent, release_abandoned_claims, renew_claim
from store import MailOutbox, MailStatus, Sealer, queue_mail, transaction
from tests.conftest import FakeClock
from tests.renewal.conftest import DeliveryFactory, SmtpServer, mail_settings

PASSWORD = "tiger-lamp-7731-orbit"
PASSWORD_CONTEXT = {
    "name": "Erika Mustermann",
    "serial": "4f3a9c",
    "not_after": "2028-11-25",
    "friendly_name": "Erika Mustermann (60/123/4567) 2028-11-25",
    "broker_number": "60/123/4567",
}


def queue(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    sealer: Sealer,
    *,
    template: str = "certificate_password",
    to: str = "erika@example.org",
    locale: str = "de",
    context: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
) -> int:
    with transaction(sessions) as session:
        row = queue_mail(
            session,
            kind=template,
            to_addr=to,
            locale=locale,
            template=template,
            context=PASSWORD_CONTEXT if context is None else context,
            secrets={"password": PASSWORD} if secrets is None else secrets,
            sealer=sealer,
            now=clock(),
        )
        return row.id


def row(sessions: sessionmaker[Session], mail_id: int) -> MailOutbox:
    with transaction(sessions) as session:
        found = session.get(MailOutbox, mail_id)
        assert found is not None
        return found


async def test_delivers_with_headers_and_wipes_the_secret(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    sealer: Sealer,
    smtp_server: SmtpServer,
    make_delivery: DeliveryFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    mail_id = queue(sessions, clock, sealer)
    assert row(sessions, mail_id).secret_sealed is not None
    report = await make_delivery().deliver_due()
    assert (report.sent, report.retried, report.failed) == (1, 0, 0)

    [msg] = smtp_server.sink.messages
    assert msg["To"] == "erika@example.org"
    assert msg["From"] == "Maklerbetreuung <no-reply@portal.example.test>"
    assert msg["Reply-To"] == "support@portal.example.test"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Date"] is not None and "25 Nov 2026 09:00:00" in msg["Date"]
    assert msg["Subject"].startswith("Passwort für Ihr Zertifikat")
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert PASSWORD in text.get_content() and PASSWORD in html.get_content()

    sent = row(sessions, mail_id)
    assert sent.status is MailStatus.SENT
    assert sent.secret_sealed is None  # wiped in the transaction that marked it sent
    assert sent.sent_at == clock() and sent.attempts == 1 and sent.claimed_until is None
    assert sent.message_id == msg["Message-ID"]
    assert sent.message_id.startswith(f"<brokergate.outbox.{mail_id}.")
    assert sent.message_id.endswith("@portal.example.test>")

    # Every record of ours, SQLAlchemy's and aiosmtplib's; the sink (aiosmtpd, "mail.log")
    # logs the DATA it receives at DEBUG, as a real MTA's debug log would.
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]
    assert any("sent as" in r.getMessage() for r in ours)
    assert all(PASSWORD not in r.getMessage() for r in ours)
    # Nothing left to do.
    assert (await make_delivery().deliver_due()).sent == 0
    assert len(smtp_server.sink.messages) == 1


async def test_server_down_then_up_delivers_each_mail_exactly_once(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    sealer: Sealer,
    smtp_server: SmtpServer,
    make_delivery: DeliveryFactory,
) -> None:
    smtp_server.stop()
    ids = [queue(sessions, clock, sealer, to=f"b{i}@example.org") for i in range(7)]
    delivery = make_delivery()
    report = await delivery.deliver_due()
    assert (report.sent, report.retried) == (0, 7)
    for mail_id in ids:
        r = row(sessions, mail_id)
        assert r.status is MailStatus.PENDING and r.attempts == 1
        assert "unreachable" in (r.last_error or "") or "connect" in (r.last_error or "").lower()
        assert r.next_attempt_at == clock() + timedelta(seconds=15)  # 30 s, half jittered
        assert r.secret_sealed is not None and r.claimed_by is None
    assert (await delivery.deliver_due()).retried == 0  # not due yet: no hammering

    smtp_server.start()
    clock.advance(timedelta(seconds=15))
    assert (await delivery.deliver_due()).sent == 7
    assert (await delivery.deliver_due()).sent == 0
    clock.advance(timedelta(hours=2))
    assert (await delivery.deliver_due()).sent == 0
    got = smtp_server.sink.message_ids()
    assert len(got) == 7 == len(set(got))
    assert sorted(m["To"] for m in smtp_server.sink.messages) == sorted(
        f"b{i}@example.org" for i in range(7)
    )


async def test_permanent_failure_is_kept_and_retry_requeues(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    sealer: Sealer,
    smtp_server: SmtpServer,
    make_delivery: DeliveryFactory,
) -> None:
    smtp_server.sink.reject = "550 5.1.1 mailbox unavailable"
    mail_id = queue(sessions, clock, sealer)
    report = await make_delivery().deliver_due()
    assert (report.sent, report.failed) == (0, 1)
    failed = row(sessions, mail_id)
    assert failed.status is MailStatus.FAILED
    assert "550" in (failed.last_error or "") and "mailbox unavailable" in (failed.last_error or "")
    assert failed.secret_sealed is not None  # kept so that a retry can still send it
    clock.advance(timedelta(days=1))
    assert (await make_delivery().deliver_due()).sent == 0  # failed stays failed

    smtp_server.sink.reject = None
    requeued = requeue_mail(sessions, mail_id=mail_id, now=clock())
    assert requeued.status is MailStatus.PENDING and requeued.attempts == 0
    assert (await make_delivery().deliver_due()).sent == 1
    assert row(sessions, mail_id).secret_sealed is None
    assert len(smtp_server.sink.messages) == 1


async def test_transient_failures_back_off_then_give_up(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    sealer: Sealer,
    smtp_server: SmtpServer,
    make_delivery: DeliveryFactory,
) -> None:
    smtp_server.sink.reject = "451 4.3.0 try again later"
    mail_id = queue(sessions, clock, sealer)
    delivery = make_delivery(settings=mail_settings(smtp_server.port, max_attempts=4))
    waits = []
    for _ in range(3):
        assert (await delivery.deliver_due()).retried == 1
        r = row(sessions, mail_id)
        waits.append(r.next_attempt_at - clock())
        clock.advance(waits[-1])
    assert waits == [timedelta(seconds=15), timedelta(seconds=30), timedelta(seconds=60)]
    assert (await delivery.deliver_due()).failed == 1
    r = row(sessions, mail_id)
    assert r.status is MailStatus.FAILED and r.attempts == 4
    assert (r.last_error or "").startswith("gave up after 4 attempts: SMTP 451")


async def test_unrenderable_rows_fail_permanently_without_stopping_the_others(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    sealer: Sealer,
    smtp_server: SmtpServer,
    make_delivery: DeliveryFactory,
) -> None:
    unknown = queue(sessions, clock, sealer, template="newsletter", context={}, secrets={})
    no_secret = queue(sessions, clock, sealer, template="email_tan", context={}, secrets={})
    wrong_key = queue(
        sessions,
        clock,
        Sealer(secret=b"another-secret-key-0123456789", purpose="outbox"),
        template="email_tan",
        context={},
        secrets={"tan": "ABCDEF"},
    )
    good = queue(sessions, clock, sealer, template="email_tan", context={}, secrets={"tan": "X1"})
    report = await make_delivery().deliver_due()
    assert (report.sent, report.failed) == (1, 3)
    assert "unknown mail template 'newsletter'" in (row(sessions, unknown).last_error or "")
    assert "secret tan" in (row(sessions, no_secret).last_error or "")
    assert "secret key differs" in (row(sessions, wrong_key).last_error or "")
    assert row(sessions, good).status is MailStatus.SENT
    [msg] = smtp_server.sink.messages
    assert msg["Subject"] == "Ihre TAN für die Anmeldung"


async def test_english_and_dutch_rows_are_sent_in_their_language(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    sealer: Sealer,
    smtp_server: SmtpServer,
    make_delivery: DeliveryFactory,
) -> None:
    for locale in ("en", "nl"):
        queue(
            sessions,
            clock,
            sealer,
            template="email_tan",
            locale=locale,
            context={},
            secrets={"tan": "X"},
        )
    await make_delivery().deliver_due()
    subjects = sorted(str(m["Subject"]) for m in smtp_server.sink.messages)
    assert subjects == ["Uw TAN om u aan te melden", "Your TAN for logging in"]
    assert sorted(str(m["Content-Language"]) for m in smtp_server.sink.messages) == ["en", "nl"]


def test_a_lapsed_claim_taken_over_is_not_sent_by_its_old_holder(
    sessions: sessionmaker[Session], clock: FakeClock, sealer: Sealer
) -> None:
    mail_id = queue(sessions, clock, sealer)
    a, b = WorkerId.for_this_process(), WorkerId.for_this_process()
    lease = timedelta(minutes=5)
    assert [m.id for m in claim_batch(sessions, worker=a, now=clock(), lease=lease, limit=5)] == [
        mail_id
    ]
    assert claim_batch(sessions, worker=b, now=clock(), lease=lease, limit=5) == []  # held
    clock.advance(lease + timedelta(seconds=1))
    assert [m.id for m in claim_batch(sessions, worker=b, now=clock(), lease=lease, limit=5)] == [
        mail_id
    ]
    assert not renew_claim(sessions, mail_id=mail_id, worker=a, now=clock(), lease=lease)
    assert not mark_sent(sessions, mail_id=mail_id, worker=a, now=clock(), message_id="<x@y>")
    assert renew_claim(sessions, mail_id=mail_id, worker=b, now=clock(), lease=lease)
    assert mark_sent(sessions, mail_id=mail_id, worker=b, now=clock(), message_id="<x@y>")
    assert row(sessions, mail_id).claimed_by == str(b)


async def test_crash_between_acceptance_and_commit_resends_with_the_same_message_id(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    sealer: Sealer,
    smtp_server: SmtpServer,
    make_delivery: DeliveryFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The documented residual window (docs/mail.md): at-least-once, detectably."""
    mail_id = queue(sessions, clock, sealer)

    class Killed(RuntimeError):
        pass

    def crash(*args: Any, **kwargs: Any) -> bool:
        raise Killed("killed right after the server said 250")

    monkeypatch.setattr(ob, "mark_sent", crash)
    with pytest.raises(Killed):
        await make_delivery().deliver_due()
    monkeypatch.undo()
    assert row(sessions, mail_id).status is MailStatus.PENDING
    assert (await make_delivery().deliver_due()).sent == 0  # the dead worker's lease holds
    clock.advance(mail_settings(1).claim_lease + timedelta(seconds=1))
    assert (await make_delivery().deliver_due()).sent == 1
    first, second = smtp_server.sink.messages
    assert first["Message-ID"] == second["Message-ID"] == row(sessions, mail_id).message_id


def test_abandoned_claims_of_dead_local_processes_are_released(
    sessions: sessionmaker[Session], clock: FakeClock, sealer: Sealer
) -> None:
    ids = [queue(sessions, clock, sealer) for _ in range(4)]
    me = WorkerId.for_this_process()
    holders = {
        ids[0]: f"{me.host}:4000001:dead",  # this host, process gone
        ids[1]: f"{me.host}:{os.getppid()}:live",  # this host, process alive
        ids[2]: "other-host:4000001:x",  # another host: only its lease can tell
        ids[3]: f"{me.host}:{me.pid}:{me.token}",  # ourselves
    }
    with transaction(sessions) as session:
        for r in session.scalars(select(MailOutbox)).all():
            r.claimed_by = holders[r.id]
            r.claimed_until = clock() + timedelta(minutes=5)
    released = release_abandoned_claims(
        sessions, worker=me, now=clock(), pid_alive=lambda pid: pid != 4000001
    )
    assert released == 1
    assert row(sessions, ids[0]).claimed_by is None
    assert [row(sessions, i).claimed_by for i in ids[1:]] == [holders[i] for i in ids[1:]]


def test_retry_delay_doubles_up_to_the_cap_with_jitter() -> None:
    base, cap = timedelta(seconds=30), timedelta(hours=1)
    delays = [retry_delay(n, base=base, cap=cap, jitter=1.0) for n in range(1, 12)]
    assert delays[:4] == [timedelta(seconds=s) for s in (30, 60, 120, 240)]
    assert max(delays) == cap and delays[-1] == cap
    assert retry_delay(1, base=base, cap=cap, jitter=0.0) == timedelta(seconds=15)
    assert retry_delay(10_000, base=base, cap=cap, jitter=0.5) == cap * 0.75
