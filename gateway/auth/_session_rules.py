"""Session values and pure rules: the row snapshot, the verdict, CSRF, the cookie.

Split from ``gateway.auth._sessions`` (the store-backed life cycle) so the rules can be read
and tested without a database.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.cookies import SimpleCookie
from typing import Any

from aiohttp import web

from gateway._settings import GatewaySettings
from store import Level, WebSession

__all__ = [
    "ENDED_FOR_INACTIVITY",
    "NewSession",
    "SessionState",
    "SessionVerdict",
    "clear_session_cookie",
    "csrf_ok",
    "ended_for_inactivity",
    "is_a_login",
    "new_cookie_value",
    "session_cookie_header",
    "session_id_for",
    "session_verdict",
    "set_session_cookie",
    "touch_interval_for",
]

# The mark an idle login's row keeps in ``data`` when it ends (issue 16): the next login
# page shown for its cookie says the broker was logged out for inactivity. Server-side, so
# nothing in a request can make the page say it (or anything else).
ENDED_FOR_INACTIVITY = {"ended_for": "inactivity"}

# last_seen_at is written at most this often: a write per request would make the store the
# bottleneck, and a minute is small next to the 15-minute idle timeout.
TOUCH_INTERVAL = timedelta(seconds=60)


_COOKIE_VALUE = re.compile(r"[A-Za-z0-9_-]+")


def session_id_for(cookie_value: str) -> str:
    """The row id of a cookie value: SHA-256, lower-case hex."""
    return hashlib.sha256(cookie_value.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class SessionState:
    """An immutable snapshot of one ``web_sessions`` row."""

    id: str
    user_id: int | None
    level: Level
    method: str | None
    created_at: datetime
    authenticated_at: datetime | None
    last_seen_at: datetime
    absolute_expires_at: datetime
    cert_fingerprint: str | None
    client_addr: str | None
    csrf_token: str = field(repr=False)
    twofa_prompt_dismissed: bool
    data: Mapping[str, Any]
    ended_at: datetime | None

    @classmethod
    def from_row(cls, row: WebSession) -> SessionState:
        return cls(
            id=row.id,
            user_id=row.user_id,
            level=row.level,
            method=row.method,
            created_at=row.created_at,
            authenticated_at=row.authenticated_at,
            last_seen_at=row.last_seen_at,
            absolute_expires_at=row.absolute_expires_at,
            cert_fingerprint=row.cert_fingerprint,
            client_addr=row.client_addr,
            csrf_token=row.csrf_token,
            twofa_prompt_dismissed=row.twofa_prompt_dismissed,
            data=dict(row.data or {}),
            ended_at=row.ended_at,
        )


@dataclass(frozen=True, kw_only=True)
class NewSession:
    """A freshly started (or rotated) session; ``cookie`` goes into Set-Cookie, nowhere else."""

    cookie: str = field(repr=False)
    state: SessionState


class SessionVerdict(enum.StrEnum):
    ACTIVE = "active"
    ENDED = "ended"  # logout, logout everywhere, rotated away
    IDLE = "idle"
    EXPIRED = "expired"  # absolute maximum reached
    CERTIFICATE_GONE = "certificate_gone"  # opened by certificate, which is no longer presented


def session_verdict(
    state: SessionState,
    *,
    now: datetime,
    idle_timeout: timedelta,
    presented_fingerprint: str | None,
) -> SessionVerdict:
    """Whether ``state`` may still be used at ``now`` on a connection presenting that certificate.

    ``presented_fingerprint`` is the fingerprint of a *valid* certificate of the same
    user on this request (None if none, or if it failed validation).
    """
    if state.ended_at is not None:
        return SessionVerdict.ENDED
    if now >= state.absolute_expires_at:
        return SessionVerdict.EXPIRED
    if now - state.last_seen_at > idle_timeout:
        return SessionVerdict.IDLE
    # SECURITY: a certificate session lives only while that certificate is presented (and
    # valid); otherwise the revocation of a certificate would not end its sessions.
    if state.cert_fingerprint is not None and state.cert_fingerprint != presented_fingerprint:
        return SessionVerdict.CERTIFICATE_GONE
    return SessionVerdict.ACTIVE


def ended_for_inactivity(state: SessionState) -> bool:
    """Whether ``state`` is a login that ended because it went idle (not a logout, not a
    rotation, not a pre-login session: only those are marked, see ``Sessions.end_idle``)."""
    return state.ended_at is not None and all(
        state.data.get(key) == value for key, value in ENDED_FOR_INACTIVITY.items()
    )


def is_a_login(state: SessionState) -> bool:
    """Whether somebody is logged in on ``state`` (a user and a level above anonymous), as
    opposed to the pre-login session that carries a login form's CSRF token."""
    return state.user_id is not None and state.level is not Level.ANONYMOUS


def touch_interval_for(idle_timeout: timedelta) -> timedelta:
    """How often activity is written for ``idle_timeout``: every :data:`TOUCH_INTERVAL`,
    or a quarter of a shorter timeout.

    Issue 16: with one write a minute an ``idle_timeout`` under a minute logged out a broker
    who was clicking (the last write could lie more than the timeout back). A quarter keeps
    the recorded activity within a quarter of the timeout of the real one.
    """
    return min(TOUCH_INTERVAL, idle_timeout / 4)


def csrf_ok(state: SessionState, submitted: str | None) -> bool:
    """Constant-time check of a form's CSRF token against the session's."""
    if not submitted:
        return False
    return hmac.compare_digest(state.csrf_token.encode(), submitted.encode())


def new_cookie_value() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def set_session_cookie(
    response: web.StreamResponse, cookie: str, settings: GatewaySettings
) -> None:
    """Set the session cookie: ``__Host-`` prefix, Secure, HttpOnly, SameSite=Lax, Path=/.

    No Max-Age: the session ends server-side; a browser session cookie is the right life.
    """
    response.set_cookie(
        settings.session_cookie_name,
        cookie,
        path="/",
        secure=True,
        httponly=True,
        samesite="Lax",
    )


def clear_session_cookie(response: web.StreamResponse, settings: GatewaySettings) -> None:
    response.del_cookie(
        settings.session_cookie_name, path="/", secure=True, httponly=True, samesite="Lax"
    )


def session_cookie_header(name: str, value: str | None) -> str:
    """A ``Set-Cookie`` value (for hooks that run after aiohttp rendered its cookies).

    ``value=None`` deletes the cookie (empty value, Max-Age=0).
    """
    if value is not None and _COOKIE_VALUE.fullmatch(value) and _COOKIE_VALUE.fullmatch(name):
        # Our values are URL-safe base64 and need no quoting: skip SimpleCookie (~30 µs).
        return f"{name}={value}; HttpOnly; Path=/; SameSite=Lax; Secure"
    jar: SimpleCookie = SimpleCookie()
    jar[name] = value or ""
    morsel = jar[name]
    morsel["path"] = "/"
    morsel["secure"] = True
    morsel["httponly"] = True
    morsel["samesite"] = "Lax"
    if value is None:
        morsel["max-age"] = 0
        morsel["expires"] = "Thu, 01 Jan 1970 00:00:00 GMT"
    return morsel.OutputString()
