"""Issue 16: the password change asks for the re-authentication before the form (nothing
typed is dropped), says so when the window ran out while typing, and a broker without a
password is told how to set one. Real gateway over TLS, the injected clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.logins import check_password
from store import User, WebSession, transaction
from tests.conftest import FakeClock
from tests.logins.web.test_password_pages import PASSWORD, login, set_password

NEW_PASSWORD = "a brand new passphrase 2026"
FORM = 'action="/_gateway/account/password"'
REAUTH_LINK = 'href="/_gateway/reauth?next=%2F_gateway%2Faccount%23password&amp;level=basic"'


def _password_is(sessions: sessionmaker[Session], user_id: int, password: str) -> bool:
    with transaction(sessions) as s:
        user = s.get(User, user_id)
        assert user is not None
        return check_password(user.password_hash, password)[0]


async def _logged_in(gateway: Any, browser_for: Any, make_user: Any, sessions: Any) -> Any:
    gw = await gateway()
    uid = make_user(email="paul@example.org").id
    set_password(sessions, uid)
    b = browser_for(gw)
    status, _, _ = await login(b, "paul@example.org")
    assert status == 303
    return b, uid


async def test_a_stale_login_confirms_first_and_then_gets_the_form(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    b, uid = await _logged_in(gateway, browser_for, make_user, sessions)
    status, body = await b.get("/_gateway/account")
    assert status == 200 and FORM in body  # fresh: the form right away
    clock.advance(timedelta(minutes=6))  # fresh_login is 5 minutes
    status, body = await b.get("/_gateway/account")
    assert status == 200 and FORM not in body and REAUTH_LINK in body
    assert "Danach haben Sie 5 Minuten Zeit, das neue Passwort einzugeben." in body
    status, _ = await b.get("/_gateway/reauth?next=%2F_gateway%2Faccount%23password&level=basic")
    assert status == 200
    status, _, response = await b.post(
        "/_gateway/reauth",
        {
            "password": PASSWORD,
            "level": "basic",
            "kind": "password",
            "next": "/_gateway/account#password",
        },
        follow=False,
    )
    assert status == 303 and response.headers["Location"] == "/_gateway/account#password"
    status, body = await b.get("/_gateway/account")
    assert FORM in body
    status, _, response = await b.post(
        "/_gateway/account/password",
        {"current": PASSWORD, "new": NEW_PASSWORD, "repeat": NEW_PASSWORD},
        follow=False,
    )
    assert status == 303 and "done=password_changed" in response.headers["Location"]
    assert _password_is(sessions, uid, NEW_PASSWORD)


async def test_a_window_that_ran_out_while_typing_says_so_and_changes_nothing(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    b, uid = await _logged_in(gateway, browser_for, make_user, sessions)
    status, body = await b.get("/_gateway/account")
    assert FORM in body
    clock.advance(timedelta(minutes=6))  # the broker typed slowly
    status, _, response = await b.post(
        "/_gateway/account/password",
        {"current": PASSWORD, "new": NEW_PASSWORD, "repeat": NEW_PASSWORD},
        follow=False,
    )
    location = response.headers["Location"]
    assert status == 303 and location.startswith("/_gateway/reauth?")
    assert "done%3Dpassword_again" in location
    assert _password_is(sessions, uid, PASSWORD)  # nothing changed, nothing kept
    status, body = await b.get(location)
    status, _, response = await b.post(
        "/_gateway/reauth",
        {
            "password": PASSWORD,
            "level": "basic",
            "kind": "password",
            "next": "/_gateway/account?done=password_again#password",
        },
        follow=False,
    )
    assert response.headers["Location"] == "/_gateway/account?done=password_again#password"
    status, body = await b.get("/_gateway/account?done=password_again")
    assert "Ihr Passwort wurde nicht geändert" in body and "noch einmal ein" in body
    assert FORM in body
    with transaction(sessions) as s:  # the new password was never stored in any form
        assert all(NEW_PASSWORD not in str(data) for data in s.scalars(select(WebSession.data)))


async def test_a_broker_without_a_password_is_told_how_to_set_one(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
) -> None:
    b, uid = await _logged_in(gateway, browser_for, make_user, sessions)
    status, body = await b.get("/_gateway/account")
    assert "ändern Sie Ihr Passwort" in body  # the hint for a broker with a password
    with transaction(sessions) as s:  # as for a broker who logs in by TAN or certificate
        user = s.get(User, uid)
        assert user is not None
        user.password_hash = None
    status, body = await b.get("/_gateway/account")
    assert status == 200 and "ändern Sie Ihr Passwort" not in body and FORM not in body
    assert "Für Ihren Zugang ist noch kein Passwort festgelegt." in body
    assert "einen Link an paul@example.org" in body
    assert 'id="password-set" href="/_gateway/password/forgot"' in body
    status, body = await b.get("/_gateway/password/forgot")
    assert status == 200 and 'name="email"' in body
    status, body = await b.get("/_gateway/account", headers={"Accept-Language": "en"})
    assert "Your account has no password yet." in body
