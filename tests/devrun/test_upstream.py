"""The demo upstream: shows the identity headers, and verifies the assertion against a
JWKS served over real TLS with the dev server certificate (a stand-in gateway here; the
end-to-end test uses the real one)."""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from joserfc import jwt
from joserfc.jwk import ECKey

from brokergate._dev import ServerCertPaths, UpstreamSettings, create_upstream_app
from brokergate._dev._upstream import JWKS_PATH
from tests.devrun.conftest import free_port


@dataclass
class Setup:
    upstream: str
    gateway: str
    key: ECKey


def sign(key: ECKey, kid: str, **claims: Any) -> str:
    now = int(time.time())
    base = {"iss": "", "aud": "", "sub": "7", "iat": now, "nbf": now, "exp": now + 60}
    return jwt.encode({"alg": "ES256", "kid": kid}, {**base, **claims}, key, algorithms=["ES256"])


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    from brokergate._dev import ensure_server_certificates

    paths = ServerCertPaths(
        ca_cert=tmp_path / "server-ca.pem",
        ca_key=tmp_path / "server-ca-key.pem",
        cert=tmp_path / "server.pem",
        key=tmp_path / "server-key.pem",
    )
    ensure_server_certificates(paths, now=datetime.now(UTC))
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    jwks = {"keys": [key.as_dict(private=False)]}

    async def serve_jwks(request: web.Request) -> web.Response:
        return web.json_response(jwks)

    gateway_app = web.Application()
    gateway_app.router.add_get(JWKS_PATH, serve_jwks)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(paths.cert, paths.key)
    gw_port, up_port = free_port(), free_port()
    gateway_url, upstream_url = f"https://localhost:{gw_port}", f"http://127.0.0.1:{up_port}"
    gw_runner = web.AppRunner(gateway_app)
    settings = UpstreamSettings(
        gateway_url=gateway_url, own_url=upstream_url, gateway_ca_file=str(paths.ca_cert)
    )
    up_runner = web.AppRunner(create_upstream_app(settings, clock=lambda: datetime.now(UTC)))
    try:
        await gw_runner.setup()
        await web.TCPSite(gw_runner, "127.0.0.1", gw_port, ssl_context=tls).start()
        await up_runner.setup()
        await web.TCPSite(up_runner, "127.0.0.1", up_port).start()
        yield Setup(upstream=upstream_url, gateway=gateway_url, key=key)
    finally:  # also when a site failed to start: no listening socket outlives the test
        await up_runner.cleanup()
        await gw_runner.cleanup()


async def page(setup: Setup, headers: dict[str, str], accept: str = "*/*") -> str:
    async with (
        ClientSession() as client,
        client.get(f"{setup.upstream}/portal?x=1", headers={**headers, "Accept": accept}) as r,
    ):
        assert r.status == 200
        return await r.text()


async def test_a_valid_assertion_verifies_and_headers_are_shown(setup: Setup) -> None:
    token = sign(setup.key, "k1", iss=setup.gateway, aud=setup.upstream, email="a@example.org")
    text = await page(
        setup,
        {
            "X-Brokergate-Email": "a@example.org",
            "X-Brokergate-Level": "strong",
            "X-Brokergate-Assertion": token,
            "X-Other": "not shown",
        },
    )
    assert "GET /portal?x=1" in text
    assert "X-Brokergate-Email: a@example.org" in text
    assert "X-Brokergate-Level: strong" in text
    assert "X-Other" not in text
    assert "verified (ES256, kid k1)" in text
    assert "email: a@example.org" in text


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "http://elsewhere"}, "aud"),
        ({"iss": "https://impostor"}, "iss"),
        ({"exp": int(time.time()) - 3600}, "expired"),
    ],
)
async def test_wrong_claims_are_rejected(setup: Setup, claims: dict[str, Any], reason: str) -> None:
    base: dict[str, Any] = {"iss": setup.gateway, "aud": setup.upstream}
    token = sign(setup.key, "k1", **{**base, **claims})
    text = await page(setup, {"X-Brokergate-Assertion": token})
    assert "rejected" in text
    assert reason in text
    assert "verified (" not in text


async def test_a_foreign_key_is_rejected(setup: Setup) -> None:
    other = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    token = sign(other, "k1", iss=setup.gateway, aud=setup.upstream)
    text = await page(setup, {"X-Brokergate-Assertion": token})
    assert "rejected" in text and "verified (" not in text


async def test_without_gateway_there_is_no_identity(setup: Setup) -> None:
    text = await page(setup, {}, accept="text/html")
    assert "No identity headers received." in text
    assert "no assertion" in text
    assert text.startswith("<!doctype html>")
