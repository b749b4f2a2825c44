"""Every certificate and CRL the CA makes passes pkilint's RFC 5280 checks (issue 12).

pkilint (https://github.com/digicert/pkilint) is run through its own command-line tools
(their ``main``, in this process): ``lint_pkix_cert`` (the RFC 5280 certificate profile),
``lint_pkix_signer_signee_cert_chain`` (each issuer/subject pair) and
``lint_crl -t CRL -p PKIX``, with
the threshold at WARNING: any warning, error or fatal finding fails the test. NOTICE and
INFO findings are informational and not counted (pkilint's own exit code ignores them at
this threshold too).
"""

from __future__ import annotations

import contextlib
import gc
import io
import itertools
import warnings
from dataclasses import replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pkilint.bin import lint_crl as lint_crl_tool
from pkilint.bin import lint_pkix_cert, lint_pkix_signer_signee_cert_chain
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ca import CertificateAuthority
from store import CAGeneration, CARoot, Certificate, RevocationReason, transaction
from tests.conftest import UserFactory

# pkilint's own command-line entry points, run in this process (each one as a subprocess
# would spend half a second importing pkilint, for about forty documents per test).
TOOLS = {
    "lint_pkix_cert": lint_pkix_cert.main,
    "lint_crl": lint_crl_tool.main,
    "lint_pkix_signer_signee_cert_chain": lint_pkix_signer_signee_cert_chain.main,
}


def pkilint(tool: str, *args: str, documents: list[bytes], tmp_path: Path) -> str:
    """Run a pkilint tool on ``documents`` (DER); returns its report, '' when clean."""
    paths = []
    for n, document in enumerate(documents):
        paths.append(tmp_path / f"document-{n}.der")
        paths[-1].write_bytes(document)
    out = io.StringIO()
    # The tools open their input with argparse.FileType and leave closing it to the
    # garbage collector; that ResourceWarning is theirs, not ours.
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        code = TOOLS[tool](
            ["lint", *args, "-s", "WARNING", "--document-format", "DER", *map(str, paths)]
        )
        gc.collect()
    report = out.getvalue().strip()
    assert code == 0 or report, f"{tool} failed without a report"
    return report if code != 0 else ""


def lint_certificate(cert: x509.Certificate, tmp_path: Path) -> str:
    return pkilint("lint_pkix_cert", documents=[_der(cert)], tmp_path=tmp_path)


def lint_pair(issuer: x509.Certificate, subject: x509.Certificate, tmp_path: Path) -> str:
    """pkilint's issuer/subject checks: names chain, AKI matches SKI, the issuer may sign."""
    return pkilint(
        "lint_pkix_signer_signee_cert_chain", documents=[_der(issuer), _der(subject)],
        tmp_path=tmp_path,
    )  # fmt: skip


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def lint_crl(crl: x509.CertificateRevocationList, tmp_path: Path) -> str:
    return pkilint(
        "lint_crl", "-t", "CRL", "-p", "PKIX", documents=[crl.public_bytes(Encoding.DER)],
        tmp_path=tmp_path,
    )  # fmt: skip


def everything_the_ca_made(
    sessions: sessionmaker[Session],
) -> tuple[dict[str, x509.Certificate], dict[str, x509.CertificateRevocationList]]:
    certs: dict[str, x509.Certificate] = {}
    crls: dict[str, x509.CertificateRevocationList] = {}
    with transaction(sessions) as session:
        for root in session.scalars(select(CARoot)):
            certs[f"root {root.subject}"] = x509.load_pem_x509_certificate(root.cert_pem.encode())
            if root.cross_cert_pem:
                certs[f"cross {root.subject}"] = x509.load_pem_x509_certificate(
                    root.cross_cert_pem.encode()
                )
        for gen in session.scalars(select(CAGeneration)):
            certs[f"issuing G{gen.id}"] = x509.load_pem_x509_certificate(gen.cert_pem.encode())
            if gen.crl_pem:
                crls[f"CRL G{gen.id}"] = x509.load_pem_x509_crl(gen.crl_pem.encode())
        for row in session.scalars(select(Certificate)):
            certs[f"leaf {row.serial}"] = x509.load_pem_x509_certificate(row.cert_pem.encode())
    return certs, crls


def exercise(authority: CertificateAuthority, make_user: UserFactory) -> None:
    """Every kind of object: leaves with and without a CRL distribution point, revoked
    ones (a reason code, and 'unspecified' which RFC 5280 §5.3.1 says to omit), an issuing
    CA rotation and a root rotation with its cross certificate, empty and non-empty CRLs."""
    first = authority.issue_certificate(make_user().id, "ops:test")
    authority.revoke(first.serial, RevocationReason.KEY_COMPROMISE, "ops:test")
    second = authority.issue_certificate(make_user().id, "ops:test")
    authority.revoke(second.serial, RevocationReason.UNSPECIFIED, "ops:test")
    authority.rotate("ops:test")
    authority.settings = replace(authority.settings, public_base_url="https://gw.example.org")
    authority.issue_certificate(make_user(name="Jörg Ölmüller-Straße").id, "ops:test")
    authority.rotate_root("ops:test")
    authority.issue_certificate(make_user().id, "ops:test", profile="modern")


def test_everything_passes_pkilint(
    authority: CertificateAuthority,
    make_user: UserFactory,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    exercise(authority, make_user)
    certs, crls = everything_the_ca_made(sessions)
    assert {name.split()[0] for name in certs} == {"root", "cross", "issuing", "leaf"}
    assert len(crls) == 3
    findings = {name: lint_certificate(cert, tmp_path) for name, cert in certs.items()}
    findings |= {name: lint_crl(crl, tmp_path) for name, crl in crls.items()}
    assert {name: report for name, report in findings.items() if report} == {}


def test_every_issuer_subject_pair_passes_pkilint(
    authority: CertificateAuthority,
    make_user: UserFactory,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    exercise(authority, make_user)
    pairs: dict[str, tuple[x509.Certificate, x509.Certificate]] = {}
    with transaction(sessions) as session:
        roots = session.scalars(select(CARoot).order_by(CARoot.id)).all()
        root_certs = {r.id: _load(r.cert_pem) for r in roots}
        for previous, root in itertools.pairwise(roots):
            assert root.cross_cert_pem
            pairs[f"cross {root.id}"] = (root_certs[previous.id], _load(root.cross_cert_pem))
        issuing = {}
        for gen in session.scalars(select(CAGeneration)):
            issuing[gen.id] = _load(gen.cert_pem)
            pairs[f"issuing G{gen.id}"] = (root_certs[gen.root_id], issuing[gen.id])
        for row in session.scalars(select(Certificate)):
            pairs[f"leaf {row.serial}"] = (issuing[row.generation_id], _load(row.cert_pem))
    assert len(pairs) == 1 + 3 + 4  # one cross certificate, three issuing CAs, four leaves
    findings = {name: lint_pair(*pair, tmp_path) for name, pair in pairs.items()}
    assert {name: report for name, report in findings.items() if report} == {}
    # Negative case: a leaf presented with the root as its issuer is flagged.
    leaf = next(pair[1] for name, pair in pairs.items() if name.startswith("leaf"))
    assert lint_pair(root_certs[roots[0].id], leaf, tmp_path), "pkilint saw no mismatch"


def _load(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def test_pkilint_would_catch_the_old_urn(tmp_path: Path) -> None:
    """The negative case: the check is live, and it flags what issue 12 quoted."""
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old profile")])
    now = datetime(2026, 11, 25, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=730))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier("urn:brokergate:user:1")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    report = lint_certificate(cert, tmp_path)
    assert "invalid_uri_syntax" in report, report
