"""Fixed-window counters: the pure decision and the shared store rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from gateway.regulation._counters import (
    Counter,
    RatePolicy,
    after_failure,
    check,
    clear,
    locked_until,
    purge_expired,
    register_failure,
)
from store import transaction

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
POLICY = RatePolicy(limit=3, window=timedelta(minutes=15), lockout=timedelta(minutes=10))


def test_counts_within_the_window_and_locks_at_the_limit() -> None:
    c = after_failure(None, POLICY, T0)
    assert (c.count, c.locked_until) == (1, None)
    c = after_failure(c, POLICY, T0 + timedelta(minutes=1))
    assert (c.count, c.locked_until) == (2, None)
    c = after_failure(c, POLICY, T0 + timedelta(minutes=2))
    assert c.count == 3
    assert c.locked_until == T0 + timedelta(minutes=12)
    assert locked_until(c, T0 + timedelta(minutes=11)) == T0 + timedelta(minutes=12)
    assert locked_until(c, T0 + timedelta(minutes=12)) is None


def test_a_new_window_starts_fresh() -> None:
    c = Counter(window_start=T0, count=2, locked_until=None)
    c = after_failure(c, POLICY, T0 + timedelta(minutes=15))
    assert (c.count, c.window_start, c.locked_until) == (1, T0 + timedelta(minutes=15), None)


def test_guessing_on_in_the_same_window_locks_again() -> None:
    c = Counter(window_start=T0, count=3, locked_until=T0 + timedelta(minutes=10))
    later = T0 + timedelta(minutes=11)
    c = after_failure(c, POLICY, later)
    assert c.locked_until == later + POLICY.lockout


def test_store_rows_are_shared_and_cleared(sessions: sessionmaker[Session]) -> None:
    for i in range(2):
        with transaction(sessions) as s:
            assert register_failure(s, "k", POLICY, T0 + timedelta(seconds=i)) is None
    with transaction(sessions) as s:
        assert check(s, "k", T0) is None
        until = register_failure(s, "k", POLICY, T0 + timedelta(seconds=5))
    assert until == T0 + timedelta(seconds=5) + POLICY.lockout
    with transaction(sessions) as s:
        assert check(s, "k", T0 + timedelta(minutes=1)) == until
        assert check(s, "other", T0) is None
    with transaction(sessions) as s:
        clear(s, "k")
    with transaction(sessions) as s:
        assert check(s, "k", T0 + timedelta(minutes=1)) is None


def test_purge_removes_only_expired_rows(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        register_failure(s, "old", POLICY, T0)
        register_failure(s, "new", POLICY, T0 + timedelta(minutes=20))
    with transaction(sessions) as s:
        assert purge_expired(s, T0 + timedelta(minutes=16)) == 1
    with transaction(sessions) as s:
        assert purge_expired(s, T0 + timedelta(minutes=16)) == 0
