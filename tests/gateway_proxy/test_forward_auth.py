"""Forward-auth mode: ``/_gateway/auth`` on the real gateway app (plain HTTP on loopback, as
behind a front proxy), with certificates from our CA and a real store.

The front proxies themselves (nginx, Caddy) are not started here; this is the decision
endpoint's contract: 200 + identity headers, 401 + login page, 403 + the other pages, and
nothing believed from a peer outside ``trusted_proxies``.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway._app import FRONT_DECISION_CACHE, staleness_bound
from gateway._metrics import GatewayMetrics
from gateway._service import gateway_app_factory
from gateway._settings import GatewaySettings, RouteRule
from gateway.auth._terminator import ForwardedCertificateInvalid, parse_forwarded_certificate
from gateway.web._forward_auth import _auth_request_status
from store import Level
from tests.conftest import TEST_SECRET_KEY
from tests.gateway_proxy._certs import PemPair, own_ca_pair
from tests.gateway_proxy.conftest import start_site

AUTH = "/_gateway/auth"
Start = Callable[..., Awaitable[str]]


@pytest.fixture
async def start(db_url: str, upstream_url: str, authority: Any) -> AsyncIterator[Start]:
    """``await start(**settings)`` → base URL of a forward-auth gateway app (plain HTTP);
    ``authority`` initialises the CA in the store first."""
    runners: list[web.AppRunner] = []

    async def run(**overrides: Any) -> str:
        values: dict[str, Any] = {
            "upstream_url": upstream_url,
            "terminator_format": "rfc9440",
            "forward_auth": True,
            "trusted_proxies": ("127.0.0.1/32",),
            "public_url": "https://127.0.0.1",
            **overrides,
        }
        app = gateway_app_factory(
            settings=GatewaySettings(**values), store_url=db_url, secret_key=TEST_SECRET_KEY
        )(None, GatewayMetrics())
        runner, port = await start_site(app)
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield run
    for runner in runners:
        await runner.cleanup()


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _rfc9440(cert: x509.Certificate) -> str:
    return ":" + base64.b64encode(_der(cert)).decode() + ":"


def _original(uri: str = "/home", method: str = "GET") -> dict[str, str]:
    return {"X-Forwarded-Method": method, "X-Forwarded-Uri": uri, "X-Forwarded-Host": "portal"}


async def _ask(
    base: str,
    headers: dict[str, str] | list[tuple[str, str]],
    cookies: dict[str, str] | None = None,
) -> tuple[int, aiohttp.typedefs.LooseHeaders, str]:
    async with aiohttp.ClientSession(cookies=cookies) as client:
        async with client.get(base + AUTH, headers=headers, allow_redirects=False) as resp:
            return resp.status, resp.headers.copy(), await resp.text()


# --- certificate header formats (pure)


def test_rfc9440_caddy_and_traefik_formats(tmp_path: Path) -> None:
    cert = own_ca_pair(tmp_path, "client", server=False).certificate
    b64 = base64.b64encode(_der(cert)).decode()
    assert parse_forwarded_certificate(f":{b64}:", "rfc9440") == cert
    assert parse_forwarded_certificate(b64, "caddy") == cert
    assert parse_forwarded_certificate(quote(b64, safe="") + ",OTHER", "traefik") == cert
    assert parse_forwarded_certificate("", "rfc9440") is None
    # Caddy leaves the placeholder unfilled on a connection without a certificate.
    unfilled = "{http.request.tls.client.certificate_der_base64}"
    assert parse_forwarded_certificate(unfilled, "caddy") is None
    with pytest.raises(ForwardedCertificateInvalid):
        parse_forwarded_certificate(unfilled, "haproxy")
    for value, fmt in ((b64, "rfc9440"), (":not base64!:", "rfc9440"), ("%%%", "caddy")):
        with pytest.raises(ForwardedCertificateInvalid):
            parse_forwarded_certificate(value, fmt)


def test_forward_auth_needs_a_certificate_format() -> None:
    with pytest.raises(ValueError, match="forward_auth = true needs terminator_format"):
        GatewaySettings(forward_auth=True, trusted_proxies=("127.0.0.1/32",))


# --- the endpoint


async def test_certificate_is_allowed_with_identity_headers(
    start: Start, broker_pem: PemPair
) -> None:
    base = await start()
    status, headers, _ = await _ask(
        base, {**_original(), "Client-Cert": _rfc9440(broker_pem.certificate)}
    )
    assert status == 200
    assert headers["X-Brokergate-Level"] == "strong"
    assert headers["X-Brokergate-Method"] == "certificate"
    assert headers["X-Brokergate-Email"] == "erika@example.org"
    assert headers["X-Brokergate-Assertion"].count(".") == 2  # a JWS
    assert "Set-Cookie" in headers  # single sign-on started a session


@pytest.mark.parametrize(
    ("fmt", "header", "encode"),
    [
        (
            "nginx",
            "X-SSL-Client-Cert",
            lambda c: quote(c.public_bytes(serialization.Encoding.PEM).decode(), safe=""),
        ),
        ("caddy", "X-SSL-Client-Cert", lambda c: base64.b64encode(_der(c)).decode()),
        (
            "envoy",
            "X-Forwarded-Client-Cert",
            lambda c: (
                'Hash=00;Cert="'
                + quote(c.public_bytes(serialization.Encoding.PEM).decode(), safe="")
                + '"'
            ),
        ),
    ],
)
async def test_each_front_format_signs_on(
    start: Start,
    broker_pem: PemPair,
    fmt: str,
    header: str,
    encode: Callable[[x509.Certificate], str],
) -> None:
    base = await start(terminator_format=fmt)
    status, headers, _ = await _ask(base, {**_original(), header: encode(broker_pem.certificate)})
    assert status == 200 and headers["X-Brokergate-Level"] == "strong"


async def test_traefik_request_shape_is_answered_within_auth_response_headers(
    start: Start, broker_pem: PemPair
) -> None:
    """What Traefik's ForwardAuth (deploy/traefik/dynamic.toml) sends: X-Forwarded-Method,
    -Proto, -Host, -Uri, -For, and passTLSClientCert's URL-escaped PEM body without its
    delimiters. Every identity header of the answer is one the example copies."""
    from tests.gateway_proxy.test_forward_auth_examples import traefik_dynamic

    base = await start(terminator_format="traefik")
    pem = base64.b64encode(_der(broker_pem.certificate)).decode()
    sent = {
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "portal.example",
        "X-Forwarded-Uri": "/home?tab=1",
        "X-Forwarded-For": "192.0.2.7",
        "X-Forwarded-Tls-Client-Cert": quote(pem, safe=""),
    }
    status, headers, _ = await _ask(base, sent)
    assert status == 200 and headers["X-Brokergate-Level"] == "strong"
    copied = traefik_dynamic()["http"]["middlewares"]["brokergate-auth"]["forwardAuth"]
    answered = {name for name in headers if name.lower().startswith("x-brokergate-")}
    assert answered and answered <= set(copied["authResponseHeaders"])
    assert "__Host-brokergate" in headers["Set-Cookie"]
    assert copied["addAuthCookiesToResponse"] == ["__Host-brokergate"]


async def test_session_cookie_of_the_sign_on_is_allowed_without_the_prompt(
    start: Start, broker_pem: PemPair
) -> None:
    base = await start()
    cert = {"Client-Cert": _rfc9440(broker_pem.certificate)}
    status, first, _ = await _ask(base, {**_original(), **cert})
    assert status == 200
    cookie = first["Set-Cookie"].split(";", 1)[0]  # Secure: the front copies it to the browser
    status, second, _ = await _ask(base, {**_original("/other"), **cert, "Cookie": cookie})
    assert status == 200 and second["X-Brokergate-Level"] == "strong"
    assert "Set-Cookie" not in second  # the steady state: cacheable at the front


async def test_nobody_gets_401_with_the_login_page(start: Start) -> None:
    base = await start()
    status, headers, text = await _ask(base, _original("/antrag?x=1"))
    assert status == 401 and "<title>Anmelden" in text
    assert not [name for name in headers if name.lower().startswith("x-brokergate-")]


async def test_the_login_page_speaks_the_chosen_language_and_switches_back_to_the_portal_path(
    start: Start,
) -> None:
    """Issue 16: the front passes the browser's cookies; the language switch on the page
    returns to the original request (with its query), not to /_gateway/auth."""
    base = await start()
    status, _, text = await _ask(
        base,
        {**_original("/antrag?x=1&y=2"), "Accept-Language": "de"},
        cookies={"__Host-bg-lang": "nl"},
    )
    assert status == 401 and '<html lang="nl">' in text and "<title>Inloggen" in text
    assert 'name="back" value="/antrag?x=1&amp;y=2"' in text


async def test_unknown_ca_certificate_gets_403_with_the_certificate_page(
    start: Start, tmp_path: Path
) -> None:
    base = await start()
    other = own_ca_pair(tmp_path, "other", server=False).certificate
    status, headers, text = await _ask(base, {**_original(), "Client-Cert": _rfc9440(other)})
    assert status == 403  # nginx auth_request knows only 2xx, 401 and 403
    assert "X-Brokergate-Level" not in headers
    assert "<title>" in text and "Anmelden" not in text.split("<title>")[1].split("<")[0]


async def test_the_certificate_page_offers_only_ways_that_reach_the_route(
    start: Start, tmp_path: Path
) -> None:
    """A bad certificate on a ``strong`` route: the broker-number + TAN login (``basic`` at
    most) is not offered as the way in; on a ``basic`` route it is."""
    base = await start(routes=(RouteRule(prefix="/antrag", level=Level.STRONG),))
    other = own_ca_pair(tmp_path, "other", server=False).certificate
    header = {"Client-Cert": _rfc9440(other)}
    _, _, strong = await _ask(base, {**_original("/antrag"), **header})
    _, _, basic = await _ask(base, {**_original("/home"), **header})
    assert "Passkey" in strong and "TAN" not in strong
    assert "Passkey" in basic and "E-Mail-TAN" in basic


async def test_the_original_route_decides(start: Start, broker_pem: PemPair) -> None:
    base = await start(default_level=Level.ANONYMOUS)
    status, _, _ = await _ask(base, _original("/public"))
    assert status == 200  # an anonymous route passes without anybody
    status, _, text = await _ask(base, _original("/_gateway/account"))
    # SECURITY: the reserved prefix is never the portal's; 403, as nginx knows no 404 here
    assert status == 403 and "Seite nicht gefunden" in text


@pytest.mark.parametrize(
    ("headers", "title"),
    [
        (_original("/a%2Fb"), "Ungültige Adresse"),  # PathRejected, 400 in standalone mode
        (_original("/a%zzb"), "Ungültige Adresse"),
        (_original("/_gateway/nothing"), "Seite nicht gefunden"),  # 404 in standalone mode
        (
            {**_original("/home"), "Client-Cert": ":not base64!:"},  # 400 in standalone mode
            "Ihr Zertifikat konnte nicht gelesen werden",
        ),
    ],
)
async def test_every_other_error_is_a_403_page_never_a_status_nginx_turns_into_500(
    start: Start, headers: dict[str, str], title: str
) -> None:
    base = await start(default_level=Level.ANONYMOUS)
    status, answer, text = await _ask(base, headers)
    assert status == 403, text  # nginx auth_request: only 2xx, 401 and 403 are answers
    assert title in text.split("<title>")[1]
    assert "X-Brokergate-Level" not in answer


@pytest.mark.parametrize(
    ("status", "sent"),
    [
        (200, 200),
        (204, 204),
        (401, 401),
        (403, 403),
        (302, 403),
        (400, 403),
        (404, 403),
        (429, 403),
        (500, 403),
        (503, 403),
    ],
)
def test_auth_request_status_mapping(status: int, sent: int) -> None:
    assert _auth_request_status(status) == sent


async def test_forged_headers_from_an_untrusted_peer_are_refused(
    start: Start, broker_pem: PemPair
) -> None:
    base = await start(trusted_proxies=("10.255.255.1/32",))  # the test client is not it
    status, headers, _ = await _ask(
        base, {**_original("/home"), "Client-Cert": _rfc9440(broker_pem.certificate)}
    )
    assert status == 403
    assert not [name for name in headers if name.lower().startswith("x-brokergate-")]
    assert "Set-Cookie" not in headers


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Forwarded-Method", "GET")],  # no URI
        [("X-Forwarded-Uri", "/home")],  # no method
        [("X-Forwarded-Method", "GET"), ("X-Forwarded-Uri", "https://evil/home")],
        [("X-Forwarded-Method", "G E T"), ("X-Forwarded-Uri", "/home")],
        [
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Uri", "/public"),
            ("X-Forwarded-Uri", "/home"),
        ],
    ],
)
async def test_incomplete_or_repeated_original_request_is_refused(
    start: Start, broker_pem: PemPair, headers: list[tuple[str, str]]
) -> None:
    base = await start(default_level=Level.ANONYMOUS)
    status, answer, _ = await _ask(
        base, [*headers, ("Client-Cert", _rfc9440(broker_pem.certificate))]
    )
    assert status == 403
    assert "X-Brokergate-Level" not in answer


async def test_without_forward_auth_there_is_no_decision_endpoint(
    start: Start, broker_pem: PemPair
) -> None:
    base = await start(forward_auth=False, terminator_format="rfc9440")
    status, headers, _ = await _ask(
        base, {**_original(), "Client-Cert": _rfc9440(broker_pem.certificate)}
    )
    assert status == 404 and "X-Brokergate-Level" not in headers


def test_forward_auth_leaves_room_for_the_front_decision_cache() -> None:
    """Staleness (4 s by default) plus the front's 2 s cache would pass 5 s."""
    front = GatewaySettings(
        upstream_url="http://127.0.0.1:1",
        terminator_format="nginx",
        forward_auth=True,
        trusted_proxies=("127.0.0.1/32",),
    )
    standalone = GatewaySettings(upstream_url="http://127.0.0.1:1")
    default = timedelta(seconds=4)
    assert staleness_bound(standalone, default) == default
    assert staleness_bound(front, default) + FRONT_DECISION_CACHE < timedelta(seconds=5)
    assert staleness_bound(front, timedelta(seconds=1)) == timedelta(seconds=1)
