"""The login page's word on an idle logout (issue 16, seed 002: "automatische Abmeldung
nach 15 Minuten ohne Aktivität").

When a login ends for inactivity, the next login page shown for that browser says so:
"Sie wurden nach 15 Minuten ohne Aktivität abgemeldet" (the configured ``idle_timeout``,
in the page's language), standalone and in forward-auth mode alike, and keeps ``next=``.
What decides is the ended session's row (``Sessions.end_idle`` marks it), reached only
through the browser's own session cookie: no query or header can make the page show the
notice, and its text is fixed, never taken from the request. A logout clears the cookie
and a fresh visit has none, so neither shows it; the next login replaces the cookie.
"""

from __future__ import annotations

from aiohttp import web

from gateway._state import SETTINGS
from gateway.auth._request_state import REQUEST_STATE, RequestState
from gateway.web._formatting import duration_for

__all__ = ["idle_logout_after"]


def idle_logout_after(request: web.Request) -> str:
    """The idle timeout in words ("15 Minuten") when this browser's login ended for
    inactivity, else "" (the login page shows its notice only for a non-empty value)."""
    state = request.get(REQUEST_STATE)
    if not isinstance(state, RequestState) or not state.idle_logout:
        return ""
    return duration_for(request, request.app[SETTINGS].idle_timeout)
