"""Fixed-window failure counters with lockouts, kept in ``store.RateLimit`` (shared by replicas).

The decision (:func:`after_failure`, :func:`locked_until`) is a pure function of the counter,
the policy and the clock; :func:`register_failure` and friends only load and save the row.
A row is locked (``SELECT … FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) while
it is updated, so two replicas counting at once never lose a hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from store import RateLimit


@dataclass(frozen=True, kw_only=True)
class RatePolicy:
    """``limit`` hits within one fixed ``window`` lock the key for ``lockout``."""

    limit: int
    window: timedelta
    lockout: timedelta


@dataclass(frozen=True, kw_only=True)
class Counter:
    window_start: datetime
    count: int
    locked_until: datetime | None


def locked_until(counter: Counter | None, now: datetime) -> datetime | None:
    """When the key may be used again, or ``None`` if it is not locked at ``now``."""
    if counter is None or counter.locked_until is None or counter.locked_until <= now:
        return None
    return counter.locked_until


def after_failure(counter: Counter | None, policy: RatePolicy, now: datetime) -> Counter:
    """The counter after one more hit at ``now``.

    A hit after the window has passed starts a new window. Reaching the limit locks the key;
    every further hit in the same window locks it again from that moment, so a client that
    keeps guessing stays locked out.
    """
    if counter is None or now >= counter.window_start + policy.window:
        start, count = now, 1
    else:
        start, count = counter.window_start, counter.count + 1
    until = now + policy.lockout if count >= policy.limit else None
    if until is None and counter is not None and counter.locked_until is not None:
        until = counter.locked_until if counter.locked_until > now else None
    return Counter(window_start=start, count=count, locked_until=until)


def _row(session: Session, key: str) -> RateLimit | None:
    return session.execute(
        select(RateLimit)
        .where(RateLimit.key == key)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def current(session: Session, key: str) -> Counter | None:
    """The stored counter of ``key`` (not locked for update)."""
    row = session.get(RateLimit, key, populate_existing=True)
    if row is None:
        return None
    return Counter(window_start=row.window_start, count=row.count, locked_until=row.locked_until)


def check(session: Session, key: str, now: datetime) -> datetime | None:
    """When ``key`` may be used again, or ``None`` if it is free now."""
    return locked_until(current(session, key), now)


def register_failure(
    session: Session, key: str, policy: RatePolicy, now: datetime
) -> datetime | None:
    """Count one hit on ``key``; returns the lockout end if the key is now locked."""
    window_end = now + policy.window
    # Insert-if-absent first so that the row exists to be locked: two replicas racing to
    # create it would otherwise have one fail on the primary key.
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(RateLimit)
        .values(key=key, window_start=now, count=0, locked_until=None, expires_at=window_end)
        .on_conflict_do_nothing(index_elements=["key"])
    )
    row = _row(session, key)
    assert row is not None
    before = Counter(window_start=row.window_start, count=row.count, locked_until=row.locked_until)
    if before.count == 0:
        before_or_none: Counter | None = None
    else:
        before_or_none = before
    after = after_failure(before_or_none, policy, now)
    row.window_start = after.window_start
    row.count = after.count
    row.locked_until = after.locked_until
    # The clean-up job may delete the row once neither the window nor a lockout matters.
    row.expires_at = max(after.window_start + policy.window, after.locked_until or now)
    session.flush()
    return locked_until(after, now)


def clear(session: Session, key: str) -> None:
    """Forget ``key`` (a successful login resets the account's counter)."""
    session.execute(delete(RateLimit).where(RateLimit.key == key))


def purge_expired(session: Session, now: datetime) -> int:
    """Delete counters that no longer matter; returns how many (for a clean-up job)."""
    result = session.execute(delete(RateLimit).where(RateLimit.expires_at < now))
    return int(getattr(result, "rowcount", 0) or 0)
