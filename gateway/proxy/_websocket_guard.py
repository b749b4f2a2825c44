"""Keeps a proxied WebSocket tied to the session that opened it.

The upgrade request passes the auth middleware and the route policy like any request.
After that the socket would live as long as its two ends want: past a revocation of the
certificate, a logout, the session's absolute end. :func:`websocket_guard` therefore hands
the proxy a :class:`WebSocketGuard`, an ``await check(active)`` that the proxy calls every
``interval`` seconds (``gateway.proxy._reverse_proxy`` owns the relay and the closing;
this module owns the question). Each check asks what a request on the same connection
would be told, from the same per-replica caches a request uses, and in the same order:

1. the certificate presented at the upgrade, evaluated anew (``evaluate_presented``:
   revoked, retired generation, expired, user disabled, e-mail changed);
2. the session, by its row id (session cache; the store when the row is not cached or the
   cache is stale): ``session_verdict`` — ended (logout, logout everywhere, an e-mail
   change, ops), expired (absolute maximum, by the injected clock), idle, or opened by a
   certificate that is no longer valid;
3. the session's user still active;
4. the route policy again (``decide``): level, ``fresh_within``, the 2FA deadline.

A "no" is a short reason: the proxy closes both legs with 1008 (policy violation) and that
reason, and the session ends where a request would end it. A store needed but unreachable
raises, and the proxy closes with 1011 (fail closed, as a request gets the 503 page).

Cost: in steady state no store query (cache lookups and the pure decisions, a few µs); one
check per socket every ``min(CHECK_INTERVAL, revocation_refresh_interval)``. Bound: a
revocation or a logout reaches the caches within the refresh interval (≤ 2 s) plus the
query, or the caches turn stale after ``max_staleness`` (4 s) and the check reads the
store; one check interval later the socket is closed: ≤ 4.5 s with the defaults, inside
the 5 s that revocation is promised on every replica.

Idle timeout: a message *from the client* counts as activity, as a request would, unless
the socket's path is in ``inactivity_exempt_paths``; messages from the upstream never
count (a push feed must not keep an abandoned session alive). Activity touches the session
at most once per ``touch_interval_for`` the idle timeout, like requests. A socket whose
client sends nothing closes when the session goes idle, unless the broker's other requests
keep it alive.

Rotation: every level change (step-up, a new login) mints a new session id and ends the
old row, so a socket opened under the old session closes with "session ended"; the page
reconnects, and the upstream learns the new level from the new upgrade's headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web

from gateway._state import CLOCK, SETTINGS
from gateway.auth._certificate_identity import CertificateProblem, Identity, UserRecord
from gateway.auth._middleware import (
    evaluate_presented,
    identity_from_session,
    user_record,
)
from gateway.auth._request_state import CERTIFICATE_SOURCE, REQUEST_STATE, SESSIONS, RequestState
from gateway.auth._resolution import inactivity_exempt
from gateway.auth._route_policy import Outcome, Requirement, decide, request_auth, required_for
from gateway.auth._sessions import (
    SessionState,
    SessionVerdict,
    session_verdict,
    touch_interval_for,
)
from store import Level

__all__ = ["CHECK_INTERVAL", "WebSocketGuard", "websocket_guard"]

# Half a second: with the refresh interval (≤ 2 s) or the staleness bound (4 s) before it,
# a revoked certificate's socket still closes within the 5 s promised for requests.
CHECK_INTERVAL = timedelta(milliseconds=500)

_SESSION_REASONS = {
    SessionVerdict.ENDED: "session ended",
    SessionVerdict.EXPIRED: "session expired",
    SessionVerdict.IDLE: "session idle",
}
_POLICY_REASONS = {
    Outcome.LOGIN: "login required",
    Outcome.STEP_UP: "step-up required",
    Outcome.TWOFA_PROMPT: "second factor required",
    Outcome.CERTIFICATE_PROBLEM: "certificate not usable",
    Outcome.NO_RIGHT: "right required",  # a right taken away closes the socket too
}


@dataclass(frozen=True, kw_only=True)
class WebSocketGuard:
    """What the proxy needs to police one open WebSocket.

    Attributes:
        check: ``await check(active)`` → None while the socket may stay open, else a short
            ASCII reason for the close frame (code 1008). ``active``: the client sent a
            message since the previous check. Raises when it cannot tell (the store is
            needed and down): the proxy then closes with 1011.
        interval: seconds between two checks (the first one after ``interval``).
    """

    check: Callable[[bool], Awaitable[str | None]]
    interval: float


def websocket_guard(request: web.Request) -> WebSocketGuard | None:
    """The guard for a WebSocket upgrade that the route policy let through.

    None when there is nothing to guard: not an upgrade, or no session (an anonymous
    socket on an anonymous route; the upstream was told no identity).
    """
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return None
    state = request.get(REQUEST_STATE)
    if not isinstance(state, RequestState) or state.session is None or state.path is None:
        return None
    settings = request.app[SETTINGS]
    watch = _SessionWatch(
        request=request,
        session_id=state.session.id,
        der=request.app[CERTIFICATE_SOURCE](request),
        requirement=required_for(
            state.path.path, request.method, settings.routes, settings.default_level
        ),
        counts_as_activity=not inactivity_exempt(request.path, settings.inactivity_exempt_paths),
    )
    interval = min(CHECK_INTERVAL, settings.revocation_refresh_interval)
    return WebSocketGuard(check=watch.check, interval=interval.total_seconds())


@dataclass(frozen=True, kw_only=True)
class _SessionWatch:
    """The facts of the upgrade a check starts from (the request lives as long as the socket)."""

    request: web.Request
    session_id: str
    der: bytes | None  # the certificate presented at the upgrade (the same TLS connection)
    requirement: Requirement
    counts_as_activity: bool

    async def check(self, active: bool) -> str | None:
        app = self.request.app
        settings = app[SETTINGS]
        sessions = app[SESSIONS]
        now = app[CLOCK]()
        certificate = await evaluate_presented(self.request, self.der) if self.der else None
        session = sessions.cached(self.session_id)
        from_cache = session is not None
        if session is None:
            session = await asyncio.to_thread(sessions.read, self.session_id)
            if session is None:
                return _SESSION_REASONS[SessionVerdict.ENDED]
        verdict = self._verdict(session, certificate, now)
        if verdict is SessionVerdict.IDLE and from_cache:
            # Another replica may have touched it more recently than our cached copy.
            session = await asyncio.to_thread(sessions.read, self.session_id)
            if session is None:
                return _SESSION_REASONS[SessionVerdict.ENDED]
            verdict = self._verdict(session, certificate, now)
        if verdict is not SessionVerdict.ACTIVE:
            if verdict is not SessionVerdict.ENDED:
                # SECURITY: as on a request — a certificate session whose certificate is no
                # longer valid (revoked!), an idle or expired one, ends for good; an idle
                # login is marked so the next login page says why (issue 16).
                if verdict is SessionVerdict.IDLE:
                    await asyncio.to_thread(sessions.end_idle, session, now)
                else:
                    await asyncio.to_thread(sessions.end, session.id, now)
            if verdict is SessionVerdict.CERTIFICATE_GONE:
                return _certificate_reason(certificate)
            return _SESSION_REASONS[verdict]
        user: UserRecord | None = None
        if session.user_id is not None:
            user = await user_record(self.request, session.user_id)
            if user is None or not user.may_log_in:
                # Issue 13: a deactivated user or office closes the socket as well.
                await asyncio.to_thread(sessions.end, session.id, now)
                return "account disabled"
        interval = touch_interval_for(self.request.app[SETTINGS].idle_timeout)
        if active and self.counts_as_activity and now - session.last_seen_at >= interval:
            session = await asyncio.to_thread(sessions.touch, session, now)
        identity = (
            identity_from_session(session, user, certificate)
            if user is not None and session.level is not Level.ANONYMOUS
            else None
        )
        state = RequestState(certificate=certificate, session=session, identity=identity)
        decision = decide(
            auth=request_auth(state, now),
            requirement=self.requirement,
            now=now,
            twofa_deadline=settings.twofa_deadline_at,
        )
        if decision.outcome is not Outcome.ALLOW:
            return _POLICY_REASONS[decision.outcome]
        return None

    def _verdict(
        self,
        session: SessionState,
        certificate: Identity | CertificateProblem | None,
        now: datetime,
    ) -> SessionVerdict:
        presented = (
            certificate.cert_fingerprint
            if isinstance(certificate, Identity) and certificate.user_id == session.user_id
            else None
        )
        return session_verdict(
            session,
            now=now,
            idle_timeout=self.request.app[SETTINGS].idle_timeout,
            presented_fingerprint=presented,
        )


def _certificate_reason(certificate: Identity | CertificateProblem | None) -> str:
    if isinstance(certificate, CertificateProblem):
        return "certificate " + certificate.kind.value.replace("_", " ")  # e.g. "… revoked"
    return "certificate not presented"
