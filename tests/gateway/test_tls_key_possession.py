"""Proof of key possession (issue 17): a client that presents a broker's certificate but
signs CertificateVerify with another key is refused, in TLS 1.2 and 1.3.

The TLS layer accepts every chain in OpenSSL (gateway/tls/_context.py) and leaves the
CertificateVerify check to OpenSSL. ``openssl s_client`` and Python's ``ssl`` refuse to
*send* a certificate with a key that does not match it, so they cannot test this; the
pure-Python tlslite-ng client does not check, and signs with whatever key it is given —
exactly the attacker who copied a certificate (it is public) but not its key.
"""

from __future__ import annotations

import asyncio
import socket
import warnings
from typing import Any

import pytest

from tests.gateway.conftest import Brokers, ClientCert

with warnings.catch_warnings():
    # tlslite-ng 0.8 imports asyncore for an integration we do not use (deprecated in 3.11).
    warnings.simplefilter("ignore", DeprecationWarning)
    from tlslite import HandshakeSettings, TLSConnection, X509CertChain
    from tlslite.errors import TLSError, TLSRemoteAlert
    from tlslite.utils.keyfactory import parsePEMKey

VERSIONS = {"TLS 1.2": (3, 3), "TLS 1.3": (3, 4)}


def _handshake_and_get(port: int, cert: ClientCert, key_of: ClientCert, version: Any) -> str:
    """Handshake presenting ``cert`` but signing with ``key_of``'s key; GET /portal.
    Returns the status line. Raises TLSError (or OSError) when the server refuses."""
    chain = X509CertChain()
    chain.parsePemList(cert.cert_path.read_text())
    key = parsePEMKey(key_of.key_path.read_text(), private=True)
    settings = HandshakeSettings()
    settings.minVersion = settings.maxVersion = version
    # RFC 8879 certificate compression: OpenSSL 3.0 does not implement it, and tlslite-ng
    # 0.8 would send a CompressedCertificate anyway (the server answers unexpected_message).
    settings.certificate_compression_send = []
    settings.certificate_compression_receive = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        connection = TLSConnection(raw)
        # The server certificate is not checked here: what is tested is the server's check.
        connection.handshakeClientCert(chain, key, settings=settings)
        connection.write(b"GET /portal HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while b"\r\n" not in data:
            chunk = connection.read(max=4096)
            if not chunk:
                break
            data += chunk
        connection.close()
    return data.split(b"\r\n", 1)[0].decode()


def _port(gw: Any) -> int:
    return int(gw.url.rsplit(":", 1)[1])


@pytest.mark.parametrize("version", VERSIONS.values(), ids=VERSIONS.keys())
async def test_the_own_key_logs_in(brokers: Brokers, start_gateway: Any, version: Any) -> None:
    """The control: the same client with the certificate's own key gets through."""
    gw = await start_gateway()
    broker = brokers.issue(brokers.user())
    status = await asyncio.to_thread(_handshake_and_get, _port(gw), broker, broker, version)
    assert status.startswith("HTTP/1.1 200"), status


@pytest.mark.parametrize("version", VERSIONS.values(), ids=VERSIONS.keys())
async def test_another_brokers_certificate_without_its_key_is_refused(
    brokers: Brokers, start_gateway: Any, version: Any
) -> None:
    gw = await start_gateway()
    victim = brokers.issue(brokers.user())
    attacker = brokers.issue(brokers.user())
    with pytest.raises((TLSError, OSError)) as refused:
        await asyncio.to_thread(_handshake_and_get, _port(gw), victim, attacker, version)
    # No status line came back: the connection ended in the handshake (TLS 1.2), or right
    # after the client's Finished (TLS 1.3, where the client's flight comes last). Observed
    # on asyncio: the connection is closed without an alert (TLSAbruptCloseError); the
    # control above, the same client with the right key, gets its 200.
    if isinstance(refused.value, TLSRemoteAlert):
        # OpenSSL answers a bad CertificateVerify signature with decrypt_error (51).
        assert refused.value.description == 51, refused.value
