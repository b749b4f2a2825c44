"""TOTP (RFC 6238) enrolment and verification, and the recovery codes that back it up.

SHA-1, 6 digits, 30-second steps, one step of drift either way: what every authenticator
app (Google, Microsoft, FreeOTP …) supports (seed 003: "6-cijferige code"). The secret is
sealed at rest (store.Sealer purpose "totp"); the last accepted time step is stored so a
code is never accepted twice (RFC 6238 §5.2).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

import pyotp
import segno
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.logins._errors import EnrolmentError, SecondFactorInvalid
from gateway.logins._tokens import token_hash
from store import RecoveryCode, Sealer, User, record_audit, transaction

TOTP_PURPOSE = "totp"  # store.Sealer purpose of users.totp_secret_sealed
DIGITS = 6
PERIOD = 30  # seconds
DRIFT_STEPS = 1  # RFC 6238 §5.2 recommends at most one step back (and we allow one ahead)
RECOVERY_CODE_COUNT = 10
# 16 base32 characters = 80 bits: out of reach of any brute force, so a plain SHA-256
# is enough to store them (see _tokens) and we can look a code up by its hash.
RECOVERY_CODE_CHARS = 16
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


@dataclass(frozen=True, kw_only=True)
class TotpEnrolment:
    """What the account page shows while TOTP is being set up."""

    secret: str  # base32, shown as the manual key
    uri: str  # otpauth://totp/…
    qr_svg: str  # the URI as an inline SVG QR code

    @property
    def manual_key(self) -> str:
        """The secret in groups of four, easier to type into an app."""
        return " ".join(self.secret[i : i + 4] for i in range(0, len(self.secret), 4))


def time_step(now: datetime) -> int:
    return int(now.timestamp()) // PERIOD


def matching_step(secret: str, code: str, now: datetime, last_step: int | None) -> int | None:
    """The time step ``code`` belongs to (now ±1 step), or ``None``.

    Steps at or before ``last_step`` never match: that is the replay guard.
    """
    code = "".join(code.split())
    if len(code) != DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD)
    current = time_step(now)
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if last_step is not None and step <= last_step:
            continue
        # SECURITY: constant-time comparison of the expected code.
        if hmac.compare_digest(totp.at(step * PERIOD), code):
            return step
    return None


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    """The ``otpauth://`` URI (Key Uri Format) that authenticator apps scan."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD).provisioning_uri(
        name=account, issuer_name=issuer
    )


def qr_svg(uri: str, *, title: str) -> str:
    """``uri`` as an inline SVG QR code (segno), with an accessible title."""
    qr = segno.make(uri, error="m")
    svg: str = qr.svg_inline(scale=5, title=title, border=2)
    return svg


def begin_enrolment(
    sessions: sessionmaker[Session],
    *,
    user_id: int,
    sealer: Sealer,
    issuer: str,
    now: datetime,
) -> TotpEnrolment:
    """Make a new secret (kept unconfirmed until :func:`confirm_enrolment`).

    Raises:
        EnrolmentError: TOTP is already active (reset it first, with a fresh login).
    """
    secret = pyotp.random_base32()  # 32 base32 characters = 160 bits (RFC 4226 §4)
    with transaction(sessions) as session:
        user = session.get(User, user_id)
        if user is None:
            raise EnrolmentError("unknown user")
        if user.totp_confirmed_at is not None:
            raise EnrolmentError("TOTP is already active; reset it before enrolling again")
        user.totp_secret_sealed = sealer.seal(secret.encode())
        user.totp_last_step = None
        account = user.email
        record_audit(
            session, actor=f"user:{user_id}", action="totp.enrol.start", now=now, user_id=user_id
        )
    uri = provisioning_uri(secret, account=account, issuer=issuer)
    return TotpEnrolment(secret=secret, uri=uri, qr_svg=qr_svg(uri, title=f"{issuer}: {account}"))


def pending_enrolment(
    sessions: sessionmaker[Session], *, user_id: int, sealer: Sealer, issuer: str
) -> TotpEnrolment | None:
    """The unconfirmed enrolment of ``user_id`` (to show the QR code again), if any."""
    with transaction(sessions) as session:
        user = session.get(User, user_id)
        if user is None or user.totp_secret_sealed is None or user.totp_confirmed_at is not None:
            return None
        secret = sealer.open(user.totp_secret_sealed).decode()
        account = user.email
    uri = provisioning_uri(secret, account=account, issuer=issuer)
    return TotpEnrolment(secret=secret, uri=uri, qr_svg=qr_svg(uri, title=f"{issuer}: {account}"))


def _new_recovery_code() -> str:
    raw = "".join(secrets.choice(_BASE32) for _ in range(RECOVERY_CODE_CHARS))
    return "-".join(raw[i : i + 4] for i in range(0, RECOVERY_CODE_CHARS, 4))


def normalise_recovery_code(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch in _BASE32)


def replace_recovery_codes(session: Session, *, user_id: int, now: datetime) -> list[str]:
    """Ten new single-use codes (shown once); earlier ones stop working."""
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    for code in codes:
        session.add(
            RecoveryCode(
                user_id=user_id,
                code_hash=token_hash(normalise_recovery_code(code)),
                created_at=now,
            )
        )
    return codes


def confirm_enrolment(
    sessions: sessionmaker[Session],
    *,
    user_id: int,
    code: str,
    sealer: Sealer,
    now: datetime,
) -> list[str]:
    """Activate TOTP with a first code from the app; returns the ten recovery codes.

    Raises:
        EnrolmentError: no enrolment in progress.
        SecondFactorInvalid: the code does not match (the enrolment stays pending).
    """
    failed = False
    with transaction(sessions) as session:
        user = session.get(User, user_id, with_for_update=True)
        if user is None or user.totp_secret_sealed is None or user.totp_confirmed_at is not None:
            raise EnrolmentError("no TOTP enrolment is in progress; start again")
        secret = sealer.open(user.totp_secret_sealed).decode()
        step = matching_step(secret, code, now, user.totp_last_step)
        if step is None:
            record_audit(
                session,
                actor=f"user:{user_id}",
                action="totp.enrol.confirm",
                outcome="failed",
                now=now,
                user_id=user_id,
            )
            failed = True
        else:
            user.totp_last_step = step
            user.totp_confirmed_at = now
            codes = replace_recovery_codes(session, user_id=user_id, now=now)
            record_audit(
                session,
                actor=f"user:{user_id}",
                action="totp.enrol.confirm",
                now=now,
                user_id=user_id,
            )
    if failed:
        raise SecondFactorInvalid()
    return codes


def check_totp(session: Session, user: User, code: str, sealer: Sealer, now: datetime) -> bool:
    """Accept ``code`` for ``user`` (confirmed TOTP) and advance the replay guard."""
    if user.totp_confirmed_at is None or user.totp_secret_sealed is None:
        return False
    secret = sealer.open(user.totp_secret_sealed).decode()
    step = matching_step(secret, code, now, user.totp_last_step)
    if step is None:
        return False
    user.totp_last_step = step
    return True


def use_recovery_code(session: Session, user: User, code: str, now: datetime) -> bool:
    """Accept one unused recovery code of ``user`` and mark it used."""
    normalised = normalise_recovery_code(code)
    if len(normalised) != RECOVERY_CODE_CHARS:
        return False
    row = session.scalar(
        select(RecoveryCode)
        .where(
            RecoveryCode.user_id == user.id,
            RecoveryCode.code_hash == token_hash(normalised),
            RecoveryCode.used_at.is_(None),
        )
        .with_for_update()
    )
    if row is None:
        return False
    row.used_at = now
    return True


def remaining_recovery_codes(session: Session, user_id: int) -> int:
    return len(
        list(
            session.scalars(
                select(RecoveryCode.id).where(
                    RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None)
                )
            )
        )
    )


def reset_totp(session: Session, *, user_id: int, actor: str, now: datetime) -> bool:
    """Remove TOTP and the recovery codes of ``user_id`` (caller's transaction, audited).

    Returns False if the user had no TOTP (nothing changed, still audited as a no-op).
    """
    user = session.get(User, user_id, with_for_update=True)
    if user is None:
        raise EnrolmentError("unknown user")
    had = user.totp_secret_sealed is not None
    user.totp_secret_sealed = None
    user.totp_confirmed_at = None
    user.totp_last_step = None
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    record_audit(
        session,
        actor=actor,
        action="totp.reset",
        outcome="ok" if had else "noop",
        now=now,
        user_id=user_id,
    )
    return had
