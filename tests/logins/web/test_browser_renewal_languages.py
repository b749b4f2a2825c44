"""Every renewal text a broker sees, in Chromium in German, English and Dutch (issue 15:
"every text reviewed in a screenshot"): the interstitial, the banner inside a portal page
(``portal_renewal_banner``), the account page's reminder and, after a download, the import
hint and, once the new certificate has logged in, the old one's "superseded" page (with
the time in the brokers' zone). The screenshots land in $BROKERGATE_SCREENSHOT_DIR
(renewal-<page>-<language>.png)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ca import CertificateAuthority
from store import Certificate, transaction
from tests.conftest import FakeClock, password_mail_for
from tests.logins.web.chrome import (
    BROWSER_TEST_MARKS,
    Chrome,
    import_p12,
    issuing_ca_cn,
    nss_db,
    start_chrome,
)
from tests.logins.web.test_browser_renewal import backdated_certificate
from tests.logins.web.test_password_pages import set_password

pytestmark = BROWSER_TEST_MARKS

# What each page must say, per language (the catalogues' own words, not a translation here)
TEXTS = {
    "de": {
        "interstitial": ("Ihr Zertifikat läuft bald ab", "noch 20 Tage", "Später"),
        "portal": ("Ihr Zertifikat läuft am", "noch 20 Tage", "Grüße aus dem Portal"),
        "import": ("Bitte binden Sie Ihr neues Zertifikat ein",),
        "superseded": ("Es gibt ein neueres Zertifikat", "Mein Konto", "MEZ"),
    },
    "en": {
        "interstitial": ("Your certificate expires soon", "20 days left", "Later"),
        "portal": ("Your certificate expires on", "20 days left", "Grüße aus dem Portal"),
        "import": ("Please install your new certificate",),
        "superseded": ("A newer certificate exists", "My account", "CET"),
    },
    "nl": {
        "interstitial": ("Uw certificaat verloopt binnenkort", "nog 20 dagen", "Later"),
        "portal": ("Uw certificaat verloopt op", "nog 20 dagen", "Grüße aus dem Portal"),
        "import": ("Installeer uw nieuwe certificaat",),
        "superseded": ("Er is een nieuwer certificaat", "Mijn account", "CET"),
    },
}


@pytest.mark.parametrize("language", sorted(TEXTS))
async def test_renewal_texts_in_each_language(
    language: str,
    gateway: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    chromes: list[Chrome],
    screenshots: Path,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    # Chromium offers only certificates valid by the real clock: issued (fake) two years
    # minus 20 days ago, so that "now" stays today.
    uid = make_user(email="anna@example.org", broker="60/123/4567", name="Anna Muster").id
    set_password(sessions, uid)
    old = backdated_certificate(authority, clock, uid, timedelta(days=2 * 365 - 20, hours=-2))
    gw = await gateway(real_proxy=True, portal_renewal_banner=True)
    p12 = tmp_path / "old.p12"
    p12.write_bytes(old.pkcs12)
    home = tmp_path / "office"
    import_p12(nss_db(home, gw.tls.ca), p12, password_mail_for(sessions, old.serial))
    chrome = start_chrome(
        home=home, base=gw.url, auto_select_issuer_cn=issuing_ca_cn(sessions), language=language
    )
    chromes.append(chrome)
    texts = TEXTS[language]

    async def shot(page: str, path: str | None = None) -> str:
        if path is not None:
            await chrome.open(path)
        await chrome.screenshot(screenshots / f"renewal-{page}-{language}.png")
        return await chrome.visible_text()

    await chrome.open("/portal/utf8")
    seen = await shot("interstitial")
    assert all(text in seen for text in texts["interstitial"]), seen
    seen = await shot("portal", "/portal/utf8")  # the same session: the banner, no interstitial
    assert all(text in seen for text in texts["portal"]), seen
    await chrome.open("/_gateway/account")
    await chrome.click_download("form[action$='/certificate/download'] button")
    new_p12 = await chrome.wait_for_download(".p12")
    seen = await shot("import", "/_gateway/account")
    assert all(text in seen for text in texts["import"]), seen
    seen = await shot("portal-import", "/portal/utf8")
    assert all(text in seen for text in texts["import"]), seen

    # The new certificate logs in from a second browser; the old one is superseded then.
    with transaction(sessions) as session:
        serials = session.scalars(
            select(Certificate.serial).where(Certificate.user_id == uid).order_by(Certificate.id)
        ).all()
    assert len(serials) == 2 and serials[0] == old.serial
    laptop = tmp_path / "laptop"
    import_p12(nss_db(laptop, gw.tls.ca), new_p12, password_mail_for(sessions, serials[1]))
    second = start_chrome(
        home=laptop, base=gw.url, auto_select_issuer_cn=issuing_ca_cn(sessions), language=language
    )
    chromes.append(second)
    await second.open("/portal/utf8")
    title = texts["superseded"][0]
    for _ in range(50):  # the first browser's certificate state is cached for a moment
        seen = await chrome.open("/portal/utf8")
        if title in seen:
            break
        clock.advance(timedelta(seconds=1))
    seen = await shot("superseded")
    assert all(text in seen for text in texts["superseded"]), seen
