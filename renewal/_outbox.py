"""The outbox as a work queue: claim due rows, renew, mark sent / retry / failed, release.

Exactly-once across several ``renewal run`` processes (docs/mail.md explains the choice):

* A worker claims a batch in one short transaction: ``SELECT … FOR UPDATE SKIP LOCKED``
  on PostgreSQL (concurrent claimers skip each other's rows instead of waiting or
  double-claiming); on SQLite the store's engine starts every transaction with
  ``BEGIN IMMEDIATE``, which serialises claimers (``FOR UPDATE`` renders as nothing there).
  The claim is a lease (``claimed_by``, ``claimed_until``) committed at once, so no
  transaction stays open while SMTP talks.
* Before each send the worker renews its lease, and only if the row is still its own
  and pending; the lease is at least three SMTP timeouts long, so it cannot lapse mid-send.
* The row is marked sent (and its secrets wiped) only while still claimed by this worker.
* A crashed worker's claims lapse after the lease; on the same host a restarted process
  releases them at once (:func:`release_abandoned_claims`).

Every function here is synchronous, opens its own transaction and returns plain values;
the asyncio delivery loop calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import random
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from renewal._errors import MailNotFound, MailNotRetryable
from store import MailOutbox, MailStatus, transaction


@dataclass(frozen=True, kw_only=True)
class WorkerId:
    """Who holds a claim: ``<host>:<pid>:<random>`` (the random part tells two workers in
    one process apart, and a restarted process with a recycled pid from its predecessor)."""

    host: str
    pid: int
    token: str

    @classmethod
    def for_this_process(cls) -> WorkerId:
        return cls(host=socket.gethostname(), pid=os.getpid(), token=secrets.token_hex(4))

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.token}"

    @classmethod
    def parse(cls, text: str) -> WorkerId | None:
        host, sep, rest = text.rpartition(":")
        host, sep2, pid = host.rpartition(":")
        if not (sep and sep2 and pid.isdigit()):
            return None
        return cls(host=host, pid=int(pid), token=rest)


@dataclass(frozen=True, kw_only=True)
class ClaimedMail:
    """A snapshot of a claimed row: everything needed to render and send it."""

    id: int
    created_at: datetime
    kind: str
    to_addr: str
    locale: str
    template: str
    context: dict[str, Any]
    secret_sealed: bytes | None
    attempts: int


def retry_delay(attempts: int, *, base: timedelta, cap: timedelta, jitter: float) -> timedelta:
    """Exponential backoff with "equal jitter" after ``attempts`` failed attempts (≥ 1).

    ``jitter`` in [0, 1) spreads half of each delay so that mails that failed together
    (an SMTP outage) do not all come back in the same second.
    """
    exponent = min(max(attempts, 1) - 1, 30)  # 2**30 x base is beyond any cap
    delay: timedelta = min(cap, base * (2**exponent))
    return delay / 2 + delay / 2 * jitter


def claim_batch(
    sessions: sessionmaker[Session],
    *,
    worker: WorkerId,
    now: datetime,
    lease: timedelta,
    limit: int,
) -> list[ClaimedMail]:
    """Claim up to ``limit`` due, unclaimed (or lapsed) pending rows for ``worker``."""
    with transaction(sessions) as session:
        rows = session.scalars(
            select(MailOutbox)
            .where(
                MailOutbox.status == MailStatus.PENDING,
                MailOutbox.next_attempt_at <= now,
                or_(MailOutbox.claimed_until.is_(None), MailOutbox.claimed_until < now),
            )
            .order_by(MailOutbox.next_attempt_at, MailOutbox.id)
            .limit(limit)
            # PostgreSQL: rows another claimer has locked are skipped, not waited for.
            .with_for_update(skip_locked=True)
        ).all()
        claimed = []
        for row in rows:
            row.claimed_by = str(worker)
            row.claimed_until = now + lease
            claimed.append(
                ClaimedMail(
                    id=row.id,
                    created_at=row.created_at,
                    kind=row.kind,
                    to_addr=row.to_addr,
                    locale=row.locale,
                    template=row.template,
                    context=dict(row.context or {}),
                    secret_sealed=row.secret_sealed,
                    attempts=row.attempts,
                )
            )
        return claimed


def _mine(mail_id: int, worker: WorkerId) -> Any:
    return and_(
        MailOutbox.id == mail_id,
        MailOutbox.claimed_by == str(worker),
        MailOutbox.status == MailStatus.PENDING,
    )


def renew_claim(
    sessions: sessionmaker[Session],
    *,
    mail_id: int,
    worker: WorkerId,
    now: datetime,
    lease: timedelta,
) -> bool:
    """Extend the lease right before a send; False if the row is no longer ours to send."""
    with transaction(sessions) as session:
        result = session.execute(
            update(MailOutbox)
            .where(_mine(mail_id, worker))
            .values(claimed_until=now + lease)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_sent(
    sessions: sessionmaker[Session],
    *,
    mail_id: int,
    worker: WorkerId,
    now: datetime,
    message_id: str,
) -> bool:
    """Record the delivery; the row's secrets are wiped in the same transaction.

    ``claimed_by`` is kept as a record of which worker delivered the mail.
    Returns False if the row was not ours any more (then the caller logs a possible duplicate).
    """
    with transaction(sessions) as session:
        result = session.execute(
            update(MailOutbox)
            .where(_mine(mail_id, worker))
            .values(
                status=MailStatus.SENT,
                sent_at=now,
                message_id=message_id,
                # SECURITY: the password / TAN / link has done its job; it leaves the database
                # in the very transaction that records the delivery.
                secret_sealed=None,
                claimed_until=None,
                last_error=None,
                attempts=MailOutbox.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_attempt_failed(
    sessions: sessionmaker[Session],
    *,
    mail_id: int,
    worker: WorkerId,
    now: datetime,
    error: str,
    permanent: bool,
    retry_after: Callable[[int], timedelta],
    max_attempts: int,
) -> MailStatus | None:
    """Record a failed attempt: back to pending with backoff, or ``failed``.

    Args:
        permanent: a 5xx answer or a mail that cannot be rendered: retrying cannot help.
        retry_after: the delay for a given number of failed attempts (see :func:`retry_delay`).

    Returns:
        The row's new status, or None if the row was not ours any more.
    """
    with transaction(sessions) as session:
        row = session.scalars(
            select(MailOutbox).where(_mine(mail_id, worker)).with_for_update()
        ).one_or_none()
        if row is None:
            return None
        row.attempts += 1
        row.last_error = error[:2000]
        row.claimed_by = None
        row.claimed_until = None
        if permanent or row.attempts >= max_attempts:
            if not permanent:
                row.last_error = f"gave up after {row.attempts} attempts: {row.last_error}"
            row.status = MailStatus.FAILED
        else:
            row.next_attempt_at = now + retry_after(row.attempts)
        return row.status


def release_claims(
    sessions: sessionmaker[Session], *, mail_ids: Sequence[int], worker: WorkerId
) -> int:
    """Give back claimed rows that were not attempted (shutdown, lease lost)."""
    if not mail_ids:
        return 0
    with transaction(sessions) as session:
        result = session.execute(
            update(MailOutbox)
            .where(
                MailOutbox.id.in_(list(mail_ids)),
                MailOutbox.claimed_by == str(worker),
                MailOutbox.status == MailStatus.PENDING,
            )
            .values(claimed_by=None, claimed_until=None)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def release_abandoned_claims(
    sessions: sessionmaker[Session],
    *,
    worker: WorkerId,
    now: datetime,
    pid_alive: Callable[[int], bool] = _pid_alive,
) -> int:
    """Release unexpired claims held by dead processes *on this host*.

    A worker killed with ``kill -9`` leaves its lease behind; without this its mails
    would wait for the lease to lapse (minutes: too long for a 15-minute TAN). A claim
    whose host is ours and whose process no longer exists cannot be in flight.
    Claims of other hosts are left to the lease. Assumes host names are unique per
    PID namespace (docs/mail.md).
    """
    with transaction(sessions) as session:
        rows = session.execute(
            select(MailOutbox.id, MailOutbox.claimed_by)
            .where(
                MailOutbox.status == MailStatus.PENDING,
                MailOutbox.claimed_until >= now,
                MailOutbox.claimed_by.like(f"{worker.host}:%"),
            )
            .with_for_update(skip_locked=True)
        ).all()
        dead = []
        for mail_id, claimed_by in rows:
            holder = WorkerId.parse(claimed_by or "")
            if holder is None or holder.host != worker.host:
                continue
            if holder.pid != worker.pid and not pid_alive(holder.pid):
                dead.append(mail_id)
        if dead:
            session.execute(
                update(MailOutbox)
                .where(MailOutbox.id.in_(dead))
                .values(claimed_by=None, claimed_until=None)
                .execution_options(synchronize_session=False)
            )
        return len(dead)


# --- what ops see and do (brokergate mail …) ----------------------------------------------


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


def jitter() -> float:
    """The default jitter source (not security relevant)."""
    return random.random()  # spreading retries, not a secret
