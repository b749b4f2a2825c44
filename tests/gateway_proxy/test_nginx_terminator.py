"""The shipped nginx configuration, run by a real nginx, in front of the extraction function.

nginx terminates mTLS on loopback (ssl_verify_client optional_no_ca) and proxies to an
aiohttp app that calls ``certificate_from_terminator`` and answers with the fingerprint it
got. Broker certificates come from our CA.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from ca import fingerprint_sha256
from gateway._settings import GatewaySettings
from gateway.auth._terminator import ForwardedCertificateInvalid, certificate_from_terminator
from tests.gateway_proxy._certs import PemPair, own_ca_pair
from tests.gateway_proxy._nginx import NGINX, adapted_config, free_port, running_nginx
from tests.gateway_proxy.conftest import start_site

pytestmark = pytest.mark.skipif(
    not Path(NGINX).exists(), reason="nginx is not installed (make system-deps)"
)


def _extraction_app(settings: GatewaySettings) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        try:
            cert = certificate_from_terminator(request, settings)
        except ForwardedCertificateInvalid as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        return web.json_response(
            {
                "fingerprint": fingerprint_sha256(cert) if cert else None,
                "forwarded_for": request.headers.get("X-Forwarded-For"),
                "proto": request.headers.get("X-Forwarded-Proto"),
            }
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.fixture
async def front(
    request: pytest.FixtureRequest, server_pem: PemPair, tmp_path: Path
) -> AsyncIterator[str]:
    """nginx (shipped config) → extraction app; trusted_proxies via indirect parametrisation."""
    trusted: tuple[str, ...] = getattr(request, "param", ("127.0.0.1/32",))
    settings = GatewaySettings(terminator_format="nginx", trusted_proxies=trusted)
    runner, app_port = await start_site(_extraction_app(settings))
    listen = free_port()
    config = adapted_config(
        listen_port=listen, cert=server_pem.cert, key=server_pem.key, gateway_port=app_port
    )
    try:
        with running_nginx(tmp_path / "nginx", server_config=config, listen_port=listen):
            yield f"https://127.0.0.1:{listen}"
    finally:
        await runner.cleanup()


def _client_context(server: PemPair, client: PemPair | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server.cert))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


async def _get(
    url: str, server: PemPair, client: PemPair | None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    connector = aiohttp.TCPConnector(ssl=_client_context(server, client))
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(url + "/portal/start", headers=headers or {}) as resp:
            return resp.status, await resp.json()


async def test_certificate_forwarded_and_parsed(
    front: str, server_pem: PemPair, broker_pem: PemPair
) -> None:
    status, body = await _get(front, server_pem, broker_pem)
    assert status == 200
    assert body["fingerprint"] == fingerprint_sha256(broker_pem.certificate)
    assert body["proto"] == "https"
    assert body["forwarded_for"] == "127.0.0.1"


async def test_no_certificate_is_none(front: str, server_pem: PemPair) -> None:
    status, body = await _get(front, server_pem, None)
    assert status == 200 and body["fingerprint"] is None


async def test_client_cannot_inject_the_header_through_nginx(
    front: str, server_pem: PemPair, broker_pem: PemPair, tmp_path: Path
) -> None:
    forged = own_ca_pair(tmp_path / "forged", "forged", server=False)
    pem = forged.certificate.public_bytes(serialization.Encoding.PEM).decode()
    spellings = {"X-SSL-Client-Cert": quote(pem, safe=""), "X_SSL_Client_Cert": quote(pem)}
    # without a certificate: nginx drops the client's header (empty proxy_set_header value)
    status, body = await _get(front, server_pem, None, spellings)
    assert status == 200 and body["fingerprint"] is None
    # with one: nginx replaces it with the real certificate
    status, body = await _get(front, server_pem, broker_pem, spellings)
    assert body["fingerprint"] == fingerprint_sha256(broker_pem.certificate)


@pytest.mark.parametrize("front", [("10.0.0.0/8",)], indirect=True)
async def test_untrusted_terminator_address_is_ignored(
    front: str, server_pem: PemPair, broker_pem: PemPair
) -> None:
    status, body = await _get(front, server_pem, broker_pem)
    assert status == 200 and body["fingerprint"] is None


async def test_expired_certificate_still_reaches_the_gateway(
    front: str, server_pem: PemPair, tmp_path: Path
) -> None:
    # nginx answers 495 for an expired certificate even with optional_no_ca; the shipped
    # config hands that request to the gateway so the broker gets our explanation page.
    now = datetime.now(UTC)
    expired = own_ca_pair(
        tmp_path / "expired",
        "expired",
        server=False,
        not_before=now - timedelta(days=800),
        not_after=now - timedelta(days=2),
    )
    status, body = await _get(front, server_pem, expired)
    assert status == 200
    assert body["fingerprint"] == fingerprint_sha256(expired.certificate)
