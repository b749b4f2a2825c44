"""Issue 16 point 9: the idle logout says so on the next login page, keeps ``next=``, and
cannot be made to say it (or anything else) by a request; activity is recorded often enough
for a short ``idle_timeout``. Real gateway over TLS, the injected clock."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import FakeClock
from tests.logins.web.test_password_pages import login, set_password

NOTICE_DE = "Sie wurden nach 15 Minuten ohne Aktivität abgemeldet."
# After a password login without a second factor the 2FA prompt comes first (seed 000).
BACK_TO_THE_PAGE = "/_gateway/2fa/prompt?next=%2Fantrag%3Ftab%3D2"


async def _logged_in(
    gateway: Any, browser_for: Any, make_user: Any, sessions: Any, **settings: Any
) -> Any:
    language = settings.pop("language", "de")
    gw = await gateway(**settings)
    uid = make_user(email="ida@example.org").id
    set_password(sessions, uid)
    b = browser_for(gw, language=language)
    status, _, response = await login(b, "ida@example.org", next_path="/antrag?tab=2")
    assert status == 303 and response.headers["Location"] == BACK_TO_THE_PAGE
    status, body = await b.get("/antrag?tab=2")
    assert status == 200 and json.loads(body)["headers"]["x-brokergate-level"] == "basic"
    return b


async def test_the_login_page_after_an_idle_logout_says_why_and_leads_back(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    b = await _logged_in(gateway, browser_for, make_user, sessions)
    clock.advance(timedelta(minutes=16))
    status, body = await b.get("/antrag?tab=2")
    assert status == 401 and NOTICE_DE in body and 'role="status"' in body
    assert 'href="/_gateway/login/password?next=/antrag%3Ftab%3D2"' in body
    # Still so on the next page the broker opens (the ended row keeps the mark) ...
    status, body = await b.get("/_gateway/login?next=/antrag")
    assert status == 200 and NOTICE_DE in body
    # ... until the next login, which returns to the page.
    status, _, response = await login(b, "ida@example.org", next_path="/antrag?tab=2")
    assert status == 303 and response.headers["Location"] == BACK_TO_THE_PAGE
    status, body = await b.get("/antrag?tab=2")
    assert status == 200 and json.loads(body)["path"] == "/antrag?tab=2"
    # A normal logout afterwards: the login page says nothing about inactivity.
    await b.get("/_gateway/account")
    status, body, _ = await b.post("/_gateway/logout", {})
    assert status == 200
    status, body = await b.get("/antrag")
    assert status == 401 and "ohne Aktivität" not in body


async def test_the_notice_names_the_configured_timeout_in_the_page_language(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    b = await _logged_in(
        gateway,
        browser_for,
        make_user,
        sessions,
        idle_timeout=timedelta(seconds=40),
        language="en",
    )
    clock.advance(timedelta(seconds=41))
    status, body = await b.get("/antrag")
    assert status == 401 and "You were signed out after 40 seconds without activity." in body
    status, body = await b.get("/antrag", headers={"Accept-Language": "nl"})
    assert "U bent na 40 seconden zonder activiteit afgemeld." in body


async def test_no_notice_on_a_fresh_visit_a_forged_request_or_an_idle_login_form(
    gateway: Any, browser_for: Any, clock: FakeClock
) -> None:
    gw = await gateway()
    b = browser_for(gw)
    status, body = await b.get("/antrag")
    assert status == 401 and "ohne Aktivität" not in body  # a fresh visit
    # Nothing in the request chooses the notice or its text.
    for path in (
        "/_gateway/login?idle=1&next=/antrag",
        "/_gateway/login?idle_after=Sie+wurden+gehackt&notice=idle",
        "/antrag?idle=1",
    ):
        status, body = await b.get(path)
        assert 'class="notice"' not in body and "ohne Aktivität" not in body, path
        assert "Sie wurden gehackt" not in body, path  # the language switch's back link
        # carries the query URL-encoded (Sie+wurden+gehackt), never as page text
    forged = browser_for(gw)
    status, body = await forged.get("/antrag", headers={"Cookie": "__Host-brokergate=" + "A" * 43})
    assert status == 401 and "ohne Aktivität" not in body
    # A login form left open (a pre-login session, nobody logged in) is no logout.
    status, _ = await b.get("/_gateway/login/password?next=/antrag")
    assert status == 200
    clock.advance(timedelta(minutes=16))
    status, body = await b.get("/antrag")
    assert status == 401 and "ohne Aktivität" not in body


async def test_a_broker_clicking_every_ten_seconds_stays_logged_in_with_a_20s_timeout(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    """Activity was written at most once a minute: a 20-second idle timeout logged out a
    broker who clicked every 10 seconds (issue 16)."""
    b = await _logged_in(
        gateway, browser_for, make_user, sessions, idle_timeout=timedelta(seconds=20)
    )
    for second in range(10, 130, 10):
        clock.advance(timedelta(seconds=10))
        status, body = await b.get("/antrag")
        assert status == 200, f"logged out after {second} s of clicking"
    clock.advance(timedelta(seconds=21))
    status, body = await b.get("/antrag")
    assert status == 401 and "nach 20 Sekunden ohne Aktivität abgemeldet" in body
