"""The email-change service: nothing written on a refused address, hashed single-use token,
24 h validity, earlier links voided, audit details without secrets or addresses."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.logins._email_change import (
    check_email_change,
    confirm_email_change,
    mask_email,
    request_email_change,
)
from gateway.logins._errors import EmailChangeLinkInvalid, EmailChangeRejected
from gateway.logins._tokens import token_hash
from store import (
    AuditEvent,
    EmailChangeToken,
    MailOutbox,
    Sealer,
    User,
    open_mail_secrets,
    transaction,
)
from tests.conftest import FakeClock
from tests.logins.conftest import MakeAccount

BASE = "https://portal.example.org/_gateway/account/email/confirm/"


def ask(
    sessions: sessionmaker[Session], clock: FakeClock, sealer: Sealer, uid: int, new: str
) -> str:
    request_email_change(
        sessions,
        user_id=uid,
        new_email=new,
        link_base=BASE,
        mail_sealer=sealer,
        client_addr="127.0.0.1",
        now=clock(),
    )
    with transaction(sessions) as s:
        mail = s.scalars(
            select(MailOutbox)
            .where(MailOutbox.template == "email_change_confirm")
            .order_by(MailOutbox.id.desc())
        ).first()
        assert mail is not None
        return open_mail_secrets(mail, sealer)["link"].removeprefix(BASE)


def test_mask_email() -> None:
    assert mask_email("anna.neu@example.org") == "a***@example.org"


@pytest.mark.parametrize(
    ("new", "reason"),
    [("no address", "invalid"), ("ANNA@example.org", "same"), ("other@example.org", "taken")],
)
def test_refused_addresses_write_nothing(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    outbox_sealer: Sealer,
    make_account: MakeAccount,
    new: str,
    reason: str,
) -> None:
    uid = make_account(email="anna@example.org")
    make_account(email="other@example.org", broker="60/999/0001")
    with pytest.raises(EmailChangeRejected) as caught:
        ask(sessions, clock, outbox_sealer, uid, new)
    assert caught.value.reason == reason and caught.value.key == f"error.email_change.{reason}"
    with transaction(sessions) as s:
        assert s.scalars(select(EmailChangeToken)).all() == []
        assert s.scalars(select(MailOutbox)).all() == []


def test_token_hashed_single_use_and_expiring(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    outbox_sealer: Sealer,
    make_account: MakeAccount,
) -> None:
    uid = make_account(email="anna@example.org")
    older = ask(sessions, clock, outbox_sealer, uid, "first@example.org")
    token = ask(sessions, clock, outbox_sealer, uid, "Second@Example.org")
    with transaction(sessions) as s:
        rows = s.scalars(select(EmailChangeToken)).all()
        assert {r.token_hash for r in rows} == {token_hash(older), token_hash(token)}
        mails = {(m.template, m.to_addr) for m in s.scalars(select(MailOutbox))}
        assert ("email_change_notice", "anna@example.org") in mails
        assert ("email_change_confirm", "second@example.org") in mails
    with pytest.raises(EmailChangeLinkInvalid, match="expired"):
        check_email_change(sessions, token=older, now=clock())  # voided by the newer one
    assert check_email_change(sessions, token=token, now=clock()) == "second@example.org"
    ended: list[int] = []
    changed = confirm_email_change(
        sessions,
        token=token,
        client_addr=None,
        now=clock(),
        end_sessions=lambda _db, user_id: ended.append(user_id),
    )
    assert changed.old_email == "anna@example.org" and changed.new_email == "second@example.org"
    assert ended == [uid]
    with pytest.raises(EmailChangeLinkInvalid, match="used"):
        confirm_email_change(sessions, token=token, client_addr=None, now=clock())
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None and user.email == "second@example.org"
        for event in s.scalars(select(AuditEvent).where(AuditEvent.action.like("user.email%"))):
            text = json.dumps(event.details)
            assert "@" not in text and token not in text

    again = ask(sessions, clock, outbox_sealer, uid, "third@example.org")
    clock.advance(timedelta(hours=24))
    with pytest.raises(EmailChangeLinkInvalid, match="expired"):
        confirm_email_change(sessions, token=again, client_addr=None, now=clock())
    with pytest.raises(EmailChangeLinkInvalid, match="unknown"):
        confirm_email_change(sessions, token="nope", client_addr=None, now=clock())
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None and user.email == "second@example.org"
