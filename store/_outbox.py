"""Queueing mail: a row in the outbox, written in the caller's transaction.

Delivery (rendering, SMTP, retries) belongs to ``renewal``; whoever needs a
mail only calls :func:`queue_mail` inside the transaction that changes state,
so the mail exists exactly when the change does.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from store._models import MailOutbox, MailStatus
from store._sealing import Sealer

OUTBOX_PURPOSE = "outbox"


def queue_mail(
    session: Session,
    *,
    kind: str,
    to_addr: str,
    locale: str,
    template: str,
    context: dict[str, Any],
    now: datetime,
    user_id: int | None = None,
    secrets: dict[str, str] | None = None,
    sealer: Sealer | None = None,
    dedupe_key: str | None = None,
) -> MailOutbox:
    """Add a mail to the outbox (flushed, not committed).

    Args:
        context: non-secret values for the template, stored in clear.
        secrets: values such as a certificate password or a TAN; sealed with
            ``sealer`` and wiped by the delivery once the mail is sent.
        dedupe_key: a unique key; a second mail with the same key violates the
            unique constraint, which callers use for exactly-once reminders.

    Raises:
        ValueError: secrets given without a sealer.
    """
    sealed: bytes | None = None
    if secrets:
        if sealer is None:
            raise ValueError("secrets in a mail need a sealer")
        sealed = sealer.seal(json.dumps(secrets).encode())
    row = MailOutbox(
        created_at=now,
        kind=kind,
        to_addr=to_addr,
        user_id=user_id,
        locale=locale,
        template=template,
        context=context,
        secret_sealed=sealed,
        dedupe_key=dedupe_key,
        status=MailStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
    )
    session.add(row)
    session.flush()
    return row


def open_mail_secrets(row: MailOutbox, sealer: Sealer) -> dict[str, str]:
    """The secret template values of ``row`` ({} if none or already wiped)."""
    if not row.secret_sealed:
        return {}
    value = json.loads(sealer.open(row.secret_sealed))
    assert isinstance(value, dict)
    return {str(k): str(v) for k, v in value.items()}
