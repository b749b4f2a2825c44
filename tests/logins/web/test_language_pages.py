"""The language switch over real TLS (issue 16): it keeps the page's query, sticks in a
cookie over Accept-Language on every later page, and becomes the user's locale (their
mails follow) only through a CSRF-checked form or a login; the account menu on the pages
shown for portal paths; the broker login page's single heading."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from store import User
from tests.conftest import FakeClock
from tests.logins.conftest import audit_events
from tests.logins.web.test_password_pages import login, set_password
from tests.logins.web.test_tan_pages import start, tan_from

SWITCH = re.compile(r'<nav class="lang-switch".*?</nav>', re.S)


def switch_of(page: str) -> str:
    match = SWITCH.search(page)
    assert match, page[:1500]
    return match.group(0)


def back_of(page: str) -> str:
    match = re.search(r'name="back" value="([^"]*)"', switch_of(page))
    assert match
    return match.group(1).replace("&amp;", "&")


def locale_of(sessions: sessionmaker[Session], user_id: int) -> str:
    with sessions() as db:
        user = db.get(User, user_id)
        assert user is not None
        return user.locale


async def choose(b: Any, language: str, *, csrf: bool = True) -> Any:
    """Press the switch's button for ``language`` on the last page (not following)."""
    form = {"lang": language, "back": back_of(b.last)}
    if not csrf:
        form["csrf"] = "stale"
    _, _, response = await b.post("/_gateway/language", form, follow=False, csrf=csrf)
    return response


async def test_the_switch_keeps_next_and_the_choice_sticks_over_accept_language(
    gateway: Any, browser_for: Any, make_user: Any, sessions: sessionmaker[Session]
) -> None:
    gw = await gateway()
    uid = make_user(email="anna@example.org", locale="de").id
    set_password(sessions, uid)
    b = browser_for(gw, language="de")
    status, page = await b.get("/_gateway/login/password?next=/antrag&x=1")
    assert status == 200 and 'lang="de"' in page
    switch = switch_of(page)
    # each language in its own language; the current one marked, the others buttons
    assert '<span lang="de" aria-current="true">Deutsch</span>' in switch
    assert '<button name="lang" value="nl" lang="nl">Nederlands</button>' in switch
    assert '<button name="lang" value="en" lang="en">English</button>' in switch
    assert back_of(page) == "/_gateway/login/password?next=/antrag&x=1"

    response = await choose(b, "nl", csrf=False)  # no token needed for the cookie alone
    assert response.status == 303
    assert response.headers["Location"] == "/_gateway/login/password?next=/antrag&x=1"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("__Host-bg-lang=nl;")
    for part in ("Secure", "Path=/", "SameSite=Lax", "Max-Age=31536000"):
        assert part in cookie, cookie

    status, page = await b.get(response.headers["Location"])
    assert status == 200 and 'lang="nl"' in page and "Inloggen" in page
    assert 'name="next" value="/antrag"' in page
    assert '<span lang="nl" aria-current="true">Nederlands</span>' in switch_of(page)
    # another page of ours, and the login page shown for a portal path: still Dutch,
    # although the browser asks for German
    _, page = await b.get("/_gateway/login/broker?next=/antrag")
    assert 'lang="nl"' in page and "Inloggen met adviseursnummer" in page
    status, page = await b.get("/antrag")
    assert status == 401 and 'lang="nl"' in page
    assert back_of(page) == "/antrag"

    # The choice made before the login becomes the user's locale at the login.
    assert locale_of(sessions, uid) == "de"
    status, _, response = await login(b, "anna@example.org")
    assert status == 303
    assert locale_of(sessions, uid) == "nl"


async def test_the_switch_refuses_other_places_and_unknown_languages(
    gateway: Any, browser_for: Any
) -> None:
    gw = await gateway()
    b = browser_for(gw, language="en")
    await b.get("/_gateway/login")
    for back in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        _, _, response = await b.post(
            "/_gateway/language", {"lang": "nl", "back": back}, follow=False, csrf=False
        )
        assert response.status == 303 and response.headers["Location"] == "/", back
    status, body, response = await b.post(
        "/_gateway/language", {"lang": "fr", "back": "/x"}, follow=False, csrf=False
    )
    assert status == 400 and "Set-Cookie" not in response.headers
    # one clear page, in the language chosen above (the cookie), not Accept-Language's
    assert "Ongeldig verzoek" in body and "Laad de pagina opnieuw" in body


async def test_a_logged_in_choice_becomes_the_locale_only_with_the_csrf_token(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    mailbox: Any,
) -> None:
    gw = await gateway()
    uid = make_user(email="bert@example.org", broker="60/123/4567", locale="de").id
    b = browser_for(gw, language="de")
    # TAN login in German (the stored locale stays: nothing was chosen)
    await start(b, "60/123/4567", "bert@example.org")
    await b.get("/_gateway/login/broker/tan?next=/antrag")
    tan = tan_from(await mailbox.last_text())
    status, _, _ = await b.post(
        "/_gateway/login/broker/tan", {"tan": tan, "next": "/antrag"}, follow=False
    )
    assert status == 303 and locale_of(sessions, uid) == "de"

    status, page = await b.get("/_gateway/account")
    assert status == 200 and "Mein Konto" in page
    # a forged or stale token: the cookie, but no write to the store
    response = await choose(b, "en", csrf=False)
    assert response.status == 303 and response.headers["Location"] == "/_gateway/account"
    assert locale_of(sessions, uid) == "de"
    _, page = await b.get("/_gateway/account")
    assert 'lang="en"' in page and "My account" in page
    # the form with the session's token: the user's locale, so the mails follow
    response = await choose(b, "nl")
    assert response.status == 303 and locale_of(sessions, uid) == "nl"
    _, page = await b.get("/_gateway/account")
    assert 'lang="nl"' in page and "Mijn account" in page
    # the change is audited (once: choosing the same language again writes nothing)
    await choose(b, "nl")
    events = [e for e in audit_events(sessions, "user.locale") if e.user_id == uid]
    assert [e.details for e in events] == [{"from": "de", "to": "nl"}]
    assert events[0].actor == f"user:{uid}"


async def test_the_account_menu_on_the_pages_shown_for_portal_paths(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    deadline = (clock() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for twofa_deadline, template_text in (
        (None, "Zusätzliche Anmeldung erforderlich"),  # the step-up page
        (deadline, "Zwei-Faktor-Anmeldung einrichten"),  # the 2FA prompt
    ):
        settings = {} if twofa_deadline is None else {"twofa_deadline": twofa_deadline}
        gw = await gateway(**settings)
        uid = make_user().id
        set_password(sessions, uid)
        with sessions() as db:
            email = db.get(User, uid).email  # type: ignore[union-attr]
        b = browser_for(gw)
        status, page = await b.get("/vertrag")
        assert status == 401 and "account-nav" not in page  # nobody logged in: no menu
        await login(b, email, next_path="/vertrag")
        status, page = await b.get("/vertrag")
        assert status == 403 and template_text in page, page[:2000]
        assert '<nav class="account-nav"' in page and "Mein Konto / Abmelden" in page
        assert back_of(page) == "/vertrag"


async def test_the_broker_login_page_has_one_heading(gateway: Any, browser_for: Any) -> None:
    gw = await gateway()
    for language, title in (
        ("de", "Anmelden mit Vermittlernummer"),
        ("en", "Sign in with broker number"),
        ("nl", "Inloggen met adviseursnummer"),
    ):
        b = browser_for(gw, language=language)
        _, page = await b.get("/_gateway/login/broker")
        main = page.split('<main id="main"', 1)[1]
        headings = re.findall(r"<h([1-6])[^>]*>(.*?)</h\1>", main, re.S)
        assert headings == [("1", title)], headings


async def test_mails_asked_for_on_the_pages_follow_the_choice(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    mailbox: Any,
) -> None:
    """Before any login the mail goes out in the language chosen on the page (the stored
    locale would be German); the login then stores the choice."""
    gw = await gateway()
    uid = make_user(email="lotte@example.org", broker="60/123/4567", locale="de").id
    b = browser_for(gw, language="de")
    await b.get("/_gateway/login/broker?next=/antrag")
    await choose(b, "nl", csrf=False)
    status, _, _ = await start(b, "60/123/4567", "lotte@example.org")
    assert status == 303
    text = await mailbox.last_text()
    assert "hierbij ontvangt u uw TAN" in text, text
    assert locale_of(sessions, uid) == "de"  # nobody has proven to be the user yet
    await b.get("/_gateway/login/broker/tan?next=/antrag")
    status, _, _ = await b.post(
        "/_gateway/login/broker/tan", {"tan": tan_from(text), "next": "/antrag"}, follow=False
    )
    assert status == 303 and locale_of(sessions, uid) == "nl"

    other = browser_for(gw, language="nl")
    await other.get("/_gateway/password/forgot")
    await choose(other, "en", csrf=False)
    await other.get("/_gateway/password/forgot")
    status, _, _ = await other.post("/_gateway/password/forgot", {"email": "lotte@example.org"})
    assert status == 200
    text = await mailbox.last_text()
    assert "chose “Forgot your password?”" in text, text
    assert locale_of(sessions, uid) == "nl"  # asking for a mail stores nothing
