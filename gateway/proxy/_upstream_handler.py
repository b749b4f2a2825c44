"""The catch-all handler: forward to the upstream with our identity headers and the signed
assertion."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway._state import CLOCK
from gateway.auth._certificate_identity import Identity
from gateway.auth._decision_memo import REUSED_HEADERS
from gateway.auth._middleware import (
    request_state,
)
from gateway.proxy._identity_cache import IDENTITY_HEADERS
from gateway.proxy._websocket_guard import websocket_guard

__all__ = [
    "FORWARD",
    "PORTAL_INSERT",
    "Forwarder",
    "PortalInsert",
    "upstream_handler",
    "upstream_identity_headers",
]

log = logging.getLogger("gateway")

Forwarder = Callable[..., Awaitable[web.StreamResponse]]
"""``await forward(request, identity_headers=..., path_qs=..., websocket_guard=...)``:
gw-proxy's ``proxy_request`` on a pool (``path_qs``: the request target to forward, the
route policy's normalised one; ``websocket_guard``: a
``gateway.proxy._websocket_guard.WebSocketGuard`` or None; ``html_insert``, only passed
when there is one: the portal banner's fragment)."""

FORWARD: web.AppKey[Forwarder] = web.AppKey("forward")

PortalInsert = Callable[[web.Request], Awaitable[str | None]]
"""``await insert(request)``: a fragment for the top of this portal page, or None
(``gateway.proxy._html_insert`` decides whether the page can take it)."""

PORTAL_INSERT: web.AppKey[PortalInsert] = web.AppKey("portal_insert")
"""Set only when ``portal_renewal_banner`` is on (``gateway.web._portal_banner``)."""


def upstream_identity_headers(request: web.Request, identity: Identity | None) -> dict[str, str]:
    """The ``X-Brokergate-*`` headers and signed assertion the portal gets for ``identity``
    (none for nobody): the standalone proxy's and forward-auth's one source of them."""
    if identity is None:
        return {}
    app = request.app
    # Built once per identity and reused assertion, not per request (issue 11).
    return app[IDENTITY_HEADERS].headers(identity, app[CLOCK]())


async def upstream_handler(request: web.Request) -> web.StreamResponse:
    """Forward to the upstream with our identity headers and the signed assertion; a
    WebSocket goes with its guard (``gateway.proxy._websocket_guard``), so it closes when its
    session ends."""
    app = request.app
    state = request_state(request)
    assert state.path is not None  # set by policy_middleware
    # Decided with the allow (the connection's memo, issue 11), or built here.
    headers = request.get(REUSED_HEADERS)
    if headers is None:
        headers = upstream_identity_headers(request, state.identity)
    insert = app.get(PORTAL_INSERT)
    extra: dict[str, str] = {}
    if insert is not None and (fragment := await insert(request)) is not None:
        extra["html_insert"] = fragment
    # The normalised target goes as path_qs: cloning the request for it cost more than the
    # rest of this handler.
    response: web.StreamResponse = await app[FORWARD](
        request,
        identity_headers=headers,
        path_qs=state.path.forward,
        websocket_guard=websocket_guard(request),
        **extra,
    )
    return response
