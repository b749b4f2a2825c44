"""The two writes of a reminder page, per database: the mails, then the reminder rows.

The mails go first, with ``ON CONFLICT DO NOTHING … RETURNING``: their ``dedupe_key``
(``reminder:<certificate>:<stage>``) is unique, so only the mails this transaction
inserted come back, and only those get a ``reminders_sent`` row (in the same
transaction, pointing at its mail). A concurrent scan that inserted the same key first
wins; ours skips it. SQLite takes a
multi-row ``INSERT … VALUES`` (SQLAlchemy's insertmanyvalues). On PostgreSQL the same
statement spent most of its time in the driver (splitting a huge SQL text, then escaping
array elements one by one), so there each write is one short statement over
``json_to_recordset()`` of a single JSON parameter (docs/benchmarks.md has the figures).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from store import MailOutbox, MailStatus, ReminderSent


@dataclass(frozen=True, kw_only=True)
class ReminderMail:
    certificate_id: int
    stage: int
    to_addr: str
    user_id: int
    locale: str
    context: dict[str, Any]

    @property
    def dedupe_key(self) -> str:
        return f"reminder:{self.certificate_id}:{self.stage}"


def _naive_utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None)


def queue_reminder_mails(
    session: Session, mails: Sequence[ReminderMail], now: datetime, template: str
) -> list[tuple[int, str]]:
    """Insert the outbox rows; (outbox id, dedupe key) of those this transaction inserted."""
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(
            text(
                "INSERT INTO mail_outbox (created_at, kind, to_addr, user_id, locale, template, "
                "context, dedupe_key, status, attempts, next_attempt_at) "
                "SELECT :now, 'reminder', t.to_addr, t.user_id, t.locale, :template, "
                "t.context, t.dedupe_key, :pending, 0, :now "
                "FROM json_to_recordset(CAST(:rows AS json)) "
                "AS t(to_addr text, user_id integer, locale text, context json, dedupe_key text) "
                "ON CONFLICT DO NOTHING RETURNING id, dedupe_key"
            ),
            {
                "now": _naive_utc(now),
                "template": template,
                "pending": MailStatus.PENDING.value,
                "rows": json.dumps(
                    [
                        {
                            "to_addr": m.to_addr,
                            "user_id": m.user_id,
                            "locale": m.locale,
                            "context": m.context,
                            "dedupe_key": m.dedupe_key,
                        }
                        for m in mails
                    ]
                ),
            },
        ).all()
        return [(int(i), str(k)) for i, k in rows]
    table = MailOutbox.__table__
    assert isinstance(table, Table)
    stmt = sqlite.insert(table).on_conflict_do_nothing()
    rows = session.execute(
        stmt.returning(table.c.id, table.c.dedupe_key),
        [
            {
                "created_at": now,
                "kind": "reminder",
                "to_addr": m.to_addr,
                "user_id": m.user_id,
                "locale": m.locale,
                "template": template,
                "context": m.context,
                "secret_sealed": None,
                "dedupe_key": m.dedupe_key,
                "status": MailStatus.PENDING,
                "attempts": 0,
                "next_attempt_at": now,
            }
            for m in mails
        ],
    ).all()
    return [(int(i), str(k)) for i, k in rows]


def record_reminders(session: Session, sent: Sequence[tuple[int, int, int]], now: datetime) -> None:
    """Insert the ``reminders_sent`` rows (certificate, stage, outbox id) of queued mails."""
    if not sent:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text(
                "INSERT INTO reminders_sent (certificate_id, stage_days, queued_at, outbox_id) "
                "SELECT t.c, t.s, :now, t.o FROM json_to_recordset(CAST(:rows AS json)) "
                "AS t(c integer, s integer, o integer) ON CONFLICT DO NOTHING"
            ),
            {
                "now": _naive_utc(now),
                "rows": json.dumps([{"c": c, "s": s, "o": o} for c, s, o in sent]),
            },
        )
        return
    table = ReminderSent.__table__
    assert isinstance(table, Table)
    session.execute(
        sqlite.insert(table).on_conflict_do_nothing(),
        [
            {"certificate_id": c, "stage_days": s, "queued_at": now, "outbox_id": o}
            for c, s, o in sent
        ],
    )
