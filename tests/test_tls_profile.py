"""The gateway's TLS and the shipped nginx configuration against Mozilla's "intermediate"
profile, scanned by a real scanner (sslyze) on loopback (issue 16, point 10).

HAProxy passes TLS through to the gateways; tests/devrun/test_haproxy.py scans through the
shipped haproxy.cfg in front of a real ``gateway serve``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from gateway import create_server_context
from tests.gateway_proxy._nginx import NGINX, adapted_config, free_port, running_nginx
from tests.pki import TestCA
from tests.tls_scan import ScannedTls, profile_violations, scan


def server_certificate(directory: Path, key_type: str) -> tuple[Path, Path]:
    """A localhost certificate with an RSA or EC key (the suites differ), from a test CA."""
    now = datetime.now(UTC)
    leaf = TestCA.root(now=now).server(now=now, key_kind="rsa" if key_type == "rsa" else "ec")
    files = leaf.write(directory, key_type)
    return files.cert, files.key


async def scan_context(context: ssl.SSLContext) -> ScannedTls:
    """Serve ``context`` on a loopback port (handshake, then close) and scan it."""

    async def handshake_only(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handshake_only, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        return await asyncio.to_thread(scan, port)
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.slow
@pytest.mark.parametrize("key_type", ["rsa", "ec"])
async def test_the_gateway_serves_the_intermediate_profile(tmp_path: Path, key_type: str) -> None:
    cert, key = server_certificate(tmp_path, key_type)
    # Any certificate serves as the issuing CA named in the CertificateRequest here.
    issuer = x509.load_pem_x509_certificate(cert.read_bytes())
    context = create_server_context(cert_chain=cert, private_key=key, client_ca_issuers=[issuer])
    scanned = await scan_context(context)
    assert profile_violations(scanned) == []
    assert scanned.accepted["TLSv1.2"]  # the right family for the key, and only AEAD ones
    family = "_RSA_" if key_type == "rsa" else "_ECDSA_"
    assert all(family in suite for suite in scanned.accepted["TLSv1.2"])


@pytest.mark.slow
async def test_the_check_notices_openssl_defaults(tmp_path: Path) -> None:
    """Negative: a context on OpenSSL's defaults (what the gateway served before) fails."""
    cert, key = server_certificate(tmp_path, "ec")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    problems = "\n".join(profile_violations(await scan_context(context)))
    assert "TLS 1.2 suites beyond the profile" in problems
    assert "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256" in problems  # issue 16's example
    assert "groups beyond the profile" in problems and "X448" in problems


needs_nginx: Callable[[Callable[..., object]], Callable[..., object]] = pytest.mark.skipif(
    not Path(NGINX).exists(), reason="nginx is not installed (make system-deps)"
)


@pytest.fixture
async def shipped_nginx(tmp_path: Path) -> AsyncIterator[int]:
    """The shipped deploy/nginx/brokergate.conf (ADAPT lines only) on a loopback port."""
    cert, key = server_certificate(tmp_path, "rsa")
    listen = free_port()
    config = adapted_config(listen_port=listen, cert=cert, key=key, gateway_port=free_port())
    with running_nginx(tmp_path / "nginx", server_config=config, listen_port=listen):
        yield listen


@pytest.mark.slow
@needs_nginx
async def test_the_shipped_nginx_configuration_serves_the_intermediate_profile(
    shipped_nginx: int,
) -> None:
    scanned = await asyncio.to_thread(scan, shipped_nginx)
    assert profile_violations(scanned) == []
