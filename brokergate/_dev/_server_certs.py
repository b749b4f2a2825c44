"""The dev server CA and the ``localhost`` certificate the gateway presents.

A separate CA from the broker CA on purpose: the broker CA signs client certificates
only (EKU clientAuth); the server certificate of a real deployment comes from a public
or corporate CA. Clients trust ``certs-dev/server-ca.pem`` (curl ``--cacert``, or an
import as authority in a browser).

Hand-written with ``cryptography`` rather than trustme: trustme is a test helper whose
CA key is not kept, and the dev CA must survive restarts so a browser's trust holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca import CERTIFICATE_SIGNING, build_server_leaf

SERVER_CA_VALIDITY = timedelta(days=3650)  # a dev CA imported into a browser should not lapse
# 397 days: the longest server certificate validity browsers accept (CA/B Forum, Apple).
SERVER_CERT_VALIDITY = timedelta(days=397)
RENEW_BEFORE = timedelta(days=30)  # re-made on start when closer than this to expiry
SERVER_NAMES = ("localhost",)
SERVER_ADDRESSES = ("127.0.0.1", "::1")


@dataclass(frozen=True, kw_only=True)
class ServerCertPaths:
    ca_cert: Path
    ca_key: Path
    cert: Path  # leaf, then the dev CA (the chain the gateway sends)
    key: Path


def ensure_server_certificates(paths: ServerCertPaths, *, now: datetime) -> list[Path]:
    """Create the dev server CA and the localhost certificate unless usable ones exist.

    Returns:
        The files created or replaced now (empty on a start that reuses everything).
    """
    made: list[Path] = []
    ca_cert = _load_cert(paths.ca_cert)
    ca_key = _load_key(paths.ca_key)
    if ca_cert is None or ca_key is None or not _fresh(ca_cert, now) or not _pair(ca_cert, ca_key):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _build_ca(ca_key, now)
        _write(paths.ca_key, _key_pem(ca_key), private=True)
        _write(paths.ca_cert, _cert_pem(ca_cert), private=False)
        made += [paths.ca_cert, paths.ca_key]
    leaf = _load_cert(paths.cert)
    leaf_key = _load_key(paths.key)
    if (
        made
        or leaf is None
        or leaf_key is None
        or not _fresh(leaf, now)
        or not _pair(leaf, leaf_key)
        or leaf.issuer != ca_cert.subject
    ):
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = _build_leaf(leaf_key, ca_cert, ca_key, now)
        _write(paths.key, _key_pem(leaf_key), private=True)
        _write(paths.cert, _cert_pem(leaf) + _cert_pem(ca_cert), private=False)
        made += [paths.cert, paths.key]
    return made


def _fresh(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - RENEW_BEFORE > now


def _pair(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    return cert.public_key() == key.public_key()


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())  # the first PEM in the file
    except (OSError, ValueError):
        return None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "brokergate development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _build_ca(key: ec.EllipticCurvePrivateKey, now: datetime) -> x509.Certificate:
    name = _name("brokergate dev server CA (not for production)")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + SERVER_CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CERTIFICATE_SIGNING, critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )


def _build_leaf(
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: datetime,
) -> x509.Certificate:
    return build_server_leaf(
        public_key=key.public_key(),
        subject=_name("localhost"),
        dns_names=SERVER_NAMES,
        addresses=SERVER_ADDRESSES,
        issuer=ca_cert,
        issuer_key=ca_key,
        now=now,
        validity=SERVER_CERT_VALIDITY,
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted on purpose: the gateway loads it without a prompt; it never leaves
    # certs-dev/ (git-ignored, and the pre-commit check rejects keys elsewhere).
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Replace ``path`` atomically; keys are created 0600 from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    # SECURITY: O_EXCL with the final mode, so a key is never briefly world-readable.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
