"""Forward-auth end to end behind the real Caddy 2.6 (Debian) with deploy/caddy/Caddyfile:
browser → Caddy (``forward_auth`` to the real gateway app) → the echo portal."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy.orm import Session, sessionmaker

from ca import CertificateAuthority, load_trust_material
from gateway import setup_logins
from gateway._metrics import GatewayMetrics
from gateway._service import gateway_app_factory
from gateway._settings import GatewaySettings
from gateway.logins import LoginSettings
from store import RevocationReason
from tests.conftest import TEST_SECRET_KEY, FakeClock, free_port
from tests.gateway_proxy._certs import PemPair
from tests.gateway_proxy._nginx import UNAVAILABLE_PAGE
from tests.gateway_proxy.conftest import start_site
from tests.gateway_proxy.test_forward_auth_nginx import _context, _get, _portal_saw
from tests.polling import async_wait_for, wait_for

CADDY = shutil.which("caddy") or "/usr/bin/caddy"
pytestmark = pytest.mark.skipif(
    not Path(CADDY).exists(), reason="caddy is not installed (make system-deps)"
)
CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "caddy" / "Caddyfile"


def _adapted(
    listen: int,
    server: PemPair,
    gateway: int,
    portal: int,
    bundle: Path,
    gateway_timeout: float | None = None,
) -> str:
    """The shipped file with only its ADAPT lines changed to loopback test values;
    ``gateway_timeout``: the wait on a hung brokergate (None: the shipped 20 s)."""
    text = CONFIG.read_text(encoding="utf-8")
    replacements = [
        # The name, not the address: Caddy answers 421 when the client sends no SNI (an IP
        # address) to a site with client_auth; bound to loopback only.
        (r"https://portal\.example:443 \{", f"https://localhost:{listen} {{\n\tbind 127.0.0.1", 1),
        (r"/etc/brokergate/tls/server\.pem", str(server.cert), 1),
        (r"/etc/brokergate/tls/server-key\.pem", str(server.key), 1),
        (r"/etc/brokergate/tls/ca-bundle\.pem", str(bundle), 1),
        (r"127\.0\.0\.1:8443", f"127.0.0.1:{gateway}", 2),
        (r"127\.0\.0\.1:8080", f"127.0.0.1:{portal}", 1),
        (r"root \* /etc/brokergate/nginx ", f"root * {UNAVAILABLE_PAGE.parent} ", 1),
    ]
    if gateway_timeout is not None:
        timeout = f"response_header_timeout {gateway_timeout:g}s"
        replacements.append((r"response_header_timeout 20s", timeout, 2))
    for pattern, value, times in replacements:
        text, count = re.subn(pattern, value, text)
        assert count == times, pattern
    return text


@contextmanager
def running_caddy(folder: Path, config: str, port: int) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "Caddyfile"
    path.write_text(config, encoding="utf-8")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(folder), "XDG_DATA_HOME": str(folder)}
    env["XDG_CONFIG_HOME"] = str(folder)
    log = (folder / "caddy.log").open("wb")
    process = subprocess.Popen(
        [CADDY, "run", "--config", str(path), "--adapter", "caddyfile"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:

        def listening() -> bool:
            assert process.poll() is None, (folder / "caddy.log").read_text()
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, timeout=10.0, message="caddy does not listen")
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture
async def front(
    db_url: str,
    server_pem: PemPair,
    upstream_url: str,
    tmp_path: Path,
    broker_pem: PemPair,
    clock: FakeClock,
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
) -> AsyncIterator[str]:
    settings = GatewaySettings(
        upstream_url=upstream_url,
        terminator_format="caddy",
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
    bundle = tmp_path / "ca-bundle.pem"
    with sessions() as session:
        bundle.write_bytes(load_trust_material(session).bundle_pem())
    runner, gateway_port = await start_site(app)
    listen = free_port()
    portal_port = int(upstream_url.rsplit(":", 1)[1])
    config = _adapted(listen, server_pem, gateway_port, portal_port, bundle)
    try:
        with running_caddy(tmp_path / "caddy", config, listen):
            yield f"https://localhost:{listen}"
    finally:
        await runner.cleanup()


async def test_certificate_sso_through_caddy_with_no_prompt(
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
    # issue 13: the firm, copied by copy_headers, never the client's copies
    assert seen["x-brokergate-rights"] == ["DIL,DIP,ORV"] and seen["x-brokergate-role"] == ["head"]
    assert seen["x-brokergate-office-number"] == seen["x-brokergate-head-office-number"]
    assert seen["x-brokergate-method"] == ["certificate"]
    assert "x-brokergate-assertion" in seen
    for name in ("x-brokergate-office", "client-cert", "x-ssl-client-cert"):
        assert name not in seen, name  # SECURITY: client-sent, never reaches the portal


async def test_no_certificate_through_caddy_gets_the_login_page(
    front: str, server_pem: PemPair
) -> None:
    status, text = await _get(
        front + "/echo/home",
        _context(server_pem, None),
        headers={"X-Brokergate-Level": "strong"},
    )
    assert status == 401, text[:3000]
    assert "<title>Anmelden" in text
    assert "path_qs" not in text  # did not reach the portal


async def test_the_session_cookie_never_reaches_the_portal_through_caddy(
    front: str, server_pem: PemPair, broker_pem: PemPair
) -> None:
    context = _context(server_pem, broker_pem)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as client:
        for cookie, portal_gets in (
            ("portal=1; __Host-brokergate=abc; other=2", ["portal=1", "other=2"]),
            ("__Host-brokergate=abc; portal=1", ["portal=1"]),
            ("portal=1; __Host-brokergate=abc", ["portal=1"]),
        ):
            async with client.get(front + "/echo/home", headers={"Cookie": cookie}) as resp:
                assert resp.status == 200, cookie
                seen = _portal_saw(await resp.text())
            parts = [p.strip() for c in seen.get("cookie", []) for p in c.split(";")]
            assert [p for p in parts if p] == portal_gets
            assert "__Host-brokergate" not in json.dumps(seen)  # SECURITY


async def test_revoked_certificate_gets_its_page_through_caddy_within_5s(
    front: str, server_pem: PemPair, broker_pem: PemPair, authority: CertificateAuthority
) -> None:
    context = _context(server_pem, broker_pem)
    status, text = await _get(front + "/echo/home", context)
    assert status == 200, text
    serial = format(broker_pem.certificate.serial_number, "x")
    assert authority.revoke(serial, RevocationReason.KEY_COMPROMISE, "test:forward-auth")
    status, text = await async_wait_for(
        lambda: _get(front + "/echo/home", context),
        until=lambda answer: answer[0] != 200,
        timeout=5.0,
        message="caddy still lets the revoked certificate through",
    )
    assert status == 403 and "Ihr Zertifikat wurde gesperrt" in text
