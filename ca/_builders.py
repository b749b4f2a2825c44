"""Certificate and CRL building: pure functions of keys, names, validity and the clock.

Profiles follow RFC 5280; every extension a relying party needs to build and
check the chain is present (basicConstraints and keyUsage critical, SKI on
every certificate, AKI on every non-self-signed one), because
``cryptography.x509.verification`` and Windows' CryptoAPI both insist on them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca._keys import PrivateKey, signature_hash

# Client clocks drift; a certificate valid from "now" would be rejected by a relying party
# whose clock is a few minutes behind ours. Five minutes covers NTP-synchronised hosts.
BACKDATE = timedelta(minutes=5)

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

# keyUsage of every end-entity certificate we make (broker clients, dev servers): with
# (EC)DHE key exchange a TLS peer only signs, nothing is ever encrypted to its key.
DIGITAL_SIGNATURE_ONLY = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)

# keyUsage of every CA certificate we make (our roots and issuing CAs, the dev server CA):
# it signs certificates and CRLs, nothing else.
CERTIFICATE_SIGNING = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _public(key: PrivateKey) -> PublicKey:
    return key.public_key()


def ca_name(common_name: str, organisation: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_extensions(
    builder: x509.CertificateBuilder, public: PublicKey, path_length: int | None
) -> x509.CertificateBuilder:
    return (
        builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), True)
        .add_extension(CERTIFICATE_SIGNING, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def build_root(
    *, key: PrivateKey, subject: x509.Name, now: datetime, validity: timedelta
) -> x509.Certificate:
    """A self-signed root. No path length limit: a successor root is cross-signed below it."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(_public(key))
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
    )
    builder = _ca_extensions(builder, _public(key), path_length=None)
    return builder.sign(key, signature_hash(key))


def build_cross_certificate(
    *,
    new_root: x509.Certificate,
    old_root: x509.Certificate,
    old_root_key: PrivateKey,
    now: datetime,
) -> x509.Certificate:
    """The new root's name and key, signed by the old root (root rotation overlap).

    Relying parties that only trust the old root chain new certificates through it;
    the validity never exceeds the old root's, so the overlap ends by itself.
    """
    public = new_root.public_key()
    assert isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(new_root.subject)
        .issuer_name(old_root.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(new_root.not_valid_after_utc, old_root.not_valid_after_utc))
    )
    builder = _ca_extensions(builder, public, path_length=None).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(old_root_key.public_key()), False
    )
    return builder.sign(old_root_key, signature_hash(old_root_key))


def build_issuing(
    *,
    key: PrivateKey,
    subject: x509.Name,
    root: x509.Certificate,
    root_key: PrivateKey,
    now: datetime,
    validity: timedelta,
) -> x509.Certificate:
    """An issuing CA below ``root``: pathLen 0, and EKU clientAuth so it can sign nothing else."""
    not_after = min(now + validity, root.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root.subject)
        .public_key(_public(key))
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
    )
    builder = _ca_extensions(builder, _public(key), path_length=0)
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
    ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(root_key, signature_hash(root_key))


@dataclass(frozen=True, kw_only=True)
class LeafSubject:
    """Who a broker certificate is for; all of it is public."""

    user_id: int
    name: str
    email: str
    broker_number: str


def build_leaf(
    *,
    public_key: PublicKey,
    who: LeafSubject,
    organisation: str,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    serial: int,
    now: datetime,
    not_after: datetime,
    crl_url: str | None,
) -> x509.Certificate:
    """A broker's client certificate: clientAuth only, digitalSignature only.

    The subject CN is what the browser's certificate picker shows, so it names the
    broker and their broker number in plain words; the email is the SAN rfc822Name
    (RFC 5280 §4.1.2.6 deprecates emailAddress in the subject). The gateway maps the
    certificate to its user by SHA-256 fingerprint in the store and cross-checks the
    email. There is no user URI: ``urn:brokergate:…`` is an unregistered URN namespace
    (RFC 8141 §5), which pkilint rejects, and nothing ever read it.
    """
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, who.broker_number),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{who.name} ({who.broker_number})"[:64]),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            DIGITAL_SIGNATURE_ONLY,
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(who.email)]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )
    if crl_url:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, signature_hash(issuer_key))


def build_server_leaf(
    *,
    public_key: PublicKey,
    subject: x509.Name,
    dns_names: Sequence[str],
    addresses: Sequence[str],
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    now: datetime,
    validity: timedelta,
) -> x509.Certificate:
    """A TLS server certificate (serverAuth, digitalSignature only), for the dev server CA.

    Not for brokers: the broker CA never signs server certificates (its issuing CA's EKU
    is clientAuth); this builder serves the separate dev and test server CAs.
    """
    san = x509.SubjectAlternativeName(
        [x509.DNSName(name) for name in dns_names]
        + [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + validity, issuer.not_valid_after_utc))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(DIGITAL_SIGNATURE_ONLY, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
        .sign(issuer_key, signature_hash(issuer_key))
    )


@dataclass(frozen=True, kw_only=True)
class RevokedEntry:
    serial: int
    revoked_at: datetime
    reason: x509.ReasonFlags | None  # None for "unspecified": RFC 5280 §5.3.1 says omit it


def build_crl(
    *,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    number: int,
    now: datetime,
    validity: timedelta,
    revoked: Sequence[RevokedEntry],
) -> x509.CertificateRevocationList:
    """A complete CRL for one issuing CA (RFC 5280 §5: CRL number and AKI included)."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now)
        .next_update(now + validity)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )
    for entry in revoked:
        item = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at)
        )
        if entry.reason is not None:
            item = item.add_extension(x509.CRLReason(entry.reason), critical=False)
        builder = builder.add_revoked_certificate(item.build())
    return builder.sign(issuer_key, signature_hash(issuer_key))
