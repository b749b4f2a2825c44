"""Issue 14, seed 000: the 2FA set-up in three steps over real TLS, with the code from the real
SMTP sink: wrong, expired (moved clock), exhausted and another session's codes are refused, a
TAN session is refused at step 1, mails are throttled; the pages that ask for more lead to the
set-up; a passkey counts as a second factor."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pyotp
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.logins._setup_code import SETUP_CODE_KEY, SETUP_VERIFIED_KEY
from store import AuditEvent, MailOutbox, PasskeyCredential, User, WebSession, transaction
from tests.conftest import FakeClock
from tests.logins.web.setup_steps import TOTP_KEY, enrol_totp, mailed_setup_code
from tests.logins.web.test_email_only_sessions import REFUSED_DE, tan_session
from tests.logins.web.test_password_pages import PASSWORD, login, set_password

SETUP = "/_gateway/2fa/setup"


async def logged_in(b: Any, make_user: Any, sessions: Any, email: str = "anna@example.org") -> int:
    uid: int = make_user(email=email, name="Anna Muster").id
    set_password(sessions, uid)
    status, _, _ = await login(b, email)
    assert status == 303
    return uid


async def send_code(b: Any, mailbox: Any, next_path: str = "/") -> str:
    await b.get(f"{SETUP}?next={next_path}")
    status, body, _ = await b.post(SETUP, {"action": "send", "next": next_path})
    assert status == 200 and 'name="code"' in body, body[:300]
    return await mailed_setup_code(mailbox)


async def enter(b: Any, code: str, next_path: str = "/") -> tuple[int, str]:
    status, body, _ = await b.post(SETUP, {"action": "confirm", "code": code, "next": next_path})
    return status, body


async def reconfirm_password(b: Any) -> None:
    await b.get(f"/_gateway/reauth?next={SETUP}&level=basic")
    status, _, _ = await b.post(
        "/_gateway/reauth",
        {"kind": "password", "level": "basic", "password": PASSWORD, "next": SETUP},
        follow=False,
    )
    assert status == 303


def totp_started(sessions: sessionmaker[Session], uid: int) -> bool:
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None
        return user.totp_secret_sealed is not None


async def test_three_steps_with_the_mailed_code_then_totp_is_asked_for(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    mailbox: Any,
    clock: FakeClock,
) -> None:
    gw = await gateway()
    b = browser_for(gw)
    uid = await logged_in(b, make_user, sessions)
    # Without step 1 the enrolment is not open: it sends the broker to step 1.
    async with b.client.get(gw.url + "/_gateway/account/totp?next=/vertrag") as r:
        assert r.url.path == SETUP and r.url.query["next"] == "/vertrag"
        body = await r.text()
    assert "Einmalig mit Code per E-Mail verifizieren" in body and 'aria-current="step"' in body
    assert "anna@example.org" in body and not totp_started(sessions, uid)

    code = await send_code(b, mailbox, "/vertrag")
    text = await mailbox.last_text()
    assert "Guten Tag Anna Muster" in text and "15 Minuten gültig" in text
    with transaction(sessions) as s:
        row = s.scalars(select(WebSession).where(WebSession.user_id == uid)).one()
        stored = json.dumps(row.data)
    assert code not in stored and SETUP_CODE_KEY in stored  # SECURITY: only its HMAC

    status, body = await enter(b, code, "/vertrag")
    assert status == 200 and "Zwei-Faktor-Methode auswählen" in body
    assert 'href="/_gateway/account/totp?next=%2Fvertrag"' in body
    status, body = await b.get("/_gateway/account/totp?next=/vertrag")
    secret = TOTP_KEY.search(body).group(1).replace(" ", "")  # type: ignore[union-attr]
    status, body, _ = await b.post(
        "/_gateway/account/totp", {"code": pyotp.TOTP(secret).at(clock()), "next": "/vertrag"}
    )
    assert status == 200 and body.count("<li><code>") == 10
    assert 'href="/_gateway/2fa/setup/done?method=totp&amp;next=%2Fvertrag"' in body
    status, body = await b.get("/_gateway/2fa/setup/done?method=totp&next=/vertrag")
    assert "Die Authenticator-App ist eingerichtet." in body
    assert "Ab Ihrer nächsten Anmeldung" in body and 'href="/vertrag"' in body
    # The confirmation was used up: a further enrolment needs a new code.
    with transaction(sessions) as s:
        data = json.dumps([r.data for r in s.scalars(select(WebSession))])
    assert SETUP_VERIFIED_KEY not in data

    clock.advance(timedelta(minutes=1))
    fresh = browser_for(gw)
    status, _, response = await login(fresh, "anna@example.org", next_path="/vertrag")
    assert response.headers["Location"] == "/_gateway/login/second-factor?next=%2Fvertrag"


async def test_wrong_expired_and_too_many_codes_are_refused(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    mailbox: Any,
    clock: FakeClock,
) -> None:
    gw = await gateway()
    b = browser_for(gw)
    uid = await logged_in(b, make_user, sessions)
    await b.get(SETUP)
    status, body = await enter(b, "123456")
    assert status == 400 and "Bitte fordern Sie zuerst einen Code an." in body

    code = await send_code(b, mailbox)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    status, body = await enter(b, wrong)
    assert status == 400 and "Der Code ist falsch. Sie haben noch 4 Versuche." in body
    assert 'aria-invalid="true"' in body

    # Expired after 15 minutes: the right code no longer helps (clock moved, no sleep).
    clock.advance(timedelta(minutes=14))
    await b.get("/_gateway/account")  # the session stays alive (15 minutes idle)
    clock.advance(timedelta(minutes=1, seconds=1))
    await reconfirm_password(b)  # the login is no longer fresh: the re-authentication
    await b.get(SETUP)
    status, body = await enter(b, code)
    assert status == 400 and "Der Code ist abgelaufen" in body

    # Five wrong entries void the code: even the right one is refused afterwards.
    code = await send_code(b, mailbox)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for left in (4, 3, 2, 1):
        status, body = await enter(b, wrong)
        assert f"noch {left} Versuche" in body
    status, body = await enter(b, wrong)
    assert status == 400 and "zu oft falsch eingegeben" in body
    status, body = await enter(b, code)
    assert status == 400 and "Bitte fordern Sie zuerst einen Code an." in body
    status, body = await b.get("/_gateway/account/totp", follow=False)
    assert status == 303 and not totp_started(sessions, uid)
    with transaction(sessions) as s:
        failed = s.scalar(
            select(func.count()).where(
                AuditEvent.action == "twofa.setup.code_confirm", AuditEvent.outcome == "failed"
            )
        )
    assert failed == 9  # missing, wrong, expired, 4 wrong, exhausted, missing


async def test_sending_is_throttled(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    mailbox: Any,
    clock: FakeClock,
) -> None:
    gw = await gateway()
    b = browser_for(gw)
    uid = await logged_in(b, make_user, sessions)
    await send_code(b, mailbox)
    status, body, _ = await b.post(SETUP, {"action": "send"})
    assert status == 429 and "Bitte warten Sie kurz" in body
    # Another session of the same broker does not reset the count.
    other = browser_for(gw)
    await login(other, "anna@example.org")
    await other.get(SETUP)
    status, body, _ = await other.post(SETUP, {"action": "send"})
    assert status == 429
    clock.advance(timedelta(seconds=61))
    status, body, _ = await other.post(SETUP, {"action": "send"})
    assert status == 200
    with transaction(sessions) as s:
        mails = s.scalar(
            select(func.count()).where(
                MailOutbox.user_id == uid, MailOutbox.kind == "twofa_setup_code"
            )
        )
    assert mails == 2


async def test_a_code_from_another_users_session_is_refused(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    mailbox: Any,
) -> None:
    gw = await gateway()
    anna, bert = browser_for(gw), browser_for(gw)
    await logged_in(anna, make_user, sessions, "anna@example.org")
    await logged_in(bert, make_user, sessions, "bert@example.org")
    annas_code = await send_code(anna, mailbox)
    await send_code(bert, mailbox)
    status, body = await enter(bert, annas_code)
    assert status == 400 and "Der Code ist falsch" in body
    # Nor in a second session of Anna's own: the code belongs to the session it was sent in.
    second = browser_for(gw)
    await login(second, "anna@example.org")
    await second.get(SETUP)
    status, body = await enter(second, annas_code)
    assert status == 400 and "Bitte fordern Sie zuerst einen Code an." in body
    status, body = await enter(anna, annas_code)
    assert status == 200 and 'id="passkey-register"' in body


async def test_tan_session_is_refused_at_step_one(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    mailbox: Any,
) -> None:
    gw = await gateway()
    uid = make_user(email="anna@example.org", broker="60/123/4567").id
    set_password(sessions, uid)
    b = browser_for(gw)
    await tan_session(b, mailbox)
    for path in (SETUP, f"{SETUP}/method"):
        status, body = await b.get(path, follow=False)
        assert status == 403 and REFUSED_DE in body, path
    await b.get("/_gateway/account")
    status, body, _ = await b.post(SETUP, {"action": "send"}, follow=False)
    assert status == 403 and REFUSED_DE in body
    with transaction(sessions) as s:
        assert not s.scalar(select(func.count()).where(MailOutbox.kind == "twofa_setup_code"))


async def test_code_mail_and_pages_in_english_and_dutch(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    mailbox: Any,
) -> None:
    gw = await gateway()
    for language, title, mail in (
        ("en", "Verify once with a code sent by email", "Your code: "),
        ("nl", "Eenmalig verifiëren met een code per e-mail", "Uw code: "),
    ):
        b = browser_for(gw, language=language)
        uid = make_user(email=f"{language}@example.org", locale=language).id
        set_password(sessions, uid)
        await login(b, f"{language}@example.org")
        status, body = await b.get(SETUP)
        assert status == 200 and title in body
        await b.post(SETUP, {"action": "send"})
        assert mail in await mailbox.last_text()


async def test_strong_route_prompt_offers_set_up_now_and_not_now(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    mailbox: Any,
    clock: FakeClock,
) -> None:
    deadline = clock() + timedelta(days=30)
    gw = await gateway(twofa_deadline=deadline.strftime("%Y-%m-%dT%H:%M:%SZ"))
    b = browser_for(gw)
    await logged_in(b, make_user, sessions)
    status, body = await b.get("/vertrag?x=1")
    assert status == 403 and "Richten Sie sie jetzt ein oder später" in body
    assert "Nicht jetzt" in body and "Jetzt nicht" not in body
    assert 'href="/_gateway/2fa/setup?next=/vertrag%3Fx%3D1">Jetzt einrichten' in body
    # "Jetzt einrichten": the three steps, then back to the original page.
    await enrol_totp(b, mailbox, clock, next_path="/vertrag?x=1")
    status, body = await b.get("/_gateway/2fa/setup/done?method=totp&next=/vertrag%3Fx%3D1")
    assert 'href="/vertrag?x=1"' in body
    status, body = await b.get("/vertrag?x=1")
    assert status == 200 and json.loads(body)["headers"]["x-brokergate-level"] == "strong"


async def test_a_passkey_counts_as_second_factor_on_the_account_and_login_pages(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    gw = await gateway()
    b = browser_for(gw)
    uid = make_user(email="anna@example.org").id
    set_password(sessions, uid)
    with transaction(sessions) as s:
        s.add(
            PasskeyCredential(
                user_id=uid,
                credential_id=b"\x01" * 16,
                public_key=b"\x02" * 16,
                name="Laptop",
                created_at=clock(),
            )
        )
    _status, _, response = await login(b, "anna@example.org")
    assert response.headers["Location"].startswith("/_gateway/login/second-factor")
    _, body = await b.get(response.headers["Location"])
    assert "Oder mit Passkey" not in body
    assert "Bestätigen Sie Ihre Anmeldung mit Ihrem Passkey" in body
    assert 'id="passkey-login"' in body
    await account_page_counts_a_passkey(browser_for(gw), make_user, sessions, clock)


async def account_page_counts_a_passkey(
    b: Any, make_user: Any, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    """A broker with a passkey and no app: the account page says 2FA is set up."""
    uid = await logged_in(b, make_user, sessions, "bert@example.org")
    _status, body = await b.get("/_gateway/account")
    assert "nicht eingerichtet" in body  # no factor at all yet
    with transaction(sessions) as s:
        s.add(
            PasskeyCredential(
                user_id=uid,
                credential_id=b"\x03" * 16,
                public_key=b"\x04" * 16,
                name="Telefon",
                created_at=clock(),
            )
        )
    _, body = await b.get("/_gateway/account")
    assert "Zwei-Faktor-Anmeldung ist eingerichtet: mit Passkey" in body
    assert "nicht eingerichtet" not in body and "Telefon" in body
