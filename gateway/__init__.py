"""The mTLS gateway: TLS, client-certificate identity, sessions, logins, route policy, proxy.

The public face for the CLI and for the login pages (docs/gateway.md has the full API).
"""

from gateway._app import UPSTREAM_ROUTE, create_app, identity_of
from gateway._auth import (
    complete_login,
    logout,
    logout_everywhere,
    request_state,
    require_csrf,
    tls_certificate_source,
)
from gateway._errors import (
    CsrfRejected,
    GatewayError,
    PathRejected,
    StoreUnavailable,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway._i18n import LANGUAGES, Catalogs, load_catalogs, negotiate_language
from gateway._identity import CertificateProblem, Identity, ProblemKind
from gateway._pages import CATALOGS, LOGIN_OPTIONS, LoginOption, render_page, safe_next
from gateway._policy import Decision, Outcome, RequestAuth, Requirement, decide, required_for
from gateway._sessions import NewSession, Sessions, SessionState, csrf_ok
from gateway._settings import RESERVED_PREFIX, GatewaySettings, RouteRule
from gateway._state import (
    CLOCK,
    FACTORY,
    METRICS,
    SESSIONS,
    SETTINGS,
    RequestState,
)
from gateway._tls import TLSSetupError, create_server_context, set_client_ca_names

__all__ = [
    "CATALOGS",
    "CLOCK",
    "FACTORY",
    "LANGUAGES",
    "LOGIN_OPTIONS",
    "METRICS",
    "RESERVED_PREFIX",
    "SESSIONS",
    "SETTINGS",
    "UPSTREAM_ROUTE",
    "Catalogs",
    "CertificateProblem",
    "CsrfRejected",
    "Decision",
    "GatewayError",
    "GatewaySettings",
    "Identity",
    "LoginOption",
    "NewSession",
    "Outcome",
    "PathRejected",
    "ProblemKind",
    "RequestAuth",
    "RequestState",
    "Requirement",
    "RouteRule",
    "SessionState",
    "Sessions",
    "StoreUnavailable",
    "TLSSetupError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "complete_login",
    "create_app",
    "create_server_context",
    "csrf_ok",
    "decide",
    "identity_of",
    "load_catalogs",
    "logout",
    "logout_everywhere",
    "negotiate_language",
    "render_page",
    "request_state",
    "require_csrf",
    "required_for",
    "safe_next",
    "set_client_ca_names",
    "tls_certificate_source",
]
