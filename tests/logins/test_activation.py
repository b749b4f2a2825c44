"""Account activation: emailed one-time link, 7 days, sets the first password."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.logins import (
    ActivationInvalid,
    EnrolmentError,
    InvalidCredentials,
    LoginSettings,
    PasswordRejected,
    activate,
    change_password,
    check_activation,
    login_with_password,
    send_activation,
)
from store import (
    ActivationToken,
    MailOutbox,
    Sealer,
    User,
    UserStatus,
    open_mail_secrets,
    transaction,
)
from tests.conftest import FakeClock
from tests.logins.conftest import PASSWORD, MakeAccount, audit_events

LINK_BASE = "https://portal.example.org/_gateway/activate/"
NEW = "a brand new long passphrase"


def send(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    settings: LoginSettings,
    sealer: Sealer,
    uid: int,
) -> str:
    with transaction(sessions) as s:
        sent = send_activation(
            s,
            user_id=uid,
            link_base=LINK_BASE,
            settings=settings,
            mail_sealer=sealer,
            actor="ops:alice",
            now=clock(),
        )
        mail = s.get(MailOutbox, sent.outbox_id)
        assert mail is not None
        link = open_mail_secrets(mail, sealer)["link"]
    assert link.startswith(LINK_BASE)
    return link.removeprefix(LINK_BASE)


def test_activation_mail_and_first_password(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    settings: LoginSettings,
    outbox_sealer: Sealer,
    make_account: MakeAccount,
) -> None:
    uid = make_account(
        email="new@example.org",
        name="Nina Neu",
        password=None,
        status=UserStatus.PENDING,
        locale="nl",
    )
    token = send(sessions, clock, settings, outbox_sealer, uid)
    with transaction(sessions) as s:
        (mail,) = s.scalars(select(MailOutbox)).all()
        assert (mail.kind, mail.template, mail.locale, mail.to_addr) == (
            "activation",
            "activation",
            "nl",
            "new@example.org",
        )
        assert mail.context == {"name": "Nina Neu", "valid_days": 7}
        (row,) = s.scalars(select(ActivationToken)).all()
        assert row.token_hash != token and row.expires_at == clock() + timedelta(days=7)
    assert check_activation(sessions, token=token, now=clock()) == "new@example.org"
    with pytest.raises(PasswordRejected):
        activate(
            sessions,
            token=token,
            password="short",
            repeat="short",
            settings=settings,
            client_addr=None,
            now=clock(),
        )
    uid2 = activate(
        sessions,
        token=token,
        password=NEW,
        repeat=NEW,
        settings=settings,
        client_addr="::1",
        now=clock(),
    )
    assert uid2 == uid
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None and user.status == UserStatus.ACTIVE
    assert (
        login_with_password(
            sessions,
            identifier="new@example.org",
            password=NEW,
            client_addr=None,
            settings=settings,
            now=clock(),
        ).user_id
        == uid
    )
    with pytest.raises(ActivationInvalid) as used:
        activate(
            sessions,
            token=token,
            password=NEW,
            repeat=NEW,
            settings=settings,
            client_addr=None,
            now=clock(),
        )
    assert used.value.why == "used"
    actions = [(e.action, e.actor) for e in audit_events(sessions)]
    assert ("user.activation.sent", "ops:alice") in actions
    assert ("user.activate", f"user:{uid}") in actions


def test_link_expires_after_7_days_and_resend_voids_the_old_one(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    settings: LoginSettings,
    outbox_sealer: Sealer,
    make_account: MakeAccount,
) -> None:
    uid = make_account(password=None, status=UserStatus.PENDING)
    first = send(sessions, clock, settings, outbox_sealer, uid)
    clock.advance(timedelta(days=7))
    with pytest.raises(ActivationInvalid) as expired:
        check_activation(sessions, token=first, now=clock())
    assert expired.value.why == "expired"
    second = send(sessions, clock, settings, outbox_sealer, uid)
    third = send(sessions, clock, settings, outbox_sealer, uid)
    with pytest.raises(ActivationInvalid):
        check_activation(sessions, token=second, now=clock())
    assert check_activation(sessions, token=third, now=clock())
    with pytest.raises(ActivationInvalid) as unknown:
        check_activation(sessions, token="not-a-token", now=clock())
    assert unknown.value.why == "unknown"


def test_no_activation_for_active_or_disabled_accounts(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    settings: LoginSettings,
    outbox_sealer: Sealer,
    make_account: MakeAccount,
) -> None:
    active = make_account()
    disabled = make_account(status=UserStatus.DISABLED, password=None)
    for uid in (active, disabled):
        with pytest.raises(EnrolmentError):
            send(sessions, clock, settings, outbox_sealer, uid)


def test_change_password_asks_for_the_current_one(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    settings: LoginSettings,
    make_account: MakeAccount,
) -> None:
    uid = make_account(email="anna@example.org")
    with pytest.raises(InvalidCredentials):
        change_password(
            sessions,
            user_id=uid,
            current="wrong",
            new=NEW,
            repeat=NEW,
            settings=settings,
            now=clock(),
        )
    change_password(
        sessions, user_id=uid, current=PASSWORD, new=NEW, repeat=NEW, settings=settings, now=clock()
    )
    with pytest.raises(InvalidCredentials):
        login_with_password(
            sessions,
            identifier="anna@example.org",
            password=PASSWORD,
            client_addr=None,
            settings=settings,
            now=clock(),
        )
    assert [e.outcome for e in audit_events(sessions, "user.password")] == ["failed", "ok"]
