"""Who a client certificate belongs to, or why it cannot be used: one pure decision.

:func:`evaluate_certificate` takes the presented certificate, the store's view of it (from
the revocation cache: row, user, retired generations), a chain check and the time, and
returns either an :class:`Identity` or a :class:`CertificateProblem` that the
certificate-problem page explains (what, since when, what to do).

Order of checks, and why: not ours (no row for the fingerprint) → revoked (the strongest
statement, shown even if also expired) → retired generation → not yet valid → expired →
EKU clientAuth → chain to our roots (defence in depth: the row alone is not trusted) →
user may log in (active, and ``ca.login_refusal`` finds nothing: issue 13) → SAN e-mail
equals the user's e-mail.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from store import CertificateStatus, Level, UserStatus

if TYPE_CHECKING:
    from ca import LoginRefusal

__all__ = [
    "CERTIFICATE_METHOD",
    "CertificateFacts",
    "CertificateProblem",
    "CertificateRecord",
    "FirmFacts",
    "Identity",
    "ProblemKind",
    "UserRecord",
    "evaluate_certificate",
    "handshake_result",
]

CERTIFICATE_METHOD = "certificate"


class ProblemKind(enum.StrEnum):
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    REVOKED = "revoked"
    SUPERSEDED = "superseded"  # revoked because a renewal of it has logged in
    UNKNOWN_ISSUER = "unknown_issuer"  # not issued by us (another insurer's, say)
    RETIRED_GENERATION = "retired_generation"
    USER_DISABLED = "user_disabled"  # no active user behind it
    INVALID = "invalid"  # wrong EKU, broken chain, e-mail mismatch


@dataclass(frozen=True, kw_only=True)
class CertificateRecord:
    """The store's row of a certificate, as cached."""

    fingerprint: str
    serial: str
    user_id: int
    generation_id: int
    status: CertificateStatus
    revoked_at: datetime | None
    not_before: datetime
    not_after: datetime
    superseded: bool = False  # revoked for reason superseded: a newer one has logged in


@dataclass(frozen=True, kw_only=True)
class FirmFacts:
    """The user's place in the firm, as the portal is told it (issue 13).

    Attributes:
        office_number: the user's office (a head office's number is the broker number).
        head_office_number: the firm's head office (the broker number).
        role: ``head`` or ``employee``; None for a restricted session, which has not
            proven which of the firm's people is there.
        rights: the effective rights (``ca.effective_rights``), sorted; empty for a
            restricted session.
        rights_contact: whom to ask for a missing right (a head user's name); None: the
            broker support. Shown on the "no right" page, never sent to the portal.
    """

    office_number: str
    head_office_number: str
    role: str | None
    rights: tuple[str, ...] = ()
    rights_contact: str | None = None

    def firm_level(self) -> FirmFacts:
        """What a restricted session may claim: the firm, nobody in it, no rights."""
        return FirmFacts(
            office_number=self.head_office_number,
            head_office_number=self.head_office_number,
            role=None,
            rights=(),
            rights_contact=self.rights_contact,
        )


@dataclass(frozen=True, kw_only=True)
class UserRecord:
    id: int
    email: str
    name: str
    locale: str
    status: UserStatus
    broker_number: str
    firm: FirmFacts | None = None
    refusal: LoginRefusal | None = None  # ca.login_refusal(user), read with the user

    @property
    def may_log_in(self) -> bool:
        """The one answer to "may this user be logged in now" (issue 13): by any method,
        and on every request of an existing session."""
        return self.status is UserStatus.ACTIVE and self.refusal is None


@dataclass(frozen=True, kw_only=True)
class Identity:
    """Who is there. From a certificate (``method == "certificate"``) or from a session."""

    user_id: int
    broker_number: str
    email: str
    name: str
    locale: str
    level: Level
    method: str
    cert_serial: str | None = None
    cert_not_after: datetime | None = None
    cert_fingerprint: str | None = None
    firm: FirmFacts | None = None  # None only for users outside any office (none after 0006)


@dataclass(frozen=True, kw_only=True)
class CertificateProblem:
    kind: ProblemKind
    fingerprint: str
    serial: str | None = None  # only for certificates of ours
    since: datetime | None = None  # expired / revoked / retired since
    until: datetime | None = None  # not valid until
    user_id: int | None = None
    detail: str = ""  # for the log, never shown
    refusal: LoginRefusal | None = None  # USER_DISABLED: why, and whom to ask (issue 13)


@dataclass(frozen=True, kw_only=True)
class CertificateFacts:
    """What the decision reads from a certificate (parsing the extensions costs more than
    the whole rest of the decision: the app's ``PresentedCertificates`` keeps these)."""

    not_before: datetime
    not_after: datetime
    client_auth: bool
    emails: frozenset[str]

    @classmethod
    def of(cls, certificate: x509.Certificate) -> CertificateFacts:
        return cls(
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            client_auth=_has_client_auth(certificate),
            emails=frozenset(_san_emails(certificate)),
        )


def _has_client_auth(certificate: x509.Certificate) -> bool:
    try:
        eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CLIENT_AUTH in eku


def _san_emails(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [e.lower() for e in san.get_values_for_type(x509.RFC822Name)]


def evaluate_certificate(
    *,
    certificate: x509.Certificate,
    fingerprint: str,
    record: CertificateRecord | None,
    user: UserRecord | None,
    retired_generations: Mapping[int, datetime],
    verify_chain: Callable[[x509.Certificate, str, datetime], str | None],
    now: datetime,
    facts: CertificateFacts | None = None,
) -> Identity | CertificateProblem:
    """Decide what a presented certificate means at ``now``.

    Args:
        certificate: the presented leaf.
        fingerprint: SHA-256 of its DER, lower-case hex (the store's key).
        record: the store's row for ``fingerprint``, None if there is none.
        user: the row's user (None if missing).
        retired_generations: generation id → retired_at, for retired generations.
        verify_chain: ``ChainVerifier.verify`` (None = valid, else the reason).
        now: the injected clock's time.
        facts: ``CertificateFacts.of(certificate)``, when the caller keeps them.
    """
    if record is None:
        return CertificateProblem(
            kind=ProblemKind.UNKNOWN_ISSUER, fingerprint=fingerprint, detail="no store row"
        )

    def problem(
        kind: ProblemKind,
        detail: str = "",
        refusal: LoginRefusal | None = None,
        **when: datetime | None,
    ) -> CertificateProblem:
        return CertificateProblem(
            kind=kind,
            fingerprint=fingerprint,
            serial=record.serial,
            user_id=record.user_id,
            detail=detail,
            refusal=refusal,
            **when,
        )

    # SECURITY: the store's revocation state wins over everything the certificate says.
    if record.status is CertificateStatus.REVOKED or record.revoked_at is not None:
        # A renewal's predecessor is told that a newer certificate exists, not to ask for
        # a new one (issue 15).
        kind = ProblemKind.SUPERSEDED if record.superseded else ProblemKind.REVOKED
        return problem(kind, since=record.revoked_at)
    if record.generation_id in retired_generations:
        return problem(
            ProblemKind.RETIRED_GENERATION, since=retired_generations[record.generation_id]
        )
    facts = facts if facts is not None else CertificateFacts.of(certificate)
    not_before, not_after = facts.not_before, facts.not_after
    if now < not_before:
        return problem(ProblemKind.NOT_YET_VALID, until=not_before)
    if now > not_after:
        return problem(ProblemKind.EXPIRED, since=not_after)
    if not facts.client_auth:
        return problem(ProblemKind.INVALID, "no EKU clientAuth")
    chain_error = verify_chain(certificate, fingerprint, now)
    if chain_error is not None:
        return problem(ProblemKind.INVALID, f"chain: {chain_error}")
    if user is None or user.id != record.user_id or not user.may_log_in:
        # SECURITY (issue 13): a deactivated user or office signs nobody in; the page
        # names whom to ask (the refusal), never the password form as a fall-back.
        return problem(
            ProblemKind.USER_DISABLED,
            "user missing, not active, or refused",
            refusal=user.refusal if user is not None and user.id == record.user_id else None,
        )
    if user.email.lower() not in facts.emails:
        return problem(ProblemKind.INVALID, "SAN e-mail differs from the user's e-mail")
    return Identity(
        user_id=user.id,
        broker_number=user.broker_number,
        email=user.email,
        name=user.name,
        locale=user.locale,
        level=Level.STRONG,
        method=CERTIFICATE_METHOD,
        cert_serial=record.serial,
        cert_not_after=not_after,
        cert_fingerprint=fingerprint,
        firm=user.firm,
    )


def handshake_result(result: Identity | CertificateProblem | None) -> str:
    """The ``brokergate_handshakes{result=…}`` label of an evaluation (gateway._metrics)."""
    if result is None:
        return "none"
    if isinstance(result, Identity):
        return "valid"
    return {
        ProblemKind.EXPIRED: "expired",
        ProblemKind.NOT_YET_VALID: "not_yet_valid",
        ProblemKind.REVOKED: "revoked",
        ProblemKind.SUPERSEDED: "revoked",
        ProblemKind.UNKNOWN_ISSUER: "unknown_issuer",
        ProblemKind.RETIRED_GENERATION: "unknown_issuer",
    }.get(result.kind, "invalid")
