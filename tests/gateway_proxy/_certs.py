"""TLS material for the proxy tests: a loopback server certificate, broker certificates.

Broker certificates come from our CA (the ``authority`` fixture) as PEM files; the server
certificate and the deliberately expired "foreign" certificate are made here with
``cryptography`` because the CA issues only client certificates.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True, kw_only=True)
class PemPair:
    cert: Path
    key: Path
    certificate: x509.Certificate


def _write(directory: Path, name: str, cert: x509.Certificate, key: object) -> PemPair:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"{name}.pem"
    key_path = directory / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return PemPair(cert=cert_path, key=key_path, certificate=cert)


def self_signed(
    directory: Path,
    name: str,
    *,
    server: bool,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> PemPair:
    """An EC P-256 self-signed certificate; ``server`` adds SANs for 127.0.0.1/localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(hours=1))
        .not_valid_after(not_after or now + timedelta(days=2))
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return _write(directory, name, builder.sign(key, hashes.SHA256()), key)


def pem_from_pkcs12(directory: Path, name: str, pkcs12_bytes: bytes, password: str) -> PemPair:
    """Unpack an issued PKCS#12 (as a browser would import it) into PEM files."""
    key, cert, _chain = pkcs12.load_key_and_certificates(pkcs12_bytes, password.encode())
    assert key is not None and cert is not None
    return _write(directory, name, cert, key)
