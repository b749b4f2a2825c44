"""The broker's certificate actions: status, download (= renewal), supersede, self-revocation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ca import CertificateAuthority
from gateway.logins import EnrolmentError, LoginSettings, TooSoon
from gateway.logins._certificates import (
    certificate_overview,
    current_certificate,
    download_certificate,
    note_certificate_used,
    revoke_own_certificate,
)
from store import Certificate, CertificateStatus, RevocationReason, User, transaction
from tests.conftest import FakeClock, UserFactory, password_mail_for
from tests.logins.conftest import audit_events


def download(
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    clock: FakeClock,
    user: User,
    settings: LoginSettings | None = None,
):  # type: ignore[no-untyped-def]
    return download_certificate(
        sessions,
        authority=authority,
        user_id=user.id,
        settings=settings or LoginSettings(),
        client_addr="127.0.0.1",
        now=clock(),
    )


def test_download_issues_a_pkcs12_and_mails_the_password(
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    clock: FakeClock,
    make_user: UserFactory,
) -> None:
    user = make_user(email="anna@example.org")
    issued = download(sessions, authority, clock, user)
    password = password_mail_for(sessions, issued.serial)
    key, cert, _ = pkcs12.load_key_and_certificates(issued.pkcs12, password.encode())
    assert key is not None and cert is not None and format(cert.serial_number, "x") == issued.serial
    with transaction(sessions) as s:
        view = current_certificate(s, user.id, clock())
        assert view is not None and view.serial == issued.serial and view.status == "valid"
        assert view.days_left >= 729 and not view.expiring
    (event,) = audit_events(sessions, "cert.download")
    assert event.serial == issued.serial and password not in str(event.details)


def test_downloads_are_rate_limited(
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    clock: FakeClock,
    make_user: UserFactory,
) -> None:
    user = make_user()
    settings = LoginSettings(downloads_per_day=2)
    first = clock()
    download(sessions, authority, clock, user, settings)
    clock.advance(timedelta(hours=1))
    download(sessions, authority, clock, user, settings)
    clock.advance(timedelta(hours=1))
    with pytest.raises(TooSoon) as exc:
        download(sessions, authority, clock, user, settings)
    assert exc.value.until == first + timedelta(hours=24)
    clock.advance(timedelta(hours=22))
    download(sessions, authority, clock, user, settings)


def test_renewal_supersedes_the_old_certificate_once_the_new_one_is_used(
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    clock: FakeClock,
    make_user: UserFactory,
) -> None:
    user = make_user()
    old = download(sessions, authority, clock, user)
    clock.advance(timedelta(days=700))
    with transaction(sessions) as s:
        view = current_certificate(s, user.id, clock())
        assert view is not None and view.expiring and view.days_left < 60
    new = download(sessions, authority, clock, user)
    with transaction(sessions) as s:
        row = s.get(Certificate, new.certificate_id)
        assert row is not None and row.replaces_id == old.certificate_id
        # Not used yet, within the grace period: both stay valid.
        assert authority.supersede_replaced(session=s) == []
    with transaction(sessions) as s:
        assert note_certificate_used(s, fingerprint=new.fingerprint_sha256, now=clock()) == user.id
        assert note_certificate_used(s, fingerprint=new.fingerprint_sha256, now=clock()) is None
        assert note_certificate_used(s, fingerprint="00" * 32, now=clock()) is None
    with transaction(sessions) as s:
        assert authority.supersede_replaced(session=s, user_id=user.id) == [old.serial]
    with transaction(sessions) as s:
        row = s.get(Certificate, old.certificate_id)
        assert row is not None and row.status == CertificateStatus.REVOKED
        assert row.revocation_reason == RevocationReason.SUPERSEDED
        views = certificate_overview(s, user.id, clock())
        assert [v.status for v in views] == ["valid", "revoked"]


def test_unused_renewal_supersedes_after_the_grace_period(
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    clock: FakeClock,
    make_user: UserFactory,
) -> None:
    user = make_user()
    grace = authority.settings.superseded_grace
    old = download(sessions, authority, clock, user)
    download(sessions, authority, clock, user)
    clock.advance(grace - timedelta(minutes=1))
    with transaction(sessions) as s:
        assert authority.supersede_replaced(session=s) == []
    clock.advance(timedelta(minutes=1))
    with transaction(sessions) as s:
        assert authority.supersede_replaced(session=s) == [old.serial]


def test_revoke_my_certificate(
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    clock: FakeClock,
    make_user: UserFactory,
) -> None:
    user = make_user()
    other = make_user()
    issued = download(sessions, authority, clock, user)
    with pytest.raises(EnrolmentError):
        revoke_own_certificate(
            sessions,
            authority=authority,
            user_id=other.id,
            certificate_id=issued.certificate_id,
            client_addr=None,
            now=clock(),
        )
    serial = revoke_own_certificate(
        sessions,
        authority=authority,
        user_id=user.id,
        certificate_id=issued.certificate_id,
        client_addr=None,
        now=clock(),
    )
    assert serial == issued.serial
    with transaction(sessions) as s:
        row = s.scalars(select(Certificate).where(Certificate.serial == serial)).one()
        assert row.revocation_reason == RevocationReason.KEY_COMPROMISE
        assert current_certificate(s, user.id, clock()) is None
    with pytest.raises(EnrolmentError):
        revoke_own_certificate(
            sessions,
            authority=authority,
            user_id=user.id,
            certificate_id=issued.certificate_id,
            client_addr=None,
            now=clock(),
        )
