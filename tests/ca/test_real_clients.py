"""Our certificates, CRLs and PKCS#12 files as real clients see them: openssl, NSS, Java.

Passwords go to the tools through files (``-passin file:``, ``-w``, ``-storepass:file``),
never on a command line.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
from sqlalchemy.orm import Session, sessionmaker

from ca import CertificateAuthority, IssuedCertificate, load_trust_material
from store import RevocationReason, transaction
from tests.conftest import UserFactory, password_mail_for

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return proc


@dataclass
class Files:
    dir: Path
    bundle: Path
    crls: Path
    leaf: Path
    p12: Path
    password_file: Path
    now: datetime


def write_files(
    tmp: Path, authority: CertificateAuthority, issued: IssuedCertificate, password: str
) -> Files:
    with transaction(authority.sessions) as session:
        trust = load_trust_material(session)
    bundle = tmp / "bundle.pem"
    bundle.write_bytes(trust.bundle_pem())
    crls = tmp / "crls.pem"
    crls.write_bytes(b"".join(authority.crls().values()))
    _, cert, _ = pkcs12.load_key_and_certificates(issued.pkcs12, password.encode())
    assert cert is not None
    leaf = tmp / "leaf.pem"
    leaf.write_bytes(cert.public_bytes(Encoding.PEM))
    p12 = tmp / "broker.p12"
    p12.write_bytes(issued.pkcs12)
    password_file = tmp / "password"
    password_file.write_text(password)
    return Files(tmp, bundle, crls, leaf, p12, password_file, authority.clock())


@pytest.fixture
def issued_files(
    authority: CertificateAuthority,
    make_user: UserFactory,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> Files:
    issued = authority.issue_certificate(make_user().id, "ops:test")
    return write_files(tmp_path, authority, issued, password_mail_for(sessions, issued.serial))


def openssl_verify(files: Files, *extra: str) -> subprocess.CompletedProcess[str]:
    # The tests' clock is injected; openssl is told the same time with -attime.
    return run(
        "openssl", "verify", "-attime", str(int(files.now.timestamp())), "-CAfile",
        str(files.bundle), "-crl_check", "-CRLfile", str(files.crls), "-purpose", "sslclient",
        *extra, str(files.leaf), check=False,
    )  # fmt: skip


def test_openssl_verifies_chain_with_crl_and_rejects_revoked(
    issued_files: Files, authority: CertificateAuthority
) -> None:
    ok = openssl_verify(issued_files)
    assert ok.returncode == 0 and ": OK" in ok.stdout, ok.stderr
    serial = format(
        x509.load_pem_x509_certificate(issued_files.leaf.read_bytes()).serial_number, "x"
    )
    authority.revoke(serial, RevocationReason.KEY_COMPROMISE, "ops:test")
    issued_files.crls.write_bytes(b"".join(authority.crls().values()))
    bad = openssl_verify(issued_files)
    assert bad.returncode != 0
    assert "certificate revoked" in bad.stdout + bad.stderr


def test_openssl_rejects_foreign_ca(issued_files: Files, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    run(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=Other CA",
        "-keyout", str(foreign / "k.pem"), "-out", str(foreign / "ca.pem"), "-days", "2",
    )  # fmt: skip
    proc = run(
        "openssl", "verify", "-attime", str(int(issued_files.now.timestamp())), "-CAfile",
        str(foreign / "ca.pem"), str(issued_files.leaf), check=False,
    )  # fmt: skip
    assert proc.returncode != 0


def test_crls_verify_with_openssl(issued_files: Files, authority: CertificateAuthority) -> None:
    for generation, pem in authority.crls().items():
        path = issued_files.dir / f"gen-{generation}.crl.pem"
        path.write_bytes(pem)
        proc = run(
            "openssl", "crl", "-in", str(path), "-CAfile", str(issued_files.bundle), "-verify",
            "-noout",
        )  # fmt: skip
        assert "verify OK" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("profile", "expect", "refuse"),
    [
        ("compat", ["MAC: sha1", "pbeWithSHA1And3-KeyTripleDES-CBC"], ["AES", "RC2"]),
        ("modern", ["MAC: sha256", "PBES2, PBKDF2, AES-256-CBC"], ["3DES", "TripleDES", "RC2"]),
    ],
)
def test_pkcs12_profiles_open_in_openssl_nss_and_java(
    authority: CertificateAuthority,
    make_user: UserFactory,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    profile: str,
    expect: list[str],
    refuse: list[str],
) -> None:
    issued = authority.issue_certificate(
        make_user().id, "ops:test", profile="compat" if profile == "compat" else "modern"
    )
    files = write_files(tmp_path, authority, issued, password_mail_for(sessions, issued.serial))
    passin = f"file:{files.password_file}"

    info = run("openssl", "pkcs12", "-info", "-in", str(files.p12), "-passin", passin, "-noout")
    text = info.stdout + info.stderr
    for needle in expect:
        assert needle in text, text
    for needle in refuse:
        assert needle not in text, text
    pem = run("openssl", "pkcs12", "-in", str(files.p12), "-passin", passin, "-nodes").stdout
    assert "PRIVATE KEY" in pem and issued.friendly_name in pem

    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    denied = run(
        "openssl", "pkcs12", "-in", str(files.p12), "-passin", f"file:{wrong}", "-noout",
        check=False,
    )  # fmt: skip
    assert denied.returncode != 0

    if shutil.which("pk12util") and shutil.which("certutil"):
        nssdb = tmp_path / "nssdb"
        nssdb.mkdir()
        run("certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password")
        run(
            "pk12util", "-i", str(files.p12), "-d", f"sql:{nssdb}", "-w",
            str(files.password_file), "-K", "",
        )  # fmt: skip
        listing = run("certutil", "-L", "-d", f"sql:{nssdb}").stdout
        assert issued.friendly_name in listing
        keys = run("certutil", "-K", "-d", f"sql:{nssdb}", "-f", "/dev/null", check=False)
        assert "rsa" in (keys.stdout + keys.stderr).lower()
    else:
        pytest.fail("pk12util/certutil missing: run 'make system-deps' (libnss3-tools)")

    if shutil.which("keytool"):
        listing = run(
            "keytool", "-list", "-v", "-keystore", str(files.p12), "-storetype", "PKCS12",
            "-storepass:file", str(files.password_file),
        ).stdout  # fmt: skip
        assert "PrivateKeyEntry" in listing
        assert "Certificate chain length: 2" in listing
    else:
        pytest.fail("keytool missing (Java)")


def test_rotation_keeps_old_certificates_verifying(
    authority: CertificateAuthority,
    make_user: UserFactory,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    old = authority.issue_certificate(make_user().id, "ops:test")
    old_files = write_files(
        _subdir(tmp_path, "old"),
        authority,
        old,
        password_mail_for(sessions, old.serial),
    )
    assert authority.rotate("ops:test") == 2
    new = authority.issue_certificate(make_user().id, "ops:test")
    assert new.generation == 2
    new_files = write_files(
        _subdir(tmp_path, "new"),
        authority,
        new,
        password_mail_for(sessions, new.serial),
    )
    # The bundle written after the rotation verifies both generations.
    old_files.bundle.write_bytes(new_files.bundle.read_bytes())
    old_files.crls.write_bytes(new_files.crls.read_bytes())
    assert openssl_verify(old_files).returncode == 0
    assert openssl_verify(new_files).returncode == 0

    authority.retire(1, "ops:test", force=True)
    with transaction(sessions) as session:
        bundle = load_trust_material(session).bundle_pem()
    old_files.bundle.write_bytes(bundle)
    assert b"G1" not in _subjects(bundle)
    assert openssl_verify(old_files, "-no_check_time").returncode != 0
    new_files.bundle.write_bytes(bundle)
    assert openssl_verify(new_files).returncode == 0


def _subdir(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir()
    return path


def _subjects(bundle: bytes) -> bytes:
    certs = x509.load_pem_x509_certificates(bundle)
    return b"\n".join(c.subject.rfc4514_string().encode() for c in certs)


def test_root_rotation_chains_through_cross_certificate(
    authority: CertificateAuthority,
    make_user: UserFactory,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    with transaction(sessions) as session:
        old_root = load_trust_material(session).roots[0]
    assert authority.rotate_root("ops:test") == 2
    issued = authority.issue_certificate(make_user().id, "ops:test")
    files = write_files(tmp_path, authority, issued, password_mail_for(sessions, issued.serial))
    with transaction(sessions) as session:
        trust = load_trust_material(session)
    assert len(trust.roots) == 2
    # A relying party that only knows the OLD root still verifies the new certificate,
    # through the cross certificate (new root signed by the old one) + the new issuing CA.
    old_only = tmp_path / "old-root.pem"
    old_only.write_bytes(old_root.public_bytes(Encoding.PEM))
    untrusted = tmp_path / "untrusted.pem"
    untrusted.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in trust.intermediates))
    proc = run(
        "openssl", "verify", "-attime", str(int(files.now.timestamp())), "-CAfile",
        str(old_only), "-untrusted", str(untrusted), str(files.leaf), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # And one that knows only the NEW root verifies it directly.
    new_only = tmp_path / "new-root.pem"
    new_only.write_bytes(trust.roots[1].public_bytes(Encoding.PEM))
    proc = run(
        "openssl", "verify", "-attime", str(int(files.now.timestamp())), "-CAfile",
        str(new_only), "-untrusted", str(untrusted), str(files.leaf), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Retiring generation 1 (the only one below the old root) retires the old root too.
    authority.retire(1, "ops:test", force=True)
    with transaction(sessions) as session:
        assert len(load_trust_material(session).roots) == 1
