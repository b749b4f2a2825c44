"""Issue 14: a session proven by mailbox access alone (broker number + TAN, or a browser
remembered after a TAN) must not download a certificate, enrol or replace a second factor;
it gets a page that says to log in with the password (and second factor) instead."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from store import Certificate, User, transaction
from tests.logins.web.setup_steps import pass_step_one
from tests.logins.web.test_password_pages import login, set_password
from tests.logins.web.test_tan_pages import start, tan_from

EMAIL = "anna@example.org"
BROKER = "60/123/4567"
REFUSED_DE = "Bitte mit Passwort anmelden"


async def tan_session(
    b: Any, mailbox: Any, *, remember: bool = False, email: str = EMAIL, broker: str = BROKER
) -> None:
    await start(b, broker, email)
    await b.get("/_gateway/login/broker/tan?next=/antrag")
    tan = tan_from(await mailbox.last_text())
    form = {"tan": tan, "next": "/antrag"}
    if remember:
        form["remember"] = "yes"
    status, _, _ = await b.post("/_gateway/login/broker/tan", form, follow=False)
    assert status == 303


def counts(sessions: sessionmaker[Session]) -> tuple[int, int]:
    with transaction(sessions) as s:
        certificates = s.scalar(select(func.count()).select_from(Certificate)) or 0
        totp = s.scalar(select(func.count()).where(User.totp_secret_sealed.is_not(None))) or 0
        return certificates, totp


async def assert_refused_everywhere(b: Any, language_text: str = REFUSED_DE) -> None:
    await b.get("/_gateway/account")
    csrf = b.csrf()
    for path in (
        "/_gateway/account/certificate/download",
        "/_gateway/account/totp",
        "/_gateway/account/totp/reset",
        "/_gateway/account/recovery-codes",
        "/_gateway/account/passkeys/remove",
    ):
        status, body, _ = await b.post(
            path, {"code": "123456", "passkey": "1", "csrf": csrf}, follow=False
        )
        assert status == 403 and language_text in body, path
        assert "/_gateway/login/password?next=" in body, path
    status, body = await b.get("/_gateway/account/totp", follow=False)
    assert status == 403 and language_text in body
    for path in ("/_gateway/account/passkeys/options", "/_gateway/account/passkeys/register"):
        status, answer = await b.post_json(path, {"csrf": csrf})
        assert status == 403 and "TAN" in answer["error"], path


async def test_tan_session_is_refused_then_a_password_login_may(
    gateway: Any, browser_for: Any, make_user: Any, mailbox: Any, sessions: Any
) -> None:
    gw = await gateway()
    uid = make_user(email=EMAIL, broker=BROKER, name="Anna Muster").id
    set_password(sessions, uid)
    b = browser_for(gw)
    await tan_session(b, mailbox)
    await assert_refused_everywhere(b)
    assert counts(sessions) == (0, 0)  # nothing issued, no enrolment begun

    # Re-confirming the password inside the TAN session does not lift it.
    await b.get("/_gateway/reauth?next=/_gateway/account&level=basic")
    status, _, _ = await b.post(
        "/_gateway/reauth",
        {"kind": "password", "level": "basic", "password": "correct horse battery staple"},
        follow=False,
    )
    assert status == 303
    await b.get("/_gateway/account")
    status, body, _ = await b.post("/_gateway/account/certificate/download", {}, follow=False)
    assert status == 403 and REFUSED_DE in body
    assert counts(sessions) == (0, 0)

    # The page's way out: the password login (the user has no second factor yet).
    status, _, _ = await login(b, EMAIL, next_path="/_gateway/account")
    assert status == 303
    await b.get("/_gateway/account")
    status, _, response = await b.post("/_gateway/account/certificate/download", {}, follow=False)
    assert status == 200 and response.headers["Content-Type"] == "application/x-pkcs12"
    # Step 1 of the 2FA set-up (the mailed code), then the enrolment is open.
    await pass_step_one(b, mailbox, next_path="/_gateway/account")
    status, body = await b.get("/_gateway/account/totp")
    assert status == 200 and REFUSED_DE not in body
    assert counts(sessions) == (1, 1)


async def test_remembered_device_session_is_refused_in_every_language(
    gateway: Any, browser_for: Any, make_user: Any, mailbox: Any, sessions: Any
) -> None:
    gw = await gateway()
    for n, (language, title) in enumerate(
        (("en", "Please sign in with your password"), ("nl", "Log in met uw wachtwoord"))
    ):
        email, broker = f"broker{n}@example.org", f"60/123/456{n}"
        make_user(email=email, broker=broker, locale=language)
        b = browser_for(gw, language=language)
        await tan_session(b, mailbox, remember=True, email=email, broker=broker)
        await b.get("/_gateway/account")
        await b.post("/_gateway/logout", {})
        # The remembered browser logs in with broker number + email alone.
        status, _, response = await start(b, broker, email)
        assert status == 303 and response.headers["Location"] == "/antrag"
        await assert_refused_everywhere(b, title)
    assert counts(sessions) == (0, 0)
