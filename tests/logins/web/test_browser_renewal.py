"""Renewal end to end in headless Chromium (issue 15): inside the 60-day window the first
portal page after a certificate login is the reminder, once per session; a download shows
the import hint until the new certificate is presented; the new one logs in without any
hint and the old one is superseded with its own page."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ca import CertificateAuthority, IssuedCertificate
from tests.conftest import FakeClock, password_mail_for
from tests.logins.web.chrome import (
    BROWSER_TEST_MARKS,
    Chrome,
    import_p12,
    issuing_ca_cn,
    nss_db,
    start_chrome,
    upstream_json,
)
from tests.logins.web.test_password_pages import set_password

pytestmark = BROWSER_TEST_MARKS


def backdated_certificate(
    authority: CertificateAuthority, clock: FakeClock, user_id: int, age: timedelta
) -> IssuedCertificate:
    """A certificate issued ``age`` ago by the fake clock, which is back at now afterwards."""
    now = clock()
    clock.advance(-age)
    issued = authority.issue_certificate(user_id, "ops:test")
    clock.advance(now - clock())
    return issued


async def test_reminder_interstitial_import_hint_and_superseding_in_chromium(
    gateway: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    mailbox: Any,
    chromes: list[Chrome],
    screenshots: Path,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    # Chromium offers only certificates valid by the real clock: the old certificate is
    # issued (fake) two years minus 20 days ago, so that "now" stays today for both.
    uid = make_user(email="anna@example.org", broker="60/123/4567", name="Anna Muster").id
    set_password(sessions, uid)
    old = backdated_certificate(authority, clock, uid, timedelta(days=2 * 365 - 20))
    assert old.not_after - clock() < timedelta(days=22)
    gw = await gateway()
    old_p12 = tmp_path / "old.p12"
    old_p12.write_bytes(old.pkcs12)
    issuer = issuing_ca_cn(sessions)
    office = tmp_path / "office"
    import_p12(nss_db(office, gw.tls.ca), old_p12, password_mail_for(sessions, old.serial))

    first = start_chrome(home=office, base=gw.url, auto_select_issuer_cn=issuer)
    chromes.append(first)
    page = await first.open("/vertrag")
    left = (old.not_after.date() - clock().date()).days
    assert "Ihr Zertifikat läuft bald ab" in page and f"noch {left} Tage" in page
    await first.screenshot(screenshots / "renewal-interstitial.png")
    page = await first.click("a.button.secondary")  # "Später"
    headers = upstream_json(page)["headers"]
    assert headers["x-brokergate-method"] == "certificate"
    assert headers["x-brokergate-cert-days-left"] == str(left)
    page = await first.open("/vertrag")  # the same session: not again
    assert upstream_json(page)["headers"]["x-brokergate-user-id"] == str(uid)

    # Download the renewal; until the new certificate is presented, the import hint.
    await first.open("/_gateway/account")
    await first.click_download("form[action$='/certificate/download'] button")
    new_p12 = await first.wait_for_download(".p12")
    page = await first.open("/_gateway/account")
    assert "Bitte binden Sie Ihr neues Zertifikat ein" in page
    assert "Ihr Zertifikat läuft am" not in page
    await first.screenshot(screenshots / "renewal-import-hint.png")

    text = await mailbox.last_text()
    password = re.search(r"Passwort: (\S+)", text).group(1)  # type: ignore[union-attr]
    laptop = tmp_path / "laptop"
    import_p12(nss_db(laptop, gw.tls.ca), new_p12, password)
    second = start_chrome(home=laptop, base=gw.url, auto_select_issuer_cn=issuer)
    chromes.append(second)
    page = await second.open("/vertrag")  # the new certificate: no reminder, no hint
    assert int(upstream_json(page)["headers"]["x-brokergate-cert-days-left"]) > 700
    page = await second.open("/_gateway/account")
    assert "Bitte binden Sie Ihr neues Zertifikat ein" not in page
    assert "Ihr Zertifikat läuft am" not in page

    # The old certificate is superseded now: its own page, in Berlin time.
    for _ in range(50):
        page = await first.open("/vertrag")
        if "Es gibt ein neueres Zertifikat" in page:
            break
        clock.advance(timedelta(seconds=1))
    assert "Es gibt ein neueres Zertifikat" in page and "beantragen Sie" not in page
    await first.screenshot(screenshots / "renewal-superseded.png")
