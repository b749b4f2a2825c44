""" "Passwort vergessen?" in real headless Chromium (issue 14): the link on the password page,
the link read from the real SMTP sink and opened in the browser, the new password set and
used to log in."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tests.logins.web.chrome import (
    BROWSER_TEST_MARKS,
    Chrome,
    nss_db,
    password_login,
    start_chrome,
)
from tests.logins.web.test_browser_email_change import readable
from tests.logins.web.test_password_pages import set_password

pytestmark = BROWSER_TEST_MARKS

EMAIL = "vergesslich@example.org"
NEW = "mein neues langes Passwort 7"


async def test_forgotten_password_with_the_mailed_link(
    gateway: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    mailbox: Any,
    chromes: list[Chrome],
    screenshots: Path,
    tmp_path: Path,
) -> None:
    gw = await gateway()
    uid = make_user(email=EMAIL, name="Vera Gesslich").id
    set_password(sessions, uid)
    chrome = start_chrome(home=tmp_path / "chrome", base=gw.url)
    chromes.append(chrome)
    nss_db(chrome.home, gw.tls.ca)

    await chrome.open("/_gateway/login/password?next=/antrag")
    await chrome.click("a[href$='/_gateway/password/forgot']")
    text = await readable(chrome, screenshots / "forgot-1-form.png")
    assert "Passwort vergessen" in text
    await chrome.fill("f-email", EMAIL)
    await chrome.click("form button[type=submit]")
    text = await readable(chrome, screenshots / "forgot-2-sent.png")
    assert "Wenn zu dieser Adresse ein Zugang gehört" in text

    link = re.search(r"https://\S+/_gateway/password/reset/\S+", await mailbox.last_text())
    assert link is not None
    path = "/_gateway" + link.group(0).split("/_gateway", 1)[1]
    await chrome.open(path)
    text = await readable(chrome, screenshots / "forgot-3-reset.png")
    assert "Neues Passwort festlegen" in text and EMAIL in text
    await chrome.fill("f-password", NEW)
    await chrome.fill("f-repeat", NEW)
    await chrome.click("form button[type=submit]")
    text = await readable(chrome, screenshots / "forgot-4-done.png")
    assert "Ihr neues Passwort ist gespeichert" in text

    # The new password logs in (the 2FA prompt of a basic login follows, seed 000) ...
    page = await password_login(chrome, EMAIL, "/antrag", password=NEW)
    assert "Zwei-Faktor-Authentifizierung aktivieren" in page
    await chrome.open("/_gateway/account")
    text = await readable(chrome, screenshots / "forgot-5-account.png")
    assert "Mein Konto" in text and EMAIL in text
