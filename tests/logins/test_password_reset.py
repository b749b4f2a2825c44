""" "Passwort vergessen?" service (issue 14): a hashed single-use link of 30 minutes, a newer
link voids the older, used/expired/superseded links refused, the password rules, every other
session ended, a notice mailed, throttles per account and per address, the second factor
untouched, and nothing mailed for an unknown or disabled account."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.logins import LoginSettings
from gateway.logins._errors import PasswordRejected, PasswordResetLinkInvalid
from gateway.logins._password_reset import (
    check_password_reset,
    request_password_reset,
    reset_password,
)
from gateway.logins._passwords import check_password
from gateway.logins._tokens import token_hash
from store import (
    MailOutbox,
    PasswordResetToken,
    Sealer,
    User,
    UserStatus,
    open_mail_secrets,
    transaction,
)
from tests.conftest import FakeClock
from tests.logins.conftest import PASSWORD, MakeAccount, audit_events

BASE = "https://portal.example.org/_gateway/password/reset/"
NEW = "a new long passphrase 42"


def ask(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    sealer: Sealer,
    settings: LoginSettings,
    email: str,
    addr: str = "127.0.0.1",
) -> bool:
    return request_password_reset(
        sessions,
        email=email,
        link_base=BASE,
        mail_sealer=sealer,
        settings=settings,
        client_addr=addr,
        now=clock(),
    )


def last_token(sessions: sessionmaker[Session], sealer: Sealer) -> str:
    with transaction(sessions) as s:
        mail = s.scalars(
            select(MailOutbox)
            .where(MailOutbox.template == "password_reset_link")
            .order_by(MailOutbox.id.desc())
        ).first()
        assert mail is not None
        return open_mail_secrets(mail, sealer)["link"].removeprefix(BASE)


def mails(sessions: sessionmaker[Session], template: str) -> int:
    with transaction(sessions) as s:
        return (
            s.scalar(
                select(func.count()).select_from(MailOutbox).where(MailOutbox.template == template)
            )
            or 0
        )


def do_reset(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    sealer: Sealer,
    settings: LoginSettings,
    token: str,
    password: str = NEW,
    ended: list[int] | None = None,
) -> int:
    def end(_session: Session, user_id: int) -> int:
        if ended is not None:
            ended.append(user_id)
        return 2

    return reset_password(
        sessions,
        token=token,
        password=password,
        repeat=password,
        settings=settings,
        mail_sealer=sealer,
        client_addr="127.0.0.1",
        now=clock(),
        end_sessions=end,
    )


def test_link_sets_the_password_once_ends_sessions_and_notifies(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    outbox_sealer: Sealer,
    settings: LoginSettings,
    make_account: MakeAccount,
) -> None:
    uid = make_account(email="anna@example.org", locale="nl")
    assert ask(sessions, clock, outbox_sealer, settings, "Anna@Example.org")
    token = last_token(sessions, outbox_sealer)
    with transaction(sessions) as s:
        row = s.scalars(select(PasswordResetToken)).one()
        assert row.token_hash == token_hash(token) and token not in row.token_hash
        assert row.expires_at - row.created_at == timedelta(minutes=30)
        mail = s.scalars(select(MailOutbox)).one()
        assert mail.locale == "nl" and mail.to_addr == "anna@example.org"
    assert check_password_reset(sessions, token=token, now=clock()) == "anna@example.org"
    # A password against the rules: refused, and the link stays usable.
    with pytest.raises(PasswordRejected):
        do_reset(sessions, clock, outbox_sealer, settings, token, password="short")
    ended: list[int] = []
    assert do_reset(sessions, clock, outbox_sealer, settings, token, ended=ended) == uid
    assert ended == [uid]
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None and check_password(user.password_hash, NEW)[0]
        assert user.totp_confirmed_at is None  # a reset sets the password, nothing else
    assert mails(sessions, "password_reset_notice") == 1
    with pytest.raises(PasswordResetLinkInvalid) as used:
        do_reset(sessions, clock, outbox_sealer, settings, token, password="yet another phrase 7")
    assert used.value.why == "used"
    (event,) = audit_events(sessions, "user.password.reset")
    assert token not in str(event.details) and event.details["sessions_ended"] == 2


def test_expired_superseded_and_unknown_links_are_refused(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    outbox_sealer: Sealer,
    settings: LoginSettings,
    make_account: MakeAccount,
) -> None:
    uid = make_account(email="anna@example.org")
    ask(sessions, clock, outbox_sealer, settings, "anna@example.org")
    first = last_token(sessions, outbox_sealer)
    clock.advance(timedelta(minutes=1))
    ask(sessions, clock, outbox_sealer, settings, "anna@example.org")
    second = last_token(sessions, outbox_sealer)
    for token, why in ((first, "expired"), ("x" * 43, "unknown")):
        with pytest.raises(PasswordResetLinkInvalid) as refused:
            do_reset(sessions, clock, outbox_sealer, settings, token)
        assert refused.value.why == why
    clock.advance(timedelta(minutes=30))
    with pytest.raises(PasswordResetLinkInvalid) as late:
        check_password_reset(sessions, token=second, now=clock())
    assert late.value.why == "expired"
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None and check_password(user.password_hash, PASSWORD)[0]


def test_unknown_and_disabled_accounts_get_no_mail(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    outbox_sealer: Sealer,
    settings: LoginSettings,
    make_account: MakeAccount,
) -> None:
    make_account(email="gone@example.org", status=UserStatus.DISABLED)
    assert not ask(sessions, clock, outbox_sealer, settings, "nobody@example.org")
    assert not ask(sessions, clock, outbox_sealer, settings, "gone@example.org")
    assert not ask(sessions, clock, outbox_sealer, settings, "not an address")
    assert mails(sessions, "password_reset_link") == 0


def test_throttled_per_account_and_per_address(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    outbox_sealer: Sealer,
    make_account: MakeAccount,
) -> None:
    settings = LoginSettings(recovery_mails_per_account=2, recovery_requests_per_address=4)
    make_account(email="anna@example.org")
    make_account(email="bert@example.org")
    sent = [
        ask(sessions, clock, outbox_sealer, settings, "anna@example.org", addr=f"10.0.0.{n}")
        for n in range(3)
    ]
    assert sent == [True, True, False]  # per account, from any address
    clock.advance(settings.recovery_mail_window)
    assert ask(sessions, clock, outbox_sealer, settings, "anna@example.org", addr="10.0.0.9")
    # Per address: the fourth request of one address (any account) is not mailed.
    results = [
        ask(sessions, clock, outbox_sealer, settings, email, addr="10.0.1.1")
        for email in ("nobody@example.org", "x@example.org", "bert@example.org")
    ]
    assert results == [False, False, True]
    assert not ask(sessions, clock, outbox_sealer, settings, "bert@example.org", addr="10.0.1.1")
    assert mails(sessions, "password_reset_link") == 4


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="recovery_mails_per_account"):
        LoginSettings(recovery_mails_per_account=0)
    with pytest.raises(ValueError, match="password_reset_validity"):
        LoginSettings(password_reset_validity=timedelta(0))
