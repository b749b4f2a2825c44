""" "Auf allen Geräten abmelden" with the tick "Auch gespeicherte Browser vergessen" in real
headless Chromium (issue 14): the tick is a labelled checkbox, ticking it by its label
forgets the remembered browsers, and the page after says so."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import FakeClock
from tests.logins.web.chrome import (
    BROWSER_TEST_MARKS,
    Chrome,
    nss_db,
    password_login,
    start_chrome,
)
from tests.logins.web.test_browser_email_change import readable
from tests.logins.web.test_logout_everywhere_pages import live_devices, remembered
from tests.logins.web.test_password_pages import set_password

pytestmark = BROWSER_TEST_MARKS
LABEL = "label[for=f-forget-devices]"


async def test_ticking_the_label_forgets_the_remembered_browsers(
    gateway: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    chromes: list[Chrome],
    screenshots: Path,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    gw = await gateway(twofa_deadline=(clock() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    uid = make_user(email="anna@example.org", broker="60/123/4567").id
    set_password(sessions, uid)
    remembered(sessions, clock, uid, 2)
    chrome = start_chrome(home=tmp_path / "chrome", base=gw.url)
    chromes.append(chrome)
    nss_db(chrome.home, gw.tls.ca)

    await password_login(chrome, "anna@example.org", "/antrag")
    await chrome.click("button[value=not_now]")
    await chrome.open("/_gateway/account")
    await chrome.scroll_to("logout-h")
    text = await readable(chrome, screenshots / "logout-everywhere-1-tick.png")
    assert "Auch gespeicherte Browser vergessen" in text
    # Clicking the label (no page load) ticks the box: they belong together.
    await chrome.run(lambda: chrome.driver.find_element(By.CSS_SELECTOR, LABEL).click())
    assert await chrome.run(
        lambda: chrome.driver.find_element(By.ID, "f-forget-devices").is_selected()
    )
    await chrome.click("form[action$='/logout-everywhere'] button[type=submit]")
    text = await readable(chrome, screenshots / "logout-everywhere-2-done.png")
    assert "Ihre gespeicherten Browser wurden ebenfalls vergessen." in text
    assert live_devices(sessions, uid) == 0
