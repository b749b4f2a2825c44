"""Seams between the core's sessions and the login pages (found in review).

Each test failed before its fix; the commit that added it says why.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from yarl import URL

from ca import CertificateAuthority
from store import RevocationReason
from tests.conftest import password_mail_for
from tests.logins.web.test_account_pages import write_pem
from tests.logins.web.test_password_pages import PASSWORD, login, set_password


def _with_cookies_of(source: Any, target: Any) -> Any:
    """``target`` (a browser without the certificate) now holds ``source``'s cookies."""
    target.client.cookie_jar.update_cookies(
        {c.key: c.value for c in source.client.cookie_jar},
        response_url=URL(source.gateway.url),
    )
    return target


async def _certificate_browser(
    gw: Any,
    browser_for: Any,
    authority: CertificateAuthority,
    sessions: sessionmaker[Session],
    uid: int,
    folder: Path,
) -> tuple[Any, str]:
    issued = authority.issue_certificate(uid, "test")
    pem = write_pem(issued.pkcs12, password_mail_for(sessions, issued.serial), folder, "c")
    return browser_for(gw, cert=pem), issued.serial


async def test_password_reauth_does_not_unbind_a_certificate_session(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    tmp_path: Path,
) -> None:
    """A certificate session re-confirmed with the password (basic) must not become a
    strong session of its own: it was strong only because of the certificate. Before the
    fix the re-auth rotated it to a session without the certificate binding but with level
    strong and method "certificate", which outlived the certificate being taken out or
    revoked."""
    gw = await gateway()
    uid = make_user(email="anna@example.org").id
    set_password(sessions, uid)
    laptop, _ = await _certificate_browser(gw, browser_for, authority, sessions, uid, tmp_path)
    status, body = await laptop.get("/vertrag")
    assert status == 200 and json.loads(body)["headers"]["x-brokergate-level"] == "strong"
    status, _ = await laptop.get("/_gateway/reauth?level=basic&next=/_gateway/account")
    assert status == 200
    status, _, _ = await laptop.post(
        "/_gateway/reauth",
        {"kind": "password", "level": "basic", "password": PASSWORD, "next": "/vertrag"},
        follow=False,
    )
    assert status == 303
    assert (await laptop.get("/vertrag"))[0] == 200  # still the certificate: fine

    # The same cookie on a connection without the certificate: not strong any more.
    bare = _with_cookies_of(laptop, browser_for(gw))
    status, body = await bare.get("/vertrag")
    assert status != 200, body

    # And with the certificate revoked, the next request is refused as well.
    (tmp_path / "2").mkdir()
    laptop2, serial2 = await _certificate_browser(
        gw, browser_for, authority, sessions, uid, tmp_path / "2"
    )
    assert (await laptop2.get("/vertrag"))[0] == 200
    await laptop2.get("/_gateway/account")
    await laptop2.post(
        "/_gateway/reauth",
        {"kind": "password", "level": "basic", "password": PASSWORD, "next": "/vertrag"},
        follow=False,
    )
    authority.revoke(serial2, RevocationReason.KEY_COMPROMISE, "test")
    for _ in range(50):
        status, body = await laptop2.get("/vertrag")
        if status != 200:
            break
        await asyncio.sleep(0.1)
    assert status == 403, body


async def test_recovery_code_login_sends_a_known_method_upstream(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: Any,
) -> None:
    """The method header has five values (certificate, totp, passkey, email-tan, password);
    before the fix a recovery-code login sent "recovery-code", which an upstream that
    matches on the documented values does not know. The account page still says
    "recovery code" (the user's login history keeps the exact method)."""
    from gateway.logins._totp import TOTP_PURPOSE
    from store import Sealer, User, transaction
    from tests.conftest import TEST_SECRET_KEY
    from tests.logins.test_totp import enrol

    gw = await gateway()
    uid = make_user(email="anna@example.org").id
    set_password(sessions, uid)
    _, codes = enrol(sessions, clock, Sealer(secret=TEST_SECRET_KEY, purpose=TOTP_PURPOSE), uid)
    b = browser_for(gw)
    await login(b, "anna@example.org", next_path="/vertrag")
    await b.get("/_gateway/login/second-factor?next=/vertrag")
    status, _, response = await b.post(
        "/_gateway/login/second-factor", {"code": codes[0], "next": "/vertrag"}, follow=False
    )
    assert status == 303 and response.headers["Location"] == "/vertrag"
    status, body = await b.get("/vertrag")
    headers = json.loads(body)["headers"]
    assert headers["x-brokergate-level"] == "strong"
    assert headers["x-brokergate-method"] == "totp"
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None and user.last_login_method == "recovery-code"


async def test_password_reauth_does_not_make_a_strong_session_fresh_for_strong_changes(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: Any,
    login_settings: Any,
) -> None:
    """Security changes need a fresh *strong* login. Before the fix, posting the password
    (kind=password, level=basic) to the re-auth page of a stale password+TOTP session
    rotated it to strong with authenticated_at = now, so the TOTP reset went through
    with the password alone. The password still counts as a fresh login for the actions
    that need only a fresh basic one (password change, certificate download)."""
    from datetime import timedelta

    import pyotp

    from gateway.logins._totp import TOTP_PURPOSE
    from store import Sealer, User, transaction
    from tests.conftest import TEST_SECRET_KEY
    from tests.logins.test_totp import enrol

    gw = await gateway()
    uid = make_user(email="anna@example.org").id
    set_password(sessions, uid)
    secret, _ = enrol(sessions, clock, Sealer(secret=TEST_SECRET_KEY, purpose=TOTP_PURPOSE), uid)
    clock.advance(timedelta(seconds=31))
    b = browser_for(gw)
    await login(b, "anna@example.org", next_path="/vertrag")
    await b.get("/_gateway/login/second-factor?next=/vertrag")
    await b.post(
        "/_gateway/login/second-factor",
        {"code": pyotp.TOTP(secret).at(clock()), "next": "/vertrag"},
        follow=False,
    )
    assert (await b.get("/vertrag"))[0] == 200
    clock.advance(login_settings.fresh_login + timedelta(seconds=31))

    await b.get("/_gateway/account")
    status, _, response = await b.post("/_gateway/account/totp/reset", {}, follow=False)
    assert status == 303 and response.headers["Location"].startswith("/_gateway/reauth?")
    await b.get("/_gateway/account")
    status, _, response = await b.post(
        "/_gateway/reauth",
        {"kind": "password", "level": "basic", "password": PASSWORD, "next": "/_gateway/account"},
        follow=False,
    )
    assert status == 303
    await b.get("/_gateway/account")
    status, _, response = await b.post("/_gateway/account/totp/reset", {}, follow=False)
    assert status == 303 and response.headers["Location"].startswith("/_gateway/reauth?"), (
        response.headers["Location"]
    )
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None and user.totp_confirmed_at is not None  # not reset
    # Still strong for the portal, and fresh enough for a basic-level action.
    status, body = await b.get("/vertrag")
    assert status == 200 and json.loads(body)["headers"]["x-brokergate-level"] == "strong"
    await b.get("/_gateway/account")
    status, _, response = await b.post(
        "/_gateway/account/password",
        {"current": "wrong", "new": "x", "repeat": "x"},
        follow=False,
    )
    assert status == 400  # require_fresh(basic) let it through to the password check


async def test_password_login_on_a_certificate_connection_stays_strong(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    tmp_path: Path,
) -> None:
    """A broker who types the password while the certificate is presented is still strong
    on the next request (the certificate raises the password session again)."""
    gw = await gateway()
    uid = make_user(email="anna@example.org").id
    set_password(sessions, uid)
    laptop, _ = await _certificate_browser(gw, browser_for, authority, sessions, uid, tmp_path)
    assert (await laptop.get("/vertrag"))[0] == 200
    status, _, _ = await login(laptop, "anna@example.org", next_path="/vertrag")
    assert status == 303
    status, body = await laptop.get("/vertrag")
    assert status == 200, body
    assert json.loads(body)["headers"]["x-brokergate-method"] == "certificate"


async def test_a_restricted_session_cannot_log_the_broker_out_everywhere(
    gateway: Any, browser_for: Any, make_user: Any, sessions: sessionmaker[Session]
) -> None:
    """A restricted session needs only the broker number (seed 001: "continue without
    email"), so it is not proven to be the broker. Before the fix its "log out everywhere"
    ended every session of the firm's primary user: anyone who knew a broker number could
    log that broker out at will. It now ends only its own session."""
    gw = await gateway()
    set_password(sessions, make_user(email="anna@example.org", broker="60/123/4567").id)
    broker = browser_for(gw)
    await login(broker, "anna@example.org")
    assert (await broker.get("/antrag"))[0] == 200

    stranger = browser_for(gw)
    await stranger.get("/_gateway/login/broker")
    status, _, _ = await stranger.post(
        "/_gateway/login/broker/restricted",
        {"broker": "60/123/4567", "email": "", "next": "/rechner"},
    )
    assert status == 200
    status, body = await stranger.get("/rechner")
    assert status == 200 and json.loads(body)["headers"]["x-brokergate-level"] == "restricted"
    await stranger.get("/_gateway/login/broker")  # any form of ours carries the CSRF token
    status, _, _ = await stranger.post("/_gateway/logout-everywhere", {})
    assert status == 200
    assert (await stranger.get("/rechner"))[0] == 401  # its own session did end
    await asyncio.sleep(0.5)  # > the refresh interval: a cached copy would be dropped now
    assert (await broker.get("/antrag"))[0] == 200


async def test_cookieless_certificate_client_costs_no_query_per_request(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    tmp_path: Path,
) -> None:
    """A client without cookies (curl, API, load test) gets its certificate session back
    from memory, with a Set-Cookie each time. The login pages' middleware took every such
    Set-Cookie for a new certificate login and locked the certificate's row (SELECT … FOR
    UPDATE) on every request, breaking "no store query per request for a known
    certificate". It now notes a certificate's first use once per replica."""
    from sqlalchemy import event

    from gateway._state import FACTORY

    gw = await gateway()
    uid = make_user(email="anna@example.org").id
    laptop, _ = await _certificate_browser(gw, browser_for, authority, sessions, uid, tmp_path)

    async def get() -> int:
        laptop.client.cookie_jar.clear()  # keeps no cookies
        return int((await laptop.get("/vertrag"))[0])

    assert await get() == 200
    assert await get() == 200  # warm
    statements: list[str] = []
    engine = gw.app[FACTORY].kw["bind"]

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(20):
            assert await get() == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    certificate_reads = [s for s in statements if "FROM certificates" in s]
    assert len(certificate_reads) < 5, certificate_reads


async def test_the_activation_token_stays_out_of_the_log(
    gateway: Any, browser_for: Any, caplog: Any
) -> None:
    """The activation link's token lets its holder set the account's password. A form
    posted after the pre-login session idled out (CSRF refused) logged the request path,
    token included; the error log now names the route's pattern instead."""
    import logging

    gw = await gateway()
    token = "Zq3" + "x" * 40
    b = browser_for(gw)
    caplog.set_level(logging.DEBUG)
    status, _, _ = await b.post(
        f"/_gateway/activate/{token}",
        {"password": "a new password 123", "repeat": "a new password 123", "csrf": "stale"},
        follow=False,
    )
    assert status == 403
    # (The test runner's aiohttp access log is not ours: 'gateway serve' runs without one.)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("gateway"))
    assert "CsrfRejected" in ours and "/_gateway/activate/{token}" in ours
    assert token not in ours


async def test_behind_a_terminator_lockouts_count_the_client_not_the_terminator(
    gateway: Any, browser_for: Any, make_user: Any, sessions: sessionmaker[Session]
) -> None:
    """Behind a trusted terminator every connection comes from the terminator's address.
    The login pages counted failures per TCP peer, so one client's wrong broker numbers
    locked every broker out of the TAN and password logins. The client address is now the
    one the trusted terminator put in X-Forwarded-For (its last element)."""
    from dataclasses import replace

    from gateway.logins import LoginSettings
    from gateway.web._common import LOGINS

    gw = await gateway(trusted_proxies=("127.0.0.1",))
    gw.app[LOGINS].settings = replace(LoginSettings(), failures_per_address=3)
    set_password(sessions, make_user(email="anna@example.org", broker="60/123/4567").id)
    mallory = browser_for(gw)
    mallory.client._default_headers["X-Forwarded-For"] = "203.0.113.66"  # type: ignore[attr-defined]
    await mallory.get("/_gateway/login/broker")
    for _ in range(4):
        status, body, _ = await mallory.post(
            "/_gateway/login/broker", {"broker": "99/999/9999", "email": "x@example.org"}
        )
    assert status == 401 and "Zu viele" in body, body  # mallory is locked out

    anna = browser_for(gw)
    # A client-sent copy comes first; the terminator appends what it saw.
    anna.client._default_headers["X-Forwarded-For"] = "203.0.113.66, 198.51.100.7"  # type: ignore[attr-defined]
    status, _, _ = await login(anna, "anna@example.org")
    assert status == 303  # anna, at another address, is not


async def test_a_store_outage_on_the_login_pages_is_the_store_page(
    gateway: Any, browser_for: Any, db_url: str, tmp_path: Path
) -> None:
    """The auth middleware turns store failures into the 'store unavailable' page (503),
    but the login pages' own store calls (and session writes) let the driver's
    OperationalError through as the generic 500 page."""
    import shutil

    from gateway._state import FACTORY

    if not db_url.startswith("sqlite"):
        pytest.skip("simulated by taking the SQLite file away")
    gw = await gateway()
    b = browser_for(gw)
    engine = gw.app[FACTORY].kw["bind"]
    database = Path(engine.url.database)
    engine.dispose()
    shutil.move(database, tmp_path / "away.db")  # the next connection finds no tables
    status, body = await b.get("/_gateway/login/password")
    assert status == 503, body
