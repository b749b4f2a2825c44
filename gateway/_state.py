"""Typed application state (``web.AppKey``) and the per-request state the middlewares attach.

Who owns what: ``create_app`` puts settings, clock and options in the app; the
``cleanup_ctx`` of ``gateway._app`` opens (and closes) the engine, the session store,
the trust cache, the assertion signer and the refresh task.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from gateway._assertion import AssertionSigner
from gateway._identity import CertificateProblem, Identity
from gateway._metrics import GatewayMetrics
from gateway._paths import NormalisedPath
from gateway._revocation_cache import TrustCache
from gateway._sessions import Sessions, SessionState
from gateway._settings import GatewaySettings
from gateway._verification import ChainVerifier
from store import Clock

__all__ = [
    "CERTIFICATE_SOURCE",
    "CLOCK",
    "FACTORY",
    "FORWARD",
    "METRICS",
    "REQUEST_STATE",
    "SESSIONS",
    "SETTINGS",
    "SIGNER",
    "TLS_CONTEXT",
    "TRUST",
    "VERIFIER",
    "CertificateSource",
    "CurrentVerifier",
    "Forwarder",
    "RequestState",
]

Forwarder = Callable[..., Awaitable[web.StreamResponse]]
"""``await forward(request, identity_headers=..., path_qs=..., websocket_guard=...)``:
gw-proxy's ``proxy_request`` on a pool (``path_qs``: the request target to forward, the
route policy's normalised one; ``websocket_guard``: a
``gateway._websocket_guard.WebSocketGuard`` or None)."""

CertificateSource = Callable[[web.Request], bytes | None]
"""Where the client certificate (DER) of a request comes from: the TLS handshake or a terminator."""


class CurrentVerifier:
    """The chain verifier for the current trust material (replaced when generations change)."""

    def __init__(self) -> None:
        self.verifier: ChainVerifier | None = None


@dataclass(kw_only=True)
class RequestState:
    """What the auth middleware learnt about a request (``request[REQUEST_STATE]``).

    Attributes:
        certificate: the presented certificate's evaluation (None: none presented).
        session: the live session after SSO/rotation, or None.
        identity: who is there (from the certificate session or the session's user).
        new_cookie: a cookie value to set on the response (start or rotation).
        clear_cookie: the session ended; the response deletes the cookie.
        path: the normalised path (None for the gateway's own routes).
    """

    certificate: Identity | CertificateProblem | None = None
    session: SessionState | None = None
    identity: Identity | None = None
    new_cookie: str | None = None
    clear_cookie: bool = False
    path: NormalisedPath | None = None


SETTINGS = web.AppKey("settings", GatewaySettings)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
FACTORY = web.AppKey("factory", sessionmaker[Session])
SESSIONS = web.AppKey("sessions", Sessions)
TRUST = web.AppKey("trust", TrustCache)
VERIFIER = web.AppKey("verifier", CurrentVerifier)
SIGNER = web.AppKey("signer", AssertionSigner)
METRICS = web.AppKey("metrics", GatewayMetrics)
FORWARD: web.AppKey[Forwarder] = web.AppKey("forward")
CERTIFICATE_SOURCE: web.AppKey[CertificateSource] = web.AppKey("certificate_source")
TLS_CONTEXT: web.AppKey[ssl.SSLContext | None] = web.AppKey("tls_context")
REFRESH_TASK = web.AppKey("refresh_task", asyncio.Task[None])
REQUEST_STATE = web.RequestKey("gateway.request_state", RequestState)
