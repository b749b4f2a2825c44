"""Account activation (seed 003): an emailed one-time link, valid 7 days, to set the password.

The link carries a random 256-bit token; the store keeps its SHA-256 only. Sending a new
link voids the earlier ones, so only the latest mail works.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from gateway.logins._errors import ActivationInvalid, EnrolmentError, InvalidCredentials
from gateway.logins._passwords import check_password, hash_password, validate_new_password
from gateway.logins._settings import LoginSettings
from gateway.logins._tokens import expire_open_links, live_link_row, new_token, token_hash
from store import ActivationToken, Sealer, User, UserStatus, queue_mail, record_audit, transaction

ACTIVATION_PATH = "/activate"  # under the gateway's reserved prefix; the token follows
_RESERVED_PREFIX = "/_gateway"  # gateway._settings.RESERVED_PREFIX (gw-core)


def activation_link_base(public_url: str) -> str:
    """The absolute URL an activation token is appended to."""
    return f"{public_url.rstrip('/')}{_RESERVED_PREFIX}{ACTIVATION_PATH}/"


@dataclass(frozen=True, kw_only=True)
class ActivationSent:
    user_id: int
    email: str
    expires_at: datetime
    outbox_id: int


def send_activation(
    session: Session,
    *,
    user_id: int,
    link_base: str,
    settings: LoginSettings,
    mail_sealer: Sealer,
    actor: str,
    now: datetime,
    language: str | None = None,
) -> ActivationSent:
    """Queue an activation mail for ``user_id`` (caller's transaction, audited).

    Args:
        link_base: absolute URL the token is appended to, e.g.
            ``https://portal.example/_gateway/activate/``.
        language: the mail's language when the broker asked on a page in a language they
            chose (None: the user's stored locale).

    Raises:
        EnrolmentError: the account is disabled, or already active with a password.
    """
    user = session.get(User, user_id, with_for_update=True)
    if user is None:
        raise EnrolmentError("unknown user")
    if user.status == UserStatus.DISABLED:
        raise EnrolmentError(f"{user.email} is disabled; enable the account first")
    if user.status == UserStatus.ACTIVE and user.password_hash is not None:
        raise EnrolmentError(f"{user.email} is already activated and has a password")
    expire_open_links(session, ActivationToken, user_id, now)
    token = new_token()
    row = ActivationToken(
        user_id=user_id,
        token_hash=token_hash(token),
        created_at=now,
        expires_at=now + settings.activation_validity,
    )
    session.add(row)
    mail = queue_mail(
        session,
        kind="activation",
        to_addr=user.email,
        locale=language or user.locale,
        template="activation",
        context={"name": user.name, "valid_days": settings.activation_validity.days},
        secrets={"link": link_base.rstrip("/") + "/" + token},
        sealer=mail_sealer,
        now=now,
        user_id=user_id,
    )
    record_audit(
        session,
        actor=actor,
        action="user.activation.sent",
        now=now,
        user_id=user_id,
        details={"outbox_id": mail.id, "expires_at": row.expires_at.isoformat()},
    )
    return ActivationSent(
        user_id=user_id, email=user.email, expires_at=row.expires_at, outbox_id=mail.id
    )


def _live_token(session: Session, token: str, now: datetime) -> ActivationToken:
    return live_link_row(session, ActivationToken, token, now, ActivationInvalid)


def check_activation(sessions: sessionmaker[Session], *, token: str, now: datetime) -> str:
    """The email of the account ``token`` activates (for the page), or ActivationInvalid."""
    with transaction(sessions) as session:
        row = _live_token(session, token, now)
        user = session.get(User, row.user_id)
        assert user is not None
        return user.email


def activate(
    sessions: sessionmaker[Session],
    *,
    token: str,
    password: str,
    repeat: str,
    settings: LoginSettings,
    client_addr: str | None,
    now: datetime,
) -> int:
    """Set the first password with the link's token; the account becomes active.

    Returns:
        The user id.

    Raises:
        ActivationInvalid: unknown, used or expired link.
        PasswordRejected: the password breaks the rules (the link stays usable).
    """
    with transaction(sessions) as session:
        row = _live_token(session, token, now)
        user = session.get(User, row.user_id, with_for_update=True)
        assert user is not None
        if user.status == UserStatus.DISABLED:
            raise ActivationInvalid("disabled")
        validate_new_password(
            password,
            repeat,
            min_length=settings.password_min_length,
            forbidden=(user.email, user.organisation.broker_number, user.name),
        )
        user.password_hash = hash_password(password)
        user.password_changed_at = now
        user.status = UserStatus.ACTIVE
        row.used_at = now
        record_audit(
            session,
            actor=f"user:{user.id}",
            action="user.activate",
            now=now,
            user_id=user.id,
            client_addr=client_addr,
        )
        return user.id


def change_password(
    sessions: sessionmaker[Session],
    *,
    user_id: int,
    current: str,
    new: str,
    repeat: str,
    settings: LoginSettings,
    now: datetime,
) -> None:
    """Change the password of a logged-in broker (the current one is asked again).

    Raises:
        InvalidCredentials: ``current`` is wrong.
        PasswordRejected: the new one breaks the rules.
    """
    with transaction(sessions) as session:
        user = session.get(User, user_id, with_for_update=True)
        if user is None:
            raise InvalidCredentials()
        ok, _ = check_password(user.password_hash, current)
        if user.password_hash is not None and not ok:
            record_audit(
                session,
                actor=f"user:{user_id}",
                action="user.password",
                outcome="failed",
                now=now,
                user_id=user_id,
            )
            failed = True
        else:
            failed = False
            validate_new_password(
                new,
                repeat,
                min_length=settings.password_min_length,
                forbidden=(user.email, user.organisation.broker_number, user.name),
            )
            user.password_hash = hash_password(new)
            user.password_changed_at = now
            record_audit(
                session, actor=f"user:{user_id}", action="user.password", now=now, user_id=user_id
            )
    if failed:
        raise InvalidCredentials()
