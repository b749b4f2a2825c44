"""Expiry reminders: which stage is due (pure) and the daily scan that queues them.

Exactly once per certificate and stage, even when the scan re-runs, overlaps itself
or runs on two machines: the ``reminders_sent`` row (unique on certificate and stage)
and its outbox row are inserted together with ``INSERT … ON CONFLICT DO NOTHING``; only
the transaction that inserted the reminder row queues the mail.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, bindparam, exists, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased, sessionmaker

from store import (
    Certificate,
    CertificateStatus,
    MailOutbox,
    MailStatus,
    Organisation,
    ReminderSent,
    User,
    UserStatus,
    transaction,
)

log = logging.getLogger("renewal.reminders")

PAGE_SIZE = 2000  # candidates per transaction: memory stays flat, transactions stay short
REMINDER_TEMPLATE = "reminder"


def reminder_stage_due(
    not_after: datetime, now: datetime, stages: Iterable[int], already_sent: Collection[int]
) -> int | None:
    """The reminder stage (days before expiry) to queue now, or None.

    The most urgent stage whose window has opened is the one that counts: a certificate
    first seen with 10 days left gets the 14-day reminder only, never the 60-day one too,
    and nothing is sent once a stage at least as urgent was sent. Expired: nothing.
    """
    if now >= not_after:
        return None
    open_stages = [s for s in stages if not_after - timedelta(days=s) <= now]
    if not open_stages:
        return None
    stage = min(open_stages)
    if any(sent <= stage for sent in already_sent):
        return None
    return stage


def days_left(not_after: datetime, now: datetime) -> int:
    """Whole days until expiry (rounded down; 0 on the last day)."""
    return max(0, (not_after - now) // timedelta(days=1))


@dataclass(frozen=True, kw_only=True)
class ReminderReport:
    scanned: int
    queued: int
    by_stage: dict[int, int]

    def __str__(self) -> str:
        stages = ", ".join(f"{d}d: {n}" for d, n in sorted(self.by_stage.items(), reverse=True))
        return f"scanned {self.scanned}, queued {self.queued}" + (f" ({stages})" if stages else "")


def _candidates_page(
    session: Session,
    *,
    now: datetime,
    horizon: datetime,
    after: tuple[datetime, int] | None,
    limit: int,
) -> Sequence[Any]:
    newer = aliased(Certificate)
    query = (
        select(
            Certificate.id,
            Certificate.serial,
            Certificate.not_after,
            User.id.label("user_id"),
            User.email,
            User.name,
            User.locale,
            Organisation.broker_number,
        )
        .join(User, User.id == Certificate.user_id)
        .join(Organisation, Organisation.id == User.organisation_id)
        # Index range scan on (status, not_after): only the window that can be due.
        .where(
            Certificate.status == CertificateStatus.VALID,
            Certificate.not_after > now,
            Certificate.not_after <= horizon,
            User.status != UserStatus.DISABLED,
            # Superseded: the same user holds a valid certificate that lasts longer
            # (a renewal): reminding about the old one would only confuse.
            ~exists().where(
                newer.user_id == Certificate.user_id,
                newer.status == CertificateStatus.VALID,
                newer.not_after > Certificate.not_after,
            ),
        )
        .order_by(Certificate.not_after, Certificate.id)
        .limit(limit)
    )
    if after is not None:
        # Keyset pagination: each page is a fresh indexed range query in its own short
        # transaction (no cursor held open, no OFFSET that grows with the table).
        last_not_after, last_id = after
        query = query.where(
            or_(
                Certificate.not_after > last_not_after,
                and_(Certificate.not_after == last_not_after, Certificate.id > last_id),
            )
        )
    return session.execute(query).all()


def _insert_ignoring_conflicts(session: Session, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise RuntimeError(f"unsupported database dialect {dialect!r}")  # pragma: no cover


def _queue_page(
    session: Session, rows: Sequence[Any], *, now: datetime, stages: Sequence[int]
) -> dict[int, int]:
    ids = [r.id for r in rows]
    sent: dict[int, set[int]] = {}
    for cert_id, sent_stage in session.execute(
        select(ReminderSent.certificate_id, ReminderSent.stage_days).where(
            ReminderSent.certificate_id.in_(ids)
        )
    ):
        sent.setdefault(cert_id, set()).add(sent_stage)
    due: dict[int, tuple[Any, int]] = {}
    for r in rows:
        stage_due = reminder_stage_due(r.not_after, now, stages, sent.get(r.id, ()))
        if stage_due is not None:
            due[r.id] = (r, stage_due)
    if not due:
        return {}
    # Claim (certificate, stage) first: a concurrent scan that inserted it already wins and
    # this one skips it; only what *we* inserted gets a mail.
    won = session.execute(
        _insert_ignoring_conflicts(session, ReminderSent.__table__).returning(
            ReminderSent.__table__.c.certificate_id
        ),
        [
            {"certificate_id": cid, "stage_days": stage, "queued_at": now}
            for cid, (_, stage) in due.items()
        ],
    ).scalars()
    won_ids = sorted(set(won))
    if not won_ids:
        return {}
    mails = []
    for cid in won_ids:
        r, stage = due[cid]
        mails.append(
            {
                "created_at": now,
                "kind": "reminder",
                "to_addr": r.email,
                "user_id": r.user_id,
                "locale": r.locale,
                "template": REMINDER_TEMPLATE,
                "context": {
                    "name": r.name,
                    "serial": r.serial,
                    "not_after": r.not_after.isoformat(),
                    "broker_number": r.broker_number,
                    # As the CA names the PKCS#12 entry, so brokers recognise it in their store.
                    "friendly_name": f"{r.name} ({r.broker_number}) {r.not_after:%Y-%m-%d}",
                    "stage_days": stage,
                    "days_left": days_left(r.not_after, now),
                },
                "secret_sealed": None,
                "dedupe_key": f"reminder:{cid}:{stage}",
                "status": MailStatus.PENDING,
                "attempts": 0,
                "next_attempt_at": now,
            }
        )
    outbox = MailOutbox.__table__
    queued = session.execute(
        _insert_ignoring_conflicts(session, outbox).returning(outbox.c.id, outbox.c.dedupe_key),
        mails,
    ).all()
    links = []
    by_stage: dict[int, int] = {}
    for outbox_id, key in queued:
        _, cid, stage = key.split(":")
        links.append({"b_cid": int(cid), "b_stage": int(stage), "b_outbox": outbox_id})
        by_stage[int(stage)] = by_stage.get(int(stage), 0) + 1
    rs = ReminderSent.__table__
    assert isinstance(rs, Table)
    session.execute(
        update(rs)
        .where(rs.c.certificate_id == bindparam("b_cid"), rs.c.stage_days == bindparam("b_stage"))
        .values(outbox_id=bindparam("b_outbox")),
        links,
    )
    return by_stage


def queue_due_reminders(
    sessions: sessionmaker[Session],
    *,
    now: datetime,
    stages: Sequence[int],
    page_size: int = PAGE_SIZE,
) -> ReminderReport:
    """Queue every reminder that is due at ``now``; safe to run again at any time.

    Args:
        stages: days before expiry (e.g. ``(60, 14, 3)``).
        page_size: candidates per transaction.
    """
    horizon = now + timedelta(days=max(stages))
    after: tuple[datetime, int] | None = None
    scanned = 0
    by_stage: dict[int, int] = {}
    while True:
        with transaction(sessions) as session:
            rows = _candidates_page(session, now=now, horizon=horizon, after=after, limit=page_size)
            if not rows:
                break
            scanned += len(rows)
            for stage, n in _queue_page(session, rows, now=now, stages=stages).items():
                by_stage[stage] = by_stage.get(stage, 0) + n
            after = (rows[-1].not_after, rows[-1].id)
        if len(rows) < page_size:
            break
    report = ReminderReport(scanned=scanned, queued=sum(by_stage.values()), by_stage=by_stage)
    log.info("reminder scan at %s: %s", now.isoformat(timespec="seconds"), report)
    return report
