"""The CA service: what a broker certificate contains, and what is (never) stored."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from ca import (
    BROKER_TIME_ZONE,
    PASSWORD_BITS,
    CAAlreadyInitialised,
    CertificateAuthority,
    GenerationInUse,
    InvalidGenerationState,
    UnknownCertificate,
    UnknownUser,
    WrongPassphrase,
    friendly_name,
    generate_password,
    load_trust_material,
)
from ca._pkcs12 import PASSWORD_ALPHABET, PASSWORD_GROUP_LENGTH, PASSWORD_GROUPS
from store import (
    AuditEvent,
    CAGeneration,
    Certificate,
    CertificateStatus,
    GenerationStatus,
    MailOutbox,
    RevocationReason,
    transaction,
)
from tests.conftest import FakeClock, UserFactory, password_mail_for


def test_certificate_profile(
    authority: CertificateAuthority,
    make_user: UserFactory,
    sessions: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    user = make_user(email="erika@example.org", broker="60/123/4567")
    issued = authority.issue_certificate(user.id, "ops:test")
    password = password_mail_for(sessions, issued.serial)
    key, cert, chain = pkcs12.load_key_and_certificates(issued.pkcs12, password.encode())
    assert cert is not None and key is not None
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    # Two calendar years from issuance (same day and time), backdated five minutes.
    assert cert.not_valid_before_utc == clock() - timedelta(minutes=5)
    assert cert.not_valid_after_utc == clock().replace(year=clock().year + 2)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_encipherment
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["erika@example.org"]
    # No URI: an unregistered urn: namespace fails RFC 5280 linting (pkilint), and the
    # gateway finds the user by fingerprint, not by name.
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == []
    assert len(list(san)) == 1
    assert cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "60/123/4567"
    assert "60/123/4567" in str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    issuer = chain[0]
    issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == issuer_ski.digest and ski.digest
    assert format(cert.serial_number, "x") == issued.serial
    with pytest.raises(x509.ExtensionNotFound):  # no public base URL configured
        cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    # Every certificate gets its own key.
    second = authority.issue_certificate(user.id, "ops:test")
    key2, _, _ = pkcs12.load_key_and_certificates(
        second.pkcs12, password_mail_for(sessions, second.serial).encode()
    )
    assert isinstance(key2, rsa.RSAPrivateKey)
    assert key2.public_key().public_numbers() != key.public_key().public_numbers()


def test_crl_distribution_point_when_public_url_set(
    authority: CertificateAuthority, make_user: UserFactory
) -> None:
    from dataclasses import replace

    authority.settings = replace(authority.settings, public_base_url="https://gw.example.org/")
    issued = authority.issue_certificate(make_user().id, "ops:test")
    with transaction(authority.sessions) as session:
        row = session.scalars(select(Certificate)).one()
        cert = x509.load_pem_x509_certificate(row.cert_pem.encode())
    dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert dp[0].full_name is not None
    assert (
        dp[0].full_name[0].value == f"https://gw.example.org/_gateway/crl/{issued.generation}.crl"
    )


def test_password_is_typeable_and_strong() -> None:
    passwords = {generate_password() for _ in range(200)}
    assert len(passwords) == 200
    pattern = re.compile(
        rf"^[{PASSWORD_ALPHABET}]{{{PASSWORD_GROUP_LENGTH}}}"
        rf"(-[{PASSWORD_ALPHABET}]{{{PASSWORD_GROUP_LENGTH}}}){{{PASSWORD_GROUPS - 1}}}$"
    )
    assert all(pattern.match(p) for p in passwords)
    entropy = PASSWORD_GROUPS * PASSWORD_GROUP_LENGTH * math.log2(len(PASSWORD_ALPHABET))
    assert entropy >= 80 and int(entropy) == PASSWORD_BITS
    assert not set("01ilo" + "yz").intersection(PASSWORD_ALPHABET)


def test_neither_password_nor_private_key_is_stored(
    authority: CertificateAuthority,
    make_user: UserFactory,
    sessions: sessionmaker[Session],
    engine: Engine,
) -> None:
    issued = authority.issue_certificate(make_user().id, "ops:test")
    password = password_mail_for(sessions, issued.serial)
    _, _, _ = pkcs12.load_key_and_certificates(issued.pkcs12, password.encode())
    dump = _dump_database(engine)
    assert password not in dump
    assert "BEGIN PRIVATE KEY" not in dump and "BEGIN RSA PRIVATE KEY" not in dump
    assert dump.count("BEGIN ENCRYPTED PRIVATE KEY") == 2  # root + issuing CA, encrypted
    with transaction(sessions) as session:
        row = session.scalars(select(MailOutbox)).one()
        assert row.secret_sealed and "password" not in row.context


def _dump_database(engine: Engine) -> str:
    parts: list[str] = []
    with engine.connect() as conn:
        from store import Base

        for table in Base.metadata.sorted_tables:
            for row in conn.execute(text(f"SELECT * FROM {table.name}")):
                parts.extend(v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in row)
    return "\n".join(parts)


def test_issue_for_unknown_user_writes_nothing(
    authority: CertificateAuthority, sessions: sessionmaker[Session]
) -> None:
    with pytest.raises(UnknownUser):
        authority.issue_certificate(999, "ops:test")
    with transaction(sessions) as session:
        assert session.scalar(select(func.count()).select_from(Certificate)) == 0
        assert session.scalar(select(func.count()).select_from(MailOutbox)) == 0


def test_wrong_passphrase_is_clear_and_changes_nothing(
    authority: CertificateAuthority, make_user: UserFactory, sessions: sessionmaker[Session]
) -> None:
    from dataclasses import replace

    user = make_user()
    wrong = CertificateAuthority(
        settings=replace(authority.settings, passphrase="not the passphrase"),
        sessions=sessions,
        clock=authority.clock,
        outbox_sealer=authority.outbox_sealer,
    )
    before = _counts(sessions)
    with pytest.raises(WrongPassphrase, match="passphrase does not open"):
        wrong.issue_certificate(user.id, "ops:test")
    with pytest.raises(WrongPassphrase):
        wrong.rotate("ops:test")
    assert _counts(sessions) == before
    with transaction(sessions) as session:
        assert session.scalars(select(CAGeneration.status)).all() == [GenerationStatus.ACTIVE]


def _counts(sessions: sessionmaker[Session]) -> tuple[int, ...]:
    with transaction(sessions) as session:
        return tuple(
            session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Certificate, MailOutbox, AuditEvent, CAGeneration)
        )


def test_init_twice_is_refused(authority: CertificateAuthority) -> None:
    with pytest.raises(CAAlreadyInitialised, match="ca rotate"):
        authority.init("ops:test")


def test_revoke_is_idempotent_audited_and_republishes_crl(
    authority: CertificateAuthority,
    make_user: UserFactory,
    sessions: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    issued = authority.issue_certificate(make_user().id, "ops:test")
    before = authority.crls()[1]
    clock.advance(timedelta(minutes=1))
    assert authority.revoke(issued.serial.upper(), RevocationReason.KEY_COMPROMISE, "ops:a")
    assert not authority.revoke(issued.serial, RevocationReason.SUPERSEDED, "ops:b")
    after = x509.load_pem_x509_crl(authority.crls()[1])
    assert after != x509.load_pem_x509_crl(before)
    entry = after.get_revoked_certificate_by_serial_number(int(issued.serial, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.key_compromise
    )
    with transaction(sessions) as session:
        row = session.scalars(select(Certificate)).one()
        assert row.status == CertificateStatus.REVOKED
        assert row.revocation_reason == RevocationReason.KEY_COMPROMISE  # first reason kept
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "cert.revoke").order_by(AuditEvent.id)
        ).all()
        assert [(e.actor, e.outcome, e.serial) for e in events] == [
            ("ops:a", "ok", issued.serial),
            ("ops:b", "noop", issued.serial),
        ]
    with pytest.raises(UnknownCertificate):
        authority.revoke("deadbeef", RevocationReason.KEY_COMPROMISE, "ops:a")


def test_rotation_and_retirement(
    authority: CertificateAuthority, make_user: UserFactory, sessions: sessionmaker[Session]
) -> None:
    old = authority.issue_certificate(make_user().id, "ops:test")
    assert authority.rotate("ops:test") == 2
    new = authority.issue_certificate(make_user().id, "ops:test")
    assert (old.generation, new.generation) == (1, 2)
    with transaction(sessions) as session:
        assert set(load_trust_material(session).issuing_by_generation) == {1, 2}
    with pytest.raises(GenerationInUse, match="1 live certificate"):
        authority.retire(1, "ops:test")
    with pytest.raises(InvalidGenerationState, match="active"):
        authority.retire(2, "ops:test")
    assert authority.retire(1, "ops:test", force=True) == 1
    with transaction(sessions) as session:
        assert set(load_trust_material(session).issuing_by_generation) == {2}
    status = {info.generation: info for info in authority.status()}
    assert status[1].status == GenerationStatus.RETIRED
    assert status[2].live_certificates == 1


def test_retire_after_revoking_needs_no_force(
    authority: CertificateAuthority, make_user: UserFactory
) -> None:
    old = authority.issue_certificate(make_user().id, "ops:test")
    authority.rotate("ops:test")
    authority.revoke(old.serial, RevocationReason.SUPERSEDED, "ops:test")
    assert authority.retire(1, "ops:test") == 0


def test_crl_republished_before_next_update(
    authority: CertificateAuthority, clock: FakeClock
) -> None:
    assert authority.publish_due_crls() == []
    clock.advance(authority.settings.crl_validity - authority.settings.crl_republish_before)
    assert authority.publish_due_crls() == [1]
    crl = x509.load_pem_x509_crl(authority.crls()[1])
    assert crl.next_update_utc == clock() + authority.settings.crl_validity
    assert authority.publish_due_crls() == []
    assert authority.publish_due_crls(force=True) == [1]


def test_a_renewal_is_told_apart_from_the_old_certificate_by_its_friendly_name(
    authority: CertificateAuthority, make_user: UserFactory
) -> None:
    """Issue 15: old and new certificate issued the same day read alike in the browser's
    list; the friendly name carries the expiry date and the start of the serial."""
    user = make_user()
    first = authority.issue_certificate(user.id, "ops:test")
    second = authority.issue_certificate(user.id, "ops:test")
    assert first.friendly_name != second.friendly_name
    assert f"{first.not_after.astimezone(BROKER_TIME_ZONE):%Y-%m-%d}" in first.friendly_name
    assert first.friendly_name.endswith("#" + first.serial[:8])


def test_a_keyless_authority_revokes_without_a_key_and_the_signer_republishes_the_crl(
    authority: CertificateAuthority,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    make_user: UserFactory,
) -> None:
    """Issue 12: the gateway's authority has no passphrase; its revocation marks the row at
    once and the CRL, now behind, is re-published by the key holder's next round."""
    from dataclasses import replace

    from ca import CASettings, InvalidGenerationState

    issued = authority.issue_certificate(make_user().id, "ops:test")
    keyless = replace(authority, settings=CASettings(), keyless=True, _keys={}, _backends=None)
    with pytest.raises(InvalidGenerationState):
        keyless.issue_certificate(make_user().id, "ops:test")
    clock.advance(timedelta(seconds=5))
    assert keyless.revoke(issued.serial, RevocationReason.KEY_COMPROMISE, "user:1")
    crl = x509.load_pem_x509_crl(authority.crls()[1])
    assert crl.get_revoked_certificate_by_serial_number(int(issued.serial, 16)) is None
    assert authority.publish_due_crls() == [1]  # behind: re-published
    crl = x509.load_pem_x509_crl(authority.crls()[1])
    assert crl.get_revoked_certificate_by_serial_number(int(issued.serial, 16)) is not None
    assert authority.publish_due_crls() == []  # and then not again


def test_the_friendly_name_shows_the_expiry_date_brokers_live_in() -> None:
    """A certificate that ends at 00:30 in Berlin ends at 23:30 UTC the day before; the name in
    the broker's certificate list and the password mail's subject must read the Berlin date."""
    name = friendly_name(
        name="Erika Mustermann",
        broker_number="60/123/4567",
        not_after=datetime(2028, 12, 3, 23, 30, tzinfo=UTC),
        serial="4f3a9c0011223344",
    )
    assert name == "Erika Mustermann (60/123/4567) 2028-12-04 #4f3a9c00"
