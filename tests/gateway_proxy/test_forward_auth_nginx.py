"""Forward-auth end to end: browser → the real nginx with deploy/nginx/forward-auth.conf →
portal, nginx asking the real gateway app (``forward_auth``) on every request."""

from __future__ import annotations

import json
import re
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway._metrics import GatewayMetrics
from gateway._service import gateway_app_factory
from gateway._settings import GatewaySettings
from tests.conftest import TEST_SECRET_KEY
from tests.gateway_proxy._certs import PemPair
from tests.gateway_proxy._nginx import NGINX, REPO, free_port, running_nginx
from tests.gateway_proxy.conftest import start_site

pytestmark = pytest.mark.skipif(
    not Path(NGINX).exists(), reason="nginx is not installed (make system-deps)"
)
CONFIG = REPO / "deploy" / "nginx" / "forward-auth.conf"


def _adapted(listen: int, server: PemPair, gateway: int, portal: int, cache: Path) -> str:
    text = CONFIG.read_text(encoding="utf-8")
    for pattern, value in (
        (r"listen 443 ssl;", f"listen 127.0.0.1:{listen} ssl;"),
        (r"ssl_certificate\s+\S+;", f"ssl_certificate {server.cert};"),
        (r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {server.key};"),
        (r"server 127\.0\.0\.1:8443;", f"server 127.0.0.1:{gateway};"),
        (r"server 127\.0\.0\.1:8080;", f"server 127.0.0.1:{portal};"),
        (r"proxy_cache_path \S+", f"proxy_cache_path {cache}"),
    ):
        text, count = re.subn(pattern, value, text, count=1)
        assert count == 1, pattern
    return text


@pytest.fixture
def cache() -> Iterator[Path]:
    """nginx's workers (user nobody when run as root) write the decision cache: not under
    tmp_path (mode 0700), but in a directory of its own they can reach."""
    path = Path(tempfile.mkdtemp(prefix="brokergate-auth-cache-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def front(
    db_url: str,
    server_pem: PemPair,
    upstream_url: str,
    tmp_path: Path,
    broker_pem: PemPair,
    cache: Path,
) -> AsyncIterator[str]:
    settings = GatewaySettings(
        upstream_url=upstream_url,
        terminator_format="nginx",
        forward_auth=True,
        trusted_proxies=("127.0.0.1/32",),
        public_url="https://127.0.0.1",
    )
    app = gateway_app_factory(settings=settings, store_url=db_url, secret_key=TEST_SECRET_KEY)(
        None, GatewayMetrics()
    )
    runner, gateway_port = await start_site(app)
    listen = free_port()
    portal_port = int(upstream_url.rsplit(":", 1)[1])
    config = _adapted(listen, server_pem, gateway_port, portal_port, cache)
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
            "Client-Cert": ":AAAA:",
            "X-SSL-Client-Cert": "forged",
        },
    )
    assert status == 200, text
    seen = _portal_saw(text)
    assert seen["x-brokergate-level"] == ["strong"]
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
