"""Self-service change of a broker's email address (issue 4: a security-relevant change).

The page asks for a fresh strong login; then :func:`request_email_change` mails a one-time
link (24 h, SHA-256 of the token stored) to the NEW address and a notice to the OLD one.
Only :func:`confirm_email_change`, from that link, changes ``users.email``: whoever asks
must also control the new mailbox, and the old owner learns of it. The pending address
lives in ``email_change_tokens`` (not the web session): the link may be opened in another
browser.

Certificates carry the address in their SAN and the gateway requires SAN email == user
email, so after the change the broker's certificate no longer logs in; the pages say so
and offer a new download (see docs/logins.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ca import InvalidEmail, normalise_email
from gateway.logins._errors import EmailChangeLinkInvalid, EmailChangeRejected
from gateway.logins._tokens import expire_open_links, live_link_row, new_token, token_hash
from store import EmailChangeToken, Sealer, User, queue_mail, record_audit, transaction

EMAIL_CHANGE_PATH = "/account/email/confirm"  # under the reserved prefix; the token follows
EMAIL_CHANGE_VALIDITY = timedelta(hours=24)


@dataclass(frozen=True, kw_only=True)
class EmailChangeRequested:
    user_id: int
    new_email: str
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class EmailChanged:
    user_id: int
    old_email: str
    new_email: str


def mask_email(address: str) -> str:
    """``h***@example.org``: enough for the owner to recognise, little for anyone else."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def _taken(session: Session, email: str, user_id: int) -> bool:
    other = session.scalar(
        select(User.id).where(func.lower(User.email) == email.lower(), User.id != user_id)
    )
    return other is not None


def request_email_change(
    sessions: sessionmaker[Session],
    *,
    user_id: int,
    new_email: str,
    link_base: str,
    mail_sealer: Sealer,
    client_addr: str | None,
    now: datetime,
) -> EmailChangeRequested:
    """Validate ``new_email`` and queue the confirmation link and the notice (audited).

    A new request voids the user's earlier pending links, so only the latest mail works.

    Args:
        link_base: absolute URL the token is appended to, e.g.
            ``https://portal.example/_gateway/account/email/confirm/``.

    Raises:
        EmailChangeRejected: malformed (``invalid``), the current one (``same``), or
            another user's address (``taken``). Nothing is written.
    """
    with transaction(sessions) as session:
        return queue_email_change(
            session,
            user_id=user_id,
            new_email=new_email,
            link_base=link_base,
            mail_sealer=mail_sealer,
            client_addr=client_addr,
            now=now,
        )


def queue_email_change(
    session: Session,
    *,
    user_id: int,
    new_email: str,
    link_base: str,
    mail_sealer: Sealer,
    client_addr: str | None,
    now: datetime,
    actor: str | None = None,
    requested_by: str | None = None,
) -> EmailChangeRequested:
    """:func:`request_email_change` in the caller's transaction, e.g. a head user changing
    an employee's address together with the rest of the employee's data (issue 13): the
    same rules, the link to the new address, the notice to the old one.

    Args:
        actor: who asked, for the audit event (default: the user themself).
        requested_by: the name of the head user who asked, for the mail to the new address
            (None: "you entered this address").

    Raises:
        EmailChangeRejected: as :func:`request_email_change`; the caller rolls back.
    """
    try:
        address = normalise_email(new_email)
    except InvalidEmail:
        raise EmailChangeRejected("invalid") from None
    user = session.get(User, user_id, with_for_update=True)
    if user is None:
        raise EmailChangeRejected("invalid")
    if address == user.email:
        raise EmailChangeRejected("same")
    if _taken(session, address, user_id):
        raise EmailChangeRejected("taken")
    expire_open_links(session, EmailChangeToken, user_id, now)
    token = new_token()
    row = EmailChangeToken(
        user_id=user_id,
        token_hash=token_hash(token),
        new_email=address,
        created_at=now,
        expires_at=now + EMAIL_CHANGE_VALIDITY,
    )
    session.add(row)
    confirm = queue_mail(
        session,
        kind="email_change_confirm",
        to_addr=address,
        locale=user.locale,
        template="email_change_confirm",
        context={
            "name": user.name,
            "valid_hours": EMAIL_CHANGE_VALIDITY // timedelta(hours=1),
            **({"requested_by": requested_by} if requested_by else {}),
        },
        secrets={"link": link_base.rstrip("/") + "/" + token},
        sealer=mail_sealer,
        now=now,
        user_id=user_id,
    )
    notice = queue_mail(
        session,
        kind="email_change_notice",
        to_addr=user.email,
        locale=user.locale,
        template="email_change_notice",
        context={"name": user.name, "new_email": mask_email(address)},
        secrets={},
        sealer=mail_sealer,
        now=now,
        user_id=user_id,
    )
    # SECURITY: no token, no addresses in the audit details (the user id says who).
    record_audit(
        session,
        actor=actor or f"user:{user_id}",
        action="user.email.change_requested",
        now=now,
        user_id=user_id,
        client_addr=client_addr,
        details={"confirm_outbox_id": confirm.id, "notice_outbox_id": notice.id},
    )
    return EmailChangeRequested(user_id=user_id, new_email=address, expires_at=row.expires_at)


def _live_token(session: Session, token: str, now: datetime) -> EmailChangeToken:
    return live_link_row(session, EmailChangeToken, token, now, EmailChangeLinkInvalid)


def check_email_change(sessions: sessionmaker[Session], *, token: str, now: datetime) -> str:
    """The new address ``token`` would confirm (for the page), or EmailChangeLinkInvalid."""
    with transaction(sessions) as session:
        return _live_token(session, token, now).new_email


def confirm_email_change(
    sessions: sessionmaker[Session],
    *,
    token: str,
    client_addr: str | None,
    now: datetime,
    end_sessions: Callable[[Session, int], object] | None = None,
) -> EmailChanged:
    """Apply the change the link's ``token`` confirms (single use, audited).

    Args:
        end_sessions: called with the transaction and the user id to end the user's web
            sessions in the same transaction (``SessionStore.end_all_for_user``).

    Raises:
        EmailChangeLinkInvalid: unknown, used or expired link, or the new address was
            taken by another user meanwhile. Nothing is changed.
    """
    with transaction(sessions) as session:
        row = _live_token(session, token, now)
        user = session.get(User, row.user_id, with_for_update=True)
        assert user is not None  # foreign key
        if _taken(session, row.new_email, user.id):
            raise EmailChangeLinkInvalid("taken")
        old = user.email
        user.email = row.new_email
        row.used_at = now
        ended = end_sessions(session, user.id) if end_sessions is not None else 0
        record_audit(
            session,
            actor=f"user:{user.id}",
            action="user.email.change",
            now=now,
            user_id=user.id,
            client_addr=client_addr,
            details={"token_id": row.id, "sessions_ended": ended},
        )
        return EmailChanged(user_id=user.id, old_email=old, new_email=row.new_email)
