"""End to end in real headless Chromium (Selenium + chromedriver) against the real gateway.

Each browser has its own HOME (NSS database) and profile. The gateway runs on this test's
event loop; every WebDriver call goes through a worker thread with a timeout.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from selenium.webdriver.common.by import By
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import FakeClock
from tests.logins.web.chrome import (
    BROWSER_TEST_MARKS,
    Chrome,
    import_p12,
    issuing_ca_cn,
    list_user_certs,
    nss_db,
    password_login,
    start_chrome,
    upstream_json,
)
from tests.logins.web.setup_steps import TOTP_KEY, mailed_setup_code
from tests.logins.web.test_password_pages import set_password

pytestmark = BROWSER_TEST_MARKS


async def test_download_import_with_pk12util_then_sso_without_prompt(
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
    uid = make_user(email="anna@example.org", broker="60/123/4567", name="Anna Muster").id
    set_password(sessions, uid)
    first = start_chrome(home=tmp_path / "first", base=gw.url)
    chromes.append(first)
    nss_db(first.home, gw.tls.ca)

    page = await first.open("/antrag")
    assert "Anmelden" in page and "Vermittlernummer und E-Mail (TAN)" in page
    await first.screenshot(screenshots / "login.png")
    page = await password_login(first, "anna@example.org", "/antrag")
    assert "Zwei-Faktor-Authentifizierung aktivieren" in page and "Nicht jetzt" in page
    page = await first.click("button[value=not_now]")
    assert upstream_json(page)["headers"]["x-brokergate-level"] == "basic"

    page = await first.open("/_gateway/account")
    assert "Mein Konto" in page and "Zertifikat herunterladen" in page
    await first.screenshot(screenshots / "account.png")
    assert (screenshots / "login.png").stat().st_size > 5000 and (
        screenshots / "account.png"
    ).stat().st_size > 5000
    await first.click_download("form[action$='/certificate/download'] button")
    p12 = await first.wait_for_download(".p12")
    assert re.fullmatch(r"broker-certificate-60-123-4567-\d{4}-\d{2}-\d{2}\.p12", p12.name)

    text = await mailbox.last_text()
    password = re.search(r"Passwort: (\S+)", text).group(1)  # type: ignore[union-attr]
    # A second browser (another computer): import the file with the mailed password.
    second_home = tmp_path / "second"
    db = nss_db(second_home, gw.tls.ca)
    with pytest.raises(AssertionError):
        import_p12(db, p12, "not the password")
    import_p12(db, p12, password)
    assert "Anna Muster" in list_user_certs(db)
    second = start_chrome(
        home=second_home, base=gw.url, auto_select_issuer_cn=issuing_ca_cn(sessions)
    )
    chromes.append(second)
    page = await second.open("/vertrag")  # a strong route, straight through: no page, no prompt
    headers = upstream_json(page)["headers"]
    assert (
        headers["x-brokergate-level"] == "strong"
        and headers["x-brokergate-method"] == "certificate"
    )
    assert headers["x-brokergate-user-id"] == str(uid)
    page = await second.open("/_gateway/account")
    assert "Seriennummer" in page and "Verbleibende Tage" in page


async def test_twofa_set_up_with_the_mailed_code_and_totp_then_the_next_login_asks_for_it(
    gateway: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    mailbox: Any,
    chromes: list[Chrome],
    screenshots: Path,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    """Issue 14, seed 000: the three steps in Chromium, the code from the SMTP sink."""
    gw = await gateway()
    uid = make_user(email="bert@example.org", locale="en").id
    set_password(sessions, uid)
    chrome = start_chrome(home=tmp_path / "c", base=gw.url, language="en")
    chromes.append(chrome)
    nss_db(chrome.home, gw.tls.ca)
    page = await password_login(chrome, "bert@example.org", "/vertrag")
    assert "Activate two-factor authentication" in page and "Not now" not in page  # no deadline
    page = await chrome.click("button[value=activate]")
    # Step 1: a code by email.
    assert "Verify once with a code sent by email" in page and "bert@example.org" in page
    page = await chrome.click("button[value=send]")
    assert "We have sent a 6-digit code to bert@example.org" in page
    await chrome.screenshot(screenshots / "twofa-setup-1.png")
    code = await mailed_setup_code(mailbox)
    await chrome.fill("f-setup-code", f"{(int(code) + 1) % 10**6:06d}")
    page = await chrome.click("button[value=confirm]")
    assert "The code is wrong. You have 4 attempts left." in page
    await chrome.fill("f-setup-code", code)
    page = await chrome.click("button[value=confirm]")
    # Step 2: the authenticator app.
    assert "Choose a two-factor method" in page and 'aria-current="step"' in page
    await chrome.screenshot(screenshots / "twofa-setup-2.png")
    page = await chrome.click("#setup-totp")
    assert "Set up the authenticator app" in page and "<svg" in page
    secret = TOTP_KEY.search(page).group(1).replace(" ", "")  # type: ignore[union-attr]
    await chrome.fill("f-code", pyotp.TOTP(secret).at(clock()))
    page = await chrome.click("form button[type=submit]")
    assert "Your recovery codes" in page
    # Step 3: used from the next login on; back to the page the broker came for.
    page = await chrome.click("#recovery-codes ~ p a.button")
    assert "The authenticator app is set up." in page and "From your next sign-in" in page
    page = await chrome.click("#setup-continue")
    headers = upstream_json(page)["headers"]
    assert headers["x-brokergate-level"] == "strong" and headers["x-brokergate-method"] == "totp"

    clock.advance(timedelta(minutes=1))
    other = start_chrome(home=tmp_path / "d", base=gw.url, language="en")
    chromes.append(other)
    nss_db(other.home, gw.tls.ca)
    page = await password_login(other, "bert@example.org", "/vertrag")
    assert "Two-factor authentication" in page and 'autocomplete="one-time-code"' in page
    await other.fill("f-code", pyotp.TOTP(secret).at(clock()))
    page = await other.click("form button[type=submit]")
    headers = upstream_json(page)["headers"]
    assert headers["x-brokergate-level"] == "strong" and headers["x-brokergate-method"] == "totp"


async def test_tan_login_restricted_refusal_and_idle_logout(
    gateway: Any,
    make_user: Any,
    mailbox: Any,
    chromes: list[Chrome],
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    gw = await gateway()
    make_user(email="carla@example.org", broker="70/111/2222")
    chrome = start_chrome(home=tmp_path / "c", base=gw.url)
    chromes.append(chrome)
    nss_db(chrome.home, gw.tls.ca)

    # Unknown email → continue without email → restricted: calculator yes, application no.
    await chrome.open("/_gateway/login/broker?next=/rechner")
    await chrome.fill("f-broker", "70/111/2222")
    await chrome.fill("f-email", "someone@else.example")
    page = await chrome.click("form button[type=submit]")
    assert "Unbekannte E-Mail-Adresse" in page
    page = await chrome.click("form[action$='/restricted'] button")
    assert upstream_json(page)["headers"]["x-brokergate-level"] == "restricted"
    page = await chrome.open("/antrag")
    assert "Zusätzliche Anmeldung erforderlich" in page or "Anmeldung mit Passwort oder TAN" in page

    # The TAN from the real SMTP server.
    await chrome.open("/_gateway/login/broker?next=/antrag")
    await chrome.fill("f-broker", "70/111/2222")
    await chrome.fill("f-email", "carla@example.org")
    page = await chrome.click("form button[type=submit]")
    assert "Überprüfen Sie Ihren Posteingang" in page
    tan = re.search(r"TAN: (\d{8})", await mailbox.last_text()).group(1)  # type: ignore[union-attr]
    await chrome.fill("f-tan", tan)
    page = await chrome.click("form[action$='/tan'] button[type=submit]")
    headers = upstream_json(page)["headers"]
    assert (
        headers["x-brokergate-level"] == "basic" and headers["x-brokergate-method"] == "email-tan"
    )

    # Idle for longer than the timeout (15 minutes): the next request finds no session.
    clock.advance(timedelta(minutes=16))
    page = await chrome.open("/antrag")
    assert "x-brokergate-level" not in page and "Anmelden" in page


async def test_passkey_registration_and_login_with_a_virtual_authenticator(
    gateway: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    mailbox: Any,
    chromes: list[Chrome],
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    # WebAuthn refuses IP addresses as relying party: the broker types "localhost".
    gw = await gateway(
        host="localhost",
        twofa_deadline=(clock() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    uid = make_user(email="dora@example.org").id
    set_password(sessions, uid)
    chrome = start_chrome(home=tmp_path / "c", base=gw.url, language="en")
    chromes.append(chrome)
    nss_db(chrome.home, gw.tls.ca)
    await chrome.run(chrome.add_passkey_authenticator)
    await password_login(chrome, "dora@example.org", "/antrag")
    await chrome.click("button[value=not_now]")
    await chrome.open("/_gateway/account")
    page = await chrome.click("#passkey-add")  # the set-up's step 1 first (issue 14)
    page = await chrome.click("button[value=send]")
    await chrome.fill("f-setup-code", await mailed_setup_code(mailbox))
    page = await chrome.click("button[value=confirm]")
    assert "Choose a two-factor method" in page
    await chrome.fill("passkey-name", "Test laptop")
    await chrome.run(lambda: chrome.driver.find_element(By.ID, "passkey-register").click())
    page = await chrome.wait_for_url(
        "/_gateway/2fa/setup/done?method=passkey&next=%2F_gateway%2Faccount"
    )
    assert "Your passkey is set up." in page
    page = await chrome.click("#setup-continue")
    assert "Test laptop" in page and "with a passkey" in page
    await chrome.click("form[action$='/_gateway/logout'] button")

    await chrome.open("/_gateway/login/passkey?next=/vertrag")
    await chrome.run(lambda: chrome.driver.find_element(By.ID, "passkey-login").click())
    page = await chrome.wait_for_url("/vertrag")
    headers = upstream_json(page)["headers"]
    assert headers["x-brokergate-level"] == "strong" and headers["x-brokergate-method"] == "passkey"
    assert headers["x-brokergate-user-id"] == str(uid)
