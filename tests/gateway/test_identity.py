"""The pure certificate decision (evaluate_certificate) and the chain-verifier wrapper."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway import CertificateProblem, Identity, ProblemKind
from gateway.auth._certificate_identity import (
    CertificateRecord,
    UserRecord,
    evaluate_certificate,
    handshake_result,
)
from gateway.auth._chain_verification import ChainVerifier
from store import CertificateStatus, Level, UserStatus
from tests.pki import TestCA

NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)


def leaf(
    issuer: TestCA,
    *,
    eku: bool = True,
    email: str = "erika@example.org",
    not_before: dt.datetime = NOW - dt.timedelta(days=1),
    not_after: dt.datetime = NOW + dt.timedelta(days=730),
) -> x509.Certificate:
    """A broker certificate of ``ca``'s profile, or with ``eku=False`` one that lacks clientAuth.

    ``not_before`` is when the CA made it (the builder backdates it by five minutes).
    """
    if eku:
        return issuer.broker(now=not_before, email=email, not_after=not_after).certificate
    # The deviation under test: a certificate without the EKU the profile always sets.
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Erika")]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
        .sign(issuer.key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def chain() -> dict[str, Any]:
    made = NOW - dt.timedelta(days=365)
    root = TestCA.root("Root", now=made)
    issuing = root.issuing("Issuing G1", now=made)
    foreign_root = TestCA.root("Root", now=made)  # same names, other keys
    foreign = foreign_root.issuing("Issuing G1", now=made)
    return {
        "root": root,
        "issuing": issuing,
        "foreign": foreign,
        "verifier": ChainVerifier(roots=[root.certificate], intermediates=[issuing.certificate]),
    }


def fp(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def record(cert: x509.Certificate, **kw: Any) -> CertificateRecord:
    values: dict[str, Any] = dict(
        fingerprint=fp(cert),
        serial=format(cert.serial_number, "x"),
        user_id=7,
        generation_id=1,
        status=CertificateStatus.VALID,
        revoked_at=None,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )
    values.update(kw)
    return CertificateRecord(**values)


USER = UserRecord(
    id=7,
    email="erika@example.org",
    name="Erika",
    locale="de",
    status=UserStatus.ACTIVE,
    broker_number="60/123/4567",
)


def evaluate(
    chain: dict[str, Any], cert: x509.Certificate, *, now: dt.datetime = NOW, **kw: Any
) -> Identity | CertificateProblem:
    args: dict[str, Any] = dict(
        certificate=cert,
        fingerprint=fp(cert),
        record=record(cert),
        user=USER,
        retired_generations={},
        verify_chain=chain["verifier"].verify,
        now=now,
    )
    args.update(kw)
    return evaluate_certificate(**args)


def test_valid(chain: dict[str, Any]) -> None:
    cert = leaf(chain["issuing"])
    result = evaluate(chain, cert)
    assert isinstance(result, Identity)
    assert result.level is Level.STRONG and result.method == "certificate"
    assert (
        result.cert_not_after == cert.not_valid_after_utc and result.broker_number == "60/123/4567"
    )
    assert handshake_result(result) == "valid" and handshake_result(None) == "none"


def kind(result: Identity | CertificateProblem) -> ProblemKind:
    assert isinstance(result, CertificateProblem), result
    return result.kind


def test_problems(chain: dict[str, Any]) -> None:
    cert = leaf(chain["issuing"])
    revoked_at = NOW - dt.timedelta(hours=3)
    assert kind(evaluate(chain, cert, record=None)) is ProblemKind.UNKNOWN_ISSUER
    revoked = evaluate(
        chain, cert, record=record(cert, status=CertificateStatus.REVOKED, revoked_at=revoked_at)
    )
    assert kind(revoked) is ProblemKind.REVOKED and revoked.since == revoked_at  # type: ignore[union-attr]
    retired = evaluate(chain, cert, retired_generations={1: NOW - dt.timedelta(days=1)})
    assert kind(retired) is ProblemKind.RETIRED_GENERATION
    late = NOW + dt.timedelta(days=731)
    expired = evaluate(chain, cert, now=late)
    assert kind(expired) is ProblemKind.EXPIRED and expired.since == cert.not_valid_after_utc  # type: ignore[union-attr]
    early = evaluate(chain, cert, now=NOW - dt.timedelta(days=2))
    assert kind(early) is ProblemKind.NOT_YET_VALID and early.until == cert.not_valid_before_utc  # type: ignore[union-attr]
    # revoked wins over expired
    both = evaluate(
        chain,
        cert,
        now=late,
        record=record(cert, revoked_at=revoked_at, status=CertificateStatus.REVOKED),
    )
    assert kind(both) is ProblemKind.REVOKED


def test_no_client_auth_eku(chain: dict[str, Any]) -> None:
    assert kind(evaluate(chain, leaf(chain["issuing"], eku=False))) is ProblemKind.INVALID


def test_forged_row_with_a_foreign_chain_is_refused(chain: dict[str, Any]) -> None:
    """Same subject names, other keys: the store row alone is not trusted."""
    cert = leaf(chain["foreign"])
    result = evaluate(chain, cert)
    assert kind(result) is ProblemKind.INVALID and "chain" in result.detail  # type: ignore[union-attr]


def test_user_checks(chain: dict[str, Any]) -> None:
    cert = leaf(chain["issuing"])
    assert kind(evaluate(chain, cert, user=None)) is ProblemKind.USER_DISABLED
    disabled = UserRecord(**{**USER.__dict__, "status": UserStatus.DISABLED})
    assert kind(evaluate(chain, cert, user=disabled)) is ProblemKind.USER_DISABLED
    moved = UserRecord(**{**USER.__dict__, "email": "new@example.org"})
    assert kind(evaluate(chain, cert, user=moved)) is ProblemKind.INVALID
    upper = leaf(chain["issuing"], email="Erika@Example.org")
    assert isinstance(evaluate(chain, upper), Identity)  # e-mail compared case-insensitively


def test_verifier_cache_respects_time(chain: dict[str, Any]) -> None:
    cert = leaf(chain["issuing"])
    verifier = ChainVerifier(
        roots=[chain["root"].certificate], intermediates=[chain["issuing"].certificate]
    )
    assert verifier.verify(cert, fp(cert), NOW) is None
    assert verifier.verify(cert, fp(cert), NOW) is None  # cached
    assert verifier.verify(cert, fp(cert), NOW + dt.timedelta(days=3000)) is not None  # CA expired
    with pytest.raises(ValueError):
        ChainVerifier(roots=[], intermediates=[])
