"""Changing the email address on "My account": fresh strong login, CSRF, validation, the
link mailed to the NEW address (24 h, single use), the notice to the OLD one, every session
ended, and the old certificate (SAN email) refused with a clear page afterwards."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store import AuditEvent, Certificate, MailOutbox, User, transaction
from tests.conftest import FakeClock, password_mail_for
from tests.logins.web.setup_steps import enrol_totp
from tests.logins.web.test_account_pages import download, logged_in, write_pem
from tests.logins.web.test_password_pages import login

EMAIL = "/_gateway/account/email"
LINK = re.compile(r"https://127\.0\.0\.1:\d+/_gateway/account/email/confirm/\S+")


async def strong_by_totp(b: Any, mailbox: Any, clock: FakeClock) -> str:
    """Enrol TOTP (step 1 with the mailed code first): the confirming code makes the
    session strong (and fresh) at once."""
    return await enrol_totp(b, mailbox, clock)


def outbox(sessions: sessionmaker[Session]) -> list[tuple[str, str]]:
    with transaction(sessions) as s:
        # The 2FA set-up's code (strong_by_totp) is not part of the email change.
        mails = s.scalars(select(MailOutbox).where(MailOutbox.template != "twofa_setup_code"))
        return [(m.template, m.to_addr) for m in mails]


def email_of(sessions: sessionmaker[Session], uid: int) -> str:
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None
        return user.email


async def request_change(b: Any, new: str) -> tuple[int, str]:
    status, body = await b.get(EMAIL)
    assert status == 200, body
    status, body, _ = await b.post(EMAIL, {"email": new})
    return status, body


async def test_needs_strong_then_fresh_login(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    mailbox: Any,
    login_settings: Any,
) -> None:
    gw = await gateway()
    b = browser_for(gw)
    await logged_in(b, make_user, sessions)  # password only: basic
    async with b.client.get(gw.url + EMAIL, allow_redirects=False) as r:
        assert r.headers["Location"].startswith("/_gateway/step-up?")
        assert "level=strong" in r.headers["Location"]
    await strong_by_totp(b, mailbox, clock)
    status, body = await b.get(EMAIL)
    assert status == 200 and "Neue E-Mail-Adresse" in body
    assert "neues Zertifikat herunter" in body  # said BEFORE the change
    csrf = b.csrf()
    clock.advance(login_settings.fresh_login + timedelta(seconds=1))
    for method in ("get", "post"):
        kwargs: dict[str, Any] = {"allow_redirects": False}
        if method == "post":
            kwargs["data"] = {"csrf": csrf, "email": "new@example.org"}
        async with getattr(b.client, method)(gw.url + EMAIL, **kwargs) as r:
            assert r.status == 303
            assert r.headers["Location"].startswith("/_gateway/reauth?next=")
            assert "level=strong" in r.headers["Location"]
    assert outbox(sessions) == []


async def test_bad_same_taken_address_and_missing_csrf_change_nothing(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    mailbox: Any,
) -> None:
    gw = await gateway()
    make_user(email="taken@example.org", broker="60/999/0001", name="Other")
    b = browser_for(gw)
    uid = await logged_in(b, make_user, sessions)
    await strong_by_totp(b, mailbox, clock)
    status, body = await request_change(b, "not an address")
    assert status == 400 and "Diese E-Mail-Adresse ist ungültig" in body
    status, body = await request_change(b, "Anna@Example.org")
    assert status == 400 and "bereits Ihre E-Mail-Adresse" in body
    status, body = await request_change(b, "TAKEN@example.org")
    assert status == 400 and "gehört bereits zu einem anderen Zugang" in body
    await b.get(EMAIL)
    status, _, _ = await b.post(EMAIL, {"email": "new@example.org"}, csrf=False)
    assert status == 403
    status, _, _ = await b.post(EMAIL, {"email": "new@example.org", "csrf": "forged"})
    assert status == 403
    assert outbox(sessions) == [] and email_of(sessions, uid) == "anna@example.org"


async def test_taken_message_in_english(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    mailbox: Any,
) -> None:
    gw = await gateway()
    make_user(email="taken@example.org", broker="60/999/0001", name="Other")
    b = browser_for(gw, language="en")
    await logged_in(b, make_user, sessions)
    await strong_by_totp(b, mailbox, clock)
    status, body = await request_change(b, "taken@example.org")
    assert status == 400 and "already belongs to another account" in body


async def test_change_confirmed_from_the_mailed_link(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    mailbox: Any,
    tmp_path: Path,
) -> None:
    gw = await gateway()
    b = browser_for(gw)
    uid = await logged_in(b, make_user, sessions)
    # A certificate with the OLD address in its SAN; its connection is strong and fresh.
    status, data, _ = await download(b)
    assert status == 200
    with transaction(sessions) as s:
        serial = s.scalars(select(Certificate.serial).where(Certificate.user_id == uid)).one()
    cert = write_pem(data, password_mail_for(sessions, serial), tmp_path, "old")
    c = browser_for(gw, cert=cert)
    other = browser_for(gw)  # a second, password session of the same broker
    await login(other, "anna@example.org")
    assert (await other.get("/_gateway/account"))[0] == 200

    status, body = await request_change(c, "Anna.Neu@Example.ORG")
    assert status == 200 and "anna.neu@example.org" in body
    messages = await mailbox.deliver()
    by_rcpt = {m["To"]: m for m in messages}
    assert "anna.neu@example.org" in by_rcpt and "anna@example.org" in by_rcpt
    notice = by_rcpt["anna@example.org"].get_body(preferencelist=("plain",)).get_content()
    assert "a***@example.org" in notice and "Maklerbetreuung" in notice
    assert "/confirm/" not in notice  # the link goes to the new address only
    confirm = by_rcpt["anna.neu@example.org"].get_body(preferencelist=("plain",)).get_content()
    match = LINK.search(confirm)
    assert match is not None
    path = match.group(0).removeprefix(gw.url)
    assert email_of(sessions, uid) == "anna@example.org"  # not before the link is confirmed

    fresh = browser_for(gw)  # opened in another browser, not logged in
    status, body = await fresh.get(path)
    assert status == 200 and "anna.neu@example.org" in body
    assert email_of(sessions, uid) == "anna@example.org"  # a GET (mail scanner) changes nothing
    status, _, _ = await fresh.post(path, {}, csrf=False)
    assert status == 403 and email_of(sessions, uid) == "anna@example.org"
    await fresh.get(path)
    status, body, _ = await fresh.post(path, {})
    assert status == 200 and "E-Mail-Adresse geändert" in body
    assert "/_gateway/account#certificate" in body  # the download is offered
    assert email_of(sessions, uid) == "anna.neu@example.org"

    # Every session of the broker ended.
    async with other.client.get(gw.url + "/_gateway/account", allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"].startswith("/_gateway/login")
    # The old certificate (old SAN email) no longer logs in: a clear page, not a crash.
    status, body = await c.get("/vertrag")
    assert status == 403 and "Ihr Zertifikat kann nicht verwendet werden" in body
    assert "neues Zertifikat" in body and "x-brokergate-method" not in body
    # The new address logs in with the password.
    renamed = browser_for(gw)
    await login(renamed, "anna.neu@example.org")
    status, body = await renamed.get("/_gateway/account")
    assert status == 200 and "anna.neu@example.org" in body

    # Single use.
    status, body = await fresh.get(path)
    assert status == 400 and "bereits verwendet" in body
    with transaction(sessions) as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "user.email.change")))
    assert len(events) == 1 and events[0].user_id == uid
    details = json.dumps(events[0].details)
    assert path.rsplit("/", 1)[1] not in details and "@" not in details


async def test_expired_unknown_and_taken_meanwhile_links_change_nothing(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    mailbox: Any,
) -> None:
    gw = await gateway()
    b = browser_for(gw)
    uid = await logged_in(b, make_user, sessions)
    await strong_by_totp(b, mailbox, clock)

    async def link_for(new: str) -> str:
        status, _ = await request_change(b, new)
        assert status == 200
        messages = await mailbox.deliver()
        mail = next(m for m in reversed(messages) if m["To"] == new)
        match = LINK.search(mail.get_body(preferencelist=("plain",)).get_content())
        assert match is not None
        return match.group(0).removeprefix(gw.url)

    # Taken by another user between the request and the confirmation.
    path = await link_for("meanwhile@example.org")
    make_user(email="meanwhile@example.org", broker="60/999/0002", name="Quick")
    x = browser_for(gw)
    await x.get(path)
    status, body, _ = await x.post(path, {})
    assert status == 400 and "inzwischen zu einem anderen Zugang" in body
    assert email_of(sessions, uid) == "anna@example.org"

    # A newer request voids the older link.
    older = await link_for("first@example.org")
    path = await link_for("late@example.org")
    status, body = await x.get(older)
    assert status == 400 and "abgelaufen" in body

    # Expired after 24 hours (clock moved, no sleeping).
    clock.advance(timedelta(hours=24, seconds=1))
    status, body = await x.get(path)
    assert status == 400 and "abgelaufen" in body
    await x.get("/_gateway/login/password")  # any form: a CSRF token of a live session
    status, body, _ = await x.post(path, {})
    assert status == 400 and "abgelaufen" in body
    status, body = await x.get("/_gateway/account/email/confirm/no-such-token")
    assert status == 400 and "Dieser Link ist ungültig" in body
    assert email_of(sessions, uid) == "anna@example.org"
