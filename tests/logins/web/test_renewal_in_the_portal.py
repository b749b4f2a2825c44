"""Renewal as the broker lives it (issue 15), over real TLS: the interstitial once per
session after a certificate login inside the reminder window, the facts sent to the
portal, the import hint after a download until the new certificate logs in."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store import Certificate, transaction
from tests.conftest import FakeClock, password_mail_for
from tests.logins.web.test_account_pages import download, logged_in, write_pem

NAVIGATE = {"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}
WINDOWS_CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/156.0"


def _banner(body: str) -> str:
    start = body.index('class="banner"')
    return body[start : body.index("</div>", start)]


async def certificate_browser(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    **settings: Any,
) -> tuple[Any, Any, int, datetime]:
    """A gateway (started with ``settings``) and the PEM of a certificate downloaded by a
    logged-in broker (its user id and expiry too)."""
    gw = await gateway(**settings)
    b = browser_for(gw)
    uid = await logged_in(b, make_user, sessions)
    _, data, _ = await download(b)
    with transaction(sessions) as s:
        cert = s.scalars(select(Certificate).where(Certificate.user_id == uid)).one()
    pem = write_pem(data, password_mail_for(sessions, cert.serial), tmp_path, "old")
    return gw, pem, uid, cert.not_after


async def test_interstitial_once_per_session_inside_the_window(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    gw, pem, _uid, not_after = await certificate_browser(
        gateway, browser_for, make_user, sessions, tmp_path
    )

    # Outside the window: straight to the portal, and the portal learns the days left.
    far = browser_for(gw, cert=pem)
    status, body = await far.get("/vertrag", headers=NAVIGATE)
    assert status == 200
    headers = json.loads(body)["headers"]
    assert int(headers["x-brokergate-cert-days-left"]) > 60
    assert "x-brokergate-renewal-url" not in headers

    clock.advance(not_after - clock() - timedelta(days=20, hours=2))
    c = browser_for(gw, cert=pem)
    status, body = await c.get("/vertrag", headers=NAVIGATE)
    assert status == 200 and "Ihr Zertifikat läuft bald ab" in body
    assert "noch 20 Tage" in body and "Jetzt erneuern" in body and "Später" in body
    assert 'href="/vertrag"' in body  # "Später" goes on to the page asked for
    status, body = await c.get("/vertrag", headers=NAVIGATE)  # not again in this session
    assert status == 200 and "x-brokergate-method" in body
    headers = json.loads(body)["headers"]
    assert headers["x-brokergate-cert-days-left"] == "20"
    assert headers["x-brokergate-renewal-url"].endswith("/_gateway/account#certificate")
    # A script's request is never answered with a page of ours.
    api = browser_for(gw, cert=pem)
    status, body = await api.get("/vertrag", headers={"Accept": "application/json"})
    assert status == 200 and json.loads(body)["headers"]["x-brokergate-cert-days-left"] == "20"


async def test_import_hint_after_a_download_until_the_new_certificate_logs_in(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    gw, pem, uid, not_after = await certificate_browser(
        gateway, browser_for, make_user, sessions, tmp_path
    )
    clock.advance(not_after - clock() - timedelta(days=10))
    old = browser_for(gw, cert=pem)
    old.client.headers["User-Agent"] = WINDOWS_CHROME
    assert (await old.get("/vertrag"))[0] == 200  # the old certificate logs in (used)
    _, body = await old.get("/_gateway/account")
    assert "Ihr Zertifikat läuft am" in body and "noch 10 Tage" in body
    status, data, _ = await download(old)
    assert status == 200
    # Downloaded, not imported: the hint with this system's steps, not "renew" again.
    _, body = await old.get("/_gateway/account")
    banner = _banner(body)
    assert "Bitte binden Sie Ihr neues Zertifikat ein" in banner
    assert "Zertifikatimport-Assistent" in banner and "Schlüsselbundverwaltung" not in banner
    assert "Ihr Zertifikat läuft am" not in body
    with transaction(sessions) as s:
        new = s.scalars(
            select(Certificate)
            .where(Certificate.user_id == uid)
            .order_by(Certificate.id.desc())
            .limit(1)
        ).one()
    new_pem = write_pem(data, password_mail_for(sessions, new.serial), tmp_path, "new")
    fresh = browser_for(gw, cert=new_pem)
    assert (await fresh.get("/vertrag"))[0] == 200
    _, body = await fresh.get("/_gateway/account")
    assert "Bitte binden Sie Ihr neues Zertifikat ein" not in body
    assert "Ihr Zertifikat läuft am" not in body
