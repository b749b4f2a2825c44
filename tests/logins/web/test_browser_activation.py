""" "Konto aktivieren" on request in real headless Chromium (issue 14, seed 003 "Activeer hier
uw account"): the link on the password page, email + broker number, the activation mail read
from the real SMTP sink and opened in the browser, the first password set, then logged in
with it; and a link used once is refused with the way to ask for a new one."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from store import User, UserStatus, transaction
from tests.conftest import FakeClock
from tests.logins.web.chrome import (
    BROWSER_TEST_MARKS,
    Chrome,
    nss_db,
    password_login,
    start_chrome,
    upstream_json,
)
from tests.logins.web.test_browser_email_change import readable

pytestmark = BROWSER_TEST_MARKS

EMAIL = "neu.makler@example.org"
BROKER = "60/123/4567"
FIRST = "mein erstes langes Passwort 3"


async def test_activation_on_request_with_the_mailed_link(
    gateway: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    mailbox: Any,
    chromes: list[Chrome],
    screenshots: Path,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    gw = await gateway(twofa_deadline=(clock() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    uid = make_user(email=EMAIL, broker=BROKER, name="Nora Neu").id
    with transaction(sessions) as s:  # invited, never activated (the first link expired)
        user = s.get(User, uid)
        assert user is not None
        user.status, user.password_hash = UserStatus.PENDING, None
    chrome = start_chrome(home=tmp_path / "chrome", base=gw.url)
    chromes.append(chrome)
    nss_db(chrome.home, gw.tls.ca)

    await chrome.open("/_gateway/login/password?next=/antrag")
    await chrome.click("a[href$='/_gateway/activation/request']")
    text = await readable(chrome, screenshots / "activation-1-form.png")
    assert "Konto aktivieren" in text and "Vermittlernummer" in text
    await chrome.fill("f-email", EMAIL)
    await chrome.fill("f-broker", BROKER)
    await chrome.click("form button[type=submit]")
    text = await readable(chrome, screenshots / "activation-2-sent.png")
    assert "Wenn zu diesen Angaben ein noch nicht aktivierter Zugang gehört" in text

    mail = await mailbox.last_text()
    link = re.search(r"https://\S+/_gateway/activate/\S+", mail)
    assert link is not None
    path = "/_gateway" + link.group(0).split("/_gateway", 1)[1]
    await chrome.open(path)
    text = await readable(chrome, screenshots / "activation-3-password.png")
    assert "Zugang aktivieren" in text and EMAIL in text
    await chrome.fill("f-password", FIRST)
    await chrome.fill("f-repeat", FIRST)
    await chrome.click("form button[type=submit]")
    text = await readable(chrome, screenshots / "activation-4-done.png")
    assert "Zugang aktiviert" in text

    # Logged in with the new password (the 2FA prompt of a basic login follows, seed 000).
    await chrome.click("a[href$='/_gateway/login/password']")
    page = await password_login(chrome, EMAIL, "/antrag", password=FIRST)
    assert "Zwei-Faktor-Authentifizierung aktivieren" in page
    page = await chrome.click("button[value=not_now]")
    headers = upstream_json(page)["headers"]
    assert headers["x-brokergate-level"] == "basic" and headers["x-brokergate-method"] == "password"
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None and user.status == UserStatus.ACTIVE

    # The used link is refused and leads to a new request.
    await chrome.open(path)
    text = await readable(chrome, screenshots / "activation-5-used.png")
    assert "Dieser Aktivierungslink ist nicht mehr gültig" in text
    await chrome.click("a[href$='/_gateway/activation/request']")
    assert "Aktivierungslink senden" in await chrome.visible_text()
