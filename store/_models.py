"""The brokergate schema as SQLAlchemy 2 typed models.

Every table here has a matching Alembic migration in ``store/migrations``; a
test compares the two so they cannot drift. Later features add tables in a
new migration (and, if they are large, a new ``_models_<area>.py`` module).

Owners of each table's rows:

====================  =========================================
table                 written by
====================  =========================================
ca_roots              ca (init, root rotation)
ca_generations        ca (init, rotate, retire, CRL publication)
organisations,        ca (user and office admin), gateway (account and
offices, users        head-user pages)
certificates          ca (issue, revoke)
mail_outbox           anyone who needs a mail; renewal delivers
audit_events          everyone, append-only
sessions ... devices  gateway
reminders_sent        renewal
signer_requests       ca (the signer, ``brokergate ca serve``)
====================  =========================================
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from store._types import UTCDateTime

# Stable constraint names so that Alembic migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # native_enum=False: a VARCHAR + CHECK behaves the same on SQLite and PostgreSQL,
    # and adding a member later is a plain migration instead of ALTER TYPE.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=24,
        values_callable=lambda e: [m.value for m in e],
    )


class GenerationStatus(enum.StrEnum):
    ACTIVE = "active"  # issues new certificates; exactly one at a time
    ROTATED = "rotated"  # still trusted, issues nothing
    RETIRED = "retired"  # no longer trusted


class RootStatus(enum.StrEnum):
    ACTIVE = "active"
    ROTATED = "rotated"
    RETIRED = "retired"


class UserRole(enum.StrEnum):
    """A user's place in their office (seed 003)."""

    HEAD = "head"  # "Hoofdgebruiker": administers their office (and, at a head office, its subs)
    EMPLOYEE = "employee"  # "Medewerker"


class UserStatus(enum.StrEnum):
    PENDING = "pending"  # created, activation link not used yet
    ACTIVE = "active"
    DISABLED = "disabled"


class CertificateStatus(enum.StrEnum):
    # "expired" is not stored: it is a function of not_after and the clock.
    VALID = "valid"
    REVOKED = "revoked"


class RevocationReason(enum.StrEnum):
    """RFC 5280 §5.3.1 CRLReason names (the ones that make sense for leaves)."""

    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "keyCompromise"
    AFFILIATION_CHANGED = "affiliationChanged"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessationOfOperation"
    CERTIFICATE_HOLD = "certificateHold"
    PRIVILEGE_WITHDRAWN = "privilegeWithdrawn"


class MailStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for (another) attempt
    SENT = "sent"
    FAILED = "failed"  # permanent failure (5xx) or attempts exhausted; kept for ops


class Level(enum.StrEnum):
    """Assurance levels, in increasing order (DESIGN.md)."""

    ANONYMOUS = "anonymous"
    RESTRICTED = "restricted"
    BASIC = "basic"
    STRONG = "strong"

    @property
    def rank(self) -> int:
        return _LEVEL_ORDER.index(self)

    def satisfies(self, required: Level) -> bool:
        return self.rank >= required.rank


_LEVEL_ORDER = [Level.ANONYMOUS, Level.RESTRICTED, Level.BASIC, Level.STRONG]

# Session data: when a factor weaker than the session's level was re-confirmed (a password
# inside a strong session). Written by the gateway, read by the gateway and by the signer,
# which re-checks a download's freshness on its own.
FRESH_BASIC_KEY = "logins.fresh_basic_at"


class CARoot(Base):
    """A self-signed root. More than one exists only during a root rotation."""

    __tablename__ = "ca_roots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(String(512))
    cert_pem: Mapped[str] = mapped_column(Text)
    # Exactly one of the two: PKCS#8 encrypted with the CA passphrase (ca.key_store = file),
    # or the RFC 7512 URI of a non-extractable key in a PKCS#11 token (ca.key_store = pkcs11).
    key_pem_encrypted: Mapped[str | None] = mapped_column(Text)
    key_uri: Mapped[str | None] = mapped_column(String(512))
    # The new root signed by the previous root (root rotation), so old trust stores chain to it.
    cross_cert_pem: Mapped[str | None] = mapped_column(Text)
    status: Mapped[RootStatus] = mapped_column(_enum(RootStatus, "root_status"))
    not_before: Mapped[datetime]
    not_after: Mapped[datetime]
    created_at: Mapped[datetime]


class CAGeneration(Base):
    """An issuing CA. ``id`` is the generation number shown to ops (1, 2, ...)."""

    __tablename__ = "ca_generations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    root_id: Mapped[int] = mapped_column(ForeignKey("ca_roots.id"))
    subject: Mapped[str] = mapped_column(String(512))
    cert_pem: Mapped[str] = mapped_column(Text)
    key_pem_encrypted: Mapped[str | None] = mapped_column(Text)  # as CARoot: one of the two
    key_uri: Mapped[str | None] = mapped_column(String(512))
    key_type: Mapped[str] = mapped_column(String(16))
    status: Mapped[GenerationStatus] = mapped_column(_enum(GenerationStatus, "generation_status"))
    not_before: Mapped[datetime]
    not_after: Mapped[datetime]
    created_at: Mapped[datetime]
    rotated_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]
    crl_number: Mapped[int] = mapped_column(BigInteger, default=0)
    crl_pem: Mapped[str | None] = mapped_column(Text)
    crl_this_update: Mapped[datetime | None]
    crl_next_update: Mapped[datetime | None]

    root: Mapped[CARoot] = relationship()


class Organisation(Base):
    """A broker firm, identified by its broker number (NN/NNN/NNNN, seed 001)."""

    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    broker_number: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime]


class Office(Base):
    """An office of a firm: its head office, or a sub-office under it (seed 003, "Subkantoren").

    Two levels only: a sub-office's ``head_office_id`` names the firm's head office, whose own
    ``head_office_id`` is ``None``. ``rights`` are product keys from the configured catalogue
    (``[firms]``); they bound the rights of the office's users.
    """

    __tablename__ = "offices"
    __table_args__ = (UniqueConstraint("organisation_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    head_office_id: Mapped[int | None] = mapped_column(ForeignKey("offices.id"), index=True)
    # The head office: the broker number. A sub-office: the firm's own reference for it,
    # printed on its quotes ("Uniek kantoornummer").
    number: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(256))
    address: Mapped[str | None] = mapped_column(String(256))
    postcode: Mapped[str | None] = mapped_column(String(16))
    city: Mapped[str | None] = mapped_column(String(128))
    phone: Mapped[str | None] = mapped_column(String(64))
    # Where the portal mails the office's quotes; required for a sub-office, stored lower-cased.
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    rights: Mapped[list[str]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    deactivated_at: Mapped[datetime | None]

    organisation: Mapped[Organisation] = relationship()
    head_office: Mapped[Office | None] = relationship(remote_side=[id])

    @property
    def is_head_office(self) -> bool:
        return self.head_office_id is None


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    office_id: Mapped[int] = mapped_column(ForeignKey("offices.id"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-cased
    name: Mapped[str] = mapped_column(String(256))
    locale: Mapped[str] = mapped_column(String(8), default="de")
    role: Mapped[UserRole] = mapped_column(_enum(UserRole, "user_role"), default=UserRole.EMPLOYEE)
    # Product keys the user may quote and apply for; bounded by the office's rights.
    rights: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[UserStatus] = mapped_column(
        _enum(UserStatus, "user_status"), default=UserStatus.ACTIVE
    )
    created_at: Mapped[datetime]
    password_hash: Mapped[str | None] = mapped_column(String(256))  # argon2id
    password_changed_at: Mapped[datetime | None]
    # TOTP (RFC 6238); the secret is sealed with the application secret key.
    totp_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_confirmed_at: Mapped[datetime | None]
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)  # replay guard
    # "Not now" on the 2FA activation prompt (seed 000).
    twofa_prompt_snoozed_until: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]
    last_login_method: Mapped[str | None] = mapped_column(String(16))
    previous_login_at: Mapped[datetime | None]
    previous_login_method: Mapped[str | None] = mapped_column(String(16))
    webauthn_user_handle: Mapped[bytes | None] = mapped_column(LargeBinary(64), unique=True)

    organisation: Mapped[Organisation] = relationship()
    office: Mapped[Office] = relationship()


class Certificate(Base):
    """A broker's client certificate. The private key is never stored."""

    __tablename__ = "certificates"
    __table_args__ = (
        # The reminder scan walks certificates by expiry; keep it an index range scan.
        Index("ix_certificates_status_not_after", "status", "not_after"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)  # lower-case hex, no colons
    fingerprint_sha256: Mapped[str] = mapped_column(String(64), unique=True)  # lower-case hex
    subject: Mapped[str] = mapped_column(String(512))
    not_before: Mapped[datetime]
    not_after: Mapped[datetime]
    status: Mapped[CertificateStatus] = mapped_column(
        _enum(CertificateStatus, "certificate_status"), default=CertificateStatus.VALID
    )
    revoked_at: Mapped[datetime | None] = mapped_column(index=True)
    revocation_reason: Mapped[RevocationReason | None] = mapped_column(
        _enum(RevocationReason, "revocation_reason")
    )
    generation_id: Mapped[int] = mapped_column(ForeignKey("ca_generations.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    key_type: Mapped[str] = mapped_column(String(16))
    p12_profile: Mapped[str] = mapped_column(String(16))
    issued_at: Mapped[datetime]
    issued_by: Mapped[str] = mapped_column(String(128))
    first_used_at: Mapped[datetime | None]
    replaces_id: Mapped[int | None] = mapped_column(ForeignKey("certificates.id"))
    cert_pem: Mapped[str] = mapped_column(Text)

    user: Mapped[User] = relationship()
    generation: Mapped[CAGeneration] = relationship()


class MailOutbox(Base):
    """A mail to deliver. Written in the same transaction as the state change that needs it."""

    __tablename__ = "mail_outbox"
    __table_args__ = (Index("ix_mail_outbox_status_next_attempt_at", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))  # certificate_password, tan, reminder, ...
    to_addr: Mapped[str] = mapped_column(String(320))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    locale: Mapped[str] = mapped_column(String(8))
    template: Mapped[str] = mapped_column(String(64))
    # Non-secret template values (JSON); secret ones live only in `secret_sealed`.
    context: Mapped[dict[str, Any]] = mapped_column(JSON)
    secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)  # Fernet; wiped once sent
    # Makes queueing idempotent where it must be (reminder per certificate and stage).
    dedupe_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    status: Mapped[MailStatus] = mapped_column(
        _enum(MailStatus, "mail_status"), default=MailStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(256))
    sent_at: Mapped[datetime | None]


class AuditEvent(Base):
    """Append-only record of who did what, when, to which user or certificate."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(128))  # "ops:alice", "user:17", "system:renewal"
    action: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16), default="ok")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    serial: Mapped[str | None] = mapped_column(String(64), index=True)
    client_addr: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class WebSession(Base):
    """A gateway session. ``id`` is the SHA-256 of the cookie value, never the value itself."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    level: Mapped[Level] = mapped_column(_enum(Level, "level"))
    method: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime]
    authenticated_at: Mapped[datetime | None]  # last time a factor was presented ("fresh login")
    last_seen_at: Mapped[datetime]
    absolute_expires_at: Mapped[datetime] = mapped_column(index=True)
    cert_fingerprint: Mapped[str | None] = mapped_column(String(64))
    client_addr: Mapped[str | None] = mapped_column(String(64))
    csrf_token: Mapped[str] = mapped_column(String(64))
    twofa_prompt_dismissed: Mapped[bool] = mapped_column(Boolean, default=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ended_at: Mapped[datetime | None]


class EmailTan(Base):
    """A one-time TAN mailed for the broker-number login (seed 001): 15 minutes, single use."""

    __tablename__ = "email_tans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    tan_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    used_at: Mapped[datetime | None]


class RememberedDevice(Base):
    """A browser remembered after a confirmed TAN (30 days, seed 001)."""

    __tablename__ = "remembered_devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    revoked_at: Mapped[datetime | None]


class RecoveryCode(Base):
    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class PasskeyCredential(Base):
    __tablename__ = "passkey_credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    credential_id: Mapped[bytes] = mapped_column(LargeBinary(1024), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    transports: Mapped[list[str]] = mapped_column(JSON, default=list)
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]


class ActivationToken(Base):
    """Emailed one-time link to set the first password (7 days)."""

    __tablename__ = "activation_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class EmailChangeToken(Base):
    """Emailed one-time link (24 h) that confirms a broker's new address; hashed token only."""

    __tablename__ = "email_change_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    new_email: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class PasswordResetToken(Base):
    """Emailed one-time link (30 min, issue 14 "Passwort vergessen?") that lets a broker
    set a new password; hashed token only. A newer link voids the older ones."""

    __tablename__ = "password_reset_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class RateLimit(Base):
    """Fixed-window counters and lockouts, shared by every gateway replica."""

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)  # e.g. "login:user:17"
    window_start: Mapped[datetime]
    count: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AssertionKey(Base):
    """Signing keys for the identity assertion the gateway sends upstream (shared by replicas)."""

    __tablename__ = "assertion_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    private_key_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    retired_at: Mapped[datetime | None]


class ReminderSent(Base):
    """One row per certificate and reminder stage: the unique key makes reminders exactly-once."""

    __tablename__ = "reminders_sent"
    __table_args__ = (UniqueConstraint("certificate_id", "stage_days"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificates.id"))
    stage_days: Mapped[int] = mapped_column(Integer)
    queued_at: Mapped[datetime]
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("mail_outbox.id"))


class SignerRequest(Base):
    """One "issue for user U because of session S" request the signer answered (issue 12).

    ``id`` is the caller's request id: a retry with the same id gets ``answer_sealed`` back
    instead of a second certificate. The answer holds the PKCS#12 (password-protected; the
    password travels only in the sealed outbox mail) sealed with the application secret,
    and is deleted after ``signer.request_retention``.
    """

    __tablename__ = "signer_requests"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    session_id: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))  # "issued" or "refused"
    certificate_id: Mapped[int | None] = mapped_column(ForeignKey("certificates.id"))
    answer_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(index=True)
