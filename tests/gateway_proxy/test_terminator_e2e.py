"""Terminator mode end to end: browser → nginx (shipped config) → the real gateway app → upstream.

The gateway app is gw-core's ``create_app`` wired by ``gateway_app_factory`` exactly as
``brokergate gateway serve`` wires it, with ``terminator_format = "nginx"``; the broker
certificate comes from our CA. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway._metrics import GatewayMetrics
from gateway._service import gateway_app_factory
from gateway._settings import GatewaySettings
from tests.conftest import TEST_SECRET_KEY
from tests.gateway_proxy._certs import PemPair, own_ca_pair
from tests.gateway_proxy._nginx import NGINX, adapted_config, free_port, running_nginx
from tests.gateway_proxy.conftest import start_site

pytestmark = pytest.mark.skipif(
    not Path(NGINX).exists(), reason="nginx is not installed (make system-deps)"
)


@pytest.fixture
async def portal(
    db_url: str, server_pem: PemPair, upstream_url: str, tmp_path: Path, broker_pem: PemPair
) -> AsyncIterator[str]:
    """nginx on TLS → gateway (plain HTTP, loopback, terminator mode) → echo upstream."""
    settings = GatewaySettings(
        upstream_url=upstream_url,
        terminator_format="nginx",
        trusted_proxies=("127.0.0.1/32",),
        public_url="https://127.0.0.1",
    )
    app = gateway_app_factory(settings=settings, store_url=db_url, secret_key=TEST_SECRET_KEY)(
        None, GatewayMetrics()
    )
    runner, gateway_port = await start_site(app)
    listen = free_port()
    config = adapted_config(
        listen_port=listen, cert=server_pem.cert, key=server_pem.key, gateway_port=gateway_port
    )
    try:
        with running_nginx(tmp_path / "nginx", server_config=config, listen_port=listen):
            yield f"https://127.0.0.1:{listen}"
    finally:
        await runner.cleanup()


def _context(server: PemPair, client: PemPair | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server.cert))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


async def _get(url: str, context: ssl.SSLContext, **kwargs: Any) -> tuple[int, str, str]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as client:
        async with client.get(url, allow_redirects=False, **kwargs) as resp:
            return resp.status, resp.headers.get("Location", ""), await resp.text()


def _upstream_headers(text: str) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in json.loads(text)["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    return headers


async def test_certificate_via_nginx_logs_the_broker_in(
    portal: str, server_pem: PemPair, broker_pem: PemPair
) -> None:
    status, _, text = await _get(portal + "/echo/home", _context(server_pem, broker_pem))
    assert status == 200, text
    headers = _upstream_headers(text)
    assert headers["x-brokergate-level"] == ["strong"]
    assert headers["x-brokergate-method"] == ["certificate"]
    assert headers["x-brokergate-email"] == ["erika@example.org"]
    assert "x-brokergate-assertion" in headers
    assert "x-ssl-client-cert" not in headers  # never forwarded to the portal
    assert headers["x-forwarded-proto"] == ["https"]


async def test_no_certificate_via_nginx_gets_the_login_page(
    portal: str, server_pem: PemPair
) -> None:
    status, _, text = await _get(portal + "/echo/home", _context(server_pem, None))
    assert "path_qs" not in text  # did not reach the upstream
    assert status == 401 and "<title>Anmelden" in text  # the login page (German default)


async def test_forged_header_via_nginx_does_not_log_in(
    portal: str, server_pem: PemPair, broker_pem: PemPair, tmp_path: Path
) -> None:
    from urllib.parse import quote

    from cryptography.hazmat.primitives import serialization

    pem = broker_pem.certificate.public_bytes(serialization.Encoding.PEM).decode()
    # The attacker has the broker's certificate (public) but not the key: no TLS client cert.
    status, _, text = await _get(
        portal + "/echo/home",
        _context(server_pem, None),
        headers={"X-SSL-Client-Cert": quote(pem, safe="")},
    )
    assert "path_qs" not in text  # did not reach the upstream
    assert status == 401 and "<title>Anmelden" in text
    # and with someone else's certificate the broker's header cannot be smuggled either
    other = own_ca_pair(tmp_path / "other", "other", server=False)
    status, _, text = await _get(
        portal + "/echo/home",
        _context(server_pem, other),
        headers={"X-SSL-Client-Cert": quote(pem, safe="")},
    )
    assert "path_qs" not in text and status != 200


def test_app_factory_builds_an_application(db_url: str) -> None:
    settings = GatewaySettings(terminator_format="nginx", trusted_proxies=("127.0.0.1",))
    app = gateway_app_factory(settings=settings, store_url=db_url, secret_key=TEST_SECRET_KEY)(
        None, GatewayMetrics()
    )
    assert isinstance(app, web.Application)
