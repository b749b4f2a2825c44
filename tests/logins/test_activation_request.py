""" "Konto aktivieren" on request (issue 14): email + broker number → a fresh activation mail
for a user not activated yet; nothing for an unknown pair, a disabled or activated account;
throttled per account and per address; a new link voids the older one."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.logins import LoginSettings
from gateway.logins._activation_request import request_activation
from store import ActivationToken, MailOutbox, Sealer, UserStatus, transaction
from tests.conftest import FakeClock
from tests.logins.conftest import MakeAccount

BASE = "https://portal.example.org/_gateway/activate/"


def ask(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    sealer: Sealer,
    settings: LoginSettings,
    email: str,
    broker: str = "60/123/4567",
    addr: str = "127.0.0.1",
) -> bool:
    return request_activation(
        sessions,
        email=email,
        broker_number=broker,
        link_base=BASE,
        mail_sealer=sealer,
        settings=settings,
        client_addr=addr,
        now=clock(),
    )


def activation_mails(sessions: sessionmaker[Session]) -> int:
    with transaction(sessions) as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(MailOutbox)
                .where(MailOutbox.template == "activation")
            )
            or 0
        )


def test_only_a_pending_account_with_its_broker_number_gets_a_mail(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    outbox_sealer: Sealer,
    settings: LoginSettings,
    make_account: MakeAccount,
) -> None:
    make_account(email="neu@example.org", password=None, status=UserStatus.PENDING)
    make_account(email="aktiv@example.org")
    make_account(email="gesperrt@example.org", password=None, status=UserStatus.DISABLED)
    assert not ask(sessions, clock, outbox_sealer, settings, "neu@example.org", "60/999/4567")
    assert not ask(sessions, clock, outbox_sealer, settings, "aktiv@example.org")
    assert not ask(sessions, clock, outbox_sealer, settings, "gesperrt@example.org")
    assert not ask(sessions, clock, outbox_sealer, settings, "nobody@example.org")
    assert activation_mails(sessions) == 0
    assert ask(sessions, clock, outbox_sealer, settings, "Neu@Example.org", "601234567")
    clock.advance(timedelta(minutes=1))
    assert ask(sessions, clock, outbox_sealer, settings, "neu@example.org")
    with transaction(sessions) as s:
        rows = s.scalars(select(ActivationToken).order_by(ActivationToken.id)).all()
        assert len(rows) == 2 and rows[0].expires_at <= clock() < rows[1].expires_at
    assert activation_mails(sessions) == 2


def test_throttled_per_account_and_per_address(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    outbox_sealer: Sealer,
    make_account: MakeAccount,
) -> None:
    settings = LoginSettings(recovery_mails_per_account=2, recovery_requests_per_address=3)
    make_account(email="neu@example.org", password=None, status=UserStatus.PENDING)
    sent = [
        ask(sessions, clock, outbox_sealer, settings, "neu@example.org", addr=f"10.0.0.{n}")
        for n in range(3)
    ]
    assert sent == [True, True, False]
    clock.advance(settings.recovery_mail_window)
    results = [
        ask(sessions, clock, outbox_sealer, settings, email, addr="10.0.1.1")
        for email in ("a@example.org", "b@example.org", "neu@example.org")
    ]
    assert results == [False, False, False]  # the third request of the address: locked
    assert activation_mails(sessions) == 2
