"""Server-side sessions in ``store.WebSession``, shared by every replica.

The API the login pages use (all blocking; call them via ``asyncio.to_thread`` from a
handler, or use the ``Sessions`` instance at ``request.app[SESSIONS]``)::

    new = sessions.start(user_id=17, level=Level.BASIC, method="password", now=now)
    set_session_cookie(response, new.cookie, settings)        # cookie value never stored
    state = sessions.load(cookie_value, now)                 # SessionState | None
    new = sessions.elevate(state, level=Level.STRONG, method="totp", now=now)  # new id!
    sessions.touch(state, now)                               # throttled write
    sessions.update(state, now=now, data={...}, twofa_prompt_dismissed=True)
    sessions.end(state.id, now)                              # logout
    sessions.end_all_for_user(17, now)                       # logout everywhere
    csrf_ok(state, submitted_token)                          # constant-time compare

Rules (pure, in :func:`session_verdict`): a session ends after ``idle_timeout`` without
activity, at ``absolute_expires_at`` (created + ``absolute_timeout``) no matter what, when
it is ended (logout), and, if it was opened by certificate, when the connection no longer
presents that certificate. Every level change mints a new id (session fixation, OWASP
ASVS 3.2.1); the old row is ended.

The cookie value is 32 random bytes (URL-safe base64); the row's id is its SHA-256, so a
database leak gives no usable cookie. Cookie: ``__Host-`` name, Secure, HttpOnly,
SameSite=Lax, Path=/.

No database read per request in steady state: rows are cached per replica and the
gateway's refresh task (:meth:`Sessions.refresh_cached`, every ≤ 2 s) re-reads the cached
rows' ``ended_at``, so a logout on one replica holds on all of them within the refresh
interval. If no refresh has succeeded for ``max_staleness`` (as for the trust cache) the
cache is *stale* and every lookup reads the store, so the bound holds also while the
refresh fails (and a store that is down fails closed). ``last_seen_at`` is written at most
once per :data:`TOUCH_INTERVAL`; before a session is declared idle the row is re-read,
since another replica may have touched it.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway._settings import GatewaySettings
from gateway.auth._session_rules import (
    NewSession,
    SessionState,
    SessionVerdict,
    clear_session_cookie,
    csrf_ok,
    new_cookie_value,
    session_cookie_header,
    session_id_for,
    session_verdict,
    set_session_cookie,
)
from store import Level, WebSession, end_user_sessions, transaction

__all__ = [
    "TOUCH_INTERVAL",
    "NewSession",
    "SessionState",
    "SessionVerdict",
    "Sessions",
    "clear_session_cookie",
    "csrf_ok",
    "session_cookie_header",
    "session_id_for",
    "session_verdict",
    "set_session_cookie",
]

# last_seen_at is written at most this often: a write per request would make the store the
# bottleneck, and a minute is small next to the 15-minute idle timeout.
TOUCH_INTERVAL = timedelta(seconds=60)
_CACHE_LIMIT = 100_000  # sessions cached per replica; beyond that the oldest are dropped


class Sessions:
    """Creates, loads, rotates and ends sessions. Thread-safe (handlers call it in threads).

    Args:
        factory: the store's session factory (the app owns the engine).
        settings: idle and absolute timeouts.
        max_staleness: after this long without a successful :meth:`refresh_cached`, the
            cache is not trusted and every lookup reads the store.
        monotonic: injectable monotonic clock for staleness.
    """

    def __init__(
        self,
        *,
        factory: sessionmaker[Session],
        settings: GatewaySettings,
        max_staleness: timedelta = timedelta(seconds=4),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._settings = settings
        self._max_staleness = max_staleness.total_seconds()
        self._monotonic = monotonic
        # An empty cache holds nothing stale: fresh from the start.
        self._last_refresh = monotonic()
        self._cache: dict[str, SessionState] = {}
        # Certificate sessions this replica started, by fingerprint, WITH their cookie value
        # (memory only): a client that keeps no cookies (curl, API clients, load tests) gets
        # the same session back instead of a new row per request. Safe because a
        # certificate session is useless without presenting that certificate.
        self._by_fingerprint: dict[str, NewSession] = {}
        self._lock = threading.Lock()

    # --- cache
    @property
    def fresh(self) -> bool:
        """Whether the cache may answer (a refresh succeeded within ``max_staleness``)."""
        return self._monotonic() - self._last_refresh <= self._max_staleness

    def _cached(self, session_id: str) -> SessionState | None:
        if not self.fresh:
            return None
        with self._lock:
            return self._cache.get(session_id)

    def _remember(self, state: SessionState) -> None:
        with self._lock:
            if len(self._cache) >= _CACHE_LIMIT:
                for key in list(self._cache)[: _CACHE_LIMIT // 10]:
                    del self._cache[key]
            self._cache[state.id] = state

    def _forget(self, session_ids: Iterable[str]) -> None:
        with self._lock:
            for session_id in session_ids:
                self._cache.pop(session_id, None)

    def certificate_session(
        self, fingerprint: str, user_id: int, now: datetime
    ) -> NewSession | None:
        """The live certificate session this replica started for ``fingerprint``, if any."""
        with self._lock:
            known = self._by_fingerprint.get(fingerprint)
        state = self._cached(known.state.id) if known is not None else None
        if known is None or state is None or state.user_id != user_id:
            return None
        verdict = session_verdict(
            state,
            now=now,
            idle_timeout=self._settings.idle_timeout,
            presented_fingerprint=fingerprint,
        )
        if verdict is not SessionVerdict.ACTIVE:
            return None
        return NewSession(cookie=known.cookie, state=state)

    def cached_ids(self) -> list[str]:
        with self._lock:
            return list(self._cache)

    def refresh_cached(self) -> int:
        """Re-read the cached rows (ended, level, last seen); returns how many changed.

        Called by the gateway's refresh task. A row that is gone or ended is dropped.
        """
        started = self._monotonic()  # the rows read below are at least this fresh
        ids = self.cached_ids()
        changed = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            with self._factory() as db:
                rows = {
                    row.id: row
                    for row in db.scalars(select(WebSession).where(WebSession.id.in_(chunk)))
                }
            for session_id in chunk:
                row = rows.get(session_id)
                if row is None or row.ended_at is not None:
                    self._forget([session_id])
                    changed += 1
                    continue
                fresh = SessionState.from_row(row)
                with self._lock:
                    old = self._cache.get(session_id)
                    if old is not None and old != fresh:
                        self._cache[session_id] = fresh
                        changed += 1
        self._last_refresh = started
        return changed

    # --- reads
    def _read(self, session_id: str) -> SessionState | None:
        with self._factory() as db:
            row = db.get(WebSession, session_id)
            return None if row is None else SessionState.from_row(row)

    def cached(self, session_id: str) -> SessionState | None:
        """The session with row id ``session_id`` from the cache, without I/O.

        None means "ask :meth:`read`": not cached, ended (ended rows are dropped), or the
        cache is stale.
        """
        return self._cached(session_id)

    def read(self, session_id: str) -> SessionState | None:
        """The session with row id ``session_id`` from the store (blocking), ended or not;
        None if there is no such row. A live one is cached."""
        state = self._read(session_id)
        if state is not None and state.ended_at is None:
            self._remember(state)
        return state

    def peek(self, cookie: str | None, now: datetime) -> SessionState | None:
        """The cached live session for a cookie, without I/O; None means "ask :meth:`load`"."""
        if not cookie or len(cookie) > 128:
            return None
        state = self._cached(session_id_for(cookie))
        if state is None:
            return None
        verdict = session_verdict(
            state,
            now=now,
            idle_timeout=self._settings.idle_timeout,
            presented_fingerprint=state.cert_fingerprint,
        )
        return state if verdict is SessionVerdict.ACTIVE else None

    def load(self, cookie: str | None, now: datetime) -> SessionState | None:
        """The live session for a cookie value, or None (unknown, ended, idle or expired).

        The certificate binding is not checked here (it needs the request's certificate):
        use :func:`session_verdict`.
        """
        if not cookie or len(cookie) > 128:
            return None
        session_id = session_id_for(cookie)
        state = self._cached(session_id)
        if state is None:
            state = self._read(session_id)
            if state is None:
                return None
            self._remember(state)
        verdict = session_verdict(
            state,
            now=now,
            idle_timeout=self._settings.idle_timeout,
            presented_fingerprint=state.cert_fingerprint,
        )
        if verdict is SessionVerdict.IDLE:
            # Another replica may have touched it more recently than our cached copy.
            state = self._read(session_id)
            if state is None:
                self._forget([session_id])
                return None
            self._remember(state)
            verdict = session_verdict(
                state,
                now=now,
                idle_timeout=self._settings.idle_timeout,
                presented_fingerprint=state.cert_fingerprint,
            )
        if verdict is not SessionVerdict.ACTIVE:
            if verdict is not SessionVerdict.ENDED:
                self.end(session_id, now)
            self._forget([session_id])
            return None
        return state

    # --- writes
    def start(
        self,
        *,
        user_id: int | None,
        level: Level,
        method: str | None,
        now: datetime,
        cert_fingerprint: str | None = None,
        client_addr: str | None = None,
        data: Mapping[str, Any] | None = None,
        authenticated: bool = True,
        db: Session | None = None,
    ) -> NewSession:
        """Open a session. ``authenticated=False`` for a pre-login session (no factor yet).

        Pass ``db`` to write within the caller's transaction (it commits).
        """
        cookie = new_cookie_value()
        row = WebSession(
            id=session_id_for(cookie),
            user_id=user_id,
            level=level,
            method=method,
            created_at=now,
            authenticated_at=now if authenticated and user_id is not None else None,
            last_seen_at=now,
            absolute_expires_at=now + self._settings.absolute_timeout,
            cert_fingerprint=cert_fingerprint,
            client_addr=client_addr,
            csrf_token=secrets.token_urlsafe(32),
            twofa_prompt_dismissed=False,
            data=dict(data or {}),
            ended_at=None,
        )
        if db is not None:
            db.add(row)
            db.flush()
        else:
            with transaction(self._factory) as own:
                own.add(row)
        state = SessionState.from_row(row)
        self._remember(state)
        new = NewSession(cookie=cookie, state=state)
        if cert_fingerprint is not None:
            with self._lock:
                if len(self._by_fingerprint) >= _CACHE_LIMIT:
                    self._by_fingerprint.clear()
                self._by_fingerprint[cert_fingerprint] = new
        return new

    def elevate(
        self,
        state: SessionState,
        *,
        level: Level,
        method: str,
        now: datetime,
        user_id: int | None = None,
        cert_fingerprint: str | None = None,
        db: Session | None = None,
    ) -> NewSession:
        """Change the level (up, or re-authentication at the same level): a NEW id and cookie.

        The new session keeps created_at/absolute expiry, the data and the 2FA "Not now"
        flag; ``authenticated_at`` becomes ``now``. The old row is ended.
        """
        cookie = new_cookie_value()
        row = WebSession(
            id=session_id_for(cookie),
            user_id=user_id if user_id is not None else state.user_id,
            level=level,
            method=method,
            created_at=state.created_at,
            authenticated_at=now,
            last_seen_at=now,
            absolute_expires_at=state.absolute_expires_at,
            cert_fingerprint=cert_fingerprint,
            client_addr=state.client_addr,
            csrf_token=secrets.token_urlsafe(32),
            twofa_prompt_dismissed=state.twofa_prompt_dismissed,
            data=dict(state.data),
            ended_at=None,
        )

        def write(session: Session) -> None:
            session.execute(
                update(WebSession)
                .where(WebSession.id == state.id, WebSession.ended_at.is_(None))
                .values(ended_at=now)
            )
            session.add(row)
            session.flush()

        if db is not None:
            write(db)
        else:
            with transaction(self._factory) as own:
                write(own)
        self._forget([state.id])
        fresh = SessionState.from_row(row)
        self._remember(fresh)
        new = NewSession(cookie=cookie, state=fresh)
        if cert_fingerprint is not None:
            with self._lock:
                self._by_fingerprint[cert_fingerprint] = new
        return new

    def touch(self, state: SessionState, now: datetime) -> SessionState:
        """Record activity; writes at most once per :data:`TOUCH_INTERVAL`."""
        if now - state.last_seen_at < TOUCH_INTERVAL:
            return state
        with transaction(self._factory) as db:
            db.execute(
                update(WebSession)
                .where(WebSession.id == state.id, WebSession.last_seen_at < now)
                .values(last_seen_at=now)
            )
        fresh = replace(state, last_seen_at=now)
        self._remember(fresh)
        return fresh

    def update(
        self,
        state: SessionState,
        *,
        now: datetime,
        data: Mapping[str, Any] | None = None,
        twofa_prompt_dismissed: bool | None = None,
    ) -> SessionState:
        """Replace the session's ``data`` and/or set the 2FA "Not now" flag (same id)."""
        values: dict[str, Any] = {}
        if data is not None:
            values["data"] = dict(data)
        if twofa_prompt_dismissed is not None:
            values["twofa_prompt_dismissed"] = twofa_prompt_dismissed
        if not values:
            return state
        with transaction(self._factory) as db:
            db.execute(update(WebSession).where(WebSession.id == state.id).values(**values))
        fresh = replace(state, **values)
        self._remember(fresh)
        return fresh

    def end(self, session_id: str, now: datetime) -> None:
        """Logout: end one session (idempotent)."""
        with transaction(self._factory) as db:
            db.execute(
                update(WebSession)
                .where(WebSession.id == session_id, WebSession.ended_at.is_(None))
                .values(ended_at=now)
            )
        self._forget([session_id])

    def end_all_for_user(self, user_id: int, now: datetime, *, db: Session | None = None) -> int:
        """Logout everywhere: end every open session of ``user_id``; returns how many.

        Other replicas drop their cached copies at their next refresh (≤ 2 s).
        """

        def write(session: Session) -> list[str]:
            return end_user_sessions(session, user_id=user_id, now=now)

        if db is not None:
            ended = write(db)
        else:
            with transaction(self._factory) as own:
                ended = write(own)
        self._forget(ended)
        return len(ended)
