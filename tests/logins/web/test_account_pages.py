""" "My account": certificate download (fresh login, rate limit, renewal, superseding), revoke,
banner, last login, security changes needing a fresh strong login, activation page."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.logins import LoginSettings, hash_password
from store import Certificate, CertificateStatus, RevocationReason, User, transaction
from tests.conftest import FakeClock, password_mail_for
from tests.logins.web.setup_steps import enrol_totp
from tests.logins.web.test_password_pages import PASSWORD, login, set_password
from tests.polling import async_wait_for


def write_pem(p12: bytes, password: str, folder: Path, name: str) -> tuple[Path, Path]:
    key, cert, _ = pkcs12.load_key_and_certificates(p12, password.encode())
    assert key is not None and cert is not None
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def download(b: Any) -> tuple[int, bytes, Any]:
    await b.get("/_gateway/account")
    status, _, response = await b.post("/_gateway/account/certificate/download", {}, follow=False)
    return status, b.raw if status == 200 else b"", response


async def logged_in(
    gateway_url_browser: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    email: str = "anna@example.org",
) -> int:
    uid: int = make_user(email=email, broker="60/123/4567", name="Anna Muster").id
    set_password(sessions, uid)
    await login(gateway_url_browser, email)
    return uid


async def test_download_then_certificate_login_and_superseding(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    gw = await gateway()
    b = browser_for(gw)
    uid = await logged_in(b, make_user, sessions)
    status, body = await b.get("/_gateway/account")
    assert status == 200 and "Mein Konto" in body and "Zertifikat herunterladen" in body
    assert "Aktueller Benutzer" in body  # Windows import steps
    assert "Dies ist Ihre erste Anmeldung." in body
    # No certificate yet: nothing to warn about in the email section.
    assert "Ihr Zertifikat enthält Ihre E-Mail-Adresse" not in body
    status, data, response = await download(b)
    assert status == 200
    _status, body = await b.get("/_gateway/account")
    assert "Ihr Zertifikat enthält Ihre E-Mail-Adresse" in body  # now there is one
    assert response.headers["Content-Type"] == "application/x-pkcs12"
    assert re.fullmatch(
        r'attachment; filename="broker-certificate-60-123-4567-\d{4}-\d{2}-\d{2}\.p12"',
        response.headers["Content-Disposition"],
    )
    assert response.headers["Cache-Control"] == "no-store"
    with transaction(sessions) as s:
        first = s.scalars(select(Certificate).where(Certificate.user_id == uid)).one()
    password = password_mail_for(sessions, first.serial)
    cert_path, key_path = write_pem(data, password, tmp_path, "first")

    # The certificate logs in with no page at all (single sign-on) and shows its status.
    c = browser_for(gw, cert=(cert_path, key_path))
    status, body = await c.get("/vertrag")
    assert status == 200 and json.loads(body)["headers"]["x-brokergate-method"] == "certificate"
    status, body = await c.get("/_gateway/account")
    assert first.serial in body and "Verbleibende Tage" in body

    # Renewal: same action; the old certificate is superseded once the new one logged in.
    clock.advance(timedelta(minutes=1))
    status, data2, _ = await download(c)  # the certificate on the connection counts as fresh
    assert status == 200
    with transaction(sessions) as s:
        second = s.scalars(
            select(Certificate).where(Certificate.user_id == uid, Certificate.id != first.id)
        ).one()
        assert second.replaces_id == first.id
    cert2, key2 = write_pem(data2, password_mail_for(sessions, second.serial), tmp_path, "second")
    new = browser_for(gw, cert=(cert2, key2))
    status, _ = await new.get("/vertrag")
    assert status == 200
    status, body = await new.get("/_gateway/account")
    with transaction(sessions) as s:
        old = s.get(Certificate, first.id)
        assert old is not None and old.status == CertificateStatus.REVOKED
        assert old.revocation_reason == RevocationReason.SUPERSEDED
        assert s.get(Certificate, second.id).first_used_at is not None  # type: ignore[union-attr]
    # The old one no longer works: each replica's trust cache catches up within 5 s.
    old_browser = browser_for(gw, cert=(cert_path, key_path))
    status, body = await async_wait_for(
        lambda: old_browser.get("/vertrag"),
        until=lambda got: got[0] != 200,
        timeout=10,
        message="the superseded certificate still serves",
    )
    # Issue 15: the superseded page says a newer certificate exists (not "request a new
    # one": the broker has it), with the time in the brokers' zone.
    assert status == 403 and "Es gibt ein neueres Zertifikat" in body
    assert "beantragen Sie" not in body and ("MEZ" in body or "MESZ" in body)


async def test_download_needs_a_fresh_login_and_is_rate_limited(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    login_settings: Any,
) -> None:
    gw = await gateway()
    b = browser_for(gw)
    await logged_in(b, make_user, sessions)
    clock.advance(login_settings.fresh_login + timedelta(seconds=1))
    status, _, response = await download(b)
    assert status == 303 and response.headers["Location"].startswith("/_gateway/reauth?next=")
    status, body = await b.get(response.headers["Location"])
    assert 'autocomplete="current-password"' in body
    status, _, response = await b.post(
        "/_gateway/reauth",
        {"kind": "password", "level": "basic", "password": PASSWORD, "next": "/_gateway/account"},
        follow=False,
    )
    assert status == 303 and response.headers["Location"] == "/_gateway/account"
    for _ in range(login_settings.downloads_per_day):
        status, _, _ = await download(b)
        assert status == 200
    await b.get("/_gateway/account")
    status, body, _ = await b.post("/_gateway/account/certificate/download", {})
    assert status == 429 and "Bitte warten Sie kurz" in body


async def test_revoke_my_certificate_ends_its_sessions(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    gw = await gateway()
    b = browser_for(gw)
    uid = await logged_in(b, make_user, sessions)
    _, data, _ = await download(b)
    with transaction(sessions) as s:
        cert = s.scalars(select(Certificate).where(Certificate.user_id == uid)).one()
    pem = write_pem(data, password_mail_for(sessions, cert.serial), tmp_path, "lost")
    laptop = browser_for(gw, cert=pem)
    assert (await laptop.get("/vertrag"))[0] == 200
    status, body = await b.get("/_gateway/account")
    status, _, response = await b.post(
        "/_gateway/account/certificate/revoke", {"certificate": str(cert.id)}, follow=False
    )
    assert status == 303
    status, body = await b.get(response.headers["Location"])
    assert "Das Zertifikat wurde gesperrt." in body
    status, body = await async_wait_for(
        lambda: laptop.get("/vertrag"),
        until=lambda got: got[0] != 200,
        timeout=10,
        message="the revoked certificate still serves",
    )
    assert status == 403 and "gesperrt" in body


async def test_expiry_banner_on_gateway_pages_within_60_days(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    authority: Any,
    clock: FakeClock,
) -> None:
    gw = await gateway()
    b = browser_for(gw)
    uid = await logged_in(b, make_user, sessions)
    issued = authority.issue_certificate(uid, "test")
    _status, body = await b.get("/_gateway/account")
    assert 'class="banner"' not in body
    clock.advance(issued.not_after - clock() - timedelta(days=59))
    await login(b, "anna@example.org")  # the clock jump ended the session
    for path in ("/_gateway/account", "/_gateway/2fa/prompt", "/_gateway/step-up"):
        _status, body = await b.get(path)
        assert 'class="banner"' in body and "Ihr Zertifikat läuft am" in body, path
        assert "Mein Konto / Abmelden" in body  # seed 000's menu entry
    _status, body = await browser_for(gw).get("/_gateway/login/password")
    assert 'class="banner"' not in body and "Mein Konto" not in body  # nobody logged in


async def test_last_login_is_shown(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    gw = await gateway()
    b = browser_for(gw, language="en")
    await logged_in(b, make_user, sessions)
    clock.advance(timedelta(hours=1))
    b2 = browser_for(gw, language="en")
    await login(b2, "anna@example.org")
    _status, body = await b2.get("/_gateway/account")
    assert "Your last sign-in" in body and "25 November 2026, 10:00 CET, with password" in body


async def test_certificate_logins_are_the_last_login(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    authority: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    """Issue 14: after certificate logins the page said "This is your first sign-in"."""
    gw = await gateway()
    uid = make_user(email="zert@example.org", broker="60/123/4567").id
    issued = authority.issue_certificate(uid, "test:account")
    cert = write_pem(issued.pkcs12, password_mail_for(sessions, issued.serial), tmp_path, "c")
    first = browser_for(gw, cert=cert, language="en")
    _status, body = await first.get("/_gateway/account")
    assert "This is your first sign-in." in body  # it is: the first certificate session
    clock.advance(timedelta(minutes=10))  # within the idle timeout
    _status, body = await first.get("/_gateway/account")  # the same session: no new login
    assert "This is your first sign-in." in body
    clock.advance(timedelta(days=1))
    second = browser_for(gw, cert=cert, language="en")  # another browser, the next visit
    _status, body = await second.get("/_gateway/account")
    assert "first sign-in" not in body
    assert "25 November 2026, 10:00 CET, with certificate" in body


async def test_security_changes_need_a_fresh_strong_login(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    login_settings: Any,
    mailbox: Any,
) -> None:
    gw = await gateway()
    b = browser_for(gw)
    uid = await logged_in(b, make_user, sessions)
    secret = await enrol_totp(b, mailbox, clock)
    clock.advance(login_settings.fresh_login + timedelta(seconds=31))
    await b.get("/_gateway/account")
    status, _, response = await b.post("/_gateway/account/totp/reset", {}, follow=False)
    assert status == 303 and response.headers["Location"].startswith("/_gateway/reauth?next=")
    assert "level=strong" in response.headers["Location"]
    status, body = await b.get(response.headers["Location"])
    assert (
        "current-password" not in body and 'autocomplete="one-time-code"' in body
    )  # a password is not enough
    status, _, response = await b.post(
        "/_gateway/reauth",
        {
            "kind": "code",
            "level": "strong",
            "code": pyotp.TOTP(secret).at(clock()),
            "next": "/_gateway/account",
        },
        follow=False,
    )
    assert status == 303
    await b.get("/_gateway/account")
    status, _, response = await b.post("/_gateway/account/totp/reset", {}, follow=False)
    assert status == 303 and "done=totp_reset" in response.headers["Location"]
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None and user.totp_confirmed_at is None


async def test_activation_page_sets_the_password(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    mailbox: Any,
) -> None:
    from gateway.logins import LoginSettings, send_activation
    from store import OUTBOX_PURPOSE, Sealer
    from tests.conftest import TEST_SECRET_KEY

    gw = await gateway()
    uid = make_user(email="nina@example.org").id
    with transaction(sessions) as s:
        send_activation(
            s,
            user_id=uid,
            link_base=f"{gw.url}/_gateway/activate/",
            settings=LoginSettings(),
            mail_sealer=Sealer(secret=TEST_SECRET_KEY, purpose=OUTBOX_PURPOSE),
            actor="ops:t",
            now=clock(),
        )
    text = await mailbox.last_text()
    link = re.search(r"https://127\.0\.0\.1:\d+/_gateway/activate/\S+", text).group(0)  # type: ignore[union-attr]
    b = browser_for(gw)
    path = link.removeprefix(gw.url)
    status, body = await b.get(path)
    assert status == 200 and "nina@example.org" in body and 'autocomplete="new-password"' in body
    status, body, _ = await b.post(path, {"password": "short", "repeat": "short"})
    assert status == 400 and "mindestens 12 Zeichen" in body
    status, body, _ = await b.post(
        path, {"password": "a long new passphrase", "repeat": "a long new passphrase"}
    )
    assert status == 200 and "Zugang aktiviert" in body
    status, body = await b.get(path)
    assert status == 404 and "nicht mehr gültig" in body
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None and user.password_hash is not None
    assert hash_password  # imported for set_password's module


def test_ca_authority_factory_needs_a_passphrase(
    ca_settings: Any, sessions: sessionmaker[Session]
) -> None:
    from ca import CASettings, CertificateAuthority
    from gateway import ca_authority_factory
    from store import system_clock
    from tests.conftest import TEST_SECRET_KEY

    assert (
        ca_authority_factory(
            ca_settings=CASettings(), secret_key=TEST_SECRET_KEY, clock=system_clock
        )
        is None
    )
    make = ca_authority_factory(
        ca_settings=ca_settings, secret_key=TEST_SECRET_KEY, clock=system_clock
    )
    assert make is not None and isinstance(make(sessions), CertificateAuthority)


@pytest.mark.parametrize(
    ("login_settings", "language", "words"),
    [
        (LoginSettings(fresh_login=timedelta(seconds=45)), "de", "weniger als 45 Sekunden zurück"),
        (LoginSettings(fresh_login=timedelta(seconds=90)), "en", "within the last 90 seconds"),
        (LoginSettings(fresh_login=timedelta(minutes=15)), "nl", "in de laatste 15 minuten"),
    ],
)
async def test_the_download_hint_names_the_fresh_login_window_in_words(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    login_settings: LoginSettings,
    language: str,
    words: str,
) -> None:
    """Issue 16: a sub-minute fresh_login read "weniger als 0 Minuten"."""
    b = browser_for(await gateway(), language=language)
    await logged_in(b, make_user, sessions)
    _status, body = await b.get("/_gateway/account")
    assert words in html.unescape(body), body
