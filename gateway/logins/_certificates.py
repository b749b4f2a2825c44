"""The broker's own certificates: status for "My account", download (= renewal), revocation.

Renewal is the download action again: a new certificate is issued with ``replaces_id``
pointing at the current one. The old one is revoked as *superseded* as soon as the new one
has been used to log in (``first_used_at``), or after ``ca.superseded_grace`` (14 days) at
the latest (``ca.CertificateAuthority.supersede_replaced``), so a broker who downloads but
does not import yet is not locked out, and a forgotten old certificate does not stay valid
for two more years.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ca import RATE_LIMITED, IssueRequest, SignerClient, SignerUnavailable
from gateway.logins._errors import DownloadRefused, EnrolmentError, SignerUnreachable, TooSoon
from gateway.logins._settings import LoginSettings
from gateway.regulation._throttles import next_download_at
from store import (
    REMINDER_WINDOW_DAYS,
    Certificate,
    CertificateStatus,
    RevocationReason,
    User,
    days_until_expiry,
    record_audit,
    transaction,
)

REMINDER_WINDOW = timedelta(days=REMINDER_WINDOW_DAYS)  # seed 000: about two months


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


def _view(row: Certificate, now: datetime, zone: ZoneInfo | None = None) -> CertificateView:
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
        days_left=days_until_expiry(row.not_after, now, zone),
        first_used_at=row.first_used_at,
        revoked_at=row.revoked_at,
        replaces_id=row.replaces_id,
    )


def certificate_overview(
    session: Session, user_id: int, now: datetime, zone: ZoneInfo | None = None
) -> list[CertificateView]:
    """The user's certificates, newest first (the account page shows the first few).

    ``days_left`` counts calendar days in ``zone`` (the brokers'; default Europe/Berlin)."""
    rows = session.scalars(
        select(Certificate)
        .where(Certificate.user_id == user_id)
        .order_by(Certificate.issued_at.desc(), Certificate.id.desc())
    )
    return [_view(row, now, zone) for row in rows]


def current_certificate(
    session: Session, user_id: int, now: datetime, zone: ZoneInfo | None = None
) -> CertificateView | None:
    """The valid certificate that lasts longest, or ``None``."""
    valid = [v for v in certificate_overview(session, user_id, now, zone) if v.status == "valid"]
    return max(valid, key=lambda v: v.not_after) if valid else None


@dataclass(frozen=True, kw_only=True)
class RenewalState:
    """Where a broker stands with renewal (issue 15).

    Attributes:
        in_use: the valid certificate the broker logs in with: the longest-lasting one that
            has been presented; if none has been, the longest-lasting valid one (None: no
            valid certificate).
        pending_import: a valid certificate newer than ``in_use`` that has never been
            presented: downloaded but not (yet) imported into the browser.
    """

    in_use: CertificateView | None
    pending_import: CertificateView | None

    @property
    def reminder(self) -> CertificateView | None:
        """The certificate to remind about: in use, within the reminder window, and not
        already renewed by a download (then the import hint is due instead)."""
        if self.pending_import is not None or self.in_use is None:
            return None
        return self.in_use if self.in_use.expiring else None


def renewal_state(
    session: Session, user_id: int, now: datetime, zone: ZoneInfo | None = None
) -> RenewalState:
    """The broker's :class:`RenewalState` at ``now``."""
    valid = [v for v in certificate_overview(session, user_id, now, zone) if v.status == "valid"]
    used = [v for v in valid if v.first_used_at is not None]
    if not used:  # never logged in by certificate: remind about the one there is
        latest = max(valid, key=lambda v: v.not_after) if valid else None
        return RenewalState(in_use=latest, pending_import=None)
    in_use = max(used, key=lambda v: v.not_after)
    fresh = [v for v in valid if v.first_used_at is None and v.not_after > in_use.not_after]
    pending = max(fresh, key=lambda v: v.not_after) if fresh else None
    return RenewalState(in_use=in_use, pending_import=pending)


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


@dataclass(frozen=True, kw_only=True)
class SignedDownload:
    """A download the signer issued (``IssuedLike``)."""

    pkcs12: bytes = field(repr=False)
    serial: str
    not_after: datetime
    certificate_id: int


async def download_through_signer(
    signer: SignerClient,
    *,
    user_id: int,
    session_id: str,
    client_addr: str | None,
) -> SignedDownload:
    """Ask the signer to issue for ``user_id`` because of ``session_id`` (issue 12).

    The signer re-checks the session, freshness and limits in the store and writes the
    certificate, the password mail and the audit rows; this process holds no CA key. One
    request id per download: the client's retries cannot issue twice.

    Raises:
        TooSoon: the broker's download limit (``until`` from the signer).
        DownloadRefused: the signer's checks refused (stale session, its rates).
        SignerUnreachable: no answer; nothing was issued.
    """
    request = IssueRequest(
        request_id=uuid.uuid4().hex,
        user_id=user_id,
        session_id=session_id,
        client_addr=client_addr,
    )
    try:
        answer = await signer.issue(request)
    except SignerUnavailable as exc:
        raise SignerUnreachable(exc.detail) from None
    if answer.outcome != "issued":
        if answer.reason == RATE_LIMITED and answer.until is not None:
            raise TooSoon("a certificate download", answer.until)
        raise DownloadRefused(answer.reason or "refused")
    if (
        answer.pkcs12 is None
        or answer.serial is None
        or answer.not_after is None
        or answer.certificate_id is None
    ):
        raise SignerUnreachable("incomplete answer")
    return SignedDownload(
        pkcs12=answer.pkcs12,
        serial=answer.serial,
        not_after=answer.not_after,
        certificate_id=answer.certificate_id,
    )


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
