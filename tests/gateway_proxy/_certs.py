"""TLS material for the proxy tests: a loopback server certificate, broker certificates.

Broker certificates come from our CA (the ``authority`` fixture) as PEM files; the server
certificate and the deliberately expired "foreign" certificate come from test CAs of
their own, made by the same builders (``tests.pki``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.pki import TestCA, write_pem_files


@dataclass(frozen=True, kw_only=True)
class PemPair:
    cert: Path
    key: Path
    certificate: x509.Certificate


def _write(
    directory: Path,
    name: str,
    cert: x509.Certificate,
    key: PrivateKeyTypes,
    *,
    chain: tuple[x509.Certificate, ...] = (),
) -> PemPair:
    files = write_pem_files(directory, name, [cert, *chain], key)
    return PemPair(cert=files.cert, key=files.key, certificate=cert)


def own_ca_pair(
    directory: Path,
    name: str,
    *,
    server: bool,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> PemPair:
    """A certificate from a test CA of its own, made by ``ca``'s builders (``tests.pki``).

    ``server`` gives a loopback server certificate (localhost, 127.0.0.1), otherwise a
    broker-profile client certificate that our CA did not issue. The PEM file holds the
    certificate and then its CA, so it serves as a chain for a server and as the trust
    anchor file for a client.
    """
    now = datetime.now(UTC)
    made = not_before or now - timedelta(hours=1)
    own_ca = TestCA.root(f"{name} test CA", now=made)
    if server:
        leaf = own_ca.server(now=made, addresses=("127.0.0.1",), validity=timedelta(days=2))
    else:
        leaf = own_ca.broker(now=made, name=name, not_after=not_after or now + timedelta(days=2))
    return _write(directory, name, leaf.certificate, leaf.key, chain=leaf.chain)


def pem_from_pkcs12(directory: Path, name: str, pkcs12_bytes: bytes, password: str) -> PemPair:
    """Unpack an issued PKCS#12 (as a browser would import it) into PEM files."""
    key, cert, _chain = pkcs12.load_key_and_certificates(pkcs12_bytes, password.encode())
    assert key is not None and cert is not None
    return _write(directory, name, cert, key)
