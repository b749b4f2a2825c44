"""Envoy ``ext_authz`` (HTTP service) in front of brokergate (issue 11).

No Envoy binary is installable on this machine (not in Debian's archive nor a registry
package), so these tests send, from a real aiohttp client on loopback, exactly what Envoy's
ext_authz HTTP service sends for the shipped ``deploy/envoy/envoy.yaml``. The shape is taken
from Envoy's own sources: ``api/envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto``
(``HttpService.path_prefix``: "Sets a prefix to the value of authorization request header
Path"; ``AuthorizationRequest``: "Host, Method, Path, Content-Length, and Authorization are
automatically included", Content-Length 0 and no body by default; ``HttpService``: "On
authorization response status HTTP 200 OK, the filter will allow traffic … On other
authorization response statuses … body may be added to the client's response") and
``source/extensions/filters/common/ext_authz/ext_authz_http_impl.cc`` (the original
request's headers copied, ``path_prefix`` prepended to ``:path``, which carries the query).

So the check for ``POST /antrag/neu?x=1`` on ``portal.example`` is::

    POST /_gateway/auth/envoy/antrag/neu?x=1
    Host: portal.example
    Content-Length: 0
    Cookie: …                              (allowed_headers)
    X-Forwarded-Client-Cert: Hash=…;Cert="…"  (set by the HCM: SANITIZE_SET)
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca import CertificateAuthority
from gateway import setup_logins
from gateway._metrics import GatewayMetrics
from gateway._service import gateway_app_factory
from gateway._settings import GatewaySettings, RouteRule
from gateway.logins import LoginSettings
from gateway.proxy._identity_headers import IDENTITY_HEADER_PREFIX
from store import Level
from tests.conftest import TEST_SECRET_KEY, FakeClock
from tests.gateway_proxy._certs import PemPair, own_ca_pair
from tests.gateway_proxy.conftest import start_site

ENVOY_YAML = Path(__file__).resolve().parents[2] / "deploy" / "envoy" / "envoy.yaml"
PREFIX = "/_gateway/auth/envoy"
Start = Callable[..., Awaitable[str]]


@pytest.fixture
async def start(
    db_url: str, upstream_url: str, authority: CertificateAuthority, clock: FakeClock
) -> AsyncIterator[Start]:
    """``await start(**settings)`` → the base URL of the gateway as behind Envoy."""
    runners: list[web.AppRunner] = []

    async def run(**overrides: Any) -> str:
        values: dict[str, Any] = {
            "upstream_url": upstream_url,
            "terminator_format": "envoy",
            "forward_auth": True,
            "trusted_proxies": ("127.0.0.1/32",),
            "public_url": "https://portal.example",
            **overrides,
        }
        logins = setup_logins(
            settings=LoginSettings(), secret_key=TEST_SECRET_KEY, make_authority=lambda _: authority
        )
        app = gateway_app_factory(
            settings=GatewaySettings(**values),
            store_url=db_url,
            secret_key=TEST_SECRET_KEY,
            clock=clock,
            extensions=[logins],
        )(None, GatewayMetrics())
        runner, port = await start_site(app)
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield run
    for runner in runners:
        await runner.cleanup()


def _xfcc(cert: x509.Certificate) -> str:
    """What Envoy's HCM sets with ``forward_client_cert_details: SANITIZE_SET`` and
    ``set_current_client_cert_details: {subject: true, cert: true}``."""
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    digest = cert.fingerprint(cert.signature_hash_algorithm or serialization.hashes.SHA256())
    subject = cert.subject.rfc4514_string().replace('"', '\\"')
    return f'Hash={digest.hex()};Cert="{quote(pem, safe="")}";Subject="{subject}"'


async def _check(
    base: str,
    original: str,
    *,
    method: str = "GET",
    cert: x509.Certificate | None = None,
    cookie: str | None = None,
) -> tuple[int, dict[str, str], str]:
    """One ext_authz check for ``method original`` on portal.example, as Envoy sends it."""
    headers = {"Host": "portal.example", "Content-Length": "0"}
    headers["X-Envoy-Expected-Rq-Timeout-Ms"] = "1000"  # Envoy's async client adds it
    if cookie is not None:
        headers["Cookie"] = cookie
    if cert is not None:
        headers["X-Forwarded-Client-Cert"] = _xfcc(cert)
    async with aiohttp.ClientSession(
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding")
    ) as client:
        async with client.request(
            method, base + PREFIX + original, headers=headers, allow_redirects=False
        ) as resp:
            answer = {name: value for name, value in resp.headers.items()}
            return resp.status, answer, await resp.text()


async def test_a_certificate_is_allowed_with_identity_headers_and_the_sso_cookie(
    start: Start, broker_pem: PemPair
) -> None:
    base = await start()
    status, headers, _ = await _check(base, "/home?tab=1", cert=broker_pem.certificate)
    assert status == 200  # Envoy: only 200 allows
    assert headers["X-Brokergate-Level"] == "strong"
    assert headers["X-Brokergate-Assertion"].count(".") == 2
    # allowed_client_headers_on_success: set-cookie, so SSO's session reaches the browser.
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    assert cookie.startswith("__Host-brokergate=")
    status, headers, _ = await _check(base, "/home", cert=broker_pem.certificate, cookie=cookie)
    assert status == 200 and "Set-Cookie" not in headers


async def test_every_identity_header_answered_is_one_envoy_copies_upstream(
    start: Start, broker_pem: PemPair
) -> None:
    base = await start()
    _, headers, _ = await _check(base, "/home", cert=broker_pem.certificate)
    answered = {name.lower() for name in headers if name.lower().startswith("x-brokergate-")}
    assert answered
    assert IDENTITY_HEADER_PREFIX == "x-brokergate-"
    # The shipped config copies exactly that prefix, and strips it from what clients send.
    text = ENVOY_YAML.read_text(encoding="utf-8")
    copied = r"allowed_upstream_headers:\s*\n\s*patterns:\s*\n\s*- prefix: x-brokergate-"
    assert re.search(copied, text)


async def test_nobody_gets_the_login_page_as_it_is(start: Start) -> None:
    base = await start()
    status, headers, text = await _check(base, "/antrag?x=1")
    assert status == 401 and "<title>Anmelden" in text
    assert "text/html" in headers["Content-Type"]
    assert "%2Fantrag%3Fx%3D1" in text or "/antrag?x=1" in text  # back to the original
    assert not [name for name in headers if name.lower().startswith("x-brokergate-")]


async def test_the_original_method_and_path_decide(start: Start, broker_pem: PemPair) -> None:
    base = await start(
        default_level=Level.ANONYMOUS,
        routes=(RouteRule(prefix="/antrag", level=Level.STRONG, methods=("POST",)),),
    )
    assert (await _check(base, "/antrag"))[0] == 200  # GET: anonymous
    assert (await _check(base, "/antrag", method="POST"))[0] == 401  # POST: strong
    status, _, _ = await _check(base, "/antrag", method="POST", cert=broker_pem.certificate)
    assert status == 200


async def test_a_page_keeps_its_own_status_for_the_browser(start: Start, tmp_path: Path) -> None:
    """Envoy passes a denial to the browser as it is: no 403 mapping as for nginx."""
    base = await start(default_level=Level.ANONYMOUS)
    status, _, text = await _check(base, "/a%2Fb")
    assert status == 400 and "Ungültige Adresse" in text
    status, _, text = await _check(base, "/_gateway/account")
    assert status == 404  # SECURITY: the reserved prefix is never the portal's
    other = own_ca_pair(tmp_path, "other", server=False).certificate
    status, headers, text = await _check(await start(), "/home", cert=other)
    assert status == 403 and "X-Brokergate-Level" not in headers


async def test_an_untrusted_peer_gets_no_decision(start: Start, broker_pem: PemPair) -> None:
    base = await start(trusted_proxies=("10.255.255.1/32",))  # the test client is not it
    status, headers, _ = await _check(base, "/home", cert=broker_pem.certificate)
    assert status == 403
    assert not [name for name in headers if name.lower().startswith("x-brokergate-")]
    assert "Set-Cookie" not in headers


async def test_the_envoy_form_exists_only_behind_envoy(start: Start, broker_pem: PemPair) -> None:
    """Behind nginx, /_gateway/auth/envoy/… would arrive through its /_gateway/ location
    from the trusted peer: it must not be a decision there."""
    base = await start(terminator_format="nginx")
    cert = quote(broker_pem.certificate.public_bytes(serialization.Encoding.PEM).decode(), safe="")
    async with aiohttp.ClientSession() as client:
        async with client.get(
            base + PREFIX + "/home", headers={"X-SSL-Client-Cert": cert}, allow_redirects=False
        ) as resp:
            assert resp.status == 404
            assert "X-Brokergate-Assertion" not in resp.headers


def test_the_shipped_envoy_config_keeps_the_promises() -> None:
    """What can be checked without Envoy: the keys the promises rest on."""
    text = ENVOY_YAML.read_text(encoding="utf-8")
    for needle in (
        "path_prefix: /_gateway/auth/envoy",
        "forward_client_cert_details: SANITIZE_SET",
        "trust_chain_verification: ACCEPT_UNTRUSTED",  # a bad certificate gets its page
        "require_client_certificate: false",
        "failure_mode_allow: false",
        "- exact: cookie",
        "- exact: x-forwarded-client-cert",
        "- exact: set-cookie",
    ):
        assert needle in text, needle
    # The decision endpoint is never reachable from outside, in either form.
    assert re.search(r"prefix: /_gateway/auth\s*\n\s*direct_response:\s*\n\s*status: 404", text)
    # Client-sent identity and certificate headers are stripped before ext_authz runs.
    order = [
        text.index(f"- name: {name}\n")
        for name in (
            "brokergate-strip",
            "envoy.filters.http.ext_authz",
            "brokergate-portal",  # then our cookie and the certificate are cut for the portal
            "envoy.filters.http.router",
        )
    ]
    assert order == sorted(order)
    for name in ("x%-brokergate%-", "client%-cert", "x%-ssl%-client%-", "x%-forwarded%-tls%-"):
        assert name in text, name


def _title(page: str) -> str:
    return page.split("<title>", 1)[1].split("<", 1)[0] if "<title>" in page else ""


async def test_the_envoy_form_decides_as_the_forwarded_headers_form(
    start: Start, broker_pem: PemPair, tmp_path: Path
) -> None:
    """One decision, two spellings: for each case the Envoy form and /_gateway/auth (the
    X-Forwarded-* form, from the same trusted peer) allow the same requests, with the same
    identity, and refuse the others with the same page (nginx's form maps its status)."""
    base = await start(
        routes=(
            RouteRule(prefix="/public", level=Level.ANONYMOUS),
            RouteRule(prefix="/antrag", level=Level.STRONG, methods=("POST",)),
        )
    )
    other = own_ca_pair(tmp_path, "other", server=False).certificate
    cases: list[tuple[str, str, x509.Certificate | None]] = [
        ("GET", "/public?x=1", None),
        ("GET", "/home", None),
        ("GET", "/home", broker_pem.certificate),
        ("POST", "/antrag", None),
        ("POST", "/antrag", broker_pem.certificate),
        ("GET", "/home", other),
        ("GET", "/a%2Fb", None),
        ("GET", "/_gateway/account", broker_pem.certificate),
    ]
    for method, target, cert in cases:
        envoy = await _check(base, target, method=method, cert=cert)
        headers = {"X-Forwarded-Method": method, "X-Forwarded-Uri": target}
        headers["X-Forwarded-Host"] = "portal.example"
        if cert is not None:
            headers["X-Forwarded-Client-Cert"] = _xfcc(cert)
        async with aiohttp.ClientSession() as client:
            async with client.get(base + "/_gateway/auth", headers=headers) as resp:
                forwarded = (resp.status, dict(resp.headers), await resp.text())
        case = f"{method} {target} {'cert' if cert is not None else ''}"
        assert (envoy[0] == 200) == (forwarded[0] == 200), case
        if envoy[0] == 200:
            for name in ("X-Brokergate-Level", "X-Brokergate-User-Id", "X-Brokergate-Method"):
                assert envoy[1].get(name) == forwarded[1].get(name), (case, name)
        else:
            assert _title(envoy[2]) == _title(forwarded[2]), case
            assert forwarded[0] in (401, 403), case  # nginx's auth_request statuses
