"""Test certificates made by the project's own builders, in the manner of trustme.

A test that needs a CA, a broker certificate or a TLS server certificate asks this
module instead of assembling extensions itself, so every test certificate has the
profile ``ca`` defines (keyUsage, EKU, SKI/AKI, path length) and a change there reaches
the tests too. Certificates that deviate on purpose (no clientAuth EKU, a foreign
chain with the same names) are built by the test that checks the deviation.

    pki = TestCA.root(now=now)
    issuing = pki.issuing(now=now)
    broker = issuing.broker(now=now, email="erika@example.org")
    server = TestCA.root("test server CA", now=now).server(now=now)
    broker.write(tmp_path, "broker")  # -> PemFiles(cert, key), key file mode 0600
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.hashes import SHA256

from ca import (
    LeafSubject,
    build_issuing,
    build_leaf,
    build_root,
    build_server_leaf,
    ca_name,
)

KeyKind = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CA_VALIDITY = timedelta(days=3650)
SERVER_VALIDITY = timedelta(days=30)
ORGANISATION = "brokergate test"


PADDING_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.17.1")  # a private arc: test padding


def _der_octet_string(content: bytes) -> bytes:
    length = len(content)
    encoded = length.to_bytes((length.bit_length() + 7) // 8 or 1, "big")
    head = bytes([length]) if length < 0x80 else bytes([0x80 | len(encoded)]) + encoded
    return b"\x04" + head + content


def new_key(kind: KeyKind = "ec") -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True, kw_only=True)
class PemFiles:
    cert: Path
    key: Path


def write_pem_files(
    folder: Path, stem: str, certificates: Sequence[x509.Certificate], key: PrivateKeyTypes
) -> PemFiles:
    """``<stem>.pem`` (the certificates in order) and ``<stem>-key.pem`` (mode 0600)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = PemFiles(cert=folder / f"{stem}.pem", key=folder / f"{stem}-key.pem")
    files.cert.write_text("".join(pem(c) for c in certificates))
    files.key.write_bytes(key_pem(key))
    files.key.chmod(0o600)
    return files


@dataclass(frozen=True, kw_only=True)
class Leaf:
    """An end-entity certificate with its key, and the chain above it (issuer first)."""

    key: PrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]

    def certificates(self, *, with_chain: bool = False) -> list[x509.Certificate]:
        return [self.certificate, *(self.chain if with_chain else ())]

    def cert_pem(self, *, with_chain: bool = False) -> str:
        return "".join(pem(c) for c in self.certificates(with_chain=with_chain))

    def write(self, folder: Path, stem: str, *, with_chain: bool = False) -> PemFiles:
        return write_pem_files(folder, stem, self.certificates(with_chain=with_chain), self.key)


@dataclass(frozen=True, kw_only=True)
class TestCA:
    """A root or issuing CA built by ``ca``'s builders; its key stays in memory."""

    __test__ = False  # not a pytest test class

    key: PrivateKey
    certificate: x509.Certificate
    parents: tuple[x509.Certificate, ...] = ()

    @classmethod
    def root(
        cls,
        common_name: str = "brokergate test root",
        *,
        now: datetime,
        key_kind: KeyKind = "ec",
        validity: timedelta = CA_VALIDITY,
    ) -> TestCA:
        key = new_key(key_kind)
        certificate = build_root(
            key=key, subject=ca_name(common_name, ORGANISATION), now=now, validity=validity
        )
        return cls(key=key, certificate=certificate)

    def issuing(
        self,
        common_name: str = "brokergate test issuing CA",
        *,
        now: datetime,
        key_kind: KeyKind = "ec",
        validity: timedelta = CA_VALIDITY,
    ) -> TestCA:
        key = new_key(key_kind)
        certificate = build_issuing(
            key=key,
            subject=ca_name(common_name, ORGANISATION),
            root=self.certificate,
            root_key=self.key,
            now=now,
            validity=validity,
        )
        return TestCA(key=key, certificate=certificate, parents=(self.certificate, *self.parents))

    def broker(
        self,
        *,
        now: datetime,
        email: str = "erika@example.org",
        name: str = "Erika Muster",
        broker_number: str = "60/123/4567",
        user_id: int = 1,
        not_after: datetime | None = None,
        key_kind: KeyKind = "ec",
    ) -> Leaf:
        """A broker client certificate, exactly as the CA's issuance profile makes it."""
        key = new_key(key_kind)
        certificate = build_leaf(
            public_key=key.public_key(),
            who=LeafSubject(user_id=user_id, name=name, email=email, broker_number=broker_number),
            organisation=ORGANISATION,
            issuer=self.certificate,
            issuer_key=self.key,
            serial=x509.random_serial_number(),
            now=now,
            not_after=not_after if not_after is not None else now + timedelta(days=730),
            crl_url=None,
        )
        return Leaf(key=key, certificate=certificate, chain=(self.certificate, *self.parents))

    def padded_broker(
        self, *, now: datetime, der_size: int, email: str = "erika@example.org"
    ) -> Leaf:
        """A broker certificate (:meth:`broker`) padded to about ``der_size`` bytes of DER by a
        non-critical private extension, re-signed by this CA: the oversized certificate of
        issue 17 (a Certificate message past OpenSSL's 100 KiB default ``max_cert_list``)."""
        leaf = self.broker(now=now, email=email)
        base = leaf.certificate
        builder = (
            x509.CertificateBuilder()
            .subject_name(base.subject)
            .issuer_name(base.issuer)
            .public_key(leaf.key.public_key())
            .serial_number(base.serial_number)
            .not_valid_before(base.not_valid_before_utc)
            .not_valid_after(base.not_valid_after_utc)
        )
        for extension in base.extensions:
            builder = builder.add_extension(extension.value, critical=extension.critical)
        filler = max(0, der_size - len(base.public_bytes(serialization.Encoding.DER)) - 24)
        padding = x509.UnrecognizedExtension(PADDING_OID, _der_octet_string(b"\0" * filler))
        certificate = builder.add_extension(padding, critical=False).sign(self.key, SHA256())
        return Leaf(key=leaf.key, certificate=certificate, chain=leaf.chain)

    def server(
        self,
        *,
        now: datetime,
        dns_names: tuple[str, ...] = ("localhost",),
        addresses: tuple[str, ...] = ("127.0.0.1", "::1"),
        key_kind: KeyKind = "ec",
        validity: timedelta = SERVER_VALIDITY,
    ) -> Leaf:
        """A TLS server certificate for loopback, as the dev server CA makes it."""
        key = new_key(key_kind)
        certificate = build_server_leaf(
            public_key=key.public_key(),
            subject=ca_name(dns_names[0] if dns_names else addresses[0], ORGANISATION),
            dns_names=dns_names,
            addresses=addresses,
            issuer=self.certificate,
            issuer_key=self.key,
            now=now,
            validity=validity,
        )
        return Leaf(key=key, certificate=certificate, chain=(self.certificate, *self.parents))

    def cert_pem(self) -> str:
        return pem(self.certificate)

    def write_cert(self, path: Path) -> Path:
        path.write_text(self.cert_pem())
        return path
