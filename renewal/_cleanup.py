"""Clean-up of expired rows: sessions, TANs, remembered devices, rate limits, activation
tokens, and old outbox rows (secrets of failed mails first, sent rows later)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from store import (
    ActivationToken,
    EmailTan,
    MailOutbox,
    MailStatus,
    RateLimit,
    RememberedDevice,
    ReminderSent,
    WebSession,
    transaction,
)

log = logging.getLogger("renewal.cleanup")

# Used or ended rows are kept one more day so that the gateway can still tell a broker
# "this link / TAN was already used" instead of "unknown", and ops can look at the day's
# events; after that they carry no information the audit trail does not have.
GRACE = timedelta(days=1)


def delete_expired(
    sessions: sessionmaker[Session],
    *,
    now: datetime,
    failed_secret_retention: timedelta,
    sent_retention: timedelta,
) -> dict[str, int]:
    """Delete what has expired at ``now``; returns the number of rows per table."""
    counts: dict[str, int] = {}
    with transaction(sessions) as session:
        counts["web_sessions"] = _rowcount(
            session.execute(
                delete(WebSession).where(
                    or_(
                        WebSession.absolute_expires_at < now,
                        WebSession.ended_at < now - GRACE,
                    )
                )
            )
        )
        counts["email_tans"] = _rowcount(
            session.execute(delete(EmailTan).where(EmailTan.expires_at < now - GRACE))
        )
        counts["remembered_devices"] = _rowcount(
            session.execute(
                delete(RememberedDevice).where(
                    or_(
                        RememberedDevice.expires_at < now,
                        RememberedDevice.revoked_at < now - GRACE,
                    )
                )
            )
        )
        counts["rate_limits"] = _rowcount(
            session.execute(
                delete(RateLimit).where(
                    RateLimit.expires_at < now,
                    or_(RateLimit.locked_until.is_(None), RateLimit.locked_until < now),
                )
            )
        )
        counts["activation_tokens"] = _rowcount(
            session.execute(
                delete(ActivationToken).where(
                    or_(
                        ActivationToken.expires_at < now - GRACE,
                        ActivationToken.used_at < now - GRACE,
                    )
                )
            )
        )
        # SECURITY: a failed mail keeps its sealed secret only so that `mail retry` works;
        # after the retention nobody will retry it, so the secret goes.
        counts["outbox_secrets_wiped"] = _rowcount(
            session.execute(
                update(MailOutbox)
                .where(
                    MailOutbox.status == MailStatus.FAILED,
                    MailOutbox.secret_sealed.is_not(None),
                    MailOutbox.created_at < now - failed_secret_retention,
                )
                .values(secret_sealed=None)
            )
        )
        old_sent = select(MailOutbox.id).where(
            and_(MailOutbox.status == MailStatus.SENT, MailOutbox.sent_at < now - sent_retention)
        )
        # reminders_sent keeps its row (it is what prevents a second reminder); only the
        # link to the deleted mail goes.
        session.execute(
            update(ReminderSent)
            .where(ReminderSent.outbox_id.in_(old_sent))
            .values(outbox_id=None)
            .execution_options(synchronize_session=False)
        )
        counts["outbox_sent_deleted"] = _rowcount(
            session.execute(
                delete(MailOutbox)
                .where(MailOutbox.id.in_(old_sent))
                .execution_options(synchronize_session=False)
            )
        )
    if any(counts.values()):
        log.info("clean-up: %s", ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    return counts


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
