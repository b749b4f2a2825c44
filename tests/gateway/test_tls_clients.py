"""Real TLS clients against the running gateway: openssl s_client, curl, TLS resumption."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import socket
import ssl
from typing import Any

import pytest

from ca import load_trust_material
from gateway import TLSSetupError, create_server_context, set_client_ca_names
from tests.gateway.conftest import Brokers, ServerTLS, foreign_certificate
from tests.gateway.helpers import client_context, raw_request, run_tool
from tests.polling import async_wait_for


def _port(gw: Any) -> str:
    return gw.url.rsplit(":", 1)[1]


async def test_openssl_sees_only_our_ca_names(
    brokers: Brokers, start_gateway, server_tls: ServerTLS
) -> None:
    gw = await start_gateway()
    _code, out, _err = await run_tool(
        "openssl",
        "s_client",
        "-connect",
        f"127.0.0.1:{_port(gw)}",
        "-CAfile",
        str(server_tls.ca),
        stdin=b"Q\n",
    )
    names = out.split("Acceptable client certificate CA names", 1)[1].split(
        "Requested Signature", 1
    )[0]
    listed = [
        line.strip() for line in names.strip().splitlines() if line.strip().startswith(("C", "O"))
    ]
    with brokers.sessions() as db:
        issuing = load_trust_material(db).issuing_by_generation[1]
    cn = issuing.subject.get_attributes_for_oid(x509_cn())[0].value
    assert any(cn in line for line in listed), out
    assert len(listed) == 1  # only the issuing CA of generation 1, not the root, nothing else


async def _s_client_tls12(
    gw: Any, server_tls: ServerTLS, cert: Any, *options: str, stdin: bytes
) -> tuple[int, str, str]:
    """openssl s_client over TLS 1.2 to the gateway with ``cert``'s certificate and key."""
    return await run_tool(
        "openssl",
        "s_client",
        *options,
        "-tls1_2",
        "-connect",
        f"127.0.0.1:{_port(gw)}",
        "-CAfile",
        str(server_tls.ca),
        "-cert",
        str(cert.cert_path),
        "-key",
        str(cert.key_path),
        stdin=stdin,
    )


def x509_cn() -> Any:
    from cryptography.x509.oid import NameOID

    return NameOID.COMMON_NAME


async def test_openssl_handshake_completes_with_expired_and_foreign(
    brokers: Brokers, start_gateway, server_tls: ServerTLS, clock, tmp_path
) -> None:
    gw = await start_gateway()
    cert = brokers.issue(brokers.user())
    clock.advance(dt.timedelta(days=800))
    request = b"GET /portal HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    for client in (cert, foreign_certificate(tmp_path)):
        _code, out, err = await run_tool(
            "openssl",
            "s_client",
            "-quiet",
            "-connect",
            f"127.0.0.1:{_port(gw)}",
            "-CAfile",
            str(server_tls.ca),
            "-cert",
            str(client.cert_path),
            "-key",
            str(client.key_path),
            stdin=request,
        )
        assert "HTTP/1.1 403" in out, (out, err)
    # the same with TLS 1.2 (CertificateRequest carries the names differently)
    _code, out, err = await _s_client_tls12(gw, server_tls, cert, "-quiet", stdin=request)
    assert "HTTP/1.1 403" in out and "abgelaufen" in out


async def test_curl_with_pkcs12(brokers: Brokers, start_gateway, server_tls: ServerTLS) -> None:
    gw = await start_gateway()
    cert = brokers.issue(brokers.user(email="curl@example.org"))
    code, out, err = await run_tool(
        "curl",
        "-sS",
        "--cacert",
        str(server_tls.ca),
        "--cert-type",
        "P12",
        "--cert",
        f"{cert.p12_path}:{cert.password}",
        f"{gw.url}/portal",
    )
    assert code == 0, err
    assert '"X-Brokergate-Email", "curl@example.org"' in out
    code, out, err = await run_tool(
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--cacert",
        str(server_tls.ca),
        f"{gw.url}/portal",
    )
    assert out == "401"


async def test_wrong_key_for_certificate_fails_the_handshake(
    brokers: Brokers, start_gateway, server_tls: ServerTLS
) -> None:
    """Accepting every chain does not mean accepting a certificate without its key."""
    gw = await start_gateway()
    a = brokers.issue(brokers.user())
    b = brokers.issue(brokers.user())
    code, out, err = await run_tool(
        "openssl",
        "s_client",
        "-connect",
        f"127.0.0.1:{_port(gw)}",
        "-CAfile",
        str(server_tls.ca),
        "-cert",
        str(a.cert_path),
        "-key",
        str(b.key_path),
        stdin=b"",
    )
    assert code != 0 and re.search(
        r"key values mismatch|private key does not match", err + out, re.I
    )


def _blocking_get(
    port: int, context: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[str, ssl.SSLSession | None, bool]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as tls:
            tls.sendall(b"GET /portal HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
            return data.decode("utf-8", "replace"), tls.session, tls.session_reused


async def test_tls_resumption_does_not_skip_revocation(
    brokers: Brokers, start_gateway, server_tls: ServerTLS
) -> None:
    gw = await start_gateway()
    cert = brokers.issue(brokers.user())
    context = client_context(server_tls.ca, cert)
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # session ids: resumption is observable
    port = int(_port(gw))
    first, session, _ = await asyncio.to_thread(_blocking_get, port, context, None)
    assert "HTTP/1.1 200" in first
    second, _, reused = await asyncio.to_thread(_blocking_get, port, context, session)
    assert reused and "HTTP/1.1 200" in second
    brokers.revoke(cert.serial)
    third, _, reused = await async_wait_for(
        lambda: asyncio.to_thread(_blocking_get, port, context, session),
        until=lambda got: "HTTP/1.1 200" not in got[0],
        timeout=10,
        message="a resumed TLS session still serves the revoked certificate",
    )
    assert reused, "the test must exercise a resumed session"
    assert "HTTP/1.1 403" in third and "gesperrt" in third


def test_ca_names_need_an_issuer(server_tls: ServerTLS) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.verify_mode = ssl.CERT_OPTIONAL
    with pytest.raises(TLSSetupError, match="no issuing CA"):
        set_client_ca_names(context, [])


def test_bad_server_key_fails_loudly(server_tls: ServerTLS, tmp_path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(TLSSetupError, match="cannot load the server certificate"):
        create_server_context(cert_chain=server_tls.cert, private_key=missing, client_ca_issuers=[])


def test_pointer_check_refuses_a_mismatching_context(server_tls: ServerTLS) -> None:
    """The SSL_CTX found must have the verify mode the gateway set (CERT_OPTIONAL)."""
    from cryptography import x509

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # CERT_NONE: verify mode 0
    cert = x509.load_pem_x509_certificate(server_tls.ca.read_bytes())
    with pytest.raises(TLSSetupError, match="does not match"):
        set_client_ca_names(context, [cert])


async def _ca_names(gw: Any, server_tls: ServerTLS) -> list[str]:
    _code, out, _err = await run_tool(
        "openssl",
        "s_client",
        "-connect",
        f"127.0.0.1:{_port(gw)}",
        "-CAfile",
        str(server_tls.ca),
        stdin=b"Q\n",
    )
    names = out.split("Acceptable client certificate CA names", 1)[1].split(
        "Requested Signature", 1
    )[0]
    return [line.strip() for line in names.strip().splitlines() if "CN" in line]


async def test_rotation_and_retirement_update_the_ca_names_and_identity(
    brokers: Brokers, start_gateway, server_tls: ServerTLS
) -> None:
    gw = await start_gateway()
    old = brokers.issue(brokers.user())
    assert len(await _ca_names(gw, server_tls)) == 1
    brokers.authority.rotate("test")
    new = brokers.issue(brokers.user())
    names = await async_wait_for(
        lambda: _ca_names(gw, server_tls),
        until=lambda names: len(names) == 2,
        timeout=10,
        message="the CertificateRequest does not name both generations after the rotation",
    )
    assert len(names) == 2 and any("G2" in n for n in names), names
    # both generations are trusted: the new certificate logs in, so does the old one
    for cert in (old, new):
        response = await raw_request(gw.url, "/portal", context=client_context(server_tls.ca, cert))
        assert response.status == 200
    brokers.authority.retire(1, "test", force=True)
    names = await async_wait_for(
        lambda: _ca_names(gw, server_tls),
        until=lambda names: len(names) == 1,
        timeout=10,
        message="the CertificateRequest still names the retired generation",
    )
    assert len(names) == 1 and "G2" in names[0], names
    refused = await raw_request(gw.url, "/portal", context=client_context(server_tls.ca, old))
    assert refused.status == 403 and "nicht mehr anerkannt" in refused.body


async def test_a_failed_ca_name_update_keeps_the_old_list_logs_and_counts(
    brokers: Brokers,
    start_gateway,
    server_tls: ServerTLS,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fault injection: OpenSSL refuses the second name of the new list mid-build."""
    from gateway import METRICS
    from gateway._app import update_client_ca_names
    from gateway.tls import _client_ca_names

    gw = await start_gateway()
    before = await _ca_names(gw, server_tls)
    assert len(before) == 1
    from cryptography import x509

    # No rotation: the trust refresh must not change the list behind the test's back.
    with brokers.sessions() as db:
        issuers = list(load_trust_material(db).issuing_by_generation.values())
    issuers.append(x509.load_pem_x509_certificate(server_tls.ca.read_bytes()))
    real_push = _client_ca_names._push_subject
    pushed: list[object] = []

    def failing_push(lib: Any, names: int, cert: Any) -> None:
        pushed.append(cert)
        if len(pushed) == 2:
            raise TLSSetupError("OpenSSL cannot add the name (injected)")
        real_push(lib, names, cert)

    monkeypatch.setattr(_client_ca_names, "_push_subject", failing_push)
    metrics = gw.app[METRICS]
    with caplog.at_level("ERROR", logger="gateway"):
        assert not update_client_ca_names(gw.tls, issuers, metrics)
    assert await _ca_names(gw, server_tls) == before  # the old list, not an empty one
    assert any(
        r.levelname == "ERROR" and "old list stays" in r.getMessage() for r in caplog.records
    )
    assert metrics.client_ca_name_update_failures._value.get() == 1
    monkeypatch.setattr(_client_ca_names, "_push_subject", real_push)
    assert update_client_ca_names(gw.tls, issuers, metrics)  # a later update takes
    assert len(await _ca_names(gw, server_tls)) == 2


async def test_a_client_cannot_renegotiate_to_another_certificate(
    brokers: Brokers, start_gateway, server_tls: ServerTLS
) -> None:
    """The certificate cannot change within a connection (TLS 1.3 has no renegotiation; a
    TLS 1.2 client asking for one is refused): the decision memo keys on the connection
    (gateway.auth._decision_memo)."""
    gw = await start_gateway()
    cert = brokers.issue(brokers.user())
    request = b"GET /portal HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    # "R": renegotiate, then the request
    _code, out, err = await _s_client_tls12(gw, server_tls, cert, stdin=b"R\n" + request)
    assert "RENEGOTIATING" in err, err
    assert "no renegotiation" in err, err
    assert "HTTP/1.1" not in out  # the connection ended with the refusal
