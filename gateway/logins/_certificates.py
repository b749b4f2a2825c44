"""The broker's own certificates: status for "My account", download (= renewal), revocation.

Renewal is the download action again: a new certificate is issued with ``replaces_id``
pointing at the current one. The old one is revoked as *superseded* as soon as the new one
has been used to log in (``first_used_at``), or after ``ca.superseded_grace`` (14 days) at
the latest (``ca.CertificateAuthority.supersede_replaced``), so a broker who downloads but
does not import yet is not locked out, and a forgotten old certificate does not stay valid
for two more years.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.logins._errors import EnrolmentError, TooSoon
from gateway.logins._settings import LoginSettings
from gateway.regulation._throttles import next_download_at
from store import (
    Certificate,
    CertificateStatus,
    RevocationReason,
    User,
    record_audit,
    transaction,
)

REMINDER_WINDOW = timedelta(days=60)  # seed 000: "etwa zwei Monate vor Ablauf" a reminder


class IssuedLike(Protocol):
    """What we read of ``ca.IssuedCertificate`` (a frozen dataclass: read-only members)."""

    @property
    def pkcs12(self) -> bytes: ...
    @property
    def serial(self) -> str: ...
    @property
    def not_after(self) -> datetime: ...
    @property
    def certificate_id(self) -> int: ...


class Authority(Protocol):
    """What we use of ``ca.CertificateAuthority``."""

    def issue_certificate(
        self,
        user_id: int,
        actor: str,
        *,
        session: Session | None = ...,
        replaces_id: int | None = ...,
    ) -> IssuedLike: ...

    def revoke(
        self, serial: str, reason: RevocationReason, actor: str, *, session: Session | None = ...
    ) -> bool: ...

    def supersede_replaced(
        self, *, session: Session | None = ..., user_id: int | None = ...
    ) -> list[str]: ...

    @property
    def superseded_grace(self) -> timedelta: ...


@dataclass(frozen=True, kw_only=True)
class CertificateView:
    id: int
    serial: str
    not_before: datetime
    not_after: datetime
    status: str  # "valid", "expired", "revoked"
    days_left: int
    first_used_at: datetime | None
    revoked_at: datetime | None
    replaces_id: int | None

    @property
    def expiring(self) -> bool:
        """Within the reminder window (the banner on every gateway page)."""
        return self.status == "valid" and self.days_left <= REMINDER_WINDOW.days


def _view(row: Certificate, now: datetime) -> CertificateView:
    if row.status == CertificateStatus.REVOKED:
        status = "revoked"
    elif row.not_after <= now:
        status = "expired"
    else:
        status = "valid"
    return CertificateView(
        id=row.id,
        serial=row.serial,
        not_before=row.not_before,
        not_after=row.not_after,
        status=status,
        days_left=max(0, (row.not_after - now).days),
        first_used_at=row.first_used_at,
        revoked_at=row.revoked_at,
        replaces_id=row.replaces_id,
    )


def certificate_overview(session: Session, user_id: int, now: datetime) -> list[CertificateView]:
    """The user's certificates, newest first (the account page shows the first few)."""
    rows = session.scalars(
        select(Certificate)
        .where(Certificate.user_id == user_id)
        .order_by(Certificate.issued_at.desc(), Certificate.id.desc())
    )
    return [_view(row, now) for row in rows]


def current_certificate(session: Session, user_id: int, now: datetime) -> CertificateView | None:
    """The valid certificate that lasts longest, or ``None``."""
    valid = [v for v in certificate_overview(session, user_id, now) if v.status == "valid"]
    return max(valid, key=lambda v: v.not_after) if valid else None


def download_certificate(
    sessions: sessionmaker[Session],
    *,
    authority: Authority,
    user_id: int,
    settings: LoginSettings,
    client_addr: str | None,
    now: datetime,
) -> IssuedLike:
    """Issue a new certificate for the broker (first download or renewal).

    The PKCS#12 is returned once (the caller sends it as the download); the CA queues the
    password mail in the same transaction.

    Raises:
        TooSoon: ``downloads_per_day`` certificates were issued to the broker in 24 hours.
    """
    actor = f"user:{user_id}"
    with transaction(sessions) as session:
        # SECURITY: lock the user's row while counting, so concurrent downloads (double
        # click, two tabs, a script) queue up and each sees the ones before it.
        session.get(User, user_id, with_for_update=True)
        limits = settings.limits
        recent = session.scalars(
            select(Certificate.issued_at).where(
                Certificate.user_id == user_id,
                Certificate.issued_by == actor,
                Certificate.issued_at > now - limits.download_window,
            )
        ).all()
        until = next_download_at(recent, limits)
        if until is not None:
            record_audit(
                session,
                actor=actor,
                action="cert.download",
                outcome="refused",
                now=now,
                user_id=user_id,
                client_addr=client_addr,
                details={"reason": "rate_limited", "until": until.isoformat()},
            )
            failure = TooSoon("a certificate download", until)
        else:
            current = current_certificate(session, user_id, now)
            issued = authority.issue_certificate(
                user_id, actor, session=session, replaces_id=current.id if current else None
            )
            record_audit(
                session,
                actor=actor,
                action="cert.download",
                now=now,
                user_id=user_id,
                serial=issued.serial,
                client_addr=client_addr,
                details={"replaces": current.serial if current else None},
            )
            return issued
    raise failure


def revoke_own_certificate(
    sessions: sessionmaker[Session],
    *,
    authority: Authority,
    user_id: int,
    certificate_id: int,
    client_addr: str | None,
    now: datetime,
) -> str:
    """ "Revoke my certificate" (lost laptop): keyCompromise, effective on the next request.

    Returns:
        The revoked serial.

    Raises:
        EnrolmentError: the certificate is not the user's, or not valid any more.
    """
    with transaction(sessions) as session:
        row = session.get(Certificate, certificate_id)
        if row is None or row.user_id != user_id:
            raise EnrolmentError("no such certificate in your account")
        if row.status == CertificateStatus.REVOKED:
            raise EnrolmentError("this certificate is already revoked")
        # RFC 5280 §5.3.1: keyCompromise — the private key may be in someone else's hands.
        authority.revoke(
            row.serial, RevocationReason.KEY_COMPROMISE, f"user:{user_id}", session=session
        )
        record_audit(
            session,
            actor=f"user:{user_id}",
            action="cert.revoke.self",
            now=now,
            user_id=user_id,
            serial=row.serial,
            client_addr=client_addr,
        )
        return row.serial


def note_certificate_used(session: Session, *, fingerprint: str, now: datetime) -> int | None:
    """Record the first login with a certificate; returns its user id if this was the first."""
    row = session.scalar(
        select(Certificate).where(Certificate.fingerprint_sha256 == fingerprint).with_for_update()
    )
    if row is None or row.first_used_at is not None:
        return None
    row.first_used_at = now
    return row.user_id
