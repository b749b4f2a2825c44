"""What ops see of the outbox and do to it (``brokergate mail pending|status|retry|show``).

Nothing here ever returns a secret: a row's sealed values show only as ``has_secret``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from renewal._errors import MailNotFound, MailNotRetryable
from store import MailOutbox, MailStatus, transaction


@dataclass(frozen=True, kw_only=True)
class MailSummary:
    """One outbox row as ops see it: never a secret, only whether one is held."""

    id: int
    created_at: datetime
    kind: str
    template: str
    to_addr: str
    locale: str
    status: MailStatus
    attempts: int
    next_attempt_at: datetime
    claimed_by: str | None
    claimed_until: datetime | None
    has_secret: bool
    last_error: str | None
    message_id: str | None
    sent_at: datetime | None
    context: dict[str, Any]


def _summary(row: MailOutbox) -> MailSummary:
    return MailSummary(
        id=row.id,
        created_at=row.created_at,
        kind=row.kind,
        template=row.template,
        to_addr=row.to_addr,
        locale=row.locale,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        claimed_by=row.claimed_by,
        claimed_until=row.claimed_until,
        has_secret=row.secret_sealed is not None,
        last_error=row.last_error,
        message_id=row.message_id,
        sent_at=row.sent_at,
        context=dict(row.context or {}),
    )


def list_mails(
    sessions: sessionmaker[Session], *, status: MailStatus, limit: int = 200
) -> list[MailSummary]:
    with sessions() as session:
        rows = session.scalars(
            select(MailOutbox)
            .where(MailOutbox.status == status)
            .order_by(MailOutbox.next_attempt_at, MailOutbox.id)
            .limit(limit)
        ).all()
        return [_summary(r) for r in rows]


def count_by_status(sessions: sessionmaker[Session]) -> dict[MailStatus, int]:
    with sessions() as session:
        counts = dict.fromkeys(MailStatus, 0)
        for status, n in session.execute(
            select(MailOutbox.status, func.count()).group_by(MailOutbox.status)
        ):
            counts[MailStatus(status)] = int(n)
        return counts


def get_mail(sessions: sessionmaker[Session], mail_id: int) -> MailSummary:
    with sessions() as session:
        row = session.get(MailOutbox, mail_id)
        if row is None:
            raise MailNotFound(mail_id)
        return _summary(row)


def requeue_mail(sessions: sessionmaker[Session], *, mail_id: int, now: datetime) -> MailSummary:
    """``mail retry ID``: a failed (or waiting) mail becomes due now with fresh attempts.

    Raises:
        MailNotFound: no such id.
        MailNotRetryable: the mail was already sent, or a worker holds it right now.
    """
    with transaction(sessions) as session:
        row = session.scalars(
            select(MailOutbox).where(MailOutbox.id == mail_id).with_for_update()
        ).one_or_none()
        if row is None:
            raise MailNotFound(mail_id)
        if row.status == MailStatus.SENT:
            raise MailNotRetryable(mail_id, "already sent; sending it again would duplicate it")
        if row.claimed_until is not None and row.claimed_until >= now:
            # SECURITY/exactly-once: a live worker may be sending it right now.
            raise MailNotRetryable(
                mail_id, f"being sent by {row.claimed_by} until {row.claimed_until:%H:%M:%S} UTC"
            )
        row.status = MailStatus.PENDING
        row.attempts = 0
        row.next_attempt_at = now
        row.claimed_by = None
        row.claimed_until = None
        return _summary(row)
