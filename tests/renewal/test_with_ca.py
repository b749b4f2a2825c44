"""End to end with the real CA: issue → password mail delivered → it opens the PKCS#12;
and the reminders for real certificates, renewal included."""

from __future__ import annotations

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.serialization import pkcs12
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ca import CertificateAuthority
from gateway.logins._certificates import note_certificate_used
from renewal import queue_due_reminders
from store import MailOutbox, MailStatus, RevocationReason, transaction
from tests.conftest import FakeClock, UserFactory
from tests.renewal.conftest import DeliveryFactory, SmtpServer

STAGES = (60, 14, 3)


async def test_issued_certificate_password_arrives_and_opens_the_file(
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    make_user: UserFactory,
    make_delivery: DeliveryFactory,
    smtp_server: SmtpServer,
) -> None:
    user = make_user(email="jan@example.org", locale="nl", name="Jan de Vries")
    issued = authority.issue_certificate(user.id, "test:ops")
    assert (await make_delivery().deliver_due()).sent == 1
    [msg] = smtp_server.sink.messages
    assert msg["To"] == "jan@example.org"
    subject = str(msg["Subject"])
    # the friendly name the browser lists (expiry date, start of the serial), named once
    assert subject == f"Wachtwoord voor uw certificaat {issued.friendly_name}"
    assert subject.count(issued.serial[:8]) == 1
    text = msg.get_body(preferencelist=("plain",))
    assert text is not None
    match = re.search(r"Wachtwoord: (\S+)", text.get_content())
    assert match, "the Dutch password mail names the password"
    key, cert, _ = pkcs12.load_key_and_certificates(issued.pkcs12, match.group(1).encode())
    assert key is not None and cert is not None
    assert format(cert.serial_number, "x") == issued.serial
    with transaction(sessions) as session:
        row = session.scalars(select(MailOutbox)).one()
        assert row.status is MailStatus.SENT and row.secret_sealed is None


async def test_the_password_mail_names_the_expiry_date_in_the_brokers_zone(
    authority: CertificateAuthority,
    make_user: UserFactory,
    make_delivery: DeliveryFactory,
    smtp_server: SmtpServer,
    clock: FakeClock,
) -> None:
    """Issued at 23:30 UTC, the certificate ends at 23:30 UTC too: the next day in Berlin,
    which the pages show; the mail said the UTC date (issue 16)."""
    clock.advance(timedelta(hours=14, minutes=30))  # 25 Nov 2026, 23:30 UTC
    user = make_user(email="eva@example.org", locale="de")
    issued = authority.issue_certificate(user.id, "test:ops")
    local = issued.not_after.astimezone(ZoneInfo("Europe/Berlin"))
    assert local.date() != issued.not_after.date(), "the test needs an expiry near midnight"
    assert (await make_delivery().deliver_due()).sent == 1
    [msg] = smtp_server.sink.messages
    text = msg.get_body(preferencelist=("plain",))
    assert text is not None
    assert f"Gültig bis: {local:%d.%m.%Y}" in text.get_content()


def test_reminders_follow_renewal_and_revocation(
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    make_user: UserFactory,
    clock: FakeClock,
) -> None:
    renewing, revoked = make_user(), make_user()
    first = authority.issue_certificate(renewing.id, "test:ops")
    other = authority.issue_certificate(revoked.id, "test:ops")
    clock.advance(first.not_after - clock() - timedelta(days=59))
    report = queue_due_reminders(sessions, now=clock(), stages=STAGES)
    assert report.by_stage == {60: 2}

    authority.revoke(other.serial, RevocationReason.CESSATION_OF_OPERATION, "test:ops")
    renewal = authority.issue_certificate(renewing.id, "test:ops")
    with transaction(sessions) as session:  # the renewal has logged in: the old one is superseded
        note_certificate_used(session, fingerprint=renewal.fingerprint_sha256, now=clock())
    clock.advance(timedelta(days=50))  # inside the 14-day window of the old certificates
    assert queue_due_reminders(sessions, now=clock(), stages=STAGES).queued == 0
    with transaction(sessions) as session:
        reminders = session.scalars(
            select(MailOutbox).where(MailOutbox.template == "reminder")
        ).all()
    assert sorted(m.context["serial"] for m in reminders) == sorted([first.serial, other.serial])
