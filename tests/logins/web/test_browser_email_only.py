"""Issue 14 in real headless Chromium: a broker logged in with broker number + TAN (the TAN
read from the real SMTP sink) presses "Zertifikat herunterladen" and opens the authenticator
app's set-up, and is told to log in with the password instead; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tests.logins.web.chrome import BROWSER_TEST_MARKS, Chrome, nss_db, start_chrome
from tests.logins.web.test_browser_email_change import readable
from tests.logins.web.test_email_only_sessions import counts
from tests.logins.web.test_tan_pages import tan_from

pytestmark = BROWSER_TEST_MARKS

EMAIL = "tanja@example.org"
BROKER = "60/123/4567"


async def test_tan_session_refused_at_download_and_enrolment(
    gateway: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    mailbox: Any,
    chromes: list[Chrome],
    screenshots: Path,
    tmp_path: Path,
) -> None:
    gw = await gateway()
    make_user(email=EMAIL, broker=BROKER, name="Tanja Muster")
    chrome = start_chrome(home=tmp_path / "chrome", base=gw.url)
    chromes.append(chrome)
    nss_db(chrome.home, gw.tls.ca)

    await chrome.open("/_gateway/login/broker?next=/antrag")
    await chrome.fill("f-broker", BROKER)
    await chrome.fill("f-email", EMAIL)
    await chrome.click("form button[type=submit]")
    await chrome.fill("f-tan", tan_from(await mailbox.last_text()))
    await chrome.click("form button[type=submit]")
    assert (await chrome.url()).endswith("/antrag")

    await chrome.open("/_gateway/account")
    await chrome.click("form[action$='/account/certificate/download'] button[type=submit]")
    text = await readable(chrome, screenshots / "tan-refused-download.png")
    assert "Bitte mit Passwort anmelden" in text
    assert "Sie sind mit Vermittlernummer und TAN angemeldet" in text
    assert "Mit Passwort anmelden" in text
    assert not list(chrome.downloads.glob("*.p12"))

    await chrome.open("/_gateway/account/totp")
    text = await readable(chrome, screenshots / "tan-refused-totp.png")
    assert "Bitte mit Passwort anmelden" in text
    # The way out leads to the password login, back to the account afterwards.
    await chrome.click("a.button")
    assert "/_gateway/login/password?next=" in await chrome.url()
    assert counts(sessions) == (0, 0)
