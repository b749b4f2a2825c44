"""Expiry reminders: which stage is due (pure) and the daily scan that queues them.

Exactly once per certificate and stage, even when the scan re-runs, overlaps itself
or runs on two machines: stages already in ``reminders_sent`` (unique on certificate and
stage) are never due again, and between overlapping scans the mail's unique
``dedupe_key`` decides (``INSERT … ON CONFLICT DO NOTHING RETURNING``): only the scan
that inserted the mail writes its ``reminders_sent`` row, in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ARRAY, Integer, and_, any_, bindparam, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from ca import friendly_name
from renewal._reminder_writes import ReminderMail, queue_reminder_mails, record_reminders
from store import (
    Certificate,
    CertificateStatus,
    Organisation,
    ReminderSent,
    User,
    UserStatus,
    days_until_expiry,
    transaction,
)

log = logging.getLogger("renewal.reminders")

PAGE_SIZE = 5000  # candidates per transaction: memory stays flat, transactions stay short
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


def days_left(not_after: datetime, now: datetime, zone: ZoneInfo | None = None) -> int:
    """Calendar days left in the brokers' zone: the same arithmetic as the gateway's pages."""
    return days_until_expiry(not_after, now, zone)


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
        )
        .order_by(Certificate.not_after, Certificate.id)
        .limit(limit)
    )
    if after is not None:
        # Keyset pagination: each page is a fresh indexed range query in its own short
        # transaction (no cursor held open, no OFFSET that grows with the table).
        last_not_after, last_id = after
        query = query.where(
            # The plain >= is what the index range starts from (the OR alone is only a
            # filter, which made every page re-read the window from its start).
            Certificate.not_after >= last_not_after,
            or_(
                Certificate.not_after > last_not_after,
                and_(Certificate.not_after == last_not_after, Certificate.id > last_id),
            ),
        )
    return session.execute(query).all()


def _one_of(session: Session, column: Any, values: Collection[int]) -> Any:
    """``column IN (…)``; on PostgreSQL ``= ANY(:array)``: one parameter instead of
    thousands, which the driver otherwise spends its time converting."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(Integer)))
    return column.in_(list(values))


def _latest_valid_expiry(session: Session, user_ids: Collection[int]) -> dict[int, datetime]:
    """Per user, the latest not_after among their valid certificates already in use.

    A renewal that was downloaded but never presented (``first_used_at`` empty) does not
    count: the broker still logs in with the old certificate, so its reminders go on until
    the new one has logged in (issue 15: no broker left with a downloaded but unimported
    certificate).

    A separate IN-list query on ``ix_certificates_user_id`` rather than a NOT EXISTS in the
    page query: with stale planner statistics (a freshly loaded table) PostgreSQL chose a
    bitmap AND over the (status, not_after) index for the anti-join, 500x slower.
    """
    latest: dict[int, datetime] = {}
    for user_id, not_after in session.execute(
        select(Certificate.user_id, func.max(Certificate.not_after))
        .where(
            _one_of(session, Certificate.user_id, user_ids),
            Certificate.status == CertificateStatus.VALID,
            Certificate.first_used_at.is_not(None),
        )
        .group_by(Certificate.user_id)
    ):
        latest[user_id] = not_after
    return latest


def _queue_page(
    session: Session,
    rows: Sequence[Any],
    *,
    now: datetime,
    stages: Sequence[int],
    zone: ZoneInfo | None = None,
) -> dict[int, int]:
    # Superseded: the same user logs in with a valid certificate that lasts longer (a
    # renewal in use); reminding about the old one would only confuse.
    latest = _latest_valid_expiry(session, {r.user_id for r in rows})
    rows = [r for r in rows if latest.get(r.user_id, r.not_after) <= r.not_after]
    if not rows:
        return {}
    ids = [r.id for r in rows]
    already_sent: dict[int, set[int]] = {}
    for cert_id, sent_stage in session.execute(
        select(ReminderSent.certificate_id, ReminderSent.stage_days).where(
            _one_of(session, ReminderSent.certificate_id, ids)
        )
    ):
        already_sent.setdefault(cert_id, set()).add(sent_stage)
    due: dict[int, tuple[Any, int]] = {}
    for r in rows:
        stage_due = reminder_stage_due(r.not_after, now, stages, already_sent.get(r.id, ()))
        if stage_due is not None:
            due[r.id] = (r, stage_due)
    if not due:
        return {}
    mails = []
    for cid in sorted(due):
        r, stage = due[cid]
        context = {
            "name": r.name,
            "serial": r.serial,
            "not_after": r.not_after.isoformat(),
            "broker_number": r.broker_number,
            # As the CA names the PKCS#12 entry, so brokers recognise it in their store.
            "friendly_name": friendly_name(
                name=r.name, broker_number=r.broker_number, not_after=r.not_after, serial=r.serial
            ),
            "stage_days": stage,
            "days_left": days_left(r.not_after, now, zone),
        }
        mails.append(
            ReminderMail(
                certificate_id=cid,
                stage=stage,
                to_addr=r.email,
                user_id=r.user_id,
                locale=r.locale,
                context=context,
            )
        )
    # The mail's unique dedupe key decides who queues it when scans overlap; only mails
    # this transaction inserted get their reminders_sent row (same transaction).
    sent: list[tuple[int, int, int]] = []
    by_stage: dict[int, int] = {}
    for outbox_id, key in queue_reminder_mails(session, mails, now, REMINDER_TEMPLATE):
        _, cid_text, stage_text = key.split(":")
        sent.append((int(cid_text), int(stage_text), outbox_id))
        by_stage[int(stage_text)] = by_stage.get(int(stage_text), 0) + 1
    record_reminders(session, sent, now)
    return by_stage


def queue_due_reminders(
    sessions: sessionmaker[Session],
    *,
    now: datetime,
    stages: Sequence[int],
    page_size: int = PAGE_SIZE,
    zone: ZoneInfo | None = None,
) -> ReminderReport:
    """Queue every reminder that is due at ``now``; safe to run again at any time.

    Args:
        stages: days before expiry (e.g. ``(60, 14, 3)``).
        page_size: candidates per transaction.
        zone: the brokers' time zone, in whose calendar days ``days_left`` is counted
            (default Europe/Berlin).
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
            for stage, n in _queue_page(session, rows, now=now, stages=stages, zone=zone).items():
                by_stage[stage] = by_stage.get(stage, 0) + n
            after = (rows[-1].not_after, rows[-1].id)
        if len(rows) < page_size:
            break
    report = ReminderReport(scanned=scanned, queued=sum(by_stage.values()), by_stage=by_stage)
    log.info("reminder scan at %s: %s", now.isoformat(timespec="seconds"), report)
    return report
