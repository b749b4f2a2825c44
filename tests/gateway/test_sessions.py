"""Sessions in the store (SQLite and PostgreSQL): start, load, rotate, timeouts, logout, CSRF."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from gateway import Sessions, csrf_ok
from gateway._settings import GatewaySettings
from gateway.auth._sessions import TOUCH_INTERVAL, SessionVerdict, session_id_for, session_verdict
from store import Level, User, WebSession, session_factory

SETTINGS = GatewaySettings(
    idle_timeout=dt.timedelta(minutes=15), absolute_timeout=dt.timedelta(hours=12)
)


@pytest.fixture
def store(engine: Engine) -> Sessions:
    return Sessions(factory=session_factory(engine), settings=SETTINGS)


@pytest.fixture
def user_id(make_user: Callable[..., User]) -> int:
    return make_user(email="s@example.org").id


def test_start_and_load(store: Sessions, engine: Engine, user_id: int, clock) -> None:
    new = store.start(user_id=user_id, level=Level.BASIC, method="password", now=clock())
    with session_factory(engine)() as db:
        row = db.get(WebSession, new.state.id)
        assert row is not None
        assert row.id == session_id_for(new.cookie) != new.cookie  # the cookie itself is not stored
    fresh = Sessions(factory=session_factory(engine), settings=SETTINGS)  # another replica
    loaded = fresh.load(new.cookie, clock())
    assert loaded is not None and loaded.user_id == user_id and loaded.level is Level.BASIC
    assert fresh.load("not-a-cookie", clock()) is None
    assert fresh.load("x" * 500, clock()) is None


def test_elevate_rotates_the_id(store: Sessions, user_id: int, clock) -> None:
    first = store.start(user_id=user_id, level=Level.BASIC, method="password", now=clock())
    clock.advance(dt.timedelta(minutes=1))
    second = store.elevate(first.state, level=Level.STRONG, method="totp", now=clock())
    assert second.cookie != first.cookie and second.state.id != first.state.id
    assert second.state.authenticated_at == clock()
    assert second.state.absolute_expires_at == first.state.absolute_expires_at
    assert second.state.csrf_token != first.state.csrf_token
    assert store.load(first.cookie, clock()) is None  # the old id is dead
    assert store.load(second.cookie, clock()) is not None


def test_idle_timeout_and_touch(store: Sessions, engine: Engine, user_id: int, clock) -> None:
    new = store.start(user_id=user_id, level=Level.BASIC, method="password", now=clock())
    clock.advance(dt.timedelta(minutes=10))
    state = store.load(new.cookie, clock())
    assert state is not None
    store.touch(state, clock())
    clock.advance(dt.timedelta(minutes=10))  # 20 min after start, 10 after the touch
    assert store.load(new.cookie, clock()) is not None
    clock.advance(dt.timedelta(minutes=16))
    assert store.load(new.cookie, clock()) is None
    with session_factory(engine)() as db:
        assert db.get(WebSession, new.state.id).ended_at is not None  # type: ignore[union-attr]


def test_touch_on_another_replica_is_seen_before_idle_expiry(
    store: Sessions, engine: Engine, user_id: int, clock
) -> None:
    new = store.start(user_id=user_id, level=Level.BASIC, method="password", now=clock())
    assert store.load(new.cookie, clock()) is not None  # cached here
    other = Sessions(factory=session_factory(engine), settings=SETTINGS)
    clock.advance(dt.timedelta(minutes=10))
    state = other.load(new.cookie, clock())
    assert state is not None
    other.touch(state, clock())
    clock.advance(dt.timedelta(minutes=10))
    assert store.load(new.cookie, clock()) is not None  # re-read, not declared idle


def test_touch_is_throttled(store: Sessions, engine: Engine, user_id: int, clock) -> None:
    new = store.start(user_id=user_id, level=Level.BASIC, method="password", now=clock())
    clock.advance(TOUCH_INTERVAL / 2)
    assert store.touch(new.state, clock()).last_seen_at == new.state.last_seen_at
    clock.advance(TOUCH_INTERVAL)
    assert store.touch(new.state, clock()).last_seen_at == clock()


def test_absolute_timeout(store: Sessions, user_id: int, clock) -> None:
    new = store.start(user_id=user_id, level=Level.STRONG, method="totp", now=clock())
    state = new.state
    for _ in range(13):  # active every 59 minutes, still ends at 12 h
        clock.advance(dt.timedelta(minutes=59))
        loaded = store.load(new.cookie, clock())
        if loaded is None:
            break
        state = store.touch(loaded, clock())
    assert clock() - new.state.created_at < dt.timedelta(hours=13)
    assert store.load(new.cookie, clock()) is None
    assert state.absolute_expires_at == new.state.created_at + dt.timedelta(hours=12)


def test_logout_everywhere_reaches_other_replicas(
    store: Sessions, engine: Engine, user_id: int, clock
) -> None:
    a = store.start(user_id=user_id, level=Level.BASIC, method="password", now=clock())
    b = store.start(user_id=user_id, level=Level.STRONG, method="totp", now=clock())
    other = Sessions(factory=session_factory(engine), settings=SETTINGS)
    assert other.load(a.cookie, clock()) is not None and other.load(b.cookie, clock()) is not None
    assert store.end_all_for_user(user_id, clock()) == 2
    assert other.peek(a.cookie, clock()) is not None  # still cached there ...
    other.refresh_cached()
    assert other.peek(a.cookie, clock()) is None  # ... until its refresh
    assert other.load(a.cookie, clock()) is None and other.load(b.cookie, clock()) is None


def test_certificate_binding_verdict(store: Sessions, user_id: int, clock) -> None:
    new = store.start(
        user_id=user_id,
        level=Level.STRONG,
        method="certificate",
        now=clock(),
        cert_fingerprint="ab" * 32,
    )
    kwargs = {"now": clock(), "idle_timeout": SETTINGS.idle_timeout}
    assert (
        session_verdict(new.state, presented_fingerprint="ab" * 32, **kwargs)
        is SessionVerdict.ACTIVE
    )  # type: ignore[arg-type]
    assert (
        session_verdict(new.state, presented_fingerprint=None, **kwargs)
        is SessionVerdict.CERTIFICATE_GONE
    )  # type: ignore[arg-type]
    assert (
        session_verdict(new.state, presented_fingerprint="cd" * 32, **kwargs)
        is SessionVerdict.CERTIFICATE_GONE
    )  # type: ignore[arg-type]


def test_csrf(store: Sessions, user_id: int, clock) -> None:
    state = store.start(user_id=user_id, level=Level.BASIC, method="password", now=clock()).state
    assert csrf_ok(state, state.csrf_token)
    assert not csrf_ok(state, None)
    assert not csrf_ok(state, "")
    assert not csrf_ok(state, state.csrf_token + "x")


def test_update_data_and_not_now(store: Sessions, engine: Engine, user_id: int, clock) -> None:
    new = store.start(
        user_id=None,
        level=Level.ANONYMOUS,
        method=None,
        now=clock(),
        authenticated=False,
        data={"pending": 1},
    )
    assert new.state.authenticated_at is None
    state = store.update(new.state, now=clock(), data={"pending": 2}, twofa_prompt_dismissed=True)
    other = Sessions(factory=session_factory(engine), settings=SETTINGS)
    loaded = other.load(new.cookie, clock())
    assert loaded is not None and loaded.data == {"pending": 2} and loaded.twofa_prompt_dismissed
    assert state.twofa_prompt_dismissed


def test_a_stale_cache_is_not_trusted(engine: Engine, user_id: int, clock) -> None:
    """Without a successful refresh for max_staleness, lookups read the store (so a logout
    on another replica holds within the bound even while the refresh fails)."""
    tick = [100.0]
    store = Sessions(
        factory=session_factory(engine),
        settings=SETTINGS,
        max_staleness=dt.timedelta(seconds=4),
        monotonic=lambda: tick[0],
    )
    new = store.start(user_id=user_id, level=Level.BASIC, method="password", now=clock())
    assert store.fresh and store.cached(new.state.id) == new.state
    Sessions(factory=session_factory(engine), settings=SETTINGS).end(new.state.id, clock())
    # within the bound the cache may still answer (the refresh would drop the row) ...
    assert store.peek(new.cookie, clock()) is not None
    tick[0] += 4.5  # ... past it, no more: no refresh has succeeded since
    assert not store.fresh
    assert store.peek(new.cookie, clock()) is None and store.cached(new.state.id) is None
    assert store.load(new.cookie, clock()) is None  # read from the store: ended
    ended = store.read(new.state.id)
    assert ended is not None and ended.ended_at is not None
    assert store.read("0" * 64) is None
    store.refresh_cached()
    assert store.fresh
