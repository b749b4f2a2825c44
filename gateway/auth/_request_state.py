"""The per-request state of authentication and the app keys of its caches.

``request[REQUEST_STATE]`` is what the auth middleware learnt about a request; the app's
``cleanup_ctx`` (``gateway._app``) opens the session store, the trust cache and the chain
verifier behind ``SESSIONS``, ``TRUST`` and ``VERIFIER``: they are owned by the app, with
their staleness bound, never module globals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from gateway._paths import NormalisedPath
from gateway.auth._certificate_identity import CertificateProblem, Identity
from gateway.auth._chain_verification import ChainVerifier
from gateway.auth._presented import PresentedCertificates
from gateway.auth._sessions import Sessions, SessionState
from gateway.auth._trust_cache import TrustCache

if TYPE_CHECKING:
    from ca import LoginRefusal

__all__ = [
    "CERTIFICATE_SOURCE",
    "PAGE_CSRF",
    "PAGE_LANGUAGE_HINT",
    "REQUEST_STATE",
    "SESSIONS",
    "TRUST",
    "VERIFIER",
    "CertificateSource",
    "CurrentVerifier",
    "RequestState",
]

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
        idle_logout: nobody is logged in because the cookie's login ended for inactivity
            (on this request or an earlier one): the login page says so (issue 16).
        refusal: the session's user, or the certificate's, may not log in (issue 13):
            the pages show why and whom to ask instead of a login form.
    """

    certificate: Identity | CertificateProblem | None = None
    session: SessionState | None = None
    identity: Identity | None = None
    new_cookie: str | None = None
    clear_cookie: bool = False
    path: NormalisedPath | None = None
    idle_logout: bool = False
    refusal: LoginRefusal | None = None


SESSIONS = web.AppKey("sessions", Sessions)
TRUST = web.AppKey("trust", TrustCache)
VERIFIER = web.AppKey("verifier", CurrentVerifier)
CERTIFICATE_SOURCE: web.AppKey[CertificateSource] = web.AppKey("certificate_source")
PRESENTED = web.AppKey("presented", PresentedCertificates)
REQUEST_STATE = web.RequestKey("gateway.request_state", RequestState)
PAGE_LANGUAGE_HINT = web.RequestKey("gateway.user_locale", str)
PAGE_CSRF = web.RequestKey("gateway.csrf", str)
