"""Forward-auth end to end: browser → the real nginx with deploy/nginx/forward-auth.conf →
portal, nginx asking the real gateway app (``forward_auth``) on every request."""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pyotp
import pytest
from aiohttp import web
from cryptography.x509.oid import NameOID
from sqlalchemy.orm import Session, sessionmaker

from ca import CertificateAuthority, load_trust_material
from gateway import setup_logins
from gateway._metrics import GatewayMetrics
from gateway._service import gateway_app_factory
from gateway._settings import GatewaySettings
from gateway.logins import LoginSettings
from store import RevocationReason
from tests.conftest import TEST_SECRET_KEY, FakeClock, UserFactory, password_mail_for
from tests.gateway_proxy._certs import PemPair, pem_from_pkcs12
from tests.gateway_proxy._nginx import (
    NGINX,
    adapted_forward_auth_config,
    auth_cache,
    free_port,
    running_nginx,
)
from tests.gateway_proxy.conftest import start_site
from tests.logins.web.conftest import mailbox  # noqa: F401  (the SMTP sink fixture)
from tests.logins.web.setup_steps import mailed_setup_code
from tests.logins.web.test_password_pages import set_password
from tests.polling import async_wait_for

pytestmark = pytest.mark.skipif(
    not Path(NGINX).exists(), reason="nginx is not installed (make system-deps)"
)
PORTAL_READ_TIMEOUT = 1  # seconds: proxy_read_timeout of the adapted config


@pytest.fixture
def cache() -> Iterator[Path]:
    with auth_cache() as path:
        yield path


FrontFactory = Callable[..., AbstractAsyncContextManager[str]]


@pytest.fixture
def forward_auth_app(
    db_url: str,
    upstream_url: str,
    clock: FakeClock,
    authority: CertificateAuthority,
) -> Callable[..., web.Application]:
    """``forward_auth_app()``: the real gateway app in forward-auth mode behind nginx (or
    ``terminator_format="caddy"``), with the login and account pages as `brokergate
    gateway` has them; on the CA's clock (the front checks validity against the real one)."""

    def make(terminator_format: Literal["nginx", "caddy"] = "nginx") -> web.Application:
        settings = GatewaySettings(
            upstream_url=upstream_url,
            terminator_format=terminator_format,
            forward_auth=True,
            trusted_proxies=("127.0.0.1/32",),
            public_url="https://127.0.0.1",
        )
        logins = setup_logins(
            settings=LoginSettings(), secret_key=TEST_SECRET_KEY, make_authority=lambda _: authority
        )
        return gateway_app_factory(
            settings=settings,
            store_url=db_url,
            secret_key=TEST_SECRET_KEY,
            clock=clock,
            extensions=[logins],
        )(None, GatewayMetrics())

    return make


@pytest.fixture
def front_for(
    forward_auth_app: Callable[..., web.Application],
    server_pem: PemPair,
    upstream_url: str,
    tmp_path: Path,
    cache: Path,
    sessions: sessionmaker[Session],
) -> FrontFactory:
    """``async with front_for(portal_port=None) as url``: nginx with the shipped config in
    front of the real gateway app and the echo portal (or another port: a portal that is
    down). ``gateway_port``: nginx asks whatever is there instead of an app of its own (a
    gateway that is dead, or hangs); ``gateway_read_timeout`` bounds the wait on it. The CA
    bundle is generated from the store as `brokergate ca bundle` writes it."""

    @asynccontextmanager
    async def start(
        portal_port: int | None = None,
        *,
        gateway_port: int | None = None,
        gateway_read_timeout: float | None = None,
    ) -> AsyncIterator[str]:
        bundle = tmp_path / "ca-bundle.pem"
        with sessions() as session:
            bundle.write_bytes(load_trust_material(session).bundle_pem())
        runner: web.AppRunner | None = None
        if gateway_port is None:
            runner, gateway_port = await start_site(forward_auth_app())
        listen = free_port()
        if portal_port is None:
            portal_port = int(upstream_url.rsplit(":", 1)[1])
        config = adapted_forward_auth_config(
            listen_port=listen,
            cert=server_pem.cert,
            key=server_pem.key,
            gateway_port=gateway_port,
            portal_port=portal_port,
            cache=cache,
            bundle=bundle,
            portal_read_timeout=PORTAL_READ_TIMEOUT,
            gateway_read_timeout=gateway_read_timeout,
        )
        try:
            with running_nginx(tmp_path / "nginx", server_config=config, listen_port=listen):
                yield f"https://127.0.0.1:{listen}"
        finally:
            if runner is not None:
                await runner.cleanup()

    return start


@pytest.fixture
async def front(front_for: FrontFactory, broker_pem: PemPair) -> AsyncIterator[str]:
    async with front_for() as url:
        yield url


def _context(server: PemPair, client: PemPair | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server.cert))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


async def _get(url: str, context: ssl.SSLContext, **kwargs: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as client:
        async with client.get(url, allow_redirects=False, **kwargs) as resp:
            return resp.status, await resp.text()


def _portal_saw(text: str) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in json.loads(text)["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    return headers


async def test_certificate_sso_through_nginx_with_no_prompt(
    front: str, server_pem: PemPair, broker_pem: PemPair
) -> None:
    status, text = await _get(
        front + "/echo/home",
        _context(server_pem, broker_pem),
        headers={
            "X-Brokergate-Level": "anonymous",
            "X-Brokergate-Office": "forged",
            "X-Brokergate-Rights": "FORGED",
            "X-Brokergate-Role": "head-of-everything",
            "Client-Cert": ":AAAA:",
            "X-SSL-Client-Cert": "forged",
        },
    )
    assert status == 200, text
    seen = _portal_saw(text)
    assert seen["x-brokergate-level"] == ["strong"]
    # issue 13: the firm, copied by auth_request_set, never the client's copies
    assert seen["x-brokergate-rights"] == ["DIL,DIP,ORV"] and seen["x-brokergate-role"] == ["head"]
    assert seen["x-brokergate-office-number"] == seen["x-brokergate-head-office-number"]
    assert seen["x-brokergate-method"] == ["certificate"]
    assert "x-brokergate-assertion" in seen
    for name in ("x-brokergate-office", "client-cert", "x-ssl-client-cert"):
        assert name not in seen, name  # SECURITY: client-sent, never reaches the portal


async def test_no_certificate_through_nginx_gets_the_login_page(
    front: str, server_pem: PemPair
) -> None:
    status, text = await _get(
        front + "/echo/home",
        _context(server_pem, None),
        headers={"X-Brokergate-Level": "strong", "Cookie": "bg_session=forged"},
    )
    assert status == 401 and "<title>Anmelden" in text
    assert "path_qs" not in text  # did not reach the portal


def test_the_certificate_request_names_our_cas(front: str, sessions: sessionmaker[Session]) -> None:
    """ssl_client_certificate is the generated bundle: the CertificateRequest names our
    roots and issuing CAs (so browsers offer only our certificates), and nothing else."""
    port = front.rsplit(":", 1)[1]
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2"],
        input="",
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout
    names_block = out.split("Acceptable client certificate CA names", 1)[1].split("---")[0]
    with sessions() as session:
        trust = load_trust_material(session)
    expected = {
        attribute.value
        for cert in [*trust.roots, *trust.intermediates]
        for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    }
    named = set(re.findall(r"CN\s*=\s*([^,\n]+)", names_block))
    assert {str(value).strip() for value in expected} == {n.strip() for n in named}


def _cached_files(cache: Path) -> list[Path]:
    return [path for path in cache.rglob("*") if path.is_file()]


async def test_revoked_certificate_gets_its_page_through_nginx_within_5s(
    front: str,
    server_pem: PemPair,
    broker_pem: PemPair,
    authority: CertificateAuthority,
    cache: Path,
) -> None:
    """The decision cache is on (2 s) and the client keeps its session cookie, as a browser
    does; the revocation still reaches the broker within 5 s."""
    jar = aiohttp.CookieJar(unsafe=True)  # a cookie for 127.0.0.1
    connector = aiohttp.TCPConnector(ssl=_context(server_pem, broker_pem))
    async with aiohttp.ClientSession(connector=connector, cookie_jar=jar) as client:

        async def home() -> tuple[int, str]:
            async with client.get(front + "/echo/home", allow_redirects=False) as resp:
                return resp.status, await resp.text()

        for _ in range(3):  # SSO, then the same session from the decision cache
            status, text = await home()
            assert status == 200, text
        assert "__Host-brokergate" in {cookie.key for cookie in jar}
        assert _cached_files(cache), "no decision was cached"
        serial = format(broker_pem.certificate.serial_number, "x")
        assert authority.revoke(serial, RevocationReason.KEY_COMPROMISE, "test:forward-auth")
        started = time.monotonic()
        status, text = await async_wait_for(
            home,
            until=lambda answer: answer[0] != 200,
            timeout=5.0,
            message="nginx still lets the revoked certificate through",
        )
        assert time.monotonic() - started < 5.0
    assert status == 403 and "Ihr Zertifikat wurde gesperrt" in text


async def test_the_session_cookie_never_reaches_the_portal(
    front: str, server_pem: PemPair, broker_pem: PemPair
) -> None:
    context = _context(server_pem, broker_pem)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as client:
        async with client.get(front + "/echo/home") as resp:
            assert resp.status == 200
            ours = resp.cookies["__Host-brokergate"].value
        for cookie, portal_gets in (
            (f"portal=1; __Host-brokergate={ours}; other=2", "portal=1; other=2"),
            (f"__Host-brokergate={ours}; portal=1", "portal=1"),
            (f"portal=1; __Host-brokergate={ours}", "portal=1"),
            (f"__Host-brokergate={ours}; portal=1; __Host-brokergate=again", "portal=1"),
            (f"__Host-brokergate={ours}", None),
        ):
            async with client.get(front + "/echo/home", headers={"Cookie": cookie}) as resp:
                assert resp.status == 200, cookie
                seen = _portal_saw(await resp.text())
            assert seen.get("cookie") == (None if portal_gets is None else [portal_gets])
            assert seen["x-brokergate-level"] == ["strong"]  # signed in, by the session
            assert "__Host-brokergate" not in json.dumps(seen)  # SECURITY


async def test_expired_certificate_gets_its_page_not_nginx_495(
    front: str,
    server_pem: PemPair,
    authority: CertificateAuthority,
    make_user: UserFactory,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    saved = clock.now
    clock.now = saved - timedelta(days=3 * 365)  # issued three years ago: expired by now
    try:
        issued = authority.issue_certificate(make_user(email="alt@example.org").id, "test:fa")
    finally:
        clock.now = saved
    expired = pem_from_pkcs12(
        tmp_path / "expired", "expired", issued.pkcs12, password_mail_for(sessions, issued.serial)
    )
    status, text = await _get(front + "/echo/home", _context(server_pem, expired))
    assert status == 403 and "abgelaufen" in text, text
    assert "path_qs" not in text  # did not reach the portal


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class _Browser:
    """Keeps cookies like a browser; no client certificate (the password + TOTP login)."""

    def __init__(self, front: str, server: PemPair) -> None:
        self.front = front
        self.client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=_context(server, None)),
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # 127.0.0.1 is an IP address
        )
        self.last = ""

    async def get(self, path: str) -> tuple[int, str]:
        async with self.client.get(self.front + path, allow_redirects=False) as resp:
            self.last = await resp.text()
            return resp.status, self.last

    async def post(self, path: str, form: dict[str, str]) -> tuple[int, str]:
        match = _CSRF.search(self.last)
        assert match, "no CSRF token on the last page"
        data = {**form, "csrf": match.group(1)}
        async with self.client.post(self.front + path, data=data, allow_redirects=False) as r:
            self.last = await r.text()
            return r.status, r.headers.get("Location", "")


async def test_password_and_totp_login_through_nginx(
    front: str,
    server_pem: PemPair,
    make_user: UserFactory,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    mailbox: Any,  # noqa: F811  (the imported fixture)
) -> None:
    set_password(sessions, make_user(email="anna@example.org").id, "correct horse battery")
    login = {"identifier": "anna@example.org", "password": "correct horse battery"}
    enrol = _Browser(front, server_pem)
    fresh = _Browser(front, server_pem)
    try:
        # Enrol TOTP after a password login; every page comes through the front.
        assert (await enrol.get("/_gateway/login/password?next=/echo/home"))[0] == 200
        status, _ = await enrol.post("/_gateway/login/password", {**login, "next": "/echo/home"})
        assert status == 303
        # Step 1 of the 2FA set-up (issue 14): the code mailed to the SMTP sink.
        assert (await enrol.get("/_gateway/2fa/setup?next=/echo/home"))[0] == 200
        status, location = await enrol.post("/_gateway/2fa/setup", {"action": "send"})
        assert status == 303, enrol.last
        await enrol.get(location)
        code = await mailed_setup_code(mailbox)
        status, location = await enrol.post(
            "/_gateway/2fa/setup", {"action": "confirm", "code": code}
        )
        assert status == 303 and location.startswith("/_gateway/2fa/setup/method"), enrol.last
        status, body = await enrol.get("/_gateway/account/totp")
        key = re.search(r'id="totp-key" class="key">([A-Z2-7 ]+)<', body)
        assert status == 200 and key, body
        secret = key.group(1).replace(" ", "")
        await enrol.post("/_gateway/account/totp", {"code": pyotp.TOTP(secret).at(clock())})

        # A fresh browser: password, then the code, then the portal with level strong.
        clock.advance(timedelta(minutes=1))  # a new TOTP step: the last code is spent
        await fresh.get("/_gateway/login/password?next=/echo/home")
        status, location = await fresh.post(
            "/_gateway/login/password", {**login, "next": "/echo/home"}
        )
        assert status == 303 and location.startswith("/_gateway/login/second-factor")
        status, body = await fresh.get("/echo/home")
        assert status == 401 and "path_qs" not in body  # the password alone opens nothing
        await fresh.get(location)
        status, location = await fresh.post(
            "/_gateway/login/second-factor",
            {"code": pyotp.TOTP(secret).at(clock()), "next": "/echo/home"},
        )
        assert status == 303 and location == "/echo/home"
        status, body = await fresh.get("/echo/home")
        assert status == 200, body
        seen = _portal_saw(body)
        assert seen["x-brokergate-level"] == ["strong"]
        assert seen["x-brokergate-method"] == ["totp"]
        assert "__Host-brokergate" not in json.dumps(seen)  # SECURITY
    finally:
        await enrol.client.close()
        await fresh.client.close()


async def test_the_idle_logout_notice_through_nginx(
    front: str,
    server_pem: PemPair,
    make_user: UserFactory,
    sessions: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    """Issue 16: after an idle logout the browser gets our login page with the notice through
    nginx (its auth subrequest and its fetch of the page both see the marked session)."""
    set_password(sessions, make_user(email="ida@example.org").id, "correct horse battery")
    browser = _Browser(front, server_pem)
    try:
        await browser.get("/_gateway/login/password?next=/echo/home")
        status, _ = await browser.post(
            "/_gateway/login/password",
            {"identifier": "ida@example.org", "password": "correct horse battery"},
        )
        assert status == 303
        status, body = await browser.get("/echo/home?tab=2")
        assert status == 200, body
        clock.advance(timedelta(minutes=16))
        # nginx may still answer from its decision cache (at most 2 s, proxy_cache_valid).
        status, body = await async_wait_for(
            lambda: browser.get("/echo/home?tab=2"),
            until=lambda answer: answer[0] == 401,
            timeout=5,
            message="still let through after the idle timeout",
        )
        assert "Sie wurden nach 15 Minuten ohne Aktivität abgemeldet." in body
        assert 'href="/_gateway/login/password?next=/echo/home%3Ftab%3D2"' in body
    finally:
        await browser.client.close()


async def test_websocket_through_nginx_is_decided_at_the_upgrade(
    front: str, server_pem: PemPair, broker_pem: PemPair
) -> None:
    """The upgrade is decided like any request, then nginx relays the socket to the portal.
    (brokergate does not see the open socket: ending the session does not close it, as
    docs/forward-auth.md says.)"""
    ws_url = front.replace("https://", "wss://") + "/ws"
    context = _context(server_pem, broker_pem)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as client:
        async with client.ws_connect(ws_url, headers={"X-Brokergate-Level": "forged"}) as ws:
            first = json.loads((await ws.receive(timeout=5)).data)
            seen = {name.lower(): value for name, value in first["headers"].items()}
            assert seen["x-brokergate-level"] == "strong"  # SECURITY: not the forged one
            assert "__host-brokergate" not in json.dumps(seen).lower()
            await ws.send_str("hallo")
            assert (await ws.receive(timeout=5)).data == "echo:hallo"
    anonymous = _context(server_pem, None)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=anonymous)) as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(ws_url)
    assert refused.value.status == 401  # nobody logged in: the login page, no socket


async def test_a_page_for_a_refusal_keeps_its_own_status_through_nginx(
    front: str, server_pem: PemPair, broker_pem: PemPair
) -> None:
    """auth_request understands only 2xx, 401 and 403, so the decision says 403; the page
    nginx then fetches for the browser (X-Brokergate-Page) keeps its own status."""
    status, text = await _get(front + "/echo/home./x", _context(server_pem, broker_pem))
    assert status == 400 and "Ungültige Adresse" in text, (status, text[:300])
    assert "path_qs" not in text  # did not reach the portal
    # a client cannot ask for that itself on the decision: nginx clears the header there
    status, text = await _get(
        front + "/echo/home", _context(server_pem, broker_pem), headers={"X-Brokergate-Page": "1"}
    )
    assert status == 200 and _portal_saw(text)["x-brokergate-level"] == ["strong"]


async def test_the_portal_down_gets_our_502_page_through_nginx(
    front_for: FrontFactory, server_pem: PemPair, broker_pem: PemPair
) -> None:
    async with front_for(portal_port=free_port()) as down:  # nothing listens there
        status, text = await _get(
            down + "/echo/home", _context(server_pem, broker_pem), headers={"Accept-Language": "en"}
        )
    assert status == 502, (status, text[:300])
    assert "The portal cannot be reached" in text, text[:500]


async def test_a_silent_portal_gets_our_504_page_through_nginx(
    front: str, server_pem: PemPair, broker_pem: PemPair
) -> None:
    started = time.monotonic()
    status, text = await _get(
        front + f"/slow?delay={PORTAL_READ_TIMEOUT + 5}", _context(server_pem, broker_pem)
    )
    assert status == 504 and "Das Portal antwortet nicht rechtzeitig" in text, (status, text[:300])
    assert time.monotonic() - started < PORTAL_READ_TIMEOUT + 3  # nginx's timeout, not the portal
