"""CA keys in a real PKCS#11 token (SoftHSM2): generated there, never extractable, and
everything signed with them passes openssl, NSS, Java and pkilint as file keys do.

The real-client tests (tests/ca/test_real_clients.py) and the pkilint tests run here once
more, unchanged, against a CA whose keys live in the token: this module overrides
``ca_settings``, which the shared ``authority`` fixture builds on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ca import (
    CASettings,
    CertificateAuthority,
    KeyStoreError,
    load_trust_material,
)
from ca._keystore import parse_key_uri
from store import CAGeneration, CARoot, RevocationReason, transaction
from tests.ca.test_pkilint import (
    test_every_issuer_subject_pair_passes_pkilint,
    test_everything_passes_pkilint,
)
from tests.ca.test_real_clients import (
    issued_files,
    openssl_verify,
    run,
    test_crls_verify_with_openssl,
    test_openssl_rejects_foreign_ca,
    test_openssl_verifies_chain_with_crl_and_rejects_revoked,
    test_pkcs12_profiles_open_in_openssl_nss_and_java,
    test_root_rotation_chains_through_cross_certificate,
    test_rotation_keeps_old_certificates_verifying,
    write_files,
)
from tests.conftest import TEST_PASSPHRASE, FakeClock, UserFactory, password_mail_for
from tests.softhsm import SoftHsmToken, private_keys

# Collected here a second time, now with the CA keys in the token.
__all__ = [
    "issued_files",
    "test_crls_verify_with_openssl",
    "test_every_issuer_subject_pair_passes_pkilint",
    "test_everything_passes_pkilint",
    "test_openssl_rejects_foreign_ca",
    "test_openssl_verifies_chain_with_crl_and_rejects_revoked",
    "test_pkcs12_profiles_open_in_openssl_nss_and_java",
    "test_root_rotation_chains_through_cross_certificate",
    "test_rotation_keeps_old_certificates_verifying",
]


@pytest.fixture(params=["rsa2048", "ec-p256"])
def ca_settings(request: pytest.FixtureRequest, token_ca_settings: CASettings) -> CASettings:
    """The CA keys in the SoftHSM2 token: RSA (PKCS#1 v1.5) and ECDSA P-256 (the token's
    raw r||s re-encoded as DER)."""
    from dataclasses import replace

    return replace(token_ca_settings, ca_key_type=request.param)


@pytest.fixture
def authority(authority: CertificateAuthority) -> Iterator[CertificateAuthority]:
    """The shared fixture's CA, logged out of the token afterwards (PKCS#11 logins belong
    to the process, so a test that leaves one open would vouch for the next one's PIN)."""
    yield authority
    authority.close()


def _rows(sessions: sessionmaker[Session]) -> list[CARoot | CAGeneration]:
    with transaction(sessions) as session:
        return [*session.scalars(select(CARoot)), *session.scalars(select(CAGeneration))]


def test_keys_are_made_in_the_token_and_never_leave_it(
    authority: CertificateAuthority,
    sessions: sessionmaker[Session],
    softhsm_token: SoftHsmToken,
) -> None:
    authority.rotate_root("ops:test")
    rows = _rows(sessions)
    assert len(rows) == 4  # two roots, two issuing CAs
    in_token = private_keys(softhsm_token)
    for row in rows:
        assert row.key_pem_encrypted is None, "a token key must leave no PEM in the store"
        assert row.key_uri is not None
        ref = parse_key_uri(row.key_uri)
        assert ref.token_label == softhsm_token.label
        assert in_token[ref.key_id] == {
            "extractable": False,
            "sensitive": True,
            "never_extractable": True,
            "always_sensitive": True,
            "sign": True,
            "decrypt": False,
        }
    # The key object in hand can sign but not be exported.
    with transaction(sessions) as session:
        gen = session.get_one(CAGeneration, 2)
    key = authority._generation_key(gen)
    with pytest.raises(TypeError, match="PKCS#11 token"):
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    with pytest.raises(TypeError, match="PKCS#11 token"):
        key.private_numbers()


def test_status_shows_token_and_key_id(authority: CertificateAuthority) -> None:
    info = authority.status()[0]
    assert info.key_location.startswith("pkcs11 token 'brokergate-test' id ")
    assert info.root_key_location.startswith("pkcs11 token 'brokergate-test' id ")
    assert info.key_location != info.root_key_location


def test_crl_of_revoked_certificate_verifies_with_crl_check(
    authority: CertificateAuthority,
    make_user: UserFactory,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    """openssl verify -crl_check before and after a revocation signed in the token, and
    openssl crl -verify on the CRL."""
    issued = authority.issue_certificate(make_user().id, "ops:test")
    files = write_files(tmp_path, authority, issued, password_mail_for(sessions, issued.serial))
    assert openssl_verify(files).returncode == 0
    authority.revoke(issued.serial, RevocationReason.KEY_COMPROMISE, "ops:test")
    files.crls.write_bytes(b"".join(authority.crls().values()))
    revoked = openssl_verify(files)
    assert revoked.returncode != 0 and "certificate revoked" in revoked.stdout + revoked.stderr
    proc = run(
        "openssl", "crl", "-in", str(files.crls), "-CAfile", str(files.bundle), "-verify",
        "-noout", "-text",
    )  # fmt: skip
    assert "verify OK" in proc.stdout + proc.stderr
    assert "Key Compromise" in proc.stdout


def test_failed_rotation_leaves_no_key_in_the_token(
    authority: CertificateAuthority,
    softhsm_token: SoftHsmToken,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing half-made: a rotation whose transaction fails destroys the key it made."""
    import ca._authority

    before = set(private_keys(softhsm_token))

    def broken_audit(*args: object, **kwargs: object) -> None:
        raise RuntimeError("store write failed")

    monkeypatch.setattr(ca._authority, "record_audit", broken_audit)
    with pytest.raises(RuntimeError, match="store write failed"):
        authority.rotate("ops:test")
    assert set(private_keys(softhsm_token)) == before
    monkeypatch.undo()
    assert authority.rotate("ops:test") == 2  # and the CA is unharmed
    assert len(set(private_keys(softhsm_token)) - before) == 1


def test_key_from_another_token_is_refused(
    authority: CertificateAuthority, sessions: sessionmaker[Session]
) -> None:
    from dataclasses import replace

    authority.settings = replace(authority.settings, pkcs11_token_label="some-other-token")
    with transaction(sessions) as session:
        gen = session.get_one(CAGeneration, 1)
    with pytest.raises(KeyStoreError, match="lives in PKCS#11 token 'brokergate-test'"):
        authority._generation_key(gen)


def test_file_ca_moves_into_the_token_by_root_rotation(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    make_user: UserFactory,
    token_ca_settings: CASettings,
    tmp_path: Path,
) -> None:
    """A CA made with key files keeps working after ca.key_store = pkcs11: new keys go to
    the token, the old generation's CRL is still signed with its (file) key."""
    from dataclasses import replace

    from ca import make_authority
    from tests.conftest import TEST_SECRET_KEY

    file_ca = make_authority(
        settings=CASettings(passphrase=TEST_PASSPHRASE, ca_key_type="rsa2048"),
        sessions=sessions,
        secret_key=TEST_SECRET_KEY,
        clock=clock,
    )
    file_ca.init("ops:test")
    old = file_ca.issue_certificate(make_user().id, "ops:test")
    mixed = make_authority(
        settings=replace(token_ca_settings, passphrase=TEST_PASSPHRASE),
        sessions=sessions,
        secret_key=TEST_SECRET_KEY,
        clock=clock,
    )
    try:
        assert mixed.rotate_root("ops:test") == 2
        infos = {i.generation: i for i in mixed.status()}
        assert infos[1].key_location.startswith("file: encrypted PKCS#8 in the store")
        assert infos[2].key_location.startswith("pkcs11 token")
        assert infos[2].root_key_location.startswith("pkcs11 token")
        mixed.revoke(old.serial, RevocationReason.SUPERSEDED, "ops:test")
        new = mixed.issue_certificate(make_user().id, "ops:test")
        assert new.generation == 2
        files = write_files(tmp_path, mixed, new, password_mail_for(sessions, new.serial))
        assert openssl_verify(files).returncode == 0
        with transaction(sessions) as session:
            assert len(load_trust_material(session).roots) == 2
    finally:
        mixed.close()
