"""Terminator mode: header formats, trusted peers only, clear errors (no nginx here)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from ca import fingerprint_sha256
from gateway._errors import GatewayError
from gateway._settings import GatewaySettings
from gateway.auth._terminator import (
    ForwardedCertificateInvalid,
    certificate_from_terminator,
    certificate_header_name,
    forwarded_certificate_headers,
    parse_forwarded_certificate,
    xfcc_last_element,
)
from tests.gateway_proxy._certs import PemPair, own_ca_pair
from tests.gateway_proxy.conftest import start_site


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> x509.Certificate:
    return own_ca_pair(tmp_path_factory.mktemp("t"), "client", server=False).certificate


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_nginx_escaped_and_legacy_forms(cert: x509.Certificate) -> None:
    escaped = quote(_pem(cert), safe="")  # what $ssl_client_escaped_cert produces
    assert parse_forwarded_certificate(escaped, "nginx") == cert
    legacy = _pem(cert).strip().replace("\n", "\n\t")  # $ssl_client_cert
    assert parse_forwarded_certificate(legacy, "nginx") == cert


def test_haproxy_base64_der(cert: x509.Certificate) -> None:
    value = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    assert parse_forwarded_certificate(value, "haproxy") == cert


def test_envoy_xfcc_last_element(cert: x509.Certificate, tmp_path: Path) -> None:
    other = own_ca_pair(tmp_path, "other", server=False).certificate
    value = (
        f'By=spiffe://a;Hash=00;Cert="{quote(_pem(other), safe="")}";Subject="CN=x,O=y"'
        f',By=spiffe://b;Hash=11;Subject="CN=Erika, O=Makler; GmbH";'
        f'Cert="{quote(_pem(cert), safe="")}";URI=urn:x'
    )
    assert parse_forwarded_certificate(value, "envoy") == cert
    assert xfcc_last_element(value)["subject"] == "CN=Erika, O=Makler; GmbH"
    assert parse_forwarded_certificate("By=spiffe://a;Hash=00", "envoy") is None


def test_xfcc_escaped_quotes() -> None:
    assert xfcc_last_element(r'Subject="CN=\"q\";x";URI=u') == {
        "subject": 'CN="q";x',
        "uri": "u",
    }


@given(st.text(max_size=300))
def test_xfcc_parser_never_crashes(value: str) -> None:
    assert isinstance(xfcc_last_element(value), dict)


@given(st.text(max_size=300), st.sampled_from(["nginx", "haproxy", "envoy"]))
def test_garbage_is_none_or_a_clear_error(value: str, fmt: str) -> None:
    try:
        result = parse_forwarded_certificate(value, fmt)
    except ForwardedCertificateInvalid as exc:
        assert "terminator_format" in str(exc)
        assert isinstance(exc, GatewayError) and exc.status == 400
    else:
        assert result is None


@pytest.mark.parametrize(
    ("value", "fmt", "problem"),
    [
        ("-----BEGIN CERTIFICATE-----%0Anope%0A-----END CERTIFICATE-----", "nginx", "not a PEM"),
        ("hello", "nginx", "no PEM certificate"),
        ("!!notbase64!!", "haproxy", "not base64"),
        (base64.b64encode(b"not der").decode(), "haproxy", "not a DER certificate"),
        ('Cert="garbage"', "envoy", "no PEM certificate"),
        ("A" * 20000, "haproxy", "too long"),
    ],
)
def test_bad_values_are_clear_errors(value: str, fmt: str, problem: str) -> None:
    with pytest.raises(ForwardedCertificateInvalid, match=problem):
        parse_forwarded_certificate(value, fmt, header="X-SSL-Client-Cert")


def test_empty_value_is_no_certificate() -> None:
    for fmt in ("nginx", "haproxy", "envoy"):
        assert parse_forwarded_certificate("  ", fmt) is None


def test_header_names() -> None:
    direct = GatewaySettings()
    assert certificate_header_name(direct) is None
    nginx = GatewaySettings(terminator_format="nginx", trusted_proxies=("127.0.0.1",))
    assert certificate_header_name(nginx) == "X-SSL-Client-Cert"
    envoy = GatewaySettings(terminator_format="envoy", trusted_proxies=("::1",))
    assert certificate_header_name(envoy) == "X-Forwarded-Client-Cert"
    custom = GatewaySettings(
        terminator_format="haproxy", trusted_proxies=("10.0.0.0/8",), client_cert_header="X-C"
    )
    assert certificate_header_name(custom) == "X-C"
    # the proxy strips every known spelling, in direct mode too
    assert "X-SSL-Client-Cert" in forwarded_certificate_headers(direct)
    assert "X-C" in forwarded_certificate_headers(custom)


def test_settings_refuse_terminator_without_trusted_proxies() -> None:
    with pytest.raises(ValueError, match="needs trusted_proxies"):
        GatewaySettings(terminator_format="nginx")
    with pytest.raises(ValueError, match="not an IP address or network"):
        GatewaySettings(trusted_proxies=("localhost",))


async def _extract(settings: GatewaySettings, headers: Any) -> tuple[int, dict[str, Any]]:
    """A real request from 127.0.0.1 to an app that calls certificate_from_terminator.

    Sent over a raw socket: aiohttp's client folds repeated header names into one.
    """

    async def handle(request: web.Request) -> web.Response:
        try:
            cert = certificate_from_terminator(request, settings)
        except ForwardedCertificateInvalid as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        return web.json_response({"fingerprint": fingerprint_sha256(cert) if cert else None})

    app = web.Application()
    app.router.add_get("/", handle)
    runner, port = await start_site(app)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(f"GET / HTTP/1.1\r\nHost: a\r\n{lines}Connection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        await writer.wait_closed()
        head, body = data.split(b"\r\n\r\n", 1)
        return int(head.split(b" ")[1]), json.loads(body)
    finally:
        await runner.cleanup()


async def test_trusted_peer_header_is_read(cert: x509.Certificate) -> None:
    settings = GatewaySettings(terminator_format="nginx", trusted_proxies=("127.0.0.1/32",))
    status, body = await _extract(settings, {"X-SSL-Client-Cert": quote(_pem(cert), safe="")})
    assert status == 200 and body["fingerprint"] == fingerprint_sha256(cert)


@pytest.mark.parametrize("trusted", [("10.0.0.0/8",), ("::1/128",), ("192.168.1.1",)])
async def test_untrusted_peer_header_is_ignored(
    cert: x509.Certificate, trusted: tuple[str, ...]
) -> None:
    settings = GatewaySettings(terminator_format="nginx", trusted_proxies=trusted)
    status, body = await _extract(settings, {"X-SSL-Client-Cert": quote(_pem(cert), safe="")})
    assert status == 200 and body["fingerprint"] is None


async def test_direct_mode_ignores_the_header(cert: x509.Certificate) -> None:
    status, body = await _extract(
        GatewaySettings(), {"X-SSL-Client-Cert": quote(_pem(cert), safe="")}
    )
    assert status == 200 and body["fingerprint"] is None


async def test_duplicate_header_is_refused(cert: x509.Certificate) -> None:
    settings = GatewaySettings(terminator_format="nginx", trusted_proxies=("127.0.0.1",))
    value = quote(_pem(cert), safe="")
    headers = CIMultiDict([("X-SSL-Client-Cert", value), ("x-ssl-client-cert", value)])
    status, body = await _extract(settings, headers)
    assert status == 400 and "sent 2 times" in body["error"]


async def test_trusted_peer_without_header_is_none() -> None:
    settings = GatewaySettings(terminator_format="haproxy", trusted_proxies=("127.0.0.1",))
    status, body = await _extract(settings, {})
    assert status == 200 and body["fingerprint"] is None


def test_pem_pair_type(tmp_path: Path) -> None:
    pair = own_ca_pair(tmp_path, "x", server=True)
    assert isinstance(pair, PemPair) and pair.key.stat().st_mode & 0o777 == 0o600
