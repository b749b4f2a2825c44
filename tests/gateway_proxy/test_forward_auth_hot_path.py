"""The forward-auth hot path (issue 11): a decision for a known session and certificate runs
no SQL, and a revocation or an ended session is still refused within the documented bound.

The app is composed as ``brokergate gateway`` composes it (the login pages' extension
included: its middleware is where the store was read on every decision). SQL is counted
with SQLAlchemy's ``before_cursor_execute`` on the gateway's own engine; the refresh task's
own rounds (the documented way changes arrive) are not counted as the request's.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from cryptography.hazmat.primitives import serialization
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from ca import CertificateAuthority
from gateway import setup_logins
from gateway._metrics import GatewayMetrics
from gateway._service import gateway_app_factory
from gateway._settings import GatewaySettings
from gateway._state import FACTORY, SETTINGS
from gateway.auth import _terminator as terminator
from gateway.auth._request_state import SESSIONS, TRUST
from gateway.auth._sessions import Sessions
from gateway.auth._terminator import ForwardedCertificateInvalid, ForwardedCertificates
from gateway.logins import LoginSettings
from store import Certificate, Level, RevocationReason
from tests.conftest import TEST_SECRET_KEY, FakeClock
from tests.gateway_proxy._certs import PemPair, own_ca_pair
from tests.gateway_proxy.conftest import start_site

AUTH = "/_gateway/auth"


class _StatementCounter:
    """Counts the statements the gateway's engine runs outside its refresh rounds."""

    def __init__(self, app: web.Application) -> None:
        self.statements: list[str] = []
        self._refreshing = threading.local()
        engine = app[FACTORY].kw["bind"]
        event.listen(engine, "before_cursor_execute", self._seen)
        for owner, name in ((app[TRUST], "refresh"), (app[SESSIONS], "refresh_cached")):
            setattr(owner, name, self._marked(getattr(owner, name)))

    def _marked(self, refresh: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            self._refreshing.on = True
            try:
                return refresh()
            finally:
                self._refreshing.on = False

        return run

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not getattr(self._refreshing, "on", False):
            self.statements.append(statement)

    @contextmanager
    def counting(self) -> Iterator[list[str]]:
        start = len(self.statements)
        seen: list[str] = []
        yield seen
        seen.extend(self.statements[start:])


Front = Callable[..., Any]


@pytest.fixture
async def front(
    db_url: str, upstream_url: str, authority: CertificateAuthority, clock: FakeClock
) -> AsyncIterator[Front]:
    """``async with front() as (base, app, counter)``: the gateway in forward-auth mode as
    ``brokergate gateway`` builds it, on the CA's clock."""

    @asynccontextmanager
    async def start() -> AsyncIterator[tuple[str, web.Application, _StatementCounter]]:
        settings = GatewaySettings(
            upstream_url=upstream_url,
            terminator_format="rfc9440",
            forward_auth=True,
            trusted_proxies=("127.0.0.1/32",),
            public_url="https://127.0.0.1",
        )
        logins = setup_logins(
            settings=LoginSettings(), secret_key=TEST_SECRET_KEY, make_authority=lambda _: authority
        )
        app = gateway_app_factory(
            settings=settings,
            store_url=db_url,
            secret_key=TEST_SECRET_KEY,
            clock=clock,
            extensions=[logins],
        )(None, GatewayMetrics())
        runner, port = await start_site(app)
        try:
            yield f"http://127.0.0.1:{port}", app, _StatementCounter(app)
        finally:
            await runner.cleanup()

    yield start


def _client_cert(pem: PemPair) -> str:
    der = pem.certificate.public_bytes(serialization.Encoding.DER)
    return ":" + base64.b64encode(der).decode() + ":"


async def _decide(
    client: aiohttp.ClientSession, base: str, headers: dict[str, str], uri: str = "/home"
) -> aiohttp.ClientResponse:
    sent = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": uri, **headers}
    async with client.get(base + AUTH, headers=sent, allow_redirects=False) as resp:
        await resp.read()
        return resp


async def test_a_known_session_and_certificate_are_decided_without_sql(
    front: Front, broker_pem: PemPair
) -> None:
    async with front() as (base, _app, counter), aiohttp.ClientSession() as client:
        cert = {"Client-Cert": _client_cert(broker_pem)}
        first = await _decide(client, base, cert)
        assert first.status == 200
        cookie = first.headers["Set-Cookie"].split(";", 1)[0]
        # Each path once (the route policy differs per path), then again: all warm.
        for uri in ("/home", "/antrag?x=1", "/home"):
            await _decide(client, base, {**cert, "Cookie": cookie}, uri)
        with counter.counting() as statements:
            for uri in ("/home", "/antrag?x=1") * 10:
                resp = await _decide(client, base, {**cert, "Cookie": cookie}, uri)
                assert resp.status == 200 and resp.headers["X-Brokergate-Level"] == "strong"
        assert statements == []


async def test_a_certificate_without_cookie_is_decided_without_sql(
    front: Front, broker_pem: PemPair
) -> None:
    """Behind Caddy the browser never gets the SSO cookie (forward_auth drops Set-Cookie on
    a 2xx): each decision finds the certificate's session in memory again."""
    jar = aiohttp.DummyCookieJar()  # keeps nothing, as the browser behind Caddy
    async with front() as (base, _app, counter), aiohttp.ClientSession(cookie_jar=jar) as client:
        cert = {"Client-Cert": _client_cert(broker_pem)}
        for uri in ("/home", "/antrag?x=1"):
            assert (await _decide(client, base, cert, uri)).status == 200
        with counter.counting() as statements:
            for uri in ("/home", "/antrag?x=1") * 10:
                resp = await _decide(client, base, cert, uri)
                assert resp.status == 200 and resp.headers["X-Brokergate-Level"] == "strong"
        assert statements == []


async def _warm(client: aiohttp.ClientSession, base: str, cert: dict[str, str]) -> dict[str, str]:
    first = await _decide(client, base, cert)
    assert first.status == 200
    headers = {**cert, "Cookie": first.headers["Set-Cookie"].split(";", 1)[0]}
    assert (await _decide(client, base, headers)).status == 200
    return headers


async def test_a_revocation_is_refused_after_the_next_refresh_round_without_a_request_read(
    front: Front, broker_pem: PemPair, authority: CertificateAuthority
) -> None:
    """The warm decision reads nothing, so what ends it is the refresh round (every
    revocation_refresh_interval, at most 2 s): run here as the refresh task runs it."""
    async with front() as (base, app, counter), aiohttp.ClientSession() as client:
        headers = await _warm(client, base, {"Client-Cert": _client_cert(broker_pem)})
        serial = format(broker_pem.certificate.serial_number, "x")
        assert authority.revoke(serial, RevocationReason.KEY_COMPROMISE, "test:hot-path")
        await asyncio.to_thread(app[TRUST].refresh)
        with counter.counting() as statements:
            refused = await _decide(client, base, headers)
        assert refused.status == 403
        # Refused from the refreshed cache, not by a fresh read; the one write ends the
        # session that certificate had opened.
        assert not [sql for sql in statements if sql.lstrip().upper().startswith("SELECT")]
        assert any(sql.lstrip().upper().startswith("UPDATE") for sql in statements)


async def test_a_session_ended_on_another_replica_is_refused_after_the_next_refresh_round(
    front: Front,
    broker_pem: PemPair,
    sessions: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    async with front() as (base, app, _counter), aiohttp.ClientSession() as client:
        # A password session (no certificate, which would sign on again at once).
        other = Sessions(factory=sessions, settings=app[SETTINGS])
        user_id = _user_id(sessions, broker_pem)
        new = other.start(user_id=user_id, level=Level.STRONG, method="totp", now=clock())
        headers = {"Cookie": f"{app[SETTINGS].session_cookie_name}={new.cookie}"}
        assert (await _decide(client, base, headers)).status == 200
        assert (await _decide(client, base, headers)).status == 200
        other.end_all_for_user(user_id, clock())  # "log out everywhere" on another replica
        await asyncio.to_thread(app[SESSIONS].refresh_cached)
        assert (await _decide(client, base, headers)).status == 401


def _user_id(sessions: sessionmaker[Session], pem: PemPair) -> int:
    serial = format(pem.certificate.serial_number, "x")
    with sessions() as db:
        row = db.scalars(select(Certificate).where(Certificate.serial == serial)).one()
        return int(row.user_id)


# --- the forwarded certificate header is decoded once per distinct value


def _from_loopback(header: str, value: str) -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        ("127.0.0.1", 40000) if name == "peername" else default
    )
    return make_mocked_request("GET", AUTH, headers={header: value}, transport=transport)


def _rfc9440_settings() -> GatewaySettings:
    return GatewaySettings(
        upstream_url="http://127.0.0.1:9",
        terminator_format="rfc9440",
        forward_auth=True,
        trusted_proxies=("127.0.0.1/32",),
    )


def test_a_forwarded_certificate_is_decoded_once_per_value(
    broker_pem: PemPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = terminator.parse_forwarded_certificate

    def counted(value: str, terminator_format: str, *, header: str = "") -> Any:
        calls.append(value)
        return real(value, terminator_format, header=header)

    monkeypatch.setattr(terminator, "parse_forwarded_certificate", counted)
    source = ForwardedCertificates(_rfc9440_settings())
    ours, other = _client_cert(broker_pem), _client_cert(own_ca_pair(tmp_path, "x", server=False))
    der = broker_pem.certificate.public_bytes(serialization.Encoding.DER)
    for _ in range(5):
        assert source(_from_loopback("Client-Cert", ours)) == der
        assert source(_from_loopback("Client-Cert", other)) != der
    assert calls == [ours, other]
    # A value that is no certificate is refused every time, never remembered as "none".
    for _ in range(2):
        with pytest.raises(ForwardedCertificateInvalid):
            source(_from_loopback("Client-Cert", ":bm90IGEgY2VydA==:"))
    assert len(source) == 2
    # SECURITY: from a peer outside trusted_proxies the remembered value proves nothing.
    untrusted = ForwardedCertificates(
        GatewaySettings(
            upstream_url="http://127.0.0.1:9",
            terminator_format="rfc9440",
            forward_auth=True,
            trusted_proxies=("10.255.255.1/32",),
        )
    )
    assert untrusted(_from_loopback("Client-Cert", ours)) is None


def test_the_forwarded_certificate_memo_is_bounded(broker_pem: PemPair, tmp_path: Path) -> None:
    source = ForwardedCertificates(_rfc9440_settings(), limit=3, value_limit=4096)
    values = [_client_cert(own_ca_pair(tmp_path / str(n), f"c{n}", server=False)) for n in range(7)]
    for value in values:
        source(_from_loopback("Client-Cert", value))
        assert len(source) <= 3
    short = ForwardedCertificates(_rfc9440_settings(), value_limit=10)
    assert short(_from_loopback("Client-Cert", values[0])) is not None
    assert len(short) == 0  # too long to remember: decoded each time
