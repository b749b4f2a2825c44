"""The email change in real headless Chromium, as a broker does it: "Mein Konto" after a
strong login (password + authenticator app), the certificate warning read before anything
is sent, the confirmation link read from the real SMTP sink and opened in the browser, and
a second browser of the same broker logged out by the change (docs/logins.md "Email change").
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyotp
from sqlalchemy.orm import Session, sessionmaker

from ca import CertificateAuthority
from tests.conftest import FakeClock
from tests.logins.web.chrome import (
    BROWSER_TEST_MARKS,
    Chrome,
    nss_db,
    password_login,
    start_chrome,
    upstream_json,
)
from tests.logins.web.setup_steps import mailed_setup_code
from tests.logins.web.test_email_change_pages import LINK, email_of
from tests.logins.web.test_password_pages import set_password

pytestmark = BROWSER_TEST_MARKS

OLD = "emil@example.org"
NEW = "emil.neu@example.org"
CERTIFICATE_WARNING = (
    "Ihr Zertifikat enthält Ihre E-Mail-Adresse. Nach der Änderung meldet es Sie nicht mehr "
    "an: Laden Sie danach unter „Mein Konto“ ein neues Zertifikat herunter."
)


async def enter_totp(chrome: Chrome, secret: str, clock: FakeClock) -> str:
    """Type the authenticator app's current code into the code field and submit."""
    await chrome.fill("f-code", pyotp.TOTP(secret).at(clock()))
    return await chrome.click("form button[type=submit]")


async def readable(chrome: Chrome, shot: Path) -> str:
    """Screenshot the page; returns its visible text, checked for leftover template syntax."""
    await chrome.screenshot(shot)
    text = await chrome.visible_text()
    assert not re.search(r"\{\{|\}\}|\{%|%\}|logins\.[a-z_]+\.[a-z_]+", text), text
    return text


async def test_email_change_with_the_mailed_link_logs_out_the_other_browser(
    gateway: Any,
    authority: CertificateAuthority,
    make_user: Any,
    sessions: sessionmaker[Session],
    mailbox: Any,
    chromes: list[Chrome],
    screenshots: Path,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    gw = await gateway()
    uid = make_user(email=OLD, name="Emil Wechsel").id
    set_password(sessions, uid)
    # The broker holds a certificate (its SAN names OLD): the case every warning is about.
    authority.issue_certificate(uid, "test")
    await mailbox.deliver()  # its password mail went out long ago
    first = start_chrome(home=tmp_path / "first", base=gw.url)
    chromes.append(first)
    nss_db(first.home, gw.tls.ca)

    # Strong and fresh: the password, then the authenticator app set up (its first code
    # makes the session strong).
    page = await password_login(first, OLD, "/vertrag")
    assert "Zwei-Faktor-Authentifizierung aktivieren" in page
    await first.click("button[value=activate]")
    await first.click("button[value=send]")  # the set-up's step 1: the mailed code
    await first.fill("f-setup-code", await mailed_setup_code(mailbox))
    await first.click("button[value=confirm]")
    page = await first.click("#setup-totp")
    match = re.search(r'id="totp-key" class="key">([A-Z2-7 ]+)<', page)
    assert match is not None
    secret = match.group(1).replace(" ", "")
    assert "Ihre Wiederherstellungscodes" in await enter_totp(first, secret, clock)

    # The same broker on another computer, logged in before the change.
    clock.advance(timedelta(minutes=1))  # a new TOTP window: a used code is refused
    second = start_chrome(home=tmp_path / "second", base=gw.url)
    chromes.append(second)
    nss_db(second.home, gw.tls.ca)
    await password_login(second, OLD, "/vertrag")
    headers = upstream_json(await enter_totp(second, secret, clock))["headers"]
    assert headers["x-brokergate-user-id"] == str(uid)
    assert headers["x-brokergate-level"] == "strong"

    # "Mein Konto" → "E-Mail-Adresse ändern": the warning stands before anything is sent.
    await first.open("/_gateway/account")
    await first.scroll_to("email-h")
    text = await readable(first, screenshots / "email-change-1-account.png")
    assert f"Ihre E-Mail-Adresse: {OLD}" in text and CERTIFICATE_WARNING in text
    await first.click("a[href$='/_gateway/account/email']")
    text = await readable(first, screenshots / "email-change-2-form.png")
    assert "E-Mail-Adresse ändern" in text and "Neue E-Mail-Adresse" in text
    assert CERTIFICATE_WARNING in text
    await first.fill("f-email", "Emil.Neu@Example.ORG")  # stored normalised
    await first.click("form[action$='/_gateway/account/email'] button[type=submit]")
    text = await readable(first, screenshots / "email-change-3-sent.png")
    assert "Bitte bestätigen Sie Ihre neue Adresse" in text
    assert f"Wir haben einen Link an {NEW} gesendet. Er ist 24 Stunden gültig." in text
    assert CERTIFICATE_WARNING in text
    assert email_of(sessions, uid) == OLD

    # Real mail through the SMTP sink: the link to the new address, a notice to the old one.
    by_rcpt = {m["To"]: m for m in await mailbox.deliver()}
    assert set(by_rcpt) == {OLD, NEW}
    confirm = by_rcpt[NEW]
    assert confirm["Subject"] == "Bestätigen Sie Ihre neue E-Mail-Adresse für das Maklerportal"
    body = confirm.get_body(preferencelist=("plain",)).get_content()
    assert "Guten Tag Emil Wechsel" in body
    assert "passt Ihr bisheriges Zertifikat nicht mehr" in body
    link = LINK.search(body)
    assert link is not None and link.group(0).startswith(gw.url + "/")
    notice = by_rcpt[OLD]
    assert notice["Subject"] == "Ihre E-Mail-Adresse im Maklerportal wird geändert"
    body = notice.get_body(preferencelist=("plain",)).get_content()
    assert "e***@example.org" in body and "Maklerbetreuung" in body
    assert "/confirm/" not in body and NEW not in body

    # The broker opens the link in the browser: a button, nothing changed by the visit.
    await first.open(link.group(0).removeprefix(gw.url))
    text = await readable(first, screenshots / "email-change-4-confirm.png")
    assert "Neue E-Mail-Adresse bestätigen" in text
    assert f"Ihre E-Mail-Adresse wird auf {NEW} geändert." in text and CERTIFICATE_WARNING in text
    assert email_of(sessions, uid) == OLD
    await first.click("form[action*='/_gateway/account/email/confirm/'] button[type=submit]")
    text = await readable(first, screenshots / "email-change-5-done.png")
    assert "E-Mail-Adresse geändert" in text
    assert f"Ihre E-Mail-Adresse lautet jetzt {NEW}." in text
    assert "Aus Sicherheitsgründen wurden Sie überall abgemeldet." in text
    assert "Ihr bisheriges Zertifikat passt nicht mehr zur neuen Adresse." in text
    assert "Mein Konto / Abmelden" not in text  # no menu of a session that just ended
    assert email_of(sessions, uid) == NEW

    # The other computer's next page load is the login page; the old address no longer works.
    await second.open("/_gateway/account")
    assert (await second.url()).startswith(gw.url + "/_gateway/login")
    text = await readable(second, screenshots / "email-change-6-other-browser.png")
    assert "Anmelden" in text and "Mein Konto" not in text and OLD not in text
    await password_login(second, OLD, "/_gateway/account")
    text = await second.visible_text()
    assert "E-Mail-Adresse, Vermittlernummer oder Passwort sind falsch." in text

    # This browser was logged out too: "sign in and download a new certificate" asks for
    # the login, and "Mein Konto" then shows the new address.
    await first.click("a[href$='/_gateway/account#certificate']")
    assert (await first.url()).startswith(gw.url + "/_gateway/login")
    await password_login(first, NEW, "/_gateway/account")
    clock.advance(timedelta(minutes=1))
    await enter_totp(first, secret, clock)
    assert (await first.url()).split("#")[0] == gw.url + "/_gateway/account"
    text = await readable(first, screenshots / "email-change-7-account-after.png")
    assert f"Ihre E-Mail-Adresse: {NEW}" in text and OLD not in text
    await first.scroll_to("email-h")
    await first.screenshot(screenshots / "email-change-8-account-after-email.png")
