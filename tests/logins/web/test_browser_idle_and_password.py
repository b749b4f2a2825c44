"""Issue 16 point 9 in real headless Chromium: the idle logout says so on the login page and
logging in returns to the page; a password change typed while the login went stale is not
dropped silently, and a stale login confirms first and then gets the form."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gateway.logins import check_password
from store import User, transaction
from tests.conftest import FakeClock
from tests.logins.web.chrome import (
    BROWSER_TEST_MARKS,
    Chrome,
    nss_db,
    password_login,
    start_chrome,
    upstream_json,
)
from tests.logins.web.test_password_pages import PASSWORD, set_password

pytestmark = BROWSER_TEST_MARKS

NEW_PASSWORD = "a brand new passphrase 2026"


async def _chrome(gw: Any, tmp_path: Path, chromes: list[Chrome]) -> Chrome:
    chrome = start_chrome(home=tmp_path / "c", base=gw.url)
    chromes.append(chrome)
    nss_db(chrome.home, gw.tls.ca)
    return chrome


async def test_idle_logout_notice_and_back_to_the_page(
    gateway: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    chromes: list[Chrome],
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    # A 2FA grace period: "Nicht jetzt" on the prompt goes straight on to the page.
    gw = await gateway(twofa_deadline=(clock() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    set_password(sessions, make_user(email="ina@example.org").id)
    chrome = await _chrome(gw, tmp_path, chromes)
    await password_login(chrome, "ina@example.org", "/antrag")
    page = await chrome.open("/antrag?tab=2")
    assert upstream_json(page)["headers"]["x-brokergate-level"] == "basic"

    clock.advance(timedelta(minutes=16))
    await chrome.open("/antrag?tab=2")
    text = await chrome.visible_text()
    assert "Sie wurden nach 15 Minuten ohne Aktivität abgemeldet." in text
    page = await chrome.click("a[href^='/_gateway/login/password']")
    await chrome.fill("f-identifier", "ina@example.org")
    await chrome.fill("f-password", PASSWORD)
    await chrome.click("form button[type=submit]")  # the 2FA prompt first (seed 000)
    page = await chrome.click("button[value=not_now]")
    assert upstream_json(page)["path"] == "/antrag?tab=2"  # back on the page asked for

    # A normal logout: the login page says nothing about inactivity.
    await chrome.open("/_gateway/account")
    await chrome.click("form[action$='/logout'] button")
    await chrome.open("/antrag")
    assert "ohne Aktivität" not in await chrome.visible_text()


async def test_a_password_change_survives_the_reauthentication(
    gateway: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    chromes: list[Chrome],
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    gw = await gateway()
    uid = make_user(email="pia@example.org").id
    set_password(sessions, uid)
    chrome = await _chrome(gw, tmp_path, chromes)
    await password_login(chrome, "pia@example.org", "/antrag")

    # Typed in a fresh login, sent after the window ran out: the re-authentication says
    # that nothing was changed and brings the form back.
    await chrome.open("/_gateway/account")
    await chrome.fill("f-current", PASSWORD)
    await chrome.fill("f-new", NEW_PASSWORD)
    await chrome.fill("f-repeat", NEW_PASSWORD)
    clock.advance(timedelta(minutes=6))
    page = await chrome.click("form[action$='/account/password'] button[type=submit]")
    assert 'name="kind" value="password"' in page  # the re-authentication page
    await chrome.fill("f-password", PASSWORD)
    await chrome.click("form button[type=submit]")
    text = await chrome.visible_text()
    assert "Ihr Passwort wurde nicht geändert" in text and "noch einmal ein" in text
    await chrome.fill("f-current", PASSWORD)
    await chrome.fill("f-new", NEW_PASSWORD)
    await chrome.fill("f-repeat", NEW_PASSWORD)
    await chrome.click("form[action$='/account/password'] button[type=submit]")
    assert "Ihr Passwort wurde geändert." in await chrome.visible_text()
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None and check_password(user.password_hash, NEW_PASSWORD)[0]

    # A stale login gets the confirmation first, then the form.
    clock.advance(timedelta(minutes=6))
    page = await chrome.open("/_gateway/account")
    assert "f-new" not in page
    await chrome.click("#password-reauth")
    await chrome.fill("f-password", NEW_PASSWORD)
    page = await chrome.click("form button[type=submit]")
    assert 'id="f-new"' in page and (await chrome.url()).endswith("/_gateway/account#password")
