"""The ops reset of a user's second factors (issue 14: "lost second factor … an audited ops
command to reset a user's second factors, which notifies the user").

:func:`reset_second_factors` removes, in the caller's ONE transaction: the authenticator
app (TOTP secret, also a pending enrolment), every passkey, every recovery code and every
remembered browser; it ends every web session of the user, queues the notice mail
``second_factor_reset_notice`` in the user's language and writes one audit event naming
what was removed (counts only, never a secret). A user with none of these is left as they
are (no session ended, no mail; audited as ``noop``).

Afterwards the user logs in with the password (``basic``) and is led to set up a new
second factor by the 2FA prompt (seed 000). Client certificates are not touched: they are
revoked with ``brokergate cert revoke``; the result counts the valid ones so ops can tell.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from gateway.logins._errors import EnrolmentError
from store import (
    Certificate,
    CertificateStatus,
    PasskeyCredential,
    RecoveryCode,
    RememberedDevice,
    Sealer,
    User,
    end_user_sessions,
    queue_mail,
    record_audit,
)

RESET_NOTICE_TEMPLATE = "second_factor_reset_notice"  # renewal/_templates/<locale>/…


@dataclass(frozen=True, kw_only=True)
class SecondFactorsReset:
    """What :func:`reset_second_factors` removed (all zero / False: nothing was there)."""

    user_id: int
    email: str
    totp: bool  # an authenticator app (active or still being set up) was removed
    passkeys: int
    recovery_codes: int  # used and unused
    devices: int  # remembered browsers forgotten
    sessions_ended: int
    valid_certificates: int  # untouched; they still log in as `strong`
    outbox_id: int | None  # the notice mail, if one was queued

    @property
    def changed(self) -> bool:
        return bool(self.totp or self.passkeys or self.recovery_codes or self.devices)


def _count(session: Session, model: type[PasskeyCredential | RecoveryCode], user_id: int) -> int:
    return int(
        session.scalar(select(func.count()).select_from(model).where(model.user_id == user_id)) or 0
    )


def reset_second_factors(
    session: Session,
    *,
    user_id: int,
    actor: str,
    mail_sealer: Sealer,
    now: datetime,
) -> SecondFactorsReset:
    """Remove every second factor of ``user_id`` and end their sessions (caller's
    transaction: all of it or nothing), audited as ``user.second_factors.reset``.

    Raises:
        EnrolmentError: no such user.
    """
    user = session.get(User, user_id, with_for_update=True)
    if user is None:
        raise EnrolmentError("unknown user")
    totp = user.totp_secret_sealed is not None
    passkeys = _count(session, PasskeyCredential, user_id)
    recovery_codes = _count(session, RecoveryCode, user_id)
    live_devices = (
        RememberedDevice.user_id == user_id,
        RememberedDevice.revoked_at.is_(None),
        RememberedDevice.expires_at > now,
    )
    devices = int(
        session.scalar(select(func.count()).select_from(RememberedDevice).where(*live_devices)) or 0
    )
    valid_certificates = int(
        session.scalar(
            select(func.count())
            .select_from(Certificate)
            .where(
                Certificate.user_id == user_id,
                Certificate.status == CertificateStatus.VALID,
                Certificate.not_after > now,
            )
        )
        or 0
    )
    removed: dict[str, object] = {
        "totp": totp,
        "passkeys": passkeys,
        "recovery_codes": recovery_codes,
        "devices": devices,
    }
    if not (totp or passkeys or recovery_codes or devices):
        record_audit(
            session,
            actor=actor,
            action="user.second_factors.reset",
            outcome="noop",
            now=now,
            user_id=user_id,
            details=removed,
        )
        return SecondFactorsReset(
            user_id=user_id,
            email=user.email,
            totp=False,
            passkeys=0,
            recovery_codes=0,
            devices=0,
            sessions_ended=0,
            valid_certificates=valid_certificates,
            outbox_id=None,
        )
    user.totp_secret_sealed = None
    user.totp_confirmed_at = None
    user.totp_last_step = None
    session.execute(delete(PasskeyCredential).where(PasskeyCredential.user_id == user_id))
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    # Expired rows are revoked too, so that none is left that could ever count again.
    session.execute(
        update(RememberedDevice)
        .where(RememberedDevice.user_id == user_id, RememberedDevice.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    # SECURITY: a session proven by a removed factor must not outlive it (issue 14).
    ended = len(end_user_sessions(session, user_id=user_id, now=now))
    mail = queue_mail(
        session,
        kind=RESET_NOTICE_TEMPLATE,
        to_addr=user.email,
        locale=user.locale,
        template=RESET_NOTICE_TEMPLATE,
        context={"name": user.name},
        secrets={},
        sealer=mail_sealer,
        now=now,
        user_id=user_id,
    )
    record_audit(
        session,
        actor=actor,
        action="user.second_factors.reset",
        now=now,
        user_id=user_id,
        details={**removed, "sessions_ended": ended, "outbox_id": mail.id},
    )
    return SecondFactorsReset(
        user_id=user_id,
        email=user.email,
        totp=totp,
        passkeys=passkeys,
        recovery_codes=recovery_codes,
        devices=devices,
        sessions_ended=ended,
        valid_certificates=valid_certificates,
        outbox_id=mail.id,
    )
