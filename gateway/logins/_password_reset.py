""" "Passwort vergessen?" (issue 14; seeds 002/004 "Zugangsdaten vergessen"): an access link
by mail, a new password under the usual rules, every other session ended, a notice mail.

:func:`request_password_reset` answers the same whether or not the address belongs to an
account (the caller shows one page for both); only an existing, not disabled account with
a password or an activation behind it gets a mail. Requests are throttled per client
address and per account (``gateway.regulation``); an over-limit request is silently not
mailed. The link (SHA-256 of its token stored, compared in constant time by the unique
index lookup of :func:`gateway.logins._tokens.live_link_row`) is single use, valid
``password_reset_validity``, and a newer one voids the older ones.

SECURITY: a reset sets the password only. It never touches the second factors, and the
broker is not logged in by it: the next login still asks for the certificate, TOTP or a
passkey where one is set up.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ca import InvalidEmail, normalise_email
from gateway.logins._errors import PasswordResetLinkInvalid
from gateway.logins._passwords import hash_password, validate_new_password
from gateway.logins._settings import LoginSettings
from gateway.logins._tokens import expire_open_links, live_link_row, new_token, token_hash
from gateway.regulation import _counters as counters
from gateway.regulation._throttles import recovery_address_key, recovery_mail_allowed
from store import (
    PasswordResetToken,
    Sealer,
    User,
    UserStatus,
    queue_mail,
    record_audit,
    transaction,
)

PASSWORD_RESET_PATH = "/password/reset"  # under the reserved prefix; the token follows


def request_password_reset(
    sessions: sessionmaker[Session],
    *,
    email: str,
    link_base: str,
    mail_sealer: Sealer,
    settings: LoginSettings,
    client_addr: str | None,
    now: datetime,
    language: str | None = None,
) -> bool:
    """Queue a reset link for the account of ``email``, if there is one and no limit is hit
    (in ``language``, the one the broker chose on the page, else the user's locale).

    Returns:
        Whether a mail was queued — for tests and the audit only: the page must not
        depend on it (it would tell which addresses have an account).
    """
    limits = settings.limits
    try:
        address = normalise_email(email)
    except InvalidEmail:
        address = None
    with transaction(sessions) as session:
        if client_addr and counters.register_failure(
            session, recovery_address_key(client_addr), limits.recovery_per_address, now
        ):
            return False  # SECURITY: the address probed too many accounts; same answer
        if address is None:
            return False
        user = session.scalar(
            select(User).where(func.lower(User.email) == address.lower()).with_for_update()
        )
        if user is None or user.status == UserStatus.DISABLED:
            return False
        sent = session.scalars(
            select(PasswordResetToken.created_at).where(
                PasswordResetToken.user_id == user.id,
                PasswordResetToken.created_at > now - limits.recovery_mail_window,
            )
        ).all()
        if not recovery_mail_allowed(sent, limits):
            return False
        expire_open_links(session, PasswordResetToken, user.id, now)
        token = new_token()
        row = PasswordResetToken(
            user_id=user.id,
            token_hash=token_hash(token),
            created_at=now,
            expires_at=now + settings.password_reset_validity,
        )
        session.add(row)
        session.flush()
        mail = queue_mail(
            session,
            kind="password_reset_link",
            to_addr=user.email,
            locale=language or user.locale,
            template="password_reset_link",
            context={
                "name": user.name,
                "valid_minutes": int(settings.password_reset_validity.total_seconds() // 60),
            },
            secrets={"link": link_base.rstrip("/") + "/" + token},
            sealer=mail_sealer,
            now=now,
            user_id=user.id,
        )
        # SECURITY: no token in the audit (the row id says which link).
        record_audit(
            session,
            actor=f"user:{user.id}",
            action="user.password.reset_requested",
            now=now,
            user_id=user.id,
            client_addr=client_addr,
            details={"token_id": row.id, "outbox_id": mail.id},
        )
        return True


def check_password_reset(sessions: sessionmaker[Session], *, token: str, now: datetime) -> str:
    """The email of the account ``token`` resets (for the page), or PasswordResetLinkInvalid."""
    with transaction(sessions) as session:
        row = live_link_row(session, PasswordResetToken, token, now, PasswordResetLinkInvalid)
        user = session.get(User, row.user_id)
        assert user is not None  # foreign key
        return user.email


def reset_password(
    sessions: sessionmaker[Session],
    *,
    token: str,
    password: str,
    repeat: str,
    settings: LoginSettings,
    mail_sealer: Sealer,
    client_addr: str | None,
    now: datetime,
    end_sessions: Callable[[Session, int], object] | None = None,
    language: str | None = None,
) -> int:
    """Set the new password with the link's ``token`` (single use, audited, notice mailed).

    Args:
        language: the notice's language, the one the broker chose on the page (None: the
            user's stored locale).
        end_sessions: called with the transaction and the user id to end every web session
            of the user in the same transaction (``SessionStore.end_all_for_user``).

    Returns:
        The user id.

    Raises:
        PasswordResetLinkInvalid: unknown, used or expired link; nothing is changed.
        PasswordRejected: the password breaks the rules (the link stays usable).
    """
    with transaction(sessions) as session:
        row = live_link_row(session, PasswordResetToken, token, now, PasswordResetLinkInvalid)
        user = session.get(User, row.user_id, with_for_update=True)
        assert user is not None  # foreign key
        if user.status == UserStatus.DISABLED:
            raise PasswordResetLinkInvalid("unknown")
        validate_new_password(
            password,
            repeat,
            min_length=settings.password_min_length,
            forbidden=(user.email, user.organisation.broker_number, user.name),
        )
        user.password_hash = hash_password(password)
        user.password_changed_at = now
        row.used_at = now
        ended = end_sessions(session, user.id) if end_sessions is not None else 0
        queue_mail(
            session,
            kind="password_reset_notice",
            to_addr=user.email,
            locale=language or user.locale,
            template="password_reset_notice",
            context={"name": user.name},
            secrets={},
            sealer=mail_sealer,
            now=now,
            user_id=user.id,
        )
        record_audit(
            session,
            actor=f"user:{user.id}",
            action="user.password.reset",
            now=now,
            user_id=user.id,
            client_addr=client_addr,
            details={"token_id": row.id, "sessions_ended": ended},
        )
        return user.id
