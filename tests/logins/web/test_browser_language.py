"""The language switch in real headless Chromium (issue 16): a broker whose browser asks
for German switches to Dutch on the login page of a portal path, logs in and lands on
that path (with its query), and every page of ours on the way is Dutch."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from sqlalchemy.orm import Session, sessionmaker

from store import User
from tests.conftest import FakeClock
from tests.logins.web.chrome import BROWSER_TEST_MARKS, Chrome, nss_db, start_chrome, upstream_json
from tests.logins.web.test_password_pages import PASSWORD, set_password

pytestmark = BROWSER_TEST_MARKS


async def test_switch_to_dutch_then_log_in_and_land_on_the_portal_path(
    gateway: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    chromes: list[Chrome],
    screenshots: Path,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    gw = await gateway(twofa_deadline=(clock() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    uid = make_user(email="joost@example.org", locale="de").id
    set_password(sessions, uid)
    home = tmp_path / "office"
    nss_db(home, gw.tls.ca)
    chrome = start_chrome(home=home, base=gw.url, language="de")
    chromes.append(chrome)

    page = await chrome.open("/antrag?tab=2")  # the login page, shown for the portal path
    assert 'lang="de"' in page and "Anmelden" in await chrome.visible_text()
    page = await chrome.click(".lang-switch button[value=nl]")
    assert await chrome.url() == gw.url + "/antrag?tab=2"  # the same page, its query kept
    assert 'lang="nl"' in page and "Inloggen" in await chrome.visible_text()
    assert '<span lang="nl" aria-current="true">Nederlands</span>' in page
    await chrome.screenshot(screenshots / "language-switch-nl.png")

    page = await chrome.click("a.button[href*='/login/password']")
    assert unquote(await chrome.url()) == gw.url + "/_gateway/login/password?next=/antrag?tab=2"
    assert "Inloggen met wachtwoord" in await chrome.visible_text()
    await chrome.fill("f-identifier", "joost@example.org")
    await chrome.fill("f-password", PASSWORD)
    page = await chrome.click("main form button[type=submit]")
    # redirected to the 2FA prompt: still Dutch, with the account menu
    assert "/_gateway/2fa/prompt" in await chrome.url()
    text = await chrome.visible_text()
    assert 'lang="nl"' in page and "Niet nu" in text and "Mijn account / Uitloggen" in text
    await chrome.screenshot(screenshots / "language-2fa-prompt-nl.png")
    page = await chrome.click("button[value=not_now]")
    assert await chrome.url() == gw.url + "/antrag?tab=2"
    assert upstream_json(page)["path"] == "/antrag?tab=2"

    page = await chrome.open("/_gateway/account")
    assert 'lang="nl"' in page and "Mijn account" in await chrome.visible_text()
    with sessions() as db:
        user = db.get(User, uid)
        assert user is not None and user.locale == "nl"  # the mails follow the choice
